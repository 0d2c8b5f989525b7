"""Token merging (ToMe, Bolya et al. 2023): each block merges r tokens after attention.

Bipartite soft matching on the attention keys (averaged over heads) pairs similar tokens; merged
tokens are size-weighted averages, and attention is proportional (log size added to the
logits) so a merged token counts as many times as the patches it stands for. The class (and
any other prefix) token is never merged. Fewer tokens in later blocks -> fewer FLOPs.

Each timm `Block` is swapped for a `ToMeBlock` that reuses its modules under the same names,
and `model.blocks` for a `ToMeBlocks` sequence that passes token sizes along; state_dict keys
are unchanged, so baseline weights load as they are, and the swap is data-free.

On blocks whose attention is not timm's exact softmax attention (e.g. Nyström, applied in the
earlier low-rank stage) the block's normed input is the matching metric and attention is not
size-weighted: approximate attention has no exact per-key logit to bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block
from torch import nn

from sweeper.compress import TechniqueConfig, TrialContext, register
from sweeper.compress.layers import ToMeAttention, merge_tokens
from sweeper.core.checks import check_int
from sweeper.models.vit import token_count


@dataclass(frozen=True)
class ToMeConfig(TechniqueConfig):
    r: int = 8  # tokens merged in every block

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("r", self.r, 0)


class ToMeBlock(nn.Module):
    """timm `Block` (pre-norm) that merges `r` tokens between attention and MLP."""

    def __init__(self, blk: Block, r: int, prefix: int) -> None:
        super().__init__()
        self.r, self.prefix = r, prefix
        self.norm1 = blk.norm1
        exact = type(blk.attn) is Attention
        self.attn = ToMeAttention(blk.attn) if exact else blk.attn
        self.ls1, self.drop_path1 = blk.ls1, blk.drop_path1
        self.norm2, self.mlp = blk.norm2, blk.mlp
        self.ls2, self.drop_path2 = blk.ls2, blk.drop_path2

    def forward(
        self, x: torch.Tensor, size: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.norm1(x)
        if isinstance(self.attn, ToMeAttention):
            out, metric = self.attn(h, size)
        else:
            out, metric = self.attn(h), h
        x = x + self.drop_path1(self.ls1(out))
        r = min(self.r, (x.shape[1] - self.prefix) // 2)
        if r > 0:
            x, size = merge_tokens(x, size, metric, r, self.prefix)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, size

    def extra_repr(self) -> str:
        return f"r={self.r}"


class ToMeBlocks(nn.Sequential):
    """`model.blocks` replacement: runs the blocks passing token sizes from one to the next."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = None
        for blk in self:
            x, size = blk(x, size)
        return x


def tokens_per_block(tokens: int, prefix: int, r: int, depth: int) -> list[int]:
    """Tokens each block's MLP (and the next block) sees: tokens minus what has merged."""
    out = []
    for _ in range(depth):
        tokens -= min(r, (tokens - prefix) // 2)
        out.append(tokens)
    return out


def check_model(cfg: ToMeConfig, model: nn.Module) -> None:
    """The merges must leave a token to merge into, and pooling must read the class token."""
    tokens, prefix, depth = token_count(model), model.num_prefix_tokens, len(model.blocks)
    if cfg.r * depth >= tokens - prefix:
        raise ValueError(
            f"r={cfg.r} merges {cfg.r * depth} of the model's {tokens - prefix} patch tokens "
            f"over {depth} blocks ({tokens} tokens in all); use r < "
            f"{-(-(tokens - prefix) // depth)}"
        )
    if model.global_pool != "token" or prefix < 1:
        raise ValueError("needs class-token pooling (merged tokens have unequal sizes)")
    if not all(type(blk) is Block for blk in model.blocks):
        raise TypeError("expects timm Block modules in model.blocks")


@register("tome", "token_merge", ToMeConfig, example=ToMeConfig(r=4), check_model=check_model)
def apply(model: nn.Module, cfg: ToMeConfig, ctx: TrialContext) -> nn.Module:
    """Swap every block for a token-merging block, in place (data-free)."""
    check_model(cfg, model)
    tokens, prefix, depth = token_count(model), model.num_prefix_tokens, len(model.blocks)
    model.blocks = ToMeBlocks(*[ToMeBlock(blk, cfg.r, prefix) for blk in model.blocks])
    counts = tokens_per_block(tokens, prefix, cfg.r, depth)
    ctx.notes["tome_r"] = cfg.r
    ctx.notes["tome_final_tokens"] = counts[-1]
    ctx.notes["tome_mean_tokens"] = sum(counts) / depth
    return model
