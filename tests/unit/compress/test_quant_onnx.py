"""The onnxruntime runtime: exported graphs predict like the PyTorch models, with ORT kernels."""

from __future__ import annotations

import copy
import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from sweeper import compress
from sweeper.compress.nystrom import NystromConfig
from sweeper.compress.quantize import QuantizeConfig, apply
from sweeper.core.config import build_config
from sweeper.data.loading import load_splits
from sweeper.measure import runtime
from sweeper.measure.size import serialized_size
from sweeper.models.baseline import load_or_train_baseline
from sweeper.trial.run import TrialInputs, build_baseline, run_trial
from tests.conftest import tiny_overrides
from tests.helpers.models import context, images, tiny_vit

pytestmark = pytest.mark.slow  # each case exports a model with the dynamo exporter (~3 s)

CASES = {  # scheme -> (ORT kernel, max |ORT - torch| on logits of size ~0.3)
    "dynamic8": ("dynamic_int8", 5e-3),  # the same 7-bit activation codes as fbgemm
    "static8": ("static_int8", 5e-3),  # ~1e-7 float differences can flip one rounding
    "weight_only8": ("nbits", 1e-5),
    "weight_only4": ("nbits", 1e-5),
    "weight_only2": ("nbits", 1e-5),
    "weight_only3": ("packed_float", 1e-5),
}


@pytest.mark.parametrize("scheme", sorted(CASES))
def test_lowered_graph_matches_the_torch_model(scheme: str) -> None:
    kind, tol = CASES[scheme]
    base = tiny_vit()
    cfg = QuantizeConfig.from_params(scheme=scheme, symmetric=scheme != "weight_only2")  # asym too
    model = apply(copy.deepcopy(base), cfg, context(teacher=base))
    graph, report = runtime.onnx_bytes(model, 32)
    assert report.kernels == {kind: 9}
    assert report.simulated == (kind == "packed_float")
    ops = {n.op_type for n in onnx.load_from_string(graph).graph.node}
    assert {"nbits": "MatMulNBits", "dynamic_int8": "MatMulInteger",
            "static_int8": "QuantizeLinear", "packed_float": "BitShift"}[kind] in ops
    x = images(5, seed=3)
    with torch.no_grad():
        ref = model(x).numpy()
    out = runtime.predict(runtime.session(graph, torch.device("cpu"), 1), x.numpy())
    assert np.abs(out - ref).max() < tol
    # the graph is about as small as the packed PyTorch artifact (no float copy inside)
    assert len(graph) < 1.1 * serialized_size(model) + 8000


def test_float_export_with_nystrom_matches() -> None:
    base = tiny_vit()
    from sweeper.compress.nystrom import apply as nystrom

    model = nystrom(copy.deepcopy(base), NystromConfig(landmarks=8), context())
    graph, report = runtime.onnx_bytes(model, 32)
    assert report.kernels == {} and not report.simulated
    x = images(3, seed=3)
    with torch.no_grad():
        ref = model(x).numpy()
    out = runtime.predict(runtime.session(graph, torch.device("cpu"), 1), x.numpy())
    assert np.abs(out - ref).max() < 1e-4


