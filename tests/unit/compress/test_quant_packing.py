"""Packed low-bit weights (weight_only, lsq) and static int8: real bytes, exact reloads."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from sweeper.compress import TrialContext, apply_pipeline, rebuild
from sweeper.compress.layers._lsq import LsqLinear
from sweeper.compress.layers._packed import PackedLinear
from sweeper.compress.layers._packing import WeightSpec, pack, quantize_weight, unpack
from sweeper.compress.layers._static import StaticInt8Linear
from sweeper.compress.nystrom import NystromConfig
from sweeper.compress.quantize import QuantizeConfig, apply
from sweeper.measure.size import serialized_size, state_bytes
from tests.helpers.models import context, images, tiny_vit


def packed_weight_bytes(model: nn.Module) -> int:
    return sum(m.packed.numel() for m in model.modules() if isinstance(m, PackedLinear))


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_unpack_round_trip(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (7, 37), generator=torch.Generator().manual_seed(bits))
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(unpack(packed, bits, codes.numel()).view_as(codes), codes.int())


def test_four_bit_layout_is_two_codes_per_byte_low_nibble_first() -> None:
    # the layout ONNX Runtime's MatMulNBits reads; the ONNX test checks the outputs match
    assert pack(torch.tensor([1, 2, 15, 0]), 4).tolist() == [0x21, 0x0F]
    assert pack(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]


def test_packed_bytes_scale_with_bits() -> None:
    """4-bit weights take half the bytes of 8-bit ones and 2-bit a quarter, in the file."""
    base = tiny_vit(embed_dim=192, num_heads=3)  # Linear weights dominate the saved bytes
    linear_weights = [f"{n}.weight" for n, m in base.named_modules() if isinstance(m, nn.Linear)]
    packed, sizes = {}, {}
    for bits in (8, 4, 2):
        model = apply(copy.deepcopy(base), QuantizeConfig.from_params(scheme=f"weight_only{bits}"),
                      TrialContext())
        packed[bits], sizes[bits] = packed_weight_bytes(model), serialized_size(model)
        assert not set(linear_weights) & set(model.state_dict())  # no float copy saved
    linear_params = sum(m.weight.numel() for m in base.modules() if isinstance(m, nn.Linear))
    assert packed[8] == linear_params  # one byte per 8-bit weight, nothing hidden
    assert packed[4] * 2 == packed[8] and packed[2] * 4 == packed[8]
    # the saved state_dict really shrinks by those bytes (scales, biases, norms, embeddings
    # and per-tensor records stay): observed 1,017,640 / 574,312 / 352,616 bytes against
    # 3,668,035 float
    assert sizes[8] - sizes[4] == pytest.approx(packed[8] - packed[4], rel=0.01)
    assert sizes[4] - sizes[2] == pytest.approx(packed[4] - packed[2], rel=0.01)
    assert sizes[8] < 0.3 * serialized_size(base)


def test_error_shrinks_with_bits_and_clip_search_helps() -> None:
    w = torch.randn(96, 128, generator=torch.Generator().manual_seed(0))
    w[0, 0] = 12.0  # one outlier: min/max would spend the whole range on it
    errors = {}
    for bits in (2, 3, 4, 8):
        spec = WeightSpec(bits)
        layer = PackedLinear.from_codes(*quantize_weight(w, spec), None, spec)
        errors[bits] = float((layer.dequantized_weight() - w).norm() / w.norm())
        naive_scale = (w.abs().amax(1) / (spec.half - 1)).half().float()
        naive = torch.clamp(torch.round(w / naive_scale[:, None]), -spec.half, spec.half - 1)
        naive_err = float((naive * naive_scale[:, None] - w).norm() / w.norm())
        assert errors[bits] <= naive_err + 1e-6
    assert errors[8] < errors[4] < errors[3] < errors[2] < 1.0
    assert errors[8] < 0.01


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
@pytest.mark.parametrize("cfg", [
    QuantizeConfig.from_params(scheme="weight_only8"),
    QuantizeConfig.from_params(scheme="weight_only4", group_size=16, symmetric=False),
    QuantizeConfig.from_params(scheme="weight_only3", group_size=32),
    QuantizeConfig.from_params(scheme="weight_only2", symmetric=False),
    QuantizeConfig.from_params(scheme="lsq4", lsq_epochs=1),
    QuantizeConfig.from_params(scheme="lsq2", lsq_epochs=1, symmetric=False, group_size=32),
    QuantizeConfig.from_params(scheme="static8", calibration_batches=2),
], ids=lambda c: f"{c.method}{c.bits}-g{c.group_size}-{'sym' if c.symmetric else 'asym'}")
def test_saved_artifact_reloads_to_identical_outputs(cfg: QuantizeConfig) -> None:
    base = tiny_vit()
    model = apply(copy.deepcopy(base), cfg, context(teacher=base))
    state = torch.load(io.BytesIO(state_bytes(model)), weights_only=True)  # as sweep.py does
    rebuilt = rebuild(copy.deepcopy(tiny_vit()), [cfg], state)
    x = images(4, seed=3)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    kind = StaticInt8Linear if cfg.method == "static" else PackedLinear
    assert sum(isinstance(m, kind) for m in rebuilt.modules()) == 9


@torch.no_grad()
def test_static_int8_close_to_float_and_keeps_norms_and_softmax_float() -> None:
    base = tiny_vit()
    ctx = context()
    model = apply(copy.deepcopy(base), QuantizeConfig.from_params(scheme="static8"), ctx)
    x = images(16, seed=3)
    ref, out = base(x), model(x)
    assert (out - ref).norm() / ref.norm() < 0.05
    assert ctx.simulated is False and ctx.notes["calibration_images"] == 32
    assert "layernorm" in ctx.notes["float_ops"] and "softmax" in ctx.notes["float_ops"]
    assert isinstance(model.blocks[0].norm1, nn.LayerNorm)


def test_lsq_step_init_gradient_scale_and_straight_through() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 8)
    with torch.no_grad():
        linear.weight[0, :2] = torch.tensor([3.0, -3.0])  # beyond the grid: clipped
    layer = LsqLinear(linear, WeightSpec(4))
    qp = 7
    expected = 2 * linear.weight.detach().abs().mean(1, keepdim=True) / math.sqrt(qp)
    assert torch.allclose(layer.step, expected)
    layer.fake_weight().sum().backward()
    w, s = linear.weight.detach(), layer.step.detach()
    v = w / s
    inside = (v >= -8) & (v <= qp)
    assert not inside[0, :2].any() and inside[1:].all()
    # straight-through: weights inside the range get the gradient unchanged, clipped get none
    assert torch.allclose(linear.weight.grad, inside.float())
    # d(sum w_q)/ds = sum(round(w/s) - w/s) inside, clip level outside; scaled 1/sqrt(N Qp)
    raw = torch.where(inside, torch.round(v) - v, torch.clamp(v, -8, qp).round())
    assert torch.allclose(layer.step.grad, raw.sum(1, keepdim=True) / math.sqrt(64 * qp),
                          atol=1e-5)


def test_lsq_packs_into_the_weight_only_format() -> None:
    base = tiny_vit()
    lsq = apply(copy.deepcopy(base), QuantizeConfig.from_params(scheme="lsq4", lsq_epochs=1),
                context(teacher=base))
    rtn = QuantizeConfig.from_params(scheme="weight_only4")
    ptq = apply(copy.deepcopy(base), rtn, TrialContext())
    assert list(lsq.state_dict()) == list(ptq.state_dict())
    assert serialized_size(lsq) == serialized_size(ptq)


@torch.no_grad()
def test_nystrom_then_weight_only_quantizes_its_linears() -> None:
    pipeline = [QuantizeConfig.from_params(scheme="weight_only4"), NystromConfig(landmarks=8)]
    model = apply_pipeline(tiny_vit(), pipeline, TrialContext())
    assert isinstance(model.blocks[0].attn.qkv, PackedLinear)
    assert model(images(2, seed=3)).shape == (2, 10)


def test_group_size_must_divide_every_layer() -> None:
    with pytest.raises(ValueError, match="group_size=48 does not divide in_features=64"):
        cfg = QuantizeConfig.from_params(scheme="weight_only4", group_size=48)
        apply(tiny_vit(), cfg, TrialContext())


def test_lsq_needs_its_teacher_for_distillation() -> None:
    with pytest.raises(ValueError, match="needs the baseline as teacher"):
        apply(tiny_vit(), QuantizeConfig.from_params(scheme="lsq4"), context(teacher=None))


def test_scheme_round_trips_and_sets_method_and_bits() -> None:
    cfg = QuantizeConfig.from_params(scheme="lsq3")
    assert (cfg.method, cfg.bits) == ("lsq", 3)
    assert QuantizeConfig(**{**cfg.__dict__}) == cfg


def test_quant_bits_space_sweeps_every_valid_method_and_bit_width() -> None:
    from sweeper.spaces.space import load_space

    space = load_space("quant_bits")
    (param,) = [p for t in space.techniques for p in t.searched]
    pipelines = [space.pipeline({param.name: c}) for c in param.choices]
    pairs = {(cfg.method, cfg.bits) for (cfg,) in pipelines}
    assert {("dynamic", 8), ("static", 8), ("weight_only", 2), ("weight_only", 4),
            ("weight_only", 8), ("lsq", 2), ("lsq", 4)} <= pairs
    assert all(cfg.bits == 8 for cfg, in pipelines if cfg.method in ("dynamic", "static"))
