"""Search spaces: `search_spaces/NAME.yaml` (or a YAML file path) -> an Optuna
define-by-run function -> a pipeline.

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
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from sweeper import compress
from sweeper.core.errors import UserError

# the repository's top-level search_spaces/, installed as the package sweeper.search_spaces
# (pyproject.toml maps it), so an editable install and a wheel find them alike
SPACE_DIR = Path(str(importlib.resources.files("sweeper.search_spaces")))
# what Optuna stores as a categorical choice
CHOICE_TYPES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One searched parameter, named `technique.key` in Optuna and in trial configs."""

    name: str
    kind: str  # choices | int | float
    choices: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    log: bool = False
    step: float | None = None

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choices":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

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
            what = "is not a file" if path.exists() else "does not exist"
            raise UserError(f"space file {name} {what}")
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
        for value in choices:
            _check_choice(name, value, where)
        return Param(name, "choices", choices=tuple(choices))
    for kind in ("int", "float"):
        if kind in keys and name.endswith(".enabled"):
            raise UserError(f"{where}: {name} must be true, false or {{choices: [false, true]}}")
        if kind in keys:
            extra = keys - {kind, "log", "step"}
            bounds = spec[kind]
            if extra or not isinstance(bounds, list) or len(bounds) != 2:
                raise UserError(f"{where}: {name} must look like {{{kind}: [low, high]}}")
            low, high = (_number(name, kind, b, where) for b in bounds)
            if low > high:
                raise UserError(f"{where}: {name} has low {low} > high {high}")
            log, step = _log_and_step(name, kind, low, spec, where)
            return Param(name, kind, low=low, high=high, log=log, step=step)
    raise UserError(
        f"{where}: {name} must be a value or one of {{choices: [...]}}, "
        f"{{int: [low, high]}}, {{float: [low, high]}}"
    )


def _check_choice(name: str, value: Any, where: str) -> None:
    if not isinstance(value, CHOICE_TYPES):
        raise UserError(f"{where}: {name}: choice {value!r} is not a number, string, boolean "
                        "or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: {name}: choice {value} is not a finite number")
    if name.endswith(".enabled") and not isinstance(value, bool):
        raise UserError(f"{where}: {name}: choice {value!r} is not true or false")


def _number(name: str, kind: str, value: Any, where: str) -> float:
    """A range bound: a finite number (an integer for int ranges). YAML reads `1e-4` (no
    dot) as text, the usual way a float bound goes wrong."""
    wanted = int if kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
        what = "an integer" if kind == "int" else "a number"
        raise UserError(f"{where}: {name}: bound {value!r} is not {what}{hint}")
    if not math.isfinite(value):
        raise UserError(f"{where}: {name}: bound {value} is not a finite number")
    return value


def _log_and_step(
    name: str, kind: str, low: float, spec: dict[str, Any], where: str
) -> tuple[bool, float | None]:
    """Optuna's rules, checked at load instead of failing in every trial."""
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise UserError(f"{where}: {name}: log must be true or false, not {log!r}")
    if log and low <= 0 or log and kind == "int" and low < 1:
        raise UserError(f"{where}: {name}: log: true needs low > 0 (>= 1 for int), not {low}")
    if step is None:
        return log, None
    if log:
        raise UserError(f"{where}: {name}: step and log: true cannot be combined")
    if isinstance(step, bool) or not isinstance(step, int if kind == "int" else (int, float)):
        raise UserError(f"{where}: {name}: step {step!r} is not "
                        f"{'an integer' if kind == 'int' else 'a number'}")
    if not (math.isfinite(step) and step > 0):
        raise UserError(f"{where}: {name}: step {step} must be positive")
    return log, step


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


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (YAML keeps the last one
    silently, so a typo'd copy would win without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict) or key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice or not a plain value",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_space(name: str) -> Space:
    path = resolve_path(name)
    where = str(path.name)
    doc = _read_document(path, where)
    techniques = tuple(_technique_space(tech_name, params, where)
                       for tech_name, params in doc["techniques"].items())
    space = Space(path.stem, str(doc.get("description", "")), techniques)
    _check_combination(space, where)
    return space


def _read_document(path: Path, where: str) -> dict[str, Any]:
    """The YAML file as a mapping with a non-empty `techniques:` mapping, or UserError."""
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: is not UTF-8 text (byte {exc.start})") from None
    except (yaml.YAMLError, OSError) as exc:
        raise UserError(f"{where}: cannot parse: {exc}".replace("\n", " ")) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("techniques"), dict):
        raise UserError(f"{where}: must contain a 'techniques:' mapping")
    unknown_top = set(doc) - {"techniques", "description"}
    if unknown_top:
        raise UserError(f"{where}: unknown top-level key(s) "
                        f"{', '.join(sorted(map(str, unknown_top)))}")
    if not isinstance(doc.get("description", ""), str):
        raise UserError(f"{where}: description must be text")
    if not doc["techniques"]:
        raise UserError(f"{where}: 'techniques:' is empty; name at least one technique")
    return doc


def _technique_space(tech_name: str, params: Any, where: str) -> TechniqueSpace:
    compress.technique(tech_name)  # unknown technique -> UserError listing valid ones
    params = params or {}
    if not isinstance(params, dict):
        raise UserError(f"{where}: {tech_name} must map parameter names to values")
    fixed, searched = {}, []
    for key, spec in params.items():
        if not isinstance(key, str):
            raise UserError(f"{where}: {tech_name}: parameter name {key!r} is not text")
        if isinstance(spec, dict):
            searched.append(_param(f"{tech_name}.{key}", spec, where))
        elif key == "enabled" and not isinstance(spec, bool):
            raise UserError(f"{where}: {tech_name}.enabled={spec!r} is not true or false")
        else:
            fixed[key] = spec
    tech = TechniqueSpace(tech_name, fixed, tuple(searched))
    _check(tech, where)
    return tech


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


def check_against_model(space: Space, model: nn.Module, device: str = "cpu") -> None:
    """Each technique's own model limits (its `check_model` hook: Nyström landmarks within
    the token count, token merges that leave tokens, layer types) and kernels on the trial
    `device` (its `check_device` hook), checked at every choice and range end the space
    allows, before anything runs."""
    for tech in space.techniques:
        searched = [(p.name.split(".", 1)[1], v) for p in tech.searched for v in p.extremes()
                    if not p.name.endswith(".enabled")]
        for key, value in [(None, None), *searched]:
            params = {**tech.fixed, "enabled": True} | ({key: value} if key else {})
            cfg = compress.make_config(tech.name, params)
            try:
                compress.check_model(cfg, model, device)
            except UserError as exc:
                raise UserError(f"{space.name}.yaml: {exc}") from None
