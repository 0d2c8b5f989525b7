"""Pruning: structured removes heads and hidden units for real (fewer parameters, bytes,
milliseconds); unstructured zeroes weights for real and stores them sparse only when smaller."""

from __future__ import annotations

import copy
import functools
import io
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sweeper.compress import TrialContext, apply_pipeline, make_config, rebuild
from sweeper.compress._structured import check_block, prunable_params
from sweeper.compress.prune import PruneConfig, apply
from sweeper.compress.recover import RecoverConfig
from sweeper.compress.recover import apply as recover
from sweeper.core.errors import UserError
from sweeper.measure.latency import paired_ratio, torch_timer
from sweeper.measure.size import serialized_size, state_bytes
from sweeper.models.vit import count_parameters
from tests.helpers.models import images, tiny_vit

vit = functools.partial(tiny_vit, mlp_ratio=2.0)


def flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def prunable(model: nn.Module) -> int:
    return sum(prunable_params(*check_block(blk)) for blk in model.blocks)


def reload(model: nn.Module, baseline: nn.Module, cfg: PruneConfig) -> nn.Module:
    state = torch.load(io.BytesIO(state_bytes(model)), weights_only=True)
    return rebuild(copy.deepcopy(baseline), [cfg], state)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"ratio": 1.5}, "ratio=1.5 is out of range [0, 0.95]"),
     ({"ratio": -0.1}, "out of range"),
     ({"kind": "random"}, "kind='random' is not valid; choose one of: structured, unstructured"),
     ({"ratio": True}, "ratio must be a finite number")],
)
def test_config_rejects_bad_values(params: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_config("prune", params)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7])
def test_structured_ratio_is_the_fraction_of_block_parameters_removed(ratio: float) -> None:
    base = vit()
    ctx = TrialContext()
    model = apply(copy.deepcopy(base), PruneConfig(ratio=ratio), ctx)
    kept = prunable(model) / prunable(base)
    assert kept == pytest.approx(1 - ratio, abs=0.01)
    assert ctx.notes["prune_prunable_removed"] == pytest.approx(1 - kept)
    whole = count_parameters(model) / count_parameters(base)
    assert ctx.notes["params_removed_fraction"] == pytest.approx(1 - whole)
    assert serialized_size(model) < serialized_size(base) * (1 - 0.8 * ratio)


def test_structured_keeps_timm_attention_bookkeeping_right() -> None:
    model = apply(vit(num_heads=4), PruneConfig(ratio=0.5), TrialContext())
    for blk in model.blocks:
        attn = blk.attn
        assert attn.num_heads == 2 and attn.head_dim == 16 and attn.attn_dim == 32
        assert attn.scale == 16**-0.5
        assert attn.qkv.weight.shape == (3 * 32, 64) and attn.qkv.bias.shape == (96,)
        assert attn.proj.weight.shape == (64, 32)
        assert blk.mlp.fc1.out_features == blk.mlp.fc2.in_features < 128
    for fused in (True, False):  # timm's SDPA and its explicit-softmax path both run
        for blk in model.blocks:
            blk.attn.fused_attn = fused
        with torch.no_grad():
            assert model(images(3)).shape == (3, 10)


def test_structured_removes_the_least_important_head_and_keeps_one() -> None:
    base = vit(num_heads=4, depth=1)
    attn = base.blocks[0].attn
    with torch.no_grad():  # head 2 contributes nothing: zero rows in q, k, v and cols in proj
        for part in range(3):
            attn.qkv.weight[part * 64 + 32 : part * 64 + 48] = 0
        attn.proj.weight[:, 32:48] = 0
    x = images(3)
    with torch.no_grad():
        expected = base(x)
        model = apply(copy.deepcopy(base), PruneConfig(ratio=0.25), TrialContext())
        assert model.blocks[0].attn.num_heads == 3
        # Only a silent head went: the attention output is the same (MLP units did go too).
        kept = copy.deepcopy(base)
        kept.blocks[0].mlp = model.blocks[0].mlp
        assert torch.allclose(model(x), kept(x), atol=1e-5)
        assert not torch.allclose(model(x), expected, atol=1e-5)
    most = apply(copy.deepcopy(base), PruneConfig(ratio=0.95), TrialContext())
    assert most.blocks[0].attn.num_heads == 1 and most.blocks[0].mlp.fc1.out_features >= 1


def test_structured_is_deterministic_and_rebuilds() -> None:
    base, cfg = vit(), PruneConfig(ratio=0.4)
    a = apply(copy.deepcopy(base), cfg, TrialContext())
    b = apply(copy.deepcopy(base), cfg, TrialContext(structure_only=True))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    x = images(3)
    with torch.no_grad():
        assert torch.equal(reload(a, base, cfg)(x), a(x))


