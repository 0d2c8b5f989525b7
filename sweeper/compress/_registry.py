"""The technique registry's machinery (private: use `sweeper.compress`): the config base
class, `register`, lookup by name or config type, pipelines (validate, order, apply, save,
rebuild), and the context a technique is given."""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

from sweeper.core.checks import check_bool
from sweeper.core.errors import UserError
from sweeper.data.preprocess import Preprocessing
from sweeper.data.split import Pair, Split, as_split

STAGES = ("prune", "lowrank", "token_merge", "recover", "quantize")
# The technique modules, imported by load_all (each registers itself on import).
MODULES = ("prune", "nystrom", "lowrank", "tome", "recover", "distill", "quantize")


_UNSET = object()


@dataclass(frozen=True)
class TechniqueConfig:
    """The base of every technique's config: frozen, validated in `__post_init__` (a
    subclass's calls `super().__post_init__()`), and skipped by the registry when `enabled`
    is false. `enabled` is keyword-only, so it comes after a technique's own fields."""

    enabled: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        check_bool("enabled", self.enabled)

    @property
    def replaces_model(self) -> bool:
        """True when `apply` trains a new model instead of changing the one it is given
        (then no technique may come before it: validate_pipeline)."""
        return False

    @classmethod
    def from_params(cls, **params: Any) -> Self:
        """The config from a space's parameters (a subclass may fill derived fields first)."""
        return cls(**params)


def param(
    default: Any,
    *,
    short: str | None = None,
    quiet: bool = False,
    bare: bool = False,
    headline: str | None = None,
    no_op: Any = _UNSET,
) -> Any:
    """A config field with how it reads in a one-line description (sweeper.report):
    `short` name (m=16 for landmarks), `quiet`: hidden while at its default, `bare`: the value
    alone (static, not method=static), `headline`: a format put first (int{} -> int8),
    `no_op`: the value at which the technique does nothing (then it is left out)."""
    meta = {"short": short, "quiet": quiet, "bare": bare, "headline": headline}
    if no_op is not _UNSET:
        meta["no_op"] = no_op
    return field(default=default, metadata=meta)


