"""The early-stopping benchmark's paired curve: the scheduler run's order and compute, the
no-scheduler run's measurements of the same configurations."""

from __future__ import annotations

import importlib.util
from typing import Any

from sweeper.results.hv_history import history
from tests.helpers.cluster import ROOT

_spec = importlib.util.spec_from_file_location("early_stopping",
                                               ROOT / "benchmarks" / "early_stopping.py")
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def result(acc: float, size: float, speedup: float, stopped: bool = False) -> dict[str, Any]:
    return {"val_acc": acc, "size_ratio": size, "speedup": speedup, "stopped": stopped,
            "feasible": True}


def run(keys: list[str], results: list[dict[str, Any]], cpu: list[float]) -> dict[str, Any]:
    return {"keys": keys, "results": results, "cpu": cpu, "baseline_val_acc": 0.9,
            "hv": history(results, 0.9), "front": [], "front_would_stop": [],
            "stopped": sum(r["stopped"] for r in results)}


def test_finished_trials_take_the_other_runs_measurement_stopped_ones_count_nothing() -> None:
    # same configurations a, b, c; "on" finished them in another order, stopped b, and timed
    # c slower (noise) than "off" did
    off = run(["a", "b", "c"], [result(0.85, 0.5, 1.0), result(0.8, 0.3, 1.2),
                                result(0.88, 0.35, 1.3)], [10, 30, 60])
    on = run(["c", "b", "a"], [result(0.88, 0.35, 1.1), result(0.7, 0.3, 1.2, stopped=True),
                               result(0.85, 0.5, 1.0)], [20, 25, 35])
    hv = bench.paired(on, off)
    assert hv == history([off["results"][2], on["results"][1], off["results"][0]], 0.9)
    assert hv[0] > on["hv"][0]  # c scored with off's faster timing
    assert hv[1] == hv[0]  # the stopped b adds nothing


def test_the_paired_crossing_is_reported_beside_the_plain_one() -> None:
    off = run(["a", "b"], [result(0.85, 0.5, 1.0), result(0.88, 0.35, 1.3)], [10, 40])
    on = run(["a", "b"], [result(0.85, 0.5, 1.0), result(0.88, 0.35, 1.2)], [10, 20])
    row = bench.compare(on, off)
    assert row["off_cpu_to_95"] == 40
    assert row["on_cpu_to_95"] is None  # timed 1.2x faster, not 1.3x: just under the line
    assert row["paired_on_cpu_to_95"] == 20 and row["paired_compute_ratio_to_95"] == 0.5
