"""Low-bit weight format: integer codes packed into bytes, per-channel or grouped scales.

A weight W [N, K] (out, in) is split into groups of `group` consecutive inputs of one output
row (group = K is per output channel). Each group has a float16 scale and, when asymmetric, a
uint8 zero point; every weight becomes an unsigned code u in [0, 2**bits):

    symmetric:  W ~ (u - 2**(bits-1)) * scale
    asymmetric: W ~ (u - zero) * scale

Codes are packed row-major, LSB first, into a uint8 bit stream: code i occupies bits
[i*bits, (i+1)*bits), so for 2/4/8 bits a byte holds 8/bits whole codes, the first in its
lowest bits. That is ONNX Runtime's MatMulNBits layout (rows of K*bits/8 bytes, implicit zero
point 2**(bits-1) when symmetric), which lets the ONNX lowering reuse the bytes unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIN_SCALE = 2.0**-14  # smallest normal float16: scales are stored in half precision
CLIP_RATIOS = torch.linspace(1.0, 0.3, 29)  # PTQ searches the range clip per group (MSE)


@dataclass(frozen=True)
class WeightSpec:
    bits: int
    group_size: int = 0  # 0: one scale per output channel
    symmetric: bool = True

    @property
    def levels(self) -> int:
        return 2**self.bits

    @property
    def half(self) -> int:
        """Implicit zero point of the symmetric format (2**(bits-1))."""
        return 2 ** (self.bits - 1)

    def group(self, in_features: int) -> int:
        g = self.group_size or in_features
        if in_features % g:
            raise ValueError(
                f"group_size={self.group_size} does not divide in_features={in_features}"
            )
        return g

    def describe(self) -> str:
        grouping = f"group{self.group_size}" if self.group_size else "per_channel"
        return f"int{self.bits}-{grouping}-{'sym' if self.symmetric else 'asym'}"


def packed_bytes(numel: int, bits: int) -> int:
    return (numel * bits + 7) // 8


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes (< 2**bits) of any shape -> 1-D uint8 bit stream, LSB first."""
    flat = codes.reshape(-1).to(torch.int32)
    if 8 % bits == 0:  # whole codes per byte: one shift-and-sum per byte
        per = 8 // bits
        flat = F.pad(flat, (0, (-flat.numel()) % per)).view(-1, per)
        shifts = torch.arange(per, dtype=torch.int32, device=flat.device) * bits
        return (flat << shifts).sum(1).to(torch.uint8)
    # 3/5/6/7 bits straddle bytes: expand to single bits, regroup by eight
    stream = (flat.unsqueeze(1) >> torch.arange(bits, device=flat.device)) & 1
    stream = stream.reshape(-1)
    stream = F.pad(stream, (0, (-stream.numel()) % 8)).view(-1, 8)
    return (stream << torch.arange(8, device=flat.device)).sum(1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of `pack`: the first `numel` codes as int32."""
    data = packed.to(torch.int32)
    if 8 % bits == 0:
        shifts = torch.arange(8 // bits, dtype=torch.int32, device=data.device) * bits
        return ((data.unsqueeze(1) >> shifts) & (2**bits - 1)).reshape(-1)[:numel]
    stream = ((data.unsqueeze(1) >> torch.arange(8, device=data.device)) & 1).reshape(-1)
    stream = stream[: numel * bits].view(numel, bits)
    return (stream << torch.arange(bits, device=data.device)).sum(1, dtype=torch.int32)


def _grouped(w: torch.Tensor, spec: WeightSpec) -> torch.Tensor:
    n, k = w.shape
    g = spec.group(k)
    return w.reshape(n, k // g, g)


def to_half_scale(scale: torch.Tensor) -> torch.Tensor:
    """The stored (float16) scale, clamped so that it stays a positive normal number."""
    return scale.clamp(MIN_SCALE, 65504.0).half()


def encode(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: WeightSpec
) -> torch.Tensor:
    """Codes of weight `w` [N, K] on the grid given by `scale` [N, G] (and `zero`)."""
    wg = _grouped(w.float(), spec)
    s = scale.float().unsqueeze(-1)
    offset = spec.half if spec.symmetric else zero.float().unsqueeze(-1)  # type: ignore[union-attr]
    codes = torch.clamp(torch.round(wg / s) + offset, 0, spec.levels - 1)
    return codes.to(torch.uint8).reshape(w.shape)


def decode(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: WeightSpec
) -> torch.Tensor:
    """Float32 weight [N, K] from codes [N, K]."""
    cg = _grouped(codes.float(), spec)
    offset = spec.half if spec.symmetric else zero.float().unsqueeze(-1)  # type: ignore[union-attr]
    return ((cg - offset) * scale.float().unsqueeze(-1)).reshape(codes.shape)


def _candidates(
    wg: torch.Tensor, spec: WeightSpec
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (and zero points) of every clip ratio at once: [R, rows, groups]."""
    ratio = CLIP_RATIOS.to(wg.device).view(-1, 1, 1)
    if spec.symmetric:
        # positive side at the top code; the one extra negative level helps when clipping
        return to_half_scale(ratio * wg.abs().amax(-1) / (spec.half - 1)), None
    lo = ratio * wg.amin(-1).clamp(max=0)
    hi = ratio * wg.amax(-1).clamp(min=0)
    scale = to_half_scale((hi - lo) / (spec.levels - 1))
    zero = torch.clamp(torch.round(-lo / scale.float()), 0, spec.levels - 1)
    return scale, zero


def _best_grid(
    wg: torch.Tensor, spec: WeightSpec
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per group, the candidate grid with the least squared error (all ratios in one pass:
    a few large ops instead of hundreds of small ones)."""
    scale, zero = _candidates(wg, spec)
    s = scale.float().unsqueeze(-1)
    offset = spec.half if zero is None else zero.unsqueeze(-1)
    q = torch.clamp(torch.round(wg / s) + offset, 0, spec.levels - 1)
    err = ((q - offset) * s - wg).pow_(2).sum(-1)  # [R, rows, groups]
    best = err.argmin(0, keepdim=True)
    pick = lambda t: t.gather(0, best).squeeze(0)  # noqa: E731
    return pick(scale), None if zero is None else pick(zero).to(torch.uint8)


@torch.no_grad()
def quantize_weight(
    w: torch.Tensor, spec: WeightSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Round-to-nearest PTQ with the clipping ratio searched per group to minimise the squared
    error (as AWQ/GPTQ's clip search): plain min/max wastes most levels on outliers at 2-4
    bits. Returns codes [N, K] uint8, scale [N, G] float16, zero [N, G] uint8 or None."""
    w = w.detach().float()
    wg = _grouped(w, spec)
    rows = max(1, (1 << 22) // (len(CLIP_RATIOS) * w.shape[1]))  # ~16 MB of candidates
    grids = [_best_grid(wg[i : i + rows], spec) for i in range(0, len(wg), rows)]
    scale = torch.cat([g[0] for g in grids])
    zero = None if spec.symmetric else torch.cat([g[1] for g in grids])  # type: ignore[misc]
    return encode(w, scale, zero, spec), scale, zero
