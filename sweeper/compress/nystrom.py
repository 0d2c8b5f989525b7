"""Nyström attention (Xiong et al. 2021): softmax attention approximated through m landmarks.

softmax(Q Kᵀ) V  ≈  softmax(Q K̃ᵀ) · pinv(softmax(Q̃ K̃ᵀ)) · softmax(Q̃ Kᵀ) · V

Q̃, K̃ are means of m contiguous, nearly equal token segments of Q and K (torch.tensor_split
semantics), so m == N reproduces exact attention. The module is built from a timm `Attention`
and reuses its submodules, so a block's state_dict keys (qkv.weight, proj.weight, ...) stay the
same and baseline weights load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers.attention import Attention
from torch import nn

from sweeper.compress import TechniqueConfig, TrialContext, param, register
from sweeper.core.checks import check_int
from sweeper.models.vit import token_count


@dataclass(frozen=True)
class NystromConfig(TechniqueConfig):
    landmarks: int = param(16, short="m")
    pinv_iters: int = param(6, short="it", quiet=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("landmarks", self.landmarks, 1)
        check_int("pinv_iters", self.pinv_iters, 1)


def segment_means(x: torch.Tensor, m: int) -> torch.Tensor:
    """Means of m contiguous segments along dim -2, sized like torch.tensor_split(x, m, -2).

    The first N % m segments hold one token more than the rest; both groups are averaged with
    one reshape each, so there is no Python loop and no helper tensor to place on a device.
    """
    *lead, n, d = x.shape
    small, extra = divmod(n, m)
    cut = extra * (small + 1)
    parts = [x[..., :cut, :].reshape(*lead, extra, small + 1, d).mean(-2)] if extra else []
    parts.append(x[..., cut:, :].reshape(*lead, m - extra, small, d).mean(-2))
    return torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]


def iterative_pinv(a: torch.Tensor, iters: int) -> torch.Tensor:
    """Moore–Penrose pseudo-inverse of each matrix in `a` by the Nyströmformer iteration.

    Z0 = Aᵀ / (max col-sum · max row-sum), then Z = ¼ Z (13I − AZ (15I − AZ (7I − AZ))).
    The scaling is per matrix (not per batch, as in the reference code) so a sample's output
    does not depend on the other samples in its batch. Runs in at least float32 (also under
    autocast), because the landmark kernel is ill-conditioned.
    """
    dtype = a.dtype
    with torch.autocast(device_type=a.device.type, enabled=False):
        a = a.to(torch.promote_types(dtype, torch.float32))
        absa = a.abs()
        col = absa.sum(dim=-2).amax(dim=-1, keepdim=True).unsqueeze(-1)
        row = absa.sum(dim=-1).amax(dim=-1, keepdim=True).unsqueeze(-1)
        z = a.transpose(-1, -2) / (col * row)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        for _ in range(iters):
            az = a @ z
            z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z.to(dtype)


class NystromAttention(nn.Module):
    """Drop-in replacement for timm's `Attention` that reuses its modules and weights."""

    def __init__(self, attn: Attention, landmarks: int, pinv_iters: int) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.scale = attn.scale
        self.landmarks = landmarks
        self.pinv_iters = pinv_iters
        # Same attribute names as timm's Attention -> same state_dict keys.
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        self.attn_drop = attn.attn_drop  # kept for structure; no single attention map to drop
        self.norm = attn.norm
        self.gate = getattr(attn, "gate", None)
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise NotImplementedError("Nyström attention supports neither masks nor causality")
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale  # as timm: the whole scale on Q; landmarks of scaled Q are scaled

        m = min(self.landmarks, n)
        q_l, k_l = segment_means(q, m), segment_means(k, m)
        kernel1 = (q @ k_l.transpose(-1, -2)).softmax(dim=-1)  # (B, h, N, m)
        kernel2 = (q_l @ k_l.transpose(-1, -2)).softmax(dim=-1)  # (B, h, m, m)
        kernel3 = (q_l @ k.transpose(-1, -2)).softmax(dim=-1)  # (B, h, m, N)
        # Multiply right to left through the m-sized side: O(N·m) rather than O(N²).
        out = (kernel1 @ iterative_pinv(kernel2, self.pinv_iters)) @ (kernel3 @ v)

        out = out.transpose(1, 2).reshape(b, n, self.attn_dim)
        out = self.norm(out)
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"landmarks={self.landmarks}, pinv_iters={self.pinv_iters}"


def check_model(cfg: NystromConfig, model: nn.Module) -> None:
    """More landmarks than tokens would silently mean exact attention: reject them."""
    for blk in getattr(model, "blocks", []):
        if not isinstance(blk.attn, Attention):
            raise TypeError(f"expects timm Attention blocks, got {type(blk.attn).__name__}")
    if cfg.landmarks > token_count(model):
        raise ValueError(f"landmarks={cfg.landmarks} exceeds the model's "
                         f"{token_count(model)} tokens")


@register("nystrom", "lowrank", NystromConfig, example=NystromConfig(landmarks=8),
          check_model=check_model)
def apply(model: nn.Module, cfg: NystromConfig, ctx: TrialContext) -> nn.Module:
    """Swap every block's attention for Nyström attention, in place (data-free)."""
    for blk in model.blocks:
        if not isinstance(blk.attn, Attention):
            raise TypeError(f"nystrom expects timm Attention blocks, got {type(blk.attn).__name__}")
        blk.attn = NystromAttention(blk.attn, cfg.landmarks, cfg.pinv_iters)
    ctx.notes["nystrom_landmarks"] = min(cfg.landmarks, token_count(model))
    return model
