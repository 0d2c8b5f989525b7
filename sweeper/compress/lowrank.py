"""Low-rank factorisation of Linear layers by truncated SVD.

W (d_out x d_in) = U S Vᵀ is cut to its top r singular values and stored as two thinner
layers, Linear(d_in, r) with weight √S Vᵀ and Linear(r, d_out) with weight U √S (plus the
bias): r (d_in + d_out) weights instead of d_in d_out, and two smaller matmuls instead of one.
r = round(rank_ratio * min(d_in, d_out)); a layer whose factorisation would not hold fewer
weights is left whole (counted in `lowrank_skipped`). By Eckart-Young this is the best rank-r
approximation of each weight in the Frobenius norm. It needs no data; a recovery fine-tune
(recover or distill) heals what the truncation loses.

targets: `mlp` factorises every block's fc1 and fc2 (most of a ViT's weights); `all` adds the
attention's qkv and proj. The two thin layers are ordinary nn.Linear, so quantization, ONNX
export and every runtime take them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sweeper.compress import TechniqueConfig, TrialContext, param, register
from sweeper.compress.layers import LowRankLinear
from sweeper.core.checks import check_choice, check_float
from sweeper.models.vit import count_parameters

TARGETS = {"mlp": (("mlp", "fc1"), ("mlp", "fc2")),
           "all": (("mlp", "fc1"), ("mlp", "fc2"), ("attn", "qkv"), ("attn", "proj"))}


@dataclass(frozen=True)
class LowRankConfig(TechniqueConfig):
    rank_ratio: float = param(0.5, short="r")  # kept rank as a fraction of min(d_in, d_out)
    targets: str = "mlp"  # mlp | all (mlp plus attention qkv and proj)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float("rank_ratio", self.rank_ratio, 0, 1, low_open=True)
        check_choice("targets", self.targets, TARGETS)


def rank_for(linear: nn.Linear, ratio: float) -> int | None:
    """The kept rank, or None when two thin layers would hold as many weights as one."""
    d_in, d_out = linear.in_features, linear.out_features
    rank = max(1, round(ratio * min(d_in, d_out)))
    return rank if rank * (d_in + d_out) < d_in * d_out else None


def _targets(model: nn.Module, targets: str) -> list[tuple[nn.Module, str, nn.Linear]]:
    found = []
    for i, blk in enumerate(getattr(model, "blocks", [])):
        for part, attr in TARGETS[targets]:
            owner = getattr(blk, part, None)
            layer = getattr(owner, attr, None)
            if type(layer) is not nn.Linear:
                raise TypeError(f"blocks.{i}.{part}.{attr} is "
                                f"{type(layer).__name__}, not nn.Linear")
            found.append((owner, attr, layer))
    if not found:
        raise TypeError("expects a timm VisionTransformer (model.blocks)")
    return found


def check_model(cfg: LowRankConfig, model: nn.Module) -> None:
    _targets(model, cfg.targets)


@register("lowrank", "lowrank", LowRankConfig, example=LowRankConfig(rank_ratio=0.25),
          check_model=check_model)
def apply(model: nn.Module, cfg: LowRankConfig, ctx: TrialContext) -> nn.Module:
    """Factorise the target layers in place (data-free)."""
    before = count_parameters(model)
    done = skipped = 0
    for owner, attr, linear in _targets(model, cfg.targets):
        rank = rank_for(linear, cfg.rank_ratio)
        if rank is None:
            skipped += 1
            continue
        if ctx.structure_only:
            thin = LowRankLinear(linear.in_features, linear.out_features, rank,
                                 linear.bias is not None)
        else:
            thin = LowRankLinear.from_linear(linear, rank)
        setattr(owner, attr, thin)
        done += 1
    ctx.notes["lowrank_layers"] = done
    ctx.notes["lowrank_skipped"] = skipped
    ctx.notes["params_removed_fraction"] = 1 - count_parameters(model) / before
    return model