def test_exported_graph_runs_without_sweeper(tmp_path: Path) -> None:
    model = apply(tiny_vit(), QuantizeConfig.from_params(scheme="weight_only4"), context())
    graph, _ = runtime.onnx_bytes(model, 32)
    path = tmp_path / "m.onnx"
    path.write_bytes(graph)
    x = images(2, seed=3)
    np.save(tmp_path / "x.npy", x.numpy())
    code = ("import sys; sys.modules['sweeper'] = None\n"  # importing sweeper now fails
            "import numpy as np, onnxruntime as ort\n"
            f"s = ort.InferenceSession({str(path)!r})\n"
            f"y = s.run(None, {{'input': np.load({str(tmp_path / 'x.npy')!r})}})[0]\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, y)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - ref).max() < 1e-5


@pytest.fixture(scope="module")
def ort_inputs(tmp_path_factory: pytest.TempPathFactory) -> TrialInputs:
    tmp = tmp_path_factory.mktemp("ort")
    cfg = build_config(tiny_overrides(tmp, "measure.runtime=onnxruntime"))
    splits = load_splits(cfg.data)
    base = load_or_train_baseline(cfg, splits, torch.device("cpu"), lambda _m: None)
    return TrialInputs(cfg, base.model.state_dict(), base.val_acc, serialized_size(base.model),
                       splits.num_classes, splits.train, splits.val, splits.preprocessing)


def test_trial_measures_latency_in_onnxruntime(ort_inputs: TrialInputs) -> None:
    result = run_trial(ort_inputs, [QuantizeConfig.from_params(scheme="weight_only4")])
    m, tags = result.metrics, result.tags
    assert tags["runtime"] == "onnxruntime" and tags["ort_kernels"] == "nbits:9"
    assert tags["ort_provider"] == "CPUExecutionProvider"
    # MatMulNBits runs the packed 4-bit weights: not simulated in this runtime
    assert tags["simulated"] == "false" and m["simulated"] == 0.0
    # float activations in both: ORT predicts what the PyTorch artifact predicts
    assert m["ort_val_acc"] == pytest.approx(m["val_acc"], abs=1e-6)  # float32 vs float
    assert m["onnx_size_bytes"] < 1.1 * m["torch_size_bytes"] + 8000
    # the size objective is what ships for this runtime: the ONNX graph `export` writes,
    # against the baseline's float ONNX graph
    assert m["size_bytes"] == m["onnx_size_bytes"] and tags["shipped_format"] == "onnx"
    assert m["size_ratio"] == pytest.approx(m["onnx_size_bytes"] / m["baseline_onnx_size_bytes"])
    model = compress.rebuild(build_baseline(ort_inputs),
                             [QuantizeConfig.from_params(scheme="weight_only4")],
                             torch.load(io.BytesIO(result.artifact), weights_only=True))
    assert len(runtime.onnx_bytes(model, ort_inputs.config.model.img_size)[0]) == m["size_bytes"]
    assert m["latency_ms"] > 0 and m["baseline_latency_ms"] > 0 and m["speedup_b8"] > 0


def test_int8_trial_in_onnxruntime_uses_int8_kernels(ort_inputs: TrialInputs) -> None:
    cfg = QuantizeConfig.from_params(scheme="static8", calibration_batches=2)
    result = run_trial(ort_inputs, [cfg])
    assert result.tags["ort_kernels"] == "static_int8:9"  # 2 blocks x 4 Linear + head
    assert result.tags["simulated"] == "false"
    assert result.metrics["ort_val_acc"] == pytest.approx(result.metrics["val_acc"], abs=0.01)


def test_weight_only_in_eager_torch_is_flagged_simulated(ort_inputs: TrialInputs) -> None:
    cfg = ort_inputs.config
    eager = dataclasses.replace(ort_inputs, config=dataclasses.replace(
        cfg, measure=dataclasses.replace(cfg.measure, runtime="torch")))
    result = run_trial(eager, [QuantizeConfig.from_params(scheme="weight_only4")])
    assert result.tags["simulated"] == "true" and result.metrics["simulated"] == 1.0
    assert "runtime" not in result.tags and "ort_val_acc" not in result.metrics
    # in eager PyTorch what ships is the state_dict
    assert result.metrics["size_bytes"] == result.metrics["torch_size_bytes"]
    assert result.tags["shipped_format"] == "torch state_dict"


@pytest.mark.parametrize(("bits", "group", "k", "block"), [
    (2, 0, 1536, 256),  # ORT caps 2-bit blocks at 256: the row's scale repeats over 6 blocks
    (4, 0, 1536, 512),
    (4, 48, 384, 16),  # a group of 48 = 3 blocks of 16 sharing one scale
    (8, 0, 72, None),  # 72 = 8 x 9: no power-of-two block >= 16 -> unpacked to float
    (3, 0, 384, None),  # no 3-bit kernel
])
def test_matmulnbits_block_choice(bits: int, group: int, k: int, block: int | None) -> None:
    from sweeper.compress.layers._packing import WeightSpec
    from sweeper.compress.onnx_lowering import _nbits_block

    assert _nbits_block(WeightSpec(bits, group), k) == block


def test_two_bit_rows_wider_than_256_run_in_matmulnbits() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 16))
    two_bit = QuantizeConfig.from_params(scheme="weight_only2")
    packed = apply(copy.deepcopy(model), two_bit, context())
    graph, report = runtime.onnx_bytes(packed, 32)
    assert report.kernels == {"nbits": 1}
    x = images(3, seed=3)
    with torch.no_grad():
        ref = packed(x).numpy()
    out = runtime.predict(runtime.session(graph, torch.device("cpu"), 1), x.numpy())
    assert np.abs(out - ref).max() < 1e-4
