"""PackedLinear: a Linear whose weight is stored packed at 2-8 bits (see _packing).

The state_dict holds only the packed bytes, the float16 scales, the uint8 zero points and the
float bias, so `torch.save(state_dict)` is the real low-bit size. Eager PyTorch has no fast
low-bit GEMM on CPU (aten's int4/int8 weight-only kernels measured 30-100x slower than float
matmul here), so the forward unpacks the weight once into a float cache and runs a float
matmul: low precision is *simulated* for compute, and latency is that of float. The ONNX
lowering (sweeper.onnx_lowering) maps 2/4/8 bits to ONNX Runtime's MatMulNBits kernel instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sweeper.compress.layers._packing import (
    WeightSpec,
    decode,
    pack,
    packed_bytes,
    quantize_weight,
    unpack,
)


class PackedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, spec: WeightSpec, bias: bool):
        super().__init__()
        self.in_features, self.out_features, self.spec = in_features, out_features, spec
        groups = in_features // spec.group(in_features)
        self.register_buffer(
            "packed", torch.zeros(packed_bytes(in_features * out_features, spec.bits),
                                  dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, groups, dtype=torch.float16))
        if not spec.symmetric:
            self.register_buffer("zero", torch.zeros(out_features, groups, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._weight: torch.Tensor | None = None  # float cache, never saved

    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor | None,
        bias: torch.Tensor | None,
        spec: WeightSpec,
    ) -> PackedLinear:
        out_features, in_features = codes.shape
        layer = cls(in_features, out_features, spec, bias is not None)
        layer.packed.copy_(pack(codes, spec.bits))
        layer.scale.copy_(scale)
        if zero is not None:
            layer.zero.copy_(zero)
        if bias is not None:
            layer.bias.data.copy_(bias.detach())
        return layer.to(codes.device)

    @classmethod
    def from_linear(cls, linear: nn.Linear, spec: WeightSpec) -> PackedLinear:
        codes, scale, zero = quantize_weight(linear.weight, spec)
        return cls.from_codes(codes, scale, zero, linear.bias, spec)

    @classmethod
    def like(cls, linear: nn.Linear, spec: WeightSpec) -> PackedLinear:
        """Empty structure of the right shapes, for loading a saved state_dict."""
        return cls(linear.in_features, linear.out_features, spec, linear.bias is not None)

    def codes(self) -> torch.Tensor:
        numel = self.in_features * self.out_features
        return unpack(self.packed, self.spec.bits, numel).view(self.out_features, -1)

    def zero_point(self) -> torch.Tensor | None:
        return None if self.spec.symmetric else self.zero

    def dequantized_weight(self) -> torch.Tensor:
        return decode(self.codes(), self.scale, self.zero_point(), self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._weight
        if w is None or w.device != x.device or w.dtype != x.dtype:
            w = self._weight = self.dequantized_weight().to(x.device, x.dtype)
        return F.linear(x, w, self.bias)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._weight = None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{self.spec.describe()}")


def replace_linears(model: nn.Module, make: Any) -> int:
    """Swap every nn.Linear for `make(linear, qualified_name)`, in place; returns the count."""
    targets = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, make(linear, name))
    return len(targets)


def check_groups(model: nn.Module, spec: WeightSpec) -> None:
    """Fail before any work when group_size does not divide some layer's input width."""
    for name, m in model.named_modules():
        if type(m) is nn.Linear:
            try:
                spec.group(m.in_features)
            except ValueError as exc:
                raise ValueError(f"{exc} (layer {name})") from None
