"""Structured pruning of timm ViT blocks: whole attention heads and MLP hidden units go.

Removing a head deletes its rows of qkv (q, k and v parts, and of the optional gate) and its
columns of proj; removing a hidden unit deletes its row of fc1 and its column of fc2. The new
Linear layers are smaller, so parameters, saved bytes and latency all fall, and timm's
bookkeeping (num_heads, attn_dim; head_dim and scale unchanged) is updated to match.

Budget, per block and hence overall: `ratio` is the fraction of the block's attention and MLP
Linear parameters (weights and biases of qkv, proj, fc1, fc2) removed. round(ratio * heads)
heads go first (at least one head stays), MLP hidden units fill the rest of the budget. Which
heads and units go is decided by importance: the L2 norm of all weights that belong to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers import Mlp
from timm.layers.attention import Attention
from torch import nn

Scored = tuple[torch.Tensor, torch.Tensor]  # importance scores, removed (bool)


@dataclass(frozen=True)
class BlockPlan:
    heads_removed: int
    units_removed: int
    removed_params: int
    prunable_params: int


def _linear_params(layer: nn.Linear) -> int:
    return layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0)


def check_block(blk: nn.Module) -> tuple[Attention, Mlp]:
    attn, mlp = getattr(blk, "attn", None), getattr(blk, "mlp", None)
    if type(attn) is not Attention or type(mlp) is not Mlp:
        raise TypeError(
            "structured pruning expects timm Attention and Mlp blocks, got "
            f"{type(attn).__name__} and {type(mlp).__name__}"
        )
    if not isinstance(attn.norm, nn.Identity) or not isinstance(mlp.norm, nn.Identity):
        # A norm over the attention or hidden width changes its statistics when units go.
        raise TypeError("structured pruning does not support scale_attn_norm/scale_mlp_norm")
    if not isinstance(mlp.fc1, nn.Linear):
        raise TypeError("structured pruning expects Linear MLP layers (not 1x1 convolutions)")
    return attn, mlp


def head_params(attn: Attention) -> int:
    """Parameters owned by one head: its qkv (and gate) rows with biases, its proj columns."""
    h, dim = attn.head_dim, attn.qkv.in_features
    per_row = dim + (1 if attn.qkv.bias is not None else 0)
    gate = h * (dim + (1 if attn.gate.bias is not None else 0)) if attn.gate is not None else 0
    return 3 * h * per_row + gate + attn.proj.out_features * h


def unit_params(mlp: Mlp) -> int:
    return mlp.fc1.in_features + (1 if mlp.fc1.bias is not None else 0) + mlp.fc2.out_features


def prunable_params(attn: Attention, mlp: Mlp) -> int:
    layers = [attn.qkv, attn.proj, mlp.fc1, mlp.fc2]
    layers += [attn.gate] if attn.gate is not None else []
    return sum(_linear_params(layer) for layer in layers)


def plan_block(attn: Attention, mlp: Mlp, ratio: float) -> BlockPlan:
    total = prunable_params(attn, mlp)
    budget = ratio * total
    per_head, per_unit = head_params(attn), unit_params(mlp)
    heads = min(attn.num_heads - 1, round(ratio * attn.num_heads))
    while heads > 0 and heads * per_head > budget:
        heads -= 1
    units = round((budget - heads * per_head) / per_unit)
    units = max(0, min(mlp.fc1.out_features - 1, units))
    return BlockPlan(heads, units, heads * per_head + units * per_unit, total)


def _head_rows(attn: Attention, heads: torch.Tensor) -> torch.Tensor:
    """Row indices of `heads` inside one attn_dim-sized slab (head-major, as timm reshapes)."""
    offsets = torch.arange(attn.head_dim, device=heads.device)
    return (heads[:, None] * attn.head_dim + offsets[None, :]).reshape(-1)


def head_importance(attn: Attention) -> torch.Tensor:
    h, n = attn.head_dim, attn.num_heads
    qkv = attn.qkv.weight.detach().float().reshape(3, n, h, -1)
    score = qkv.pow(2).sum(dim=(0, 2, 3))
    if attn.gate is not None:
        score += attn.gate.weight.detach().float().reshape(n, h, -1).pow(2).sum(dim=(1, 2))
    proj = attn.proj.weight.detach().float().reshape(-1, n, h)
    return (score + proj.pow(2).sum(dim=(0, 2))).sqrt()


def unit_importance(mlp: Mlp) -> torch.Tensor:
    fc1 = mlp.fc1.weight.detach().float().pow(2).sum(dim=1)
    fc2 = mlp.fc2.weight.detach().float().pow(2).sum(dim=0)
    return (fc1 + fc2).sqrt()


def keep_top(scores: torch.Tensor, removed: int) -> torch.Tensor:
    """Indices of the len - removed largest scores, in ascending index order.

    A stable sort makes ties (e.g. identical heads) resolve the same way on every run, so the
    structure is a deterministic function of the weights.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[: len(scores) - removed].sort().values


def _sliced(layer: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    w = layer.weight.detach()
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None,
                    device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if layer.bias is not None:
            out.bias.copy_(layer.bias.detach() if rows is None else layer.bias.detach()[rows])
    out.train(layer.training)
    return out


def prune_heads(attn: Attention, keep: torch.Tensor) -> None:
    rows = _head_rows(attn, keep)
    slab = attn.attn_dim
    attn.qkv = _sliced(attn.qkv, torch.cat([rows, rows + slab, rows + 2 * slab]), None)
    if attn.gate is not None:
        attn.gate = _sliced(attn.gate, rows, None)
    attn.proj = _sliced(attn.proj, None, rows)
    attn.num_heads = len(keep)
    attn.attn_dim = len(keep) * attn.head_dim  # head_dim, hence scale, is unchanged


def prune_units(mlp: Mlp, keep: torch.Tensor) -> None:
    mlp.fc1 = _sliced(mlp.fc1, keep, None)
    mlp.fc2 = _sliced(mlp.fc2, None, keep)


def prune_block(blk: nn.Module, ratio: float) -> tuple[BlockPlan, list[Scored]]:
    """Prune one block in place; returns its plan and the (scores, removed) of heads, units."""
    attn, mlp = check_block(blk)
    plan = plan_block(attn, mlp, ratio)
    scored = []
    for scores, removed, prune in (
        (head_importance(attn), plan.heads_removed, lambda keep: prune_heads(attn, keep)),
        (unit_importance(mlp), plan.units_removed, lambda keep: prune_units(mlp, keep)),
    ):
        keep = keep_top(scores, removed)
        gone = torch.ones_like(scores, dtype=torch.bool)
        gone[keep] = False
        scored.append((scores, gone))
        if removed:
            prune(keep.to(attn.qkv.weight.device))
    return plan, scored
