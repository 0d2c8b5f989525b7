"""Hybrid pipelines: one configuration, the fixed stage order whatever the list order,
invalid combinations rejected before anything runs, and the new spaces load and sample."""

from __future__ import annotations

import copy
import functools
import io

import optuna
import pytest
import torch

from sweeper import compress
from sweeper.compress import apply_pipeline, rebuild, validate_pipeline
from sweeper.compress.distill import DistillConfig
from sweeper.compress.nystrom import NystromAttention, NystromConfig
from sweeper.compress.prune import PruneConfig
from sweeper.compress.quantize import QuantizeConfig
from sweeper.compress.recover import RecoverConfig
from sweeper.compress.tome import ToMeBlock, ToMeConfig
from sweeper.core.errors import UserError
from sweeper.measure.size import state_bytes
from sweeper.spaces.space import load_space
from tests.helpers.models import context, tiny_vit

QLinear = torch.ao.nn.quantized.dynamic.Linear
NEW_SPACES = ("prune_ratio", "kd_temperature", "token_merge", "hybrid")


vit = functools.partial(tiny_vit, mlp_ratio=2.0)


def first_note(notes: dict, prefix: str) -> int:
    return next(i for i, key in enumerate(notes) if key.startswith(prefix))


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
def test_out_of_order_pipeline_runs_in_stage_order_and_rebuilds() -> None:
    base = vit()
    pipeline = [QuantizeConfig(), DistillConfig(alpha=0.5, epochs=1), ToMeConfig(r=4),
                NystromConfig(landmarks=8), PruneConfig(ratio=0.3)]
    validate_pipeline(pipeline)
    assert [compress.name_of(c) for c in compress.ordered(pipeline)] == [
        "prune", "nystrom", "tome", "distill", "quantize"]
    ctx = context(base)
    model = apply_pipeline(copy.deepcopy(base), pipeline, ctx)
    # Notes are recorded as each technique runs: their order is the order applied.
    order = [first_note(ctx.notes, p) for p in ("prune", "nystrom", "tome", "distill", "quant")]
    assert order == sorted(order)
    blk = model.blocks[0]
    assert isinstance(blk, ToMeBlock) and isinstance(blk.attn, NystromAttention)
    assert blk.attn.num_heads == 3  # pruned before Nyström wrapped the attention
    assert isinstance(blk.attn.qkv, QLinear) and isinstance(blk.mlp.fc1, QLinear)
    x = torch.randn(2, 3, 32, 32)
    state = torch.load(io.BytesIO(state_bytes(model)), weights_only=False)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        assert torch.equal(rebuild(copy.deepcopy(base), pipeline, state)(x), model(x))


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [([PruneConfig(), DistillConfig(student="vit", depth=1)],
      "distill trains a new model from scratch and would discard prune"),
     ([ToMeConfig(r=2), DistillConfig(student="vit", kind="deit", alpha=0.5)],
      "would discard tome"),
     ([RecoverConfig(epochs=1), DistillConfig()], "recover and distill both train"),
     ([PruneConfig(ratio=0.1), PruneConfig(ratio=0.2)], "prune given more than once")],
)
def test_invalid_combinations_are_rejected_with_a_clear_message(pipeline, message) -> None:
    with pytest.raises(UserError, match=message):
        validate_pipeline(pipeline)


def test_valid_and_disabled_combinations_pass() -> None:
    validate_pipeline([DistillConfig(student="vit", depth=1), QuantizeConfig()])
    validate_pipeline([PruneConfig(enabled=False), DistillConfig(student="vit", depth=1)])
    validate_pipeline([PruneConfig(), NystromConfig(), ToMeConfig(), DistillConfig(),
                       QuantizeConfig()])


@pytest.mark.parametrize("name", NEW_SPACES)
def test_new_spaces_sample_valid_ordered_pipelines(name: str) -> None:
    space = load_space(name)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[tuple[str, ...]] = set()
    for _ in range(40):
        trial = study.ask()
        space.define(trial)
        pipeline = space.pipeline(dict(trial.params))
        validate_pipeline(pipeline)
        names = tuple(compress.name_of(c) for c in compress.ordered(pipeline))
        stages = [compress.technique(n).stage for n in names]
        assert stages == sorted(stages, key=compress.STAGES.index)
        seen.add(names)
        study.tell(trial, [0.5, 1.0, 1.0])
    if name == "hybrid":  # the toggles really vary the combination
        assert len(seen) > 10


@pytest.mark.parametrize("scheme", ["dynamic8", "static8"])
def test_unstructured_prune_then_int8_runs_and_rebuilds(scheme: str) -> None:
    """torch.ao copies the sparse layer's forward hook onto the int8 layer, whose weight is a
    packed tensor, not a Parameter: the hook must leave it alone (it raised before)."""
    base = vit()
    pipeline = [PruneConfig(ratio=0.5, kind="unstructured"),
                QuantizeConfig.from_params(scheme=scheme)]
    model = apply_pipeline(copy.deepcopy(base), pipeline, context(base))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    rebuilt = rebuild(copy.deepcopy(base), pipeline,
                      torch.load(io.BytesIO(state_bytes(model)), weights_only=False))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out)
