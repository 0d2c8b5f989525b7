"""Compression techniques: a registry of (typed frozen config, apply function) pairs.

Each technique module registers itself with `@register(name, stage, config_cls, example)`.
A pipeline is a list of technique configs; `apply_pipeline` runs them in the fixed stage order
prune -> low-rank -> token merge -> recover -> quantize, whatever order the list has.

`apply(model, cfg, ctx) -> model` may modify and return `model` or return a new module.
When `ctx.structure_only` is true, apply must only reproduce the module structure (no
training, no calibration): `rebuild` uses this to load a saved compressed state_dict.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sweeper.errors import UserError

STAGES = ("prune", "lowrank", "token_merge", "recover", "quantize")


@dataclass
class TrialContext:
    """What a technique may need besides the model: data, device, threads and the teacher."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    train: tuple[torch.Tensor, torch.Tensor] | None = None  # uint8 images, int64 labels
    val: tuple[torch.Tensor, torch.Tensor] | None = None
    img_size: int = 32
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    teacher: nn.Module | None = None  # the uncompressed baseline
    structure_only: bool = False
    notes: dict[str, Any] = field(default_factory=dict)  # techniques record facts here (tags)


@dataclass(frozen=True)
class Technique:
    name: str
    stage: str
    config_cls: type
    apply: Callable[[nn.Module, Any, TrialContext], nn.Module]
    example: Any  # a small valid config: the contract test runs every technique with it


REGISTRY: dict[str, Technique] = {}


def register(name: str, stage: str, config_cls: type, example: Any) -> Callable:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if type(example) is not config_cls:
        raise TypeError(f"{name}: example must be a {config_cls.__name__}")

    def deco(fn: Callable) -> Callable:
        REGISTRY[name] = Technique(name, stage, config_cls, fn, example)
        return fn

    return deco


def load_all() -> dict[str, Technique]:
    """Import every module of this package: each registers its technique on import."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return REGISTRY


def technique(name: str) -> Technique:
    load_all()
    if name not in REGISTRY:
        raise UserError(f"unknown technique {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def make_config(name: str, params: dict[str, Any]) -> Any:
    """Build a technique's config from a dict, rejecting unknown keys and bad values."""
    cls = technique(name).config_cls
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - valid
    if unknown:
        raise UserError(
            f"unknown key(s) {', '.join(sorted(unknown))} for technique {name!r}; "
            f"valid: {', '.join(sorted(valid))}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name}: {exc}") from None


def name_of(cfg: Any) -> str:
    load_all()
    for tech in REGISTRY.values():
        if type(cfg) is tech.config_cls:
            return tech.name
    raise KeyError(type(cfg).__name__)


def ordered(pipeline: list[Any]) -> list[Any]:
    return sorted(pipeline, key=lambda c: STAGES.index(technique(name_of(c)).stage))


def apply_pipeline(model: nn.Module, pipeline: list[Any], ctx: TrialContext) -> nn.Module:
    for cfg in ordered(pipeline):
        model = technique(name_of(cfg)).apply(model, cfg, ctx)
    return model


def pipeline_to_dict(pipeline: list[Any]) -> dict[str, dict[str, Any]]:
    return {name_of(c): dataclasses.asdict(c) for c in ordered(pipeline)}


def pipeline_from_dict(data: dict[str, dict[str, Any]]) -> list[Any]:
    return [make_config(name, dict(params)) for name, params in data.items()]


def rebuild(
    baseline: nn.Module, pipeline: list[Any], state: dict[str, torch.Tensor]
) -> nn.Module:
    """Recreate a compressed model from the baseline's structure and its saved state_dict."""
    ctx = TrialContext(structure_only=True)
    model = apply_pipeline(baseline, pipeline, ctx)
    model.load_state_dict(state)
    return model.eval()