def display_fields(name: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    """field name -> (default, display metadata) of a registered technique; {} if unknown."""
    load_all()
    if name not in NAMES:
        return {}
    return {f.name: (f.default, dict(f.metadata)) for f in dataclasses.fields(NAMES[name])}


@dataclass
class TrialContext:
    """What a technique may need besides the model: data, device, threads and the teacher."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # sweeper.split splits (an (images uint8, labels int64) pair is wrapped as one)
    train: Split | Pair | None = None
    val: Split | Pair | None = None
    # the sweep's, passed whole (the default: the embedded digits data)
    preprocessing: Preprocessing = field(
        default_factory=lambda: Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    batch_size: int = 64
    weight_decay: float = 0.05
    seed: int = 0
    teacher: nn.Module | None = None  # the uncompressed baseline
    structure_only: bool = False
    notes: dict[str, Any] = field(default_factory=dict)  # techniques record facts here (tags)
    # What techniques report back, typed: the device the compressed model's kernels need
    # (int8 kernels exist on CPU only) and whether low precision is only emulated in float
    # (then latency is float's, not the precision's).
    runs_on: str | None = None
    simulated: bool = False
    artifacts_dir: Path | None = None  # techniques write files here (attached to the run)
    # called by a training stage after each epoch with (model, epochs done): the rungs of
    # early stopping (sweeper.rung_watch); it may raise to stop the trial
    on_epoch: Callable[[nn.Module, int], None] | None = None

    def epoch_hook(self, model: nn.Module, epochs: int) -> Callable[[int, float], None] | None:
        """`on_epoch` in the shape of train.fit's callback (epoch index, loss), for every
        epoch but the last (a rung there would save nothing)."""
        on_epoch = self.on_epoch
        if on_epoch is None:
            return None

        def call(epoch: int, _loss: float) -> None:
            if epoch + 1 < epochs:
                on_epoch(model, epoch + 1)

        return call

    def __post_init__(self) -> None:
        self.train = None if self.train is None else as_split(self.train)
        self.val = None if self.val is None else as_split(self.val)


@dataclass(frozen=True)
class Technique:
    name: str
    stage: str
    config_cls: type
    apply: Callable[[nn.Module, Any, TrialContext], nn.Module]
    example: Any  # a small valid config: the contract test runs every technique with it
    # raises ValueError/TypeError when the config cannot apply to this model (token counts,
    # layer types): called at launch for every value a space allows, before any trial runs
    check_model: Callable[[Any, nn.Module], None] | None = None
    # raises ValueError when the technique has no real kernel on a trial device ("cpu" or
    # "cuda"): a ratio must time model and baseline on the same device, never move one
    check_device: Callable[[Any, str], None] | None = None


# Keyed by config type: a config's type says which technique applies it. NAMES maps the
# names used in space files and MLflow params to those types.
REGISTRY: dict[type, Technique] = {}
NAMES: dict[str, type] = {}


def register(
    name: str,
    stage: str,
    config_cls: type[TechniqueConfig],
    example: TechniqueConfig,
    check_model: Callable[[Any, nn.Module], None] | None = None,
    check_device: Callable[[Any, str], None] | None = None,
) -> Callable:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if not issubclass(config_cls, TechniqueConfig):
        raise TypeError(f"{name}: {config_cls.__name__} must derive from TechniqueConfig")
    if type(example) is not config_cls:
        raise TypeError(f"{name}: example must be a {config_cls.__name__}")

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def unless_disabled(model: nn.Module, cfg: Any, ctx: TrialContext) -> nn.Module:
            return fn(model, cfg, ctx) if cfg.enabled else model

        REGISTRY[config_cls] = Technique(name, stage, config_cls, unless_disabled, example,
                                         check_model, check_device)
        NAMES[name] = config_cls
        return fn

    return deco


def load_all() -> dict[type, Technique]:
    """Import the technique modules of `MODULES`: each registers its technique on import."""
    for module in MODULES:
        importlib.import_module(f"sweeper.compress.{module}")
    return REGISTRY


def technique(name: str) -> Technique:
    load_all()
    if name not in NAMES:
        raise UserError(f"unknown technique {name!r}; valid: {', '.join(sorted(NAMES))}")
    return REGISTRY[NAMES[name]]


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
        return cls.from_params(**params)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name}: {exc}") from None


def check_model(cfg: Any, model: nn.Module, device: str = "cpu") -> None:
    """UserError when the technique of `cfg` cannot apply to `model`, or has no real kernel
    on the trial `device` (its own hooks decide)."""
    tech = technique(name_of(cfg))
    if not cfg.enabled:
        return
    try:
        if tech.check_model is not None:
            tech.check_model(cfg, model)
        if tech.check_device is not None:
            tech.check_device(cfg, device)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{tech.name}: {exc}") from None


def name_of(cfg: Any) -> str:
    load_all()
    try:
        return REGISTRY[type(cfg)].name
    except KeyError:
        raise KeyError(type(cfg).__name__) from None


def ordered(pipeline: list[Any]) -> list[Any]:
    return sorted(pipeline, key=lambda c: STAGES.index(technique(name_of(c)).stage))


def validate_pipeline(pipeline: list[Any]) -> None:
    """Reject combinations that cannot work, before any trial starts (UserError).

    Disabled configs are ignored. Rules: a technique at most once; at most one technique of
    the recover stage (each trains the whole model: pick one); a config whose
    `replaces_model` is true (distill into a new student) cannot follow other techniques,
    whose work it would discard.
    """
    active = [c for c in pipeline if c.enabled]
    names = [name_of(c) for c in active]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"technique(s) {', '.join(twice)} given more than once in one pipeline")
    trainers = [n for n in names if technique(n).stage == "recover"]
    if len(trainers) > 1:
        raise UserError(
            f"{' and '.join(trainers)} both train the model in the recover stage; use one "
            "(distill with student='self' fine-tunes the compressed model from the teacher)"
        )
    for cfg in active:
        if cfg.replaces_model:
            stage = STAGES.index(technique(name_of(cfg)).stage)
            before = [n for n in names if STAGES.index(technique(n).stage) < stage]
            if before:
                raise UserError(
                    f"{name_of(cfg)} trains a new model from scratch and would discard "
                    f"{', '.join(before)} applied before it; use student='self' to distil "
                    "into the compressed model, or drop those techniques"
                )


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
