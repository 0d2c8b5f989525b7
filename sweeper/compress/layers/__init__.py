"""Reusable layers the techniques build and the ONNX lowering reads, by these public names.

- `StaticInt8Linear`, `calibrate`, `quantize_weight_int8`: static int8 (7-bit weight codes,
  activations calibrated on training images) (`_static`)
- `PackedLinear`, `replace_linears`, `check_groups`: packed 2-8 bit weights (`_packed`)
- `WeightSpec`, `pack`, `unpack`, `quantize_weight`: the bit packing and code choice (`_packing`)
- `LsqLinear`: learned step size quantization-aware training (`_lsq`)
- `LowRankLinear`: a rank-r stand-in for a Linear layer (`_lowrank`)
- `ToMeAttention`, `merge_tokens`: attention that merges tokens (`_tome_attention`)
"""

from sweeper.compress.layers._lowrank import LowRankLinear
from sweeper.compress.layers._lsq import LsqLinear
from sweeper.compress.layers._packed import PackedLinear, check_groups, replace_linears
from sweeper.compress.layers._packing import WeightSpec, pack, quantize_weight, unpack
from sweeper.compress.layers._static import (
    FLOAT_OPS,
    StaticInt8Linear,
    calibrate,
    quantize_weight_int8,
    quiet,
)
from sweeper.compress.layers._tome_attention import ToMeAttention, merge_tokens

__all__ = ["FLOAT_OPS", "LowRankLinear", "LsqLinear", "PackedLinear", "StaticInt8Linear",
           "ToMeAttention", "WeightSpec", "calibrate", "check_groups", "merge_tokens", "pack",
           "quantize_weight", "quantize_weight_int8", "quiet", "replace_linears", "unpack"]
