"""One device per latency ratio: a technique without a real kernel on the trials' device is
rejected at launch, with the reason, instead of being timed on another device."""

from __future__ import annotations

import pytest

from sweeper.compress import make_config
from sweeper.core.config import build_config
from sweeper.core.errors import UserError
from sweeper.models.vit import create_model
from sweeper.spaces.space import check_against_model, load_space


@pytest.mark.parametrize(
    ("overrides", "device"),
    [([], "cpu"), (["resources.gpus=1"], "cuda"), (["resources.device=cuda"], "cuda"),
     (["resources.gpus=1", "resources.device=cpu"], "cpu")],
)
def test_trial_device_follows_resources(overrides: list[str], device: str) -> None:
    assert build_config(overrides).resources.trial_device() == device


def test_int8_is_rejected_for_cuda_trials_but_not_for_cpu_ones() -> None:
    cfg = build_config([])
    model = create_model(cfg.model, 10)
    space = load_space("nystrom_m")  # sweeps dynamic int8 on and off
    check_against_model(space, model, "cpu")
    with pytest.raises(UserError, match="quantize: dynamic int8 runs on torch.ao's CPU"):
        check_against_model(space, model, "cuda")
    from sweeper.compress import check_model

    # weight-only quantization has a (simulated) path on the GPU: allowed
    check_model(make_config("quantize", {"scheme": "weight_only4"}), model, "cuda")
    with pytest.raises(UserError, match="static int8"):
        check_model(make_config("quantize", {"scheme": "static8"}), model, "cuda")
    # a disabled technique is never checked
    check_model(make_config("quantize", {"enabled": False}), model, "cuda")


def test_onnxruntime_on_cuda_trials_needs_its_cuda_provider() -> None:
    import onnxruntime as ort

    from sweeper.measure.runtime import check_providers

    check_providers("cpu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        check_providers("cuda")
    else:
        with pytest.raises(UserError, match="needs onnxruntime-gpu"):
            check_providers("cuda")


def test_fingerprint_changes_with_what_latency_depends_on() -> None:
    from sweeper.measure.hardware import fingerprint

    tags = {"cpu": "AMD EPYC", "cpu_isa": "avx2,avx512_vnni", "threads": "1", "device": "cpu",
            "torch": "2.14.1", "timm": "1.0.31"}
    same = fingerprint(tags)
    assert fingerprint(dict(tags, node="elsewhere")) == same  # the node name is not hardware
    for key, value in [("cpu_isa", "avx2"), ("threads", "2"), ("runtime", "onnxruntime"),
                       ("gpu", "NVIDIA H200")]:
        assert fingerprint(dict(tags, **{key: value})) != same, key


def test_front_keeps_the_trials_of_one_fingerprint_and_names_the_others() -> None:
    from sweeper.sweep.front import front_of, one_fingerprint

    def row(trial: str, fp: str, acc: float, ratio: float) -> dict:
        return {"trial": trial, "fingerprint": fp, "val_acc": acc, "size_mb": 1.0,
                "latency_ratio": ratio, "feasible": True}

    rows = [row("a", "x", 0.9, 0.8), row("b", "x", 0.8, 0.6), row("c", "x", 0.95, 1.2),
            # measured on another machine, where everything looks twice as fast
            row("d", "y", 0.9, 0.3), row("e", "y", 0.85, 0.2)]
    said: list[str] = []
    kept = one_fingerprint(rows, said.append)
    assert [r["trial"] for r in kept] == ["a", "b", "c"]
    assert len(said) == 1 and "2 trial(s) (d, e)" in said[0] and "fingerprint x" in said[0]
    baseline = {"trial": "baseline", "val_acc": 0.96, "size_mb": 2.0, "latency_ratio": 1.0}
    assert {r["trial"] for r in front_of(kept, baseline)} == {"a", "b", "c"}
    assert rows[3]["other_hardware"] and "other_hardware" not in rows[0]
    one = [row("a", "x", 0.9, 0.8)]
    assert one_fingerprint(one, said.append) == one and len(said) == 1
