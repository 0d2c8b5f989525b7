"""LSQ: quantization-aware fine-tuning with learned step sizes (Esser et al., ICLR 2020).

During fine-tuning every nn.Linear becomes LsqLinear, which multiplies by a fake-quantized
weight: w_q = round(clamp(w / s, -Qn, Qp)) * s with the rounding's gradient passed straight
through, and a learned step s per output channel (or per group) whose gradient is scaled by
1 / sqrt(N * Qp) (N weights share the step), initialised at 2 * mean|w| / sqrt(Qp).
Asymmetric grids learn an integer-rounded zero point as well (as LSQ+). Weights only:
activations stay float, so the result is directly comparable with `weight_only` at the same
bits and packs into the same artifact (PackedLinear) once training ends.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sweeper.compress.layers._packed import PackedLinear
from sweeper.compress.layers._packing import WeightSpec, encode, to_half_scale


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by `factor`."""
    return x * factor + (x - x * factor).detach()


class LsqLinear(nn.Module):
    def __init__(self, linear: nn.Linear, spec: WeightSpec):
        super().__init__()
        self.spec = spec
        self.weight = linear.weight
        self.bias = linear.bias
        n, k = self.weight.shape
        self.group = spec.group(k)
        wg = self.weight.detach().float().view(n, k // self.group, self.group)
        if spec.symmetric:
            self.qn, self.qp = spec.half, spec.half - 1
            step = 2 * wg.abs().mean(-1) / math.sqrt(self.qp)
            self.zero = None
        else:  # LSQ+: the grid spans [min, max] of each group at the start
            self.qn, self.qp = 0, spec.levels - 1
            lo, hi = wg.amin(-1).clamp(max=0), wg.amax(-1).clamp(min=0)
            step = (hi - lo) / self.qp
            self.zero = nn.Parameter((-lo / step.clamp_min(1e-8)).clamp(0, self.qp))
        self.step = nn.Parameter(step.clamp_min(1e-8))
        self.grad_factor = 1.0 / math.sqrt(self.group * self.qp)

    def fake_weight(self) -> torch.Tensor:
        n, k = self.weight.shape
        s = scale_grad(self.step, self.grad_factor).clamp_min(1e-8).unsqueeze(-1)
        w = self.weight.view(n, k // self.group, self.group)
        if self.zero is None:
            q = round_ste(torch.clamp(w / s, -self.qn, self.qp))
            return (q * s).view(n, k)
        z = round_ste(scale_grad(self.zero, self.grad_factor).clamp(0, self.qp)).unsqueeze(-1)
        q = round_ste(torch.clamp(w / s + z, 0, self.qp))
        return ((q - z) * s).view(n, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fake_weight(), self.bias)

    @torch.no_grad()
    def to_packed(self) -> PackedLinear:
        """The trained grid as a packed layer: steps rounded to float16, codes recomputed on
        that grid (the shipped artifact is what gets measured)."""
        scale = to_half_scale(self.step.detach())
        zero = None
        if self.zero is not None:
            zero = self.zero.detach().round().clamp(0, self.qp).to(torch.uint8)
        codes = encode(self.weight.detach(), scale, zero, self.spec)
        return PackedLinear.from_codes(codes, scale, zero, self.bias, self.spec)
