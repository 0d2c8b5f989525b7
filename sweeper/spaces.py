"""Search spaces: `search_spaces/NAME.yaml` -> an Optuna define-by-run function -> a pipeline.

A space file names techniques and, for each parameter, either a fixed value or a range:

    techniques:
      nystrom:
        landmarks: {choices: [4, 8, 16, 32]}     # categorical
        pinv_iters: 6                            # fixed
      recover:
        epochs: {int: [0, 3]}                    # integer range (optional log/step)
        lr: {float: [1.0e-4, 1.0e-3], log: true} # float range
      quantize:
        enabled: {choices: [false, true]}        # conditional technique

A technique whose `enabled` is sampled false suggests none of its other parameters, so the
sampler sees a conditional (tree-structured) space. Every endpoint and choice is checked
against the technique's config when the space loads, before anything runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from sweeper import compress
from sweeper.errors import UserError

SPACE_DIR = Path(__file__).resolve().parents[1] / "search_spaces"


@dataclass(frozen=True)
class Param:
    """One searched parameter, named `technique.key` in Optuna and in trial configs."""

    name: str
    kind: str  # choices | int | float
    choices: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    log: bool = False
    step: int | None = None

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choices":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def extremes(self) -> tuple[Any, ...]:
        return self.choices if self.kind == "choices" else (self.low, self.high)


@dataclass(frozen=True)
class TechniqueSpace:
    name: str
    fixed: dict[str, Any]
    searched: tuple[Param, ...]


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    techniques: tuple[TechniqueSpace, ...]

    def define(self, trial: Any) -> None:
        """Optuna define-by-run: suggest every active parameter (conditional on `enabled`)."""
        for tech in self.techniques:
            params = {p.name.split(".", 1)[1]: p for p in tech.searched}
            enabled = params.pop("enabled", None)
            if enabled is not None and not enabled.suggest(trial):
                continue
            if tech.fixed.get("enabled", True) is False:
                continue
            for param in params.values():
                param.suggest(trial)

    def pipeline(self, values: dict[str, Any]) -> list[Any]:
        """Technique configs for one trial from its sampled `technique.key` values."""
        out = []
        for tech in self.techniques:
            params = dict(tech.fixed)
            for p in tech.searched:
                if p.name in values:
                    params[p.name.split(".", 1)[1]] = values[p.name]
            if params.get("enabled", True) is False:
                continue
            params.pop("enabled", None)
            out.append(compress.make_config(tech.name, params))
        return out

    def param_names(self) -> list[str]:
        return [p.name for t in self.techniques for p in t.searched]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of a space made only of `choices` (for exhaustive fronts)."""
        combos: list[dict[str, Any]] = [{}]
        for tech in self.techniques:
            for p in tech.searched:
                if p.kind != "choices":
                    raise UserError(f"{p.name} is a range; only choices can be enumerated")
                combos = [{**c, p.name: v} for c in combos for v in p.choices]
        return combos


def available() -> list[str]:
    return sorted(p.stem for p in SPACE_DIR.glob("*.yaml"))


def resolve_path(name: str) -> Path:
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"space file {name} does not exist")
        return path
    path = SPACE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown space {name!r}; valid spaces: {', '.join(available())}")
    return path


def _param(name: str, spec: dict[str, Any], where: str) -> Param:
    keys = set(spec)
    if keys == {"choices"}:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: {name}.choices must be a non-empty list")
        return Param(name, "choices", choices=tuple(choices))
    for kind in ("int", "float"):
        if kind in keys:
            extra = keys - {kind, "log", "step"}
            bounds = spec[kind]
            if extra or not isinstance(bounds, list) or len(bounds) != 2:
                raise UserError(f"{where}: {name} must look like {{{kind}: [low, high]}}")
            low, high = bounds
            if low > high:
                raise UserError(f"{where}: {name} has low {low} > high {high}")
            return Param(name, kind, low=low, high=high, log=bool(spec.get("log", False)),
                         step=spec.get("step"))
    raise UserError(
        f"{where}: {name} must be a value or one of {{choices: [...]}}, "
        f"{{int: [low, high]}}, {{float: [low, high]}}"
    )


