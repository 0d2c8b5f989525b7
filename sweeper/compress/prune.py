"""Pruning of the transformer blocks' Linear layers, by magnitude or by whole structures.

kind="structured" removes attention heads and MLP hidden units physically (see _structured):
`ratio` is the fraction of the blocks' attention + MLP Linear parameters removed, so the
parameter count, the saved bytes and the latency all fall.

kind="unstructured" is per-layer magnitude pruning (see _sparse): every Linear inside the
blocks (qkv, proj, fc1, fc2; not the patch embedding nor the classifier head) has
round(ratio * n) of its smallest-magnitude weights set to exactly zero. Weights are stored
sparse only where that is smaller; latency is unchanged (dense kernels).

Both are data-free and deterministic in the weights (stable sorts break ties), so
`structure_only` runs the same code and rebuild reproduces the structure. Recovery composes:
add `recover` (fine-tune or KD) or `distill` (student='self') to the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sweeper.compress import TechniqueConfig, TrialContext, param, register
from sweeper.compress._histogram import write_histogram
from sweeper.compress._sparse import attach_sparse_hooks, magnitude_prune_, saves_bytes
from sweeper.compress._structured import check_block, prune_block
from sweeper.core.checks import check_choice, check_float
from sweeper.models.vit import count_parameters

KINDS = ("structured", "unstructured")
MAX_RATIO = 0.95


@dataclass(frozen=True)
class PruneConfig(TechniqueConfig):
    # fraction of the blocks' Linear parameters removed (or zeroed)
    ratio: float = param(0.3, short="r")
    kind: str = "structured"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float("ratio", self.ratio, 0, MAX_RATIO)
        check_choice("kind", self.kind, KINDS)


def _structured(model: nn.Module, ratio: float, ctx: TrialContext) -> list[torch.Tensor]:
    removed = prunable = 0
    scored = []
    for blk in model.blocks:
        plan, block_scores = prune_block(blk, ratio)
        removed += plan.removed_params
        prunable += plan.prunable_params
        scored += block_scores
    ctx.notes["prune_prunable_removed"] = removed / prunable
    ctx.notes["prune_heads_kept"] = sum(blk.attn.num_heads for blk in model.blocks)
    ctx.notes["prune_mlp_units_kept"] = sum(blk.mlp.fc1.out_features for blk in model.blocks)
    scores = torch.cat([s / s.max().clamp_min(1e-12) for s, _ in scored])  # per-group scale
    gone = torch.cat([g for _, g in scored])
    return [scores[~gone], scores[gone]]


def _unstructured(model: nn.Module, ratio: float, ctx: TrialContext) -> list[torch.Tensor]:
    layers = [m for m in model.blocks.modules() if type(m) is nn.Linear]
    kept, gone = [], []
    for layer in layers:
        scores = magnitude_prune_(layer, ratio)
        attach_sparse_hooks(layer)
        zero = (layer.weight.detach() == 0).reshape(-1).cpu()
        kept.append(scores[~zero])
        gone.append(scores[zero])
    zeroed = sum(int((layer.weight == 0).sum()) for layer in layers)
    ctx.notes["prune_prunable_removed"] = zeroed / sum(layer.weight.numel() for layer in layers)
    sparse = sum(saves_bytes(layer.weight) for layer in layers)
    ctx.notes["stored_sparse"] = sparse > 0
    ctx.notes["prune_sparse_tensors"] = sparse
    return [torch.cat(kept), torch.cat(gone)]


def check_model(cfg: PruneConfig, model: nn.Module) -> None:
    """At launch: blocks to prune, and for structured pruning timm Attention/Mlp ones (a user's
    model may carry other block types or width norms that every trial would fail on)."""
    blocks = getattr(model, "blocks", None)
    if not blocks:
        raise TypeError("expects a timm VisionTransformer (model.blocks)")
    for i, blk in enumerate(blocks):
        try:
            if cfg.kind == "structured":
                check_block(blk)
            elif not any(type(m) is nn.Linear for m in blk.modules()):
                raise TypeError("no nn.Linear layers to prune")
        except TypeError as exc:
            raise TypeError(f"blocks.{i}: {exc}") from None


@register("prune", "prune", PruneConfig, example=PruneConfig(ratio=0.3),
          check_model=check_model)
def apply(model: nn.Module, cfg: PruneConfig, ctx: TrialContext) -> nn.Module:
    """Prune `model` in place (data-free); notes and an importance histogram record what went."""
    before = count_parameters(model)
    prune = _structured if cfg.kind == "structured" else _unstructured
    kept, gone = prune(model, cfg.ratio, ctx)
    ctx.notes["prune_kind"] = cfg.kind
    if cfg.kind == "structured":
        ctx.notes["params_removed_fraction"] = 1 - count_parameters(model) / before
    else:
        ctx.notes["params_zeroed_fraction"] = len(gone) / before
    if ctx.artifacts_dir is not None and not ctx.structure_only:
        label = "|weight|" if cfg.kind == "unstructured" else "L2 norm / block max"
        files = write_histogram(ctx.artifacts_dir, f"prune_{cfg.kind}_importance", kept, gone,
                                label, log10=cfg.kind == "unstructured")
        ctx.notes["prune_histogram"] = ",".join(f.name for f in files)
    return model
