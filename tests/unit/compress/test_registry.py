"""The registry's rules for technique configs: one base class, `enabled` keyword-only."""

from __future__ import annotations

import dataclasses

import pytest

from sweeper import compress
from sweeper.compress import TechniqueConfig, register
from sweeper.compress.prune import PruneConfig
from sweeper.core.errors import UserError


def test_every_registered_config_derives_from_the_base() -> None:
    for cls in compress.load_all():
        assert issubclass(cls, TechniqueConfig), cls.__name__


def test_a_config_outside_the_base_is_refused_at_registration() -> None:
    @dataclasses.dataclass(frozen=True)
    class Loose:
        enabled: bool = True

    with pytest.raises(TypeError, match="must derive from TechniqueConfig"):
        register("loose", "prune", Loose, Loose())


def test_enabled_is_keyword_only_and_checked() -> None:
    cfg = PruneConfig(0.5, "unstructured")  # a technique's own fields stay positional
    assert (cfg.ratio, cfg.kind, cfg.enabled) == (0.5, "unstructured", True)
    with pytest.raises(TypeError):
        PruneConfig(0.5, "unstructured", False)  # type: ignore[misc]
    with pytest.raises(UserError, match="enabled must be true or false"):
        PruneConfig(enabled="no")  # type: ignore[arg-type]


def test_only_distillation_into_a_new_student_replaces_the_model() -> None:
    replacing = {name for name, cls in compress.NAMES.items()
                 if cls.from_params(**_vit_student(name)).replaces_model}
    assert replacing == {"distill"}


def _vit_student(name: str) -> dict:
    return {"student": "vit", "depth": 1} if name == "distill" else {}
