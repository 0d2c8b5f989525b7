"""Static int8 post-training quantization of the Linear layers, calibrated on training data.

Each nn.Linear becomes StaticInt8Linear: int8 per-channel symmetric weights in 7 bits of
range (-63..63, see `WEIGHT_QMAX`) and a per-tensor uint8 activation scale fixed by
calibration. Its forward is fbgemm/oneDNN's
`quantized::linear_with_input_q_dq_qweight_dq_output_fp32`: the float input is quantized with
the calibrated scale, multiplied in int8 x int8 -> int32, and dequantized to float output, so
no output requantization error is added and neighbouring ops need no stubs.

LayerNorm, Softmax, GELU, the attention matmuls (q@k, attn@v) and the patch-embedding
convolution stay float. Those are the ops whose activations per-tensor min/max handles badly
in ViTs (FQ-ViT: inter-channel variation of LayerNorm inputs, power-law Softmax outputs);
keeping them float is the choice recorded in the trial's notes.

Calibration records each Linear's inputs in a histogram observer, which picks the clipping
range minimising the quantization error (plain min/max lets one outlier token set the step).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized.modules.linear import LinearPackedParams
from torch.ao.quantization.observer import HistogramObserver

from sweeper.data.preprocess import Preprocessing
from sweeper.data.split import Pair, Split, as_split

FLOAT_OPS = "layernorm,softmax,gelu,attention_matmuls,patch_embed_conv"
# x86 int8 GEMMs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 activations by int8
# weights with `vpmaddubsw`, which adds each pair of adjacent products into a *saturating*
# int16: 255 * 127 * 2 = 64770 overflows it and the result silently changes with the CPU
# (fbgemm and ONNX Runtime's MLAS alike; VNNI's `vpdpbusd` accumulates in int32 and cannot).
# Weights in -63..63 keep every pair within 255 * 63 * 2 = 32130 <= 32767, so the integer
# result is exact on every x86 CPU. This is ONNX Runtime's `reduce_range` for U8S8.
WEIGHT_QMAX = 63


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.ao quantized tensors are deprecated in favour of torchao but work in 2.14."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def quantize_weight_int8(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric qint8 weight, scale = max|w| / WEIGHT_QMAX: codes stay in
    -63..63 (no int16 saturation on any x86 CPU), and the ONNX lowering reuses them exactly."""
    w = w.detach().float().cpu()
    scale = (w.abs().amax(1) / WEIGHT_QMAX).clamp_min(1e-8).double()
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    with quiet():
        return torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)


class StaticInt8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        with quiet():
            self._packed_params = LinearPackedParams(dtype=torch.qint8)
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("input_zero_point", torch.tensor(0, dtype=torch.int64))
        self._qparams: tuple[float, int] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, scale: float, zero_point: int) -> StaticInt8Linear:
        layer = cls(linear.in_features, linear.out_features)
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        with quiet():
            layer._packed_params.set_weight_bias(quantize_weight_int8(linear.weight), bias)
        layer.input_scale.fill_(scale)
        layer.input_zero_point.fill_(zero_point)
        return layer

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(qint8 weight, float bias) as stored."""
        return self._packed_params._weight_bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._qparams is None:
            self._qparams = (float(self.input_scale), int(self.input_zero_point))
        scale, zero = self._qparams
        return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            x.float().contiguous(), scale, zero, self._packed_params._packed_params
        )

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        with quiet():
            super()._load_from_state_dict(*args, **kwargs)
        self._qparams = None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"input_scale={float(self.input_scale):.4g}, "
                f"input_zero_point={int(self.input_zero_point)}")


@torch.no_grad()
def calibrate(
    model: nn.Module,
    train: Split | Pair,
    n_batches: int,
    batch_size: int,
    preprocessing: Preprocessing,
    seed: int,
) -> tuple[dict[str, tuple[float, int]], int]:
    """Input (scale, zero_point) of every nn.Linear from `n_batches` shuffled training batches.

    Returns the parameters by qualified module name and the number of images seen.
    """
    observers = {name: _observer() for name, m in model.named_modules() if type(m) is nn.Linear}
    hooks = [model.get_submodule(name).register_forward_pre_hook(
        lambda _m, args, obs=obs: obs(args[0].detach().float().cpu()))
        for name, obs in observers.items()]
    gen = torch.Generator().manual_seed(seed)
    seen = 0
    model.eval()
    try:
        for i, (xb, _) in enumerate(as_split(train).batches(batch_size, shuffle=True,
                                                            generator=gen)):
            if i >= n_batches:
                break
            model(preprocessing.to_input(xb, "cpu"))
            seen += len(xb)
    finally:
        for h in hooks:
            h.remove()
    with quiet():
        qparams = {name: obs.calculate_qparams() for name, obs in observers.items()}
    return {name: (float(scale), int(zero)) for name, (scale, zero) in qparams.items()}, seen


def _observer() -> HistogramObserver:
    with quiet():  # torch.ao's deprecation notices
        return HistogramObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                 reduce_range=False)
