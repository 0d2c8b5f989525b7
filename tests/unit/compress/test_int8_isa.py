"""Int8 results must not depend on the CPU's instruction set.

Without VNNI, x86 int8 GEMMs (fbgemm, ONNX Runtime's MLAS) add adjacent uint8 x int8 products
into a saturating int16 (`vpmaddubsw`); with VNNI they accumulate in int32. A model whose codes
can overflow int16 pairs therefore gives different answers on AVX2 and AVX-512 VNNI machines.
These tests check that our codes cannot overflow (by exact emulation, on any CPU) and run the
real kernels under each ISA this CPU can be capped to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from sweeper.compress.layers._static import WEIGHT_QMAX, StaticInt8Linear
from sweeper.compress.onnx_lowering import float_twin, lower
from sweeper.measure.hardware import cpu_flags
from tests.helpers.paths import ROOT

INT16 = (-32768, 32767)
# cap name for fbgemm, the same level for oneDNN, and the CPU flag it needs
CAPS = {"AVX2": ("AVX2", "avx2"), "AVX512": ("AVX512_CORE", "avx512bw"),
        "AVX512_E1": ("AVX512_CORE_VNNI", "avx512_vnni")}


def pairwise_u8s8(xq: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """xq [M, K] uint8 codes times wq [N, K] int8 codes as vpmaddubsw + vpmaddwd compute it:
    each pair of adjacent products saturates to int16 before the int32 sum."""
    prod = xq[:, None, :].astype(np.int64) * wq[None, :, :].astype(np.int64)
    if prod.shape[-1] % 2:
        prod = np.concatenate([prod, np.zeros_like(prod[..., :1])], axis=-1)
    pairs = prod[..., 0::2] + prod[..., 1::2]
    return np.clip(pairs, *INT16).sum(-1)


def _worst_case_codes(w_qmax: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    wq = rng.choice([-w_qmax, w_qmax], size=(8, 64))
    return np.full((2, 64), 255), wq


def test_the_emulation_sees_saturation_of_full_range_int8_weights() -> None:
    xq, wq = _worst_case_codes(127)
    assert not np.array_equal(pairwise_u8s8(xq, wq), xq @ wq.T)


def test_static_int8_codes_cannot_saturate_on_any_x86_cpu() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 8)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(8, 64) * torch.rand(8, 1) * 5)
    layer = StaticInt8Linear.from_linear(lin, 1 / 255, 0)
    q = layer.weight_bias()[0].int_repr().numpy()
    assert np.abs(q).max() == WEIGHT_QMAX  # the range is used, not wasted
    xq, wq = _worst_case_codes(int(np.abs(q).max()))
    assert np.array_equal(pairwise_u8s8(xq, wq), xq @ wq.T)
    xq = np.random.default_rng(1).integers(0, 256, size=(16, 64))
    assert np.array_equal(pairwise_u8s8(xq, q), xq @ q.T.astype(np.int64))


def test_dynamic_int8_activation_codes_cannot_saturate_on_any_x86_cpu() -> None:
    """torch's dynamic int8 weights reach -128, so activations must stay in 0..127 (fbgemm's
    reduce_range); the ONNX lowering quantizes them the same way, not with the 0..255 of
    DynamicQuantizeLinear."""
    _, wq = _worst_case_codes(128)
    for top, exact in ((255, False), (127, True)):
        xq = np.full((2, 64), top)
        assert np.array_equal(pairwise_u8s8(xq, wq), xq @ wq.T) is exact
    model = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(32, 8)),
                                                   {nn.Linear}, dtype=torch.qint8)
    twin, lowerings = float_twin(model)
    proto = torch.onnx.export(twin, (torch.randn(2, 32),), dynamo=True, opset_version=18,
                              verbose=False).model_proto
    lower(proto, lowerings)
    ops = [n.op_type for n in proto.graph.node]
    assert "DynamicQuantizeLinear" not in ops and ops.count("MatMulInteger") == 1
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    (clip,) = [n for n in proto.graph.node if n.op_type == "Clip"]
    assert float(consts[clip.input[2]]) == 127.0


def _caps_here() -> list[str]:
    flags = cpu_flags()
    return [cap for cap, (_onednn, flag) in CAPS.items() if flag in flags]


@pytest.mark.slow
def test_int8_kernels_are_exact_and_agree_under_every_isa_cap() -> None:
    """The real fbgemm / oneDNN / ONNX Runtime kernels, capped to each ISA this CPU has (an
    AVX-512 VNNI machine runs its AVX2 kernels too; an AVX2-only machine runs AVX2 only)."""
    caps = _caps_here()
    assert caps, "no x86 int8 ISA found in /proc/cpuinfo"
    results = {}
    for cap in caps:
        env = os.environ | {"FBGEMM_ENABLE_INSTRUCTIONS": cap, "ONEDNN_MAX_CPU_ISA": CAPS[cap][0],
                            "PYTHONPATH": str(ROOT)}
        probe = ROOT / "tests" / "helpers" / "int8_isa_probe.py"
        proc = subprocess.run([sys.executable, str(probe)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[cap] = json.loads(proc.stdout.strip().splitlines()[-1])
    for cap, r in results.items():
        for key in ("static_torch_vs_exact", "static_ort_vs_exact", "dynamic_torch_vs_exact",
                    "dynamic_ort_vs_exact"):
            assert r[key] < 1e-4, (cap, key, r[key])
        assert r["model_torch_vs_ort"] < 1e-3 and r["model_argmax_agree"] == 1.0, (cap, r)
