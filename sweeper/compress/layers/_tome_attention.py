"""Token merging internals (ToMe, Bolya et al. 2023): bipartite soft matching and
size-weighted (proportional) attention. Registers nothing; tome.py wires it into blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from torch import nn


class ToMeAttention(nn.Module):
    """timm `Attention` that adds log(token size) to the attention logits and also returns
    the keys averaged over heads (ToMe's similarity metric).

    Reuses the wrapped module's layers under the same attribute names, so state_dict keys do
    not change. With `size=None` it runs exactly timm's operations, so outputs are identical.
    """

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        if attn.gate is not None or not isinstance(attn.norm, nn.Identity):
            raise TypeError("tome supports timm Attention without gate and scale_norm")
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.attn_dim, self.scale = attn.attn_dim, attn.scale
        self.fused_attn = attn.fused_attn
        self.qkv, self.q_norm, self.k_norm = attn.qkv, attn.q_norm, attn.k_norm
        self.attn_drop, self.norm = attn.attn_drop, attn.norm
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(
        self, x: torch.Tensor, size: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        # Proportional attention: a token standing for s patches gets s times the weight.
        bias = None if size is None else size.log()[:, None, None, :, 0].to(q.dtype)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0
            )
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = self.norm(x.transpose(1, 2).reshape(b, n, self.attn_dim))
        return self.proj_drop(self.proj(x)), k.mean(dim=1)


@torch.no_grad()  # the matching is a discrete choice; gradients flow through the merges
def _match(m: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of the r A tokens that merge (src), the A tokens that stay (unmerged, in
    order) and the B partners the merging ones go into (dst)."""
    m = m / m.norm(dim=-1, keepdim=True)
    scores = m[:, ::2] @ m[:, 1::2].transpose(-1, -2)
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True, stable=True)[..., None]
    src, unmerged = order[:, :r], order[:, r:].sort(dim=1).values
    return src, unmerged, partner[..., None].gather(1, src)


def merge_tokens(
    x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, r: int, prefix: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge r tokens of x by bipartite soft matching; the first `prefix` tokens never merge.

    Tokens alternate into sets A (even) and B (odd); each A token picks its most similar B
    token (cosine of `metric`), the r best-matching A tokens are averaged into their B
    partners, weighted by size. Output: prefix, unmerged A (original order), B. Returns the
    merged tokens and their sizes (patches each token stands for).
    """
    if size is None:
        size = x.new_ones(x.shape[0], x.shape[1], 1)
    head, tail = x[:, :prefix], x[:, prefix:]
    head_size, tail_size = size[:, :prefix], size[:, prefix:]
    src, unmerged, dst = _match(metric[:, prefix:], r)

    def merge(t: torch.Tensor) -> torch.Tensor:
        a, b_set = t[:, ::2], t[:, 1::2]
        c = t.shape[-1]
        keep = a.gather(1, unmerged.expand(-1, -1, c))
        moved = a.gather(1, src.expand(-1, -1, c))
        b_set = b_set.scatter_reduce(1, dst.expand(-1, -1, c), moved, reduce="sum")
        return torch.cat([keep, b_set], dim=1)

    # One merge for the weighted sums and the sizes together: half the small ops.
    merged = merge(torch.cat([tail * tail_size, tail_size], dim=-1))
    merged, new_size = merged[..., :-1], merged[..., -1:]
    return (torch.cat([head, merged / new_size], dim=1),
            torch.cat([head_size, new_size], dim=1))
