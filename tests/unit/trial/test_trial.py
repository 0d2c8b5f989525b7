from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from sweeper.compress.nystrom import NystromConfig
from sweeper.compress.quantize import QuantizeConfig
from sweeper.compress.recover import RecoverConfig
from sweeper.core.config import build_config
from sweeper.data.loading import load_splits
from sweeper.measure.hardware import cpu_model, isa_summary
from sweeper.measure.size import serialized_size
from sweeper.models.baseline import load_or_train_baseline
from sweeper.trial.run import TrialInputs, evaluate_artifact, run_trial
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> TrialInputs:
    tmp = tmp_path_factory.mktemp("trial")
    cfg = build_config(tiny_overrides(tmp))
    splits = load_splits(cfg.data)
    base = load_or_train_baseline(cfg, splits, torch.device("cpu"), lambda _m: None)
    return TrialInputs(cfg, base.model.state_dict(), base.val_acc, serialized_size(base.model),
                       splits.num_classes, splits.train, splits.val, splits.preprocessing)


def test_exact_nystrom_trial_keeps_accuracy_and_reports_every_metric(inputs) -> None:
    result = run_trial(inputs, [NystromConfig(landmarks=65, pinv_iters=12)])
    m = result.metrics
    assert abs(m["val_acc"] - inputs.baseline_val_acc) < 0.02
    assert m["size_ratio"] == pytest.approx(1.0, abs=0.02)
    for key in ("latency_ms", "baseline_latency_ms", "speedup", "latency_ratio",
                "latency_ms_b8", "speedup_b8", "size_mb", "params", "val_acc_drop"):
        assert m[key] > 0 or key == "val_acc_drop", key
    assert m["latency_ratio"] == pytest.approx(1 / m["speedup"])
    # paired timing: the ratio with its bootstrap interval, per batch size
    assert m["latency_ratio_lo"] <= m["latency_ratio"] <= m["latency_ratio_hi"]
    assert m["latency_ratio_lo_b8"] <= m["latency_ratio_b8"] <= m["latency_ratio_hi_b8"]
    assert m["latency_pairs"] >= 5 and m["latency_converged"] in (0.0, 1.0)
    assert m["latency_rounds"] >= 3
    assert m["quiet_wait_s"] >= 0 and m["measure_wait_s"] >= 0  # the node lock's waits
    assert result.tags["device"] == "cpu" and result.tags["simulated"] == "false"
    assert result.tags["nystrom_landmarks"] == "65"
    # the hardware fingerprint the timings depend on
    assert result.tags["cpu"] and result.tags["torch"] == torch.__version__
    assert result.tags["cpu_isa"] == isa_summary() and result.tags["cpu"] == cpu_model()
    assert len(result.tags["fingerprint"]) == 12


def test_int8_trial_is_smaller_and_its_artifact_reloads(inputs) -> None:
    pipeline = [QuantizeConfig(), NystromConfig(landmarks=16), RecoverConfig(epochs=1)]
    result = run_trial(inputs, pipeline)
    assert result.metrics["size_ratio"] < 0.5
    assert result.metrics["size_bytes"] == len(result.artifact)
    state = torch.load(io.BytesIO(result.artifact), weights_only=True)
    again = evaluate_artifact(inputs, pipeline, state, inputs.val)
    assert again == pytest.approx(result.metrics["val_acc"], abs=1e-9)


def test_trial_inputs_carry_no_test_split(inputs) -> None:
    assert not hasattr(inputs, "test")


def test_cuda_request_without_gpu_fails_clearly(inputs, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the failure path needs one without")
    cfg = build_config(tiny_overrides(tmp_path, "resources.device=cuda"))
    bad = TrialInputs(cfg, *[getattr(inputs, f) for f in (
        "baseline_state", "baseline_val_acc", "baseline_size_bytes", "num_classes", "train",
        "val", "preprocessing")])
    with pytest.raises(RuntimeError, match="no CUDA device|none is visible"):
        run_trial(bad, [])
