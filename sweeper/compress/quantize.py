"""Post-training quantization of the Linear layers.

"dynamic": int8 weights, activations quantized on the fly per batch
(`torch.ao.quantization.quantize_dynamic`). It runs real int8 kernels (fbgemm / x86), which
exist on CPU only, so the model is moved to CPU and its latency is measured there. It needs no
calibration data, so the same call rebuilds the structure for `rebuild`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from sweeper.compress import TrialContext, register

METHODS = ("dynamic",)  # later: "static", "weight_only", "lsq"
INT8_ONLY = ("dynamic",)  # methods whose kernels exist for 8 bits only
MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class QuantizeConfig:
    method: str = "dynamic"
    bits: int = 8
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} unknown; valid: {', '.join(METHODS)}")
        if not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise ValueError(f"bits must be an integer, got {self.bits!r}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits={self.bits} out of range {MIN_BITS}..{MAX_BITS}")
        if self.method in INT8_ONLY and self.bits != 8:
            raise ValueError(
                f"{self.method} quantization is int8 only (bits=8), got bits={self.bits}"
            )
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled must be true or false, got {self.enabled!r}")


def _dynamic_int8(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao but still works in 2.14.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear}, dtype=torch.qint8, inplace=True
        )


@register("quantize", "quantize", QuantizeConfig, example=QuantizeConfig())
def apply(model: nn.Module, cfg: QuantizeConfig, ctx: TrialContext) -> nn.Module:
    """Quantize every nn.Linear (Nyström attention's too), in place, on CPU (data-free)."""
    if not cfg.enabled:
        return model
    model = _dynamic_int8(model.cpu())
    ctx.notes["quantize_device"] = "cpu"
    ctx.notes["simulated"] = False
    ctx.notes["quantized_linears"] = sum(
        isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules()
    )
    return model