def _check(tech: TechniqueSpace, where: str) -> None:
    """Build the technique's config at every choice and range end: bad values fail now."""
    defaults = {
        f.name: f.default for f in dataclasses.fields(compress.technique(tech.name).config_cls)
    }
    for p in tech.searched:
        key = p.name.split(".", 1)[1]
        if key not in defaults:
            valid = ", ".join(sorted(defaults))
            raise UserError(f"{where}: unknown key {p.name!r}; valid for {tech.name}: {valid}")
        for value in p.extremes():
            try:
                compress.make_config(tech.name, {**tech.fixed, key: value})
            except UserError as exc:
                raise UserError(f"{where}: {p.name}={value!r}: {exc}") from None
    try:
        compress.make_config(tech.name, dict(tech.fixed))
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def load_space(name: str) -> Space:
    path = resolve_path(name)
    where = str(path.name)
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError) as exc:
        raise UserError(f"{where}: cannot parse: {exc}".replace("\n", " ")) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("techniques"), dict):
        raise UserError(f"{where}: must contain a 'techniques:' mapping")
    unknown_top = set(doc) - {"techniques", "description"}
    if unknown_top:
        raise UserError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown_top))}")
    techniques = []
    for tech_name, params in doc["techniques"].items():
        compress.technique(tech_name)  # unknown technique -> UserError listing valid ones
        params = params or {}
        if not isinstance(params, dict):
            raise UserError(f"{where}: {tech_name} must map parameter names to values")
        fixed, searched = {}, []
        for key, spec in params.items():
            if isinstance(spec, dict):
                searched.append(_param(f"{tech_name}.{key}", spec, where))
            else:
                fixed[key] = spec
        tech = TechniqueSpace(tech_name, fixed, tuple(searched))
        _check(tech, where)
        techniques.append(tech)
    space = Space(path.stem, str(doc.get("description", "")), tuple(techniques))
    _check_combination(space, where)
    return space


def _check_combination(space: Space, where: str) -> None:
    """Validate pipelines with every technique of the space switched on, varying one searched
    value at a time. The rules only forbid combinations (each depends on one parameter at
    most), so when these pass, every sample does."""

    def largest(override: tuple[str, Any] | None) -> list[Any]:
        configs = []
        for tech in space.techniques:
            params = {k: v for k, v in tech.fixed.items() if k != "enabled"}
            for p in tech.searched:
                key = p.name.split(".", 1)[1]
                if key != "enabled":
                    params[key] = p.extremes()[0]
                if override and override[0] == p.name and key != "enabled":
                    params[key] = override[1]
            configs.append(compress.make_config(tech.name, params))
        return configs

    variants = [None] + [(p.name, v) for t in space.techniques for p in t.searched
                         for v in p.extremes()]
    for variant in variants:
        try:
            compress.validate_pipeline(largest(variant))
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None


def check_against_model(space: Space, model: nn.Module) -> None:
    """Each technique's own model limits (its `check_model` hook: Nyström landmarks within
    the token count, token merges that leave tokens, layer types), checked at every choice
    and range end the space allows, before anything runs."""
    for tech in space.techniques:
        searched = [(p.name.split(".", 1)[1], v) for p in tech.searched for v in p.extremes()
                    if not p.name.endswith(".enabled")]
        for key, value in [(None, None), *searched]:
            params = {**tech.fixed, "enabled": True} | ({key: value} if key else {})
            cfg = compress.make_config(tech.name, params)
            try:
                compress.check_model(cfg, model)
            except UserError as exc:
                raise UserError(f"{space.name}.yaml: {exc}") from None
