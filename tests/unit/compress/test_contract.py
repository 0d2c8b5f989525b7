"""The contract every registered technique must keep (one suite, parametrised over the registry).

Every technique registers a small example config with itself; the suite runs each one.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from typing import Any

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from sweeper.compress import NAMES, TrialContext, load_all, make_config, rebuild, technique
from sweeper.measure.size import serialized_size, state_bytes
from tests.helpers.models import images, tiny_vit, train_data

load_all()


def example_config(name: str) -> Any:
    return technique(name).example


def _technique_params() -> list[str]:
    return sorted(NAMES)


def context() -> TrialContext:
    """Default context plus a few training images, for techniques that need data."""
    return TrialContext(train=train_data(16))


@pytest.fixture(scope="module")
def baseline() -> VisionTransformer:
    return tiny_vit()


@pytest.mark.parametrize("name", _technique_params())
class TestContract:
    def test_config_round_trips_through_dict(self, name: str) -> None:
        cfg = example_config(name)
        assert make_config(name, dataclasses.asdict(cfg)) == cfg
        assert type(cfg) is technique(name).config_cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.enabled = not cfg.enabled  # configs are frozen: safe to share and hash

    def test_shape_kept_and_size_not_larger(self, name: str, baseline: VisionTransformer) -> None:
        ctx = context()
        model = technique(name).apply(copy.deepcopy(baseline), example_config(name), ctx)
        x = images(3)
        with torch.no_grad():
            assert model.eval()(x).shape == baseline(x).shape
        assert serialized_size(model) <= serialized_size(baseline)
        # notes become MLflow tags and metrics
        for key, value in ctx.notes.items():
            assert isinstance(key, str) and isinstance(value, str | int | float | bool), key

    @torch.no_grad()
    def test_disabled_leaves_outputs_unchanged(
        self, name: str, baseline: VisionTransformer
    ) -> None:
        cfg = dataclasses.replace(example_config(name), enabled=False)
        model = technique(name).apply(copy.deepcopy(baseline), cfg, context())
        x = images(3)
        assert torch.equal(model.eval()(x), baseline(x))

    @pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
    def test_rebuild_from_saved_state(self, name: str, baseline: VisionTransformer) -> None:
        """structure_only reproduces the structure, so the saved state loads and matches."""
        cfg = example_config(name)
        model = technique(name).apply(copy.deepcopy(baseline), cfg, context()).eval()
        state = torch.load(io.BytesIO(state_bytes(model)))
        rebuilt = rebuild(copy.deepcopy(baseline), [cfg], state)
        x = images(3)
        with torch.no_grad():
            assert torch.equal(rebuilt(x), model(x))