def test_structured_lowers_latency() -> None:
    """Behaviour, not a target: half the heads and hidden units -> half the FLOPs and a
    measurably faster model. Timed in interleaved pairs (median of per-pair ratios), so a
    neighbour's load on a shared CI core lands on both halves of a pair alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = vit(embed_dim=256, num_heads=8, depth=2)
        model = apply(copy.deepcopy(base), PruneConfig(ratio=0.5), TrialContext())
        x = images(8)
        assert flops(model, x) < 0.55 * flops(base, x)
        timed = paired_ratio(torch_timer(model, x), torch_timer(base, x), warmup=3, min_pairs=20,
                             max_seconds=5)
    finally:
        torch.set_num_threads(threads)
    assert timed.ratio < 0.85, timed


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.9])
def test_unstructured_zeroes_weights_and_leaves_no_mask(ratio: float) -> None:
    base = vit()
    model = apply(copy.deepcopy(base), PruneConfig(ratio=ratio, kind="unstructured"),
                  TrialContext())
    for name, layer in model.blocks.named_modules():
        if isinstance(layer, nn.Linear):
            zero = (layer.weight == 0).float().mean().item()
            assert zero == pytest.approx(ratio, abs=1 / layer.weight.numel()), name
            assert type(layer) is nn.Linear
    assert count_parameters(model) == count_parameters(base)
    assert not any("mask" in name for name, _ in model.named_buffers())
    assert not any("orig" in name for name, _ in model.named_parameters())


def test_unstructured_stores_sparse_only_when_smaller() -> None:
    base = vit()
    low_ctx, high_ctx = TrialContext(), TrialContext()
    low = apply(copy.deepcopy(base), PruneConfig(ratio=0.02, kind="unstructured"), low_ctx)
    high = apply(copy.deepcopy(base), PruneConfig(ratio=0.8, kind="unstructured"), high_ctx)
    assert low_ctx.notes["stored_sparse"] is False
    assert serialized_size(low) == serialized_size(base)
    assert set(low.state_dict()) == set(base.state_dict())
    assert high_ctx.notes["stored_sparse"] is True
    assert serialized_size(high) < 0.45 * serialized_size(base)
    assert any(key.endswith("weight_bitmask") for key in high.state_dict())
    x = images(3)
    cfg = PruneConfig(ratio=0.8, kind="unstructured")
    with torch.no_grad():
        assert torch.equal(reload(high, base, cfg)(x), high(x))


def test_unstructured_zeros_survive_recovery() -> None:
    gen = torch.Generator().manual_seed(0)
    train = (torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen),
             torch.randint(0, 10, (64,), generator=gen))
    base = vit()
    pipeline = [RecoverConfig(epochs=2, lr=1e-3), PruneConfig(ratio=0.5, kind="unstructured")]
    model = apply_pipeline(copy.deepcopy(base), pipeline, TrialContext(train=train))
    layers = [m for m in model.blocks.modules() if isinstance(m, nn.Linear)]
    assert all((layer.weight == 0).float().mean() == 0.5 for layer in layers)
    trained = model.blocks[0].mlp.fc1.weight
    assert not torch.equal(trained[trained != 0], base.blocks[0].mlp.fc1.weight[trained != 0])
    # Also across a deep copy between pruning and training (new Parameters, no tensor hooks).
    pruned = apply(copy.deepcopy(base), PruneConfig(ratio=0.5, kind="unstructured"),
                   TrialContext())
    copied = recover(copy.deepcopy(pruned), RecoverConfig(epochs=1, lr=1e-3),
                     TrialContext(train=train))
    assert (copied.blocks[1].attn.qkv.weight == 0).float().mean() == 0.5


@pytest.mark.parametrize("kind", ["structured", "unstructured"])
def test_importance_histogram_artifact(kind: str, tmp_path) -> None:
    ctx = TrialContext(artifacts_dir=tmp_path)
    apply(vit(), PruneConfig(ratio=0.3, kind=kind), ctx)
    files = ctx.notes["prune_histogram"].split(",")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    data = json.loads((tmp_path / f"prune_{kind}_importance.json").read_text())
    assert sum(data["removed"]) + data["zeros"]["removed"] > 0 and sum(data["kept"]) > 0
    assert (tmp_path / f"prune_{kind}_importance.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_structured_30_percent_with_recovery_within_one_point(default_baseline) -> None:
    """The issue's bar on the embedded default: 30% of all parameters out (ratio 0.33 of the
    blocks' Linear parameters), recovered by distillation from the baseline, validation
    accuracy within 1 point."""
    from sweeper.compress.distill import DistillConfig
    from sweeper.models.train import accuracy

    cfg, splits, base = default_baseline.cfg, default_baseline.splits, default_baseline.baseline
    ctx = TrialContext(train=splits.train, preprocessing=splits.preprocessing,
                       batch_size=cfg.train.batch_size, teacher=base.model)
    pipeline = [PruneConfig(ratio=0.33), DistillConfig(alpha=0.5, epochs=3, lr=5e-4)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible: measured at 1 thread, 0 points lost
    try:
        model = apply_pipeline(copy.deepcopy(base.model), pipeline, ctx)
    finally:
        torch.set_num_threads(threads)
    assert ctx.notes["params_removed_fraction"] >= 0.30
    acc = accuracy(model, splits.val, splits.preprocessing, torch.device("cpu"))
    assert acc >= base.val_acc - 0.01, (acc, base.val_acc)


def test_sparse_storage_is_labelled_as_readable_by_sweeper_only() -> None:
    from sweeper.trial.run import _tags

    ctx = TrialContext()
    apply(vit(), PruneConfig(ratio=0.8, kind="unstructured"), ctx)
    assert _tags(torch.device("cpu"), 1, ctx, onnx=False)["shipped_format"] == (
        "sweeper sparse state_dict (loads with sweeper only)")
    assert _tags(torch.device("cpu"), 1, ctx, onnx=True)["shipped_format"] == "onnx"
    plain = TrialContext()
    assert _tags(torch.device("cpu"), 1, plain, onnx=False)["shipped_format"] == (
        "torch state_dict")
