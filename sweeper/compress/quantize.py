"""Quantization of the Linear layers: four methods, 2-8 bits.

method       bits  what runs                                             simulated
dynamic      8     int8 weights, activations quantized per batch          no
                   (torch.ao quantize_dynamic: fbgemm/x86 int8 GEMM, CPU)
static       8     int8 weights, activation scales calibrated on          no
                   `calibration_batches` training batches (_static: int8
                   GEMM with float in/out, CPU); LayerNorm, Softmax, GELU,
                   attention matmuls and patch embedding stay float
weight_only  2-8   weights packed at `bits` (per channel or per           yes in PyTorch
                   `group_size` inputs, symmetric or not), round-to-
                   nearest with a searched clip; activations float
lsq          2-8   like weight_only, but the grid is learned by           yes in PyTorch
                   `lsq_epochs` of quantization-aware fine-tuning (LSQ)

"Simulated" means the PyTorch forward unpacks the weight and multiplies in float: size and
accuracy are real, latency is float's. With `measure.runtime=onnxruntime` the packed 2/4/8-bit
weights run in ONNX Runtime's MatMulNBits low-bit kernel instead (sweeper.onnx_lowering), and
the trial records simulated=false. All methods quantize every nn.Linear (attention qkv/proj,
MLP, head, and Nyström attention's); the patch embedding, norms and embeddings stay float.

`scheme="lsq4"` is shorthand for method="lsq", bits=4 (`QuantizeConfig.from_params` fills them in
before the config is built; nothing rewrites a frozen field): a space file has no conditional
parameters, so one categorical over valid schemes is how it sweeps method x bits (dynamic and
static are int8 only).

`ctx.structure_only` rebuilds the quantized modules with empty buffers of the right shapes
(no calibration, no training), so a saved state_dict loads into them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sweeper.compress import TechniqueConfig, TrialContext, param, register
from sweeper.compress.layers import (
    FLOAT_OPS,
    LsqLinear,
    PackedLinear,
    StaticInt8Linear,
    WeightSpec,
    calibrate,
    check_groups,
    replace_linears,
)
from sweeper.core.checks import check_bool, check_choice, check_float, check_int
from sweeper.models.train import FitSettings, fit

METHODS = ("dynamic", "static", "weight_only", "lsq")
INT8_ONLY = ("dynamic", "static")  # methods whose kernels exist for 8 bits only
MIN_BITS, MAX_BITS = 2, 8
SCHEME = re.compile(rf"^({'|'.join(METHODS)})([0-9])$")


def parse_scheme(scheme: Any) -> tuple[str, int]:
    """"static8" -> ("static", 8)."""
    match = SCHEME.match(str(scheme))
    if not match:
        raise ValueError(
            f"scheme={scheme!r} must be a method followed by a bit width, e.g. "
            f"static8, weight_only4, lsq2 (methods: {', '.join(METHODS)})"
        )
    return match.group(1), int(match.group(2))


@dataclass(frozen=True)
class QuantizeConfig(TechniqueConfig):
    method: str = param("dynamic", bare=True, quiet=True)
    bits: int = param(8, headline="int{}")
    # shorthand for method + bits, e.g. "static8", "weight_only4", "lsq2"
    scheme: str = param("", bare=True, quiet=True)
    # weight_only/lsq: inputs per scale; 0 = one scale per output channel
    group_size: int = param(0, quiet=True)
    # weight_only/lsq: symmetric grid (else a zero point per group)
    symmetric: bool = param(True, quiet=True)
    calibration_batches: int = param(8, quiet=True)  # static: training batches observed
    lsq_epochs: int = param(3, quiet=True)  # lsq: quantization-aware fine-tuning epochs
    lr: float = param(1e-4, quiet=True)  # lsq: peak learning rate (AdamW, warm-up + cosine)
    # lsq: weight of distillation from the float baseline (0: labels only). Pure distillation
    # keeps the quantized model closest to the one it compresses: on the embedded default at
    # 4 bits, KL to the float logits 0.0005 against 0.0044 with kd_alpha=0.5, lr=5e-4
    kd_alpha: float = param(1.0, short="kd", quiet=True)

    @classmethod
    def from_params(cls, **params: Any) -> QuantizeConfig:
        """Build from a space's values, where `scheme` (e.g. "lsq4") stands for method and
        bits: they are filled in here, before the frozen config exists."""
        scheme = params.get("scheme")
        if scheme:
            method, bits = parse_scheme(scheme)
            params.setdefault("method", method)
            params.setdefault("bits", bits)
        return cls(**params)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scheme and parse_scheme(self.scheme) != (self.method, self.bits):
            raise ValueError(f"scheme={self.scheme!r} contradicts method={self.method!r}, "
                             f"bits={self.bits!r}")
        check_choice("method", self.method, METHODS)
        check_int("bits", self.bits, MIN_BITS, MAX_BITS)
        if self.method in INT8_ONLY and self.bits != 8:
            raise ValueError(
                f"{self.method} quantization is int8 only (bits=8), got bits={self.bits}"
            )
        check_int("group_size", self.group_size, 0, 1 << 16)
        check_int("calibration_batches", self.calibration_batches, 1, 10_000)
        check_int("lsq_epochs", self.lsq_epochs, 0, 1000)
        check_float("lr", self.lr, 0, 1, low_open=True)
        check_float("kd_alpha", self.kd_alpha, 0, 1)
        check_bool("symmetric", self.symmetric)

    def weight_spec(self) -> WeightSpec:
        return WeightSpec(self.bits, self.group_size, self.symmetric)


def _dynamic_int8(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao but still works in 2.14.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear}, dtype=torch.qint8, inplace=True
        )


def _static_int8(model: nn.Module, cfg: QuantizeConfig, ctx: TrialContext) -> int:

    if ctx.structure_only:
        return replace_linears(model, lambda lin, _n: StaticInt8Linear(lin.in_features,
                                                                       lin.out_features))
    if ctx.train is None:
        raise ValueError("static quantization needs training data to calibrate on")
    params, seen = calibrate(model, ctx.train, cfg.calibration_batches, ctx.batch_size,
                             ctx.preprocessing, ctx.seed)
    ctx.notes["calibration_images"] = seen
    ctx.notes["float_ops"] = FLOAT_OPS
    return replace_linears(model, lambda lin, n: StaticInt8Linear.from_linear(lin, *params[n]))


def _weight_only(model: nn.Module, cfg: QuantizeConfig, ctx: TrialContext) -> int:
    spec = cfg.weight_spec()
    check_groups(model, spec)
    make = PackedLinear.like if ctx.structure_only else PackedLinear.from_linear
    return replace_linears(model, lambda lin, _n: make(lin, spec))


def _lsq(model: nn.Module, cfg: QuantizeConfig, ctx: TrialContext) -> int:

    spec = cfg.weight_spec()
    check_groups(model, spec)
    if ctx.structure_only:
        return replace_linears(model, lambda lin, _n: PackedLinear.like(lin, spec))
    if ctx.train is None:
        raise ValueError("lsq needs training data for its quantization-aware fine-tuning")
    teacher = ctx.teacher if cfg.kd_alpha > 0 else None
    if cfg.kd_alpha > 0 and teacher is None:
        raise ValueError("lsq with kd_alpha > 0 needs the baseline as teacher")
    model.to(ctx.device)
    count = replace_linears(model, lambda lin, _n: LsqLinear(lin, spec))
    settings = FitSettings(
        epochs=cfg.lsq_epochs,
        batch_size=ctx.batch_size,
        lr=cfg.lr,
        weight_decay=0.0,  # decay would shrink the learned step sizes toward zero
        warmup_epochs=min(1.0, cfg.lsq_epochs / 4),
        seed=ctx.seed,
        kd_alpha=cfg.kd_alpha,
    )
    fit(model, ctx.train, settings, ctx.preprocessing, ctx.device, teacher=teacher,
        on_epoch=ctx.epoch_hook(model, cfg.lsq_epochs))
    lsq = [(n, m) for n, m in model.named_modules() if isinstance(m, LsqLinear)]
    for name, layer in lsq:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, layer.to_packed())
    ctx.notes["lsq_epochs"] = cfg.lsq_epochs
    return count


def _dynamic(model: nn.Module, cfg: QuantizeConfig, ctx: TrialContext) -> tuple[nn.Module, int]:
    model = _dynamic_int8(model.cpu())
    return model, sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
                      for m in model.modules())


def _static(model: nn.Module, cfg: QuantizeConfig, ctx: TrialContext) -> tuple[nn.Module, int]:
    model = model.cpu().eval()
    return model, _static_int8(model, cfg, ctx)


# one handler per method: (model, cfg, ctx) -> (quantized model, quantized layer count)
Handler = Callable[[nn.Module, QuantizeConfig, TrialContext], tuple[nn.Module, int]]
HANDLERS: dict[str, Handler] = {
    "dynamic": _dynamic,
    "static": _static,
    "weight_only": lambda model, cfg, ctx: (model, _weight_only(model, cfg, ctx)),
    "lsq": lambda model, cfg, ctx: (model, _lsq(model, cfg, ctx)),
}


def check_device(cfg: QuantizeConfig, device: str) -> None:
    if cfg.method in INT8_ONLY and device != "cpu":
        raise ValueError(
            f"{cfg.method} int8 runs on torch.ao's CPU kernels only, so a {device} trial would "
            f"time it on the CPU against a {device} baseline; sweep it on CPU trials "
            "(resources.gpus=0) or use weight_only / lsq on the GPU")


@register("quantize", "quantize", QuantizeConfig, example=QuantizeConfig(),
          check_device=check_device)
def apply(model: nn.Module, cfg: QuantizeConfig, ctx: TrialContext) -> nn.Module:
    """Quantize every nn.Linear in place (see the module docstring for what each method does)."""
    model, count = HANDLERS[cfg.method](model, cfg, ctx)
    if cfg.method in INT8_ONLY:
        ctx.runs_on = "cpu"  # torch.ao's int8 kernels exist on CPU only (check_device)
    else:
        ctx.notes["weight_format"] = cfg.weight_spec().describe()
    ctx.notes["quantize_method"] = cfg.method
    ctx.notes["quantize_bits"] = cfg.bits
    ctx.simulated = cfg.method not in INT8_ONLY
    ctx.notes["quantized_linears"] = count
    return model.eval()
