"""Compression techniques: a registry of (typed frozen config, apply function) pairs, keyed
by the config's type (the config a pipeline holds says which technique applies it).

Each technique module registers itself with `@register(name, stage, config_cls, example)`,
its config a frozen dataclass deriving from `TechniqueConfig`; `MODULES` lists them (adding a
technique adds one line there). A config whose `enabled` is false is skipped here, for every
technique, so `apply` functions never check it. The machinery is private (`_registry`);
reusable layers are in `sweeper.compress.layers`.
A pipeline is a list of technique configs; `apply_pipeline` runs them in the fixed stage order
prune -> low-rank -> token merge -> recover -> quantize, whatever order the list has.

`apply(model, cfg, ctx) -> model` may modify and return `model` or return a new module.
When `ctx.structure_only` is true, apply must only reproduce the module structure (no
training, no calibration): `rebuild` uses this to load a saved compressed state_dict.
"""

from sweeper.compress._registry import (
    MODULES,
    NAMES,
    REGISTRY,
    STAGES,
    Technique,
    TechniqueConfig,
    TrialContext,
    apply_pipeline,
    check_model,
    display_fields,
    load_all,
    make_config,
    name_of,
    ordered,
    param,
    pipeline_from_dict,
    pipeline_to_dict,
    rebuild,
    register,
    technique,
    validate_pipeline,
)

__all__ = ["MODULES", "NAMES", "REGISTRY", "STAGES", "Technique", "TechniqueConfig",
           "TrialContext", "apply_pipeline", "check_model", "display_fields", "load_all",
           "make_config", "name_of", "ordered", "param", "pipeline_from_dict",
           "pipeline_to_dict", "rebuild", "register", "technique", "validate_pipeline"]
