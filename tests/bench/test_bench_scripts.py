"""Smoke runs of the benchmark scripts (their real runs make docs/benchmarks.md's tables)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_CACHE, Shared
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow


def run_script(name: str, out: Path, *overrides: str, env: dict[str, str] | None = None
               ) -> dict:
    proc = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--quick", "--json", str(out),
                           *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_orchestration_benchmark_measures_overhead(tmp_path: Path) -> None:
    result = run_script("orchestration", tmp_path / "o.json")
    sweeps = {r["sweep"]: r for r in result["rows"]}
    assert set(sweeps) == {"ray-defaults", "trivial", "trivial-sqlite", "cheap"}
    for row in sweeps.values():
        assert row["tune_seconds"] > 0 and row["overhead_per_trial_s"] > 0
    assert sweeps["cheap"]["trials_ok"] == 6 and sweeps["cheap"]["body_seconds"] > 0
    for name in ("trivial", "trivial-sqlite", "cheap"):  # the driver probe saw the sweep
        row = sweeps[name]
        assert row["ask_ms_median"] > 0 and row["driver_cpu_seconds"] > 0
        assert row["writer_peak_backlog"] >= 1 and row["driver_rss_mb"] > 0


def test_real_shapes_benchmark_times_both_runtimes(tmp_path: Path) -> None:
    result = run_script("real_shapes", tmp_path / "r.json")
    assert len(result["rows"]) == 4
    for row in result["rows"]:
        assert set(row["speedup_torch"]) == {"1", "8"}
        assert all(v > 0 for v in row["speedup_torch"].values())
        for b, (lo, hi) in row["speedup_torch_ci"].items():  # the speed-up inside its interval
            assert lo <= row["speedup_torch"][b] <= hi
    assert result["cpu"] and result["isa"]
    assert isinstance(result["rows"][0]["speedup_ort"], dict)  # int8 exports and runs in ORT


def test_repeatability_benchmark_reports_intervals_with_and_without_the_lock(
        tmp_path: Path) -> None:
    out = tmp_path / "rep.json"
    proc = subprocess.run([sys.executable, "benchmarks/repeatability.py", "--quick",
                           "--output-dir", str(tmp_path), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert len(results) == 8 and {k.rsplit(" ", 1)[-1] for k in results} == {"on", "off"}
    for row in results.values():
        assert row["max_over_min"] >= 1.0 and len(row["trials"]) == 2
        for t in row["trials"]:
            assert t["latency_ratio_lo"] <= t["latency_ratio"] <= t["latency_ratio_hi"]


def test_interval_calibration_benchmark_reports_both_protocols(tmp_path: Path) -> None:
    result = run_script("interval_calibration", tmp_path / "c.json")
    for name in ("one_run", "rounds"):
        row = result[name]
        assert row["measurements"] == 4 and len(row["ratios"]) == 4
        assert 0 <= row["covered"] <= 4 and row["max_over_min"] >= 1.0
    assert result["cpu"] and result["isa"]


def test_early_stopping_benchmark_compares_the_scheduler_on_and_off(
        tmp_path: Path, shared: Shared) -> None:
    result = run_script("early_stopping", tmp_path / "e.json", f"cache_dir={SHARED_CACHE}",
                        f"ray.address={shared.ray_address}", env=shared.env)
    assert "search.sampler=random" in result["overrides"]  # both runs draw the same configs
    (run,) = result["runs"]
    assert run["seed"] == 0 and set(run["curves"]) == {"on", "observe"}
    for curve in run["curves"].values():
        assert len(curve["cpu"]) == len(curve["hv"]) == result["trials"]
        assert curve["cpu"] == sorted(curve["cpu"]) and curve["hv"] == sorted(curve["hv"])
    assert run["hv_ratio"] > 0 and run["on_total_cpu"] > 0 and run["off_total_cpu"] > 0
    assert "paired_compute_ratio_to_95" in run and "paired_on_cpu_to_95" in run
    assert 0 <= run["off_front_would_stop"] <= run["off_front"]
    assert 0 <= run["stopped"] <= result["trials"]


def test_samplers_benchmark_times_every_sampler_at_two_sizes(tmp_path: Path) -> None:
    result = run_script("samplers", tmp_path / "s.json")
    assert {r["sampler"] for r in result["rows"]} == {"nsga2", "tpe", "random", "gp"}
    for row in result["rows"]:
        assert set(row["ms_per_ask"]) == {"10", "30"}
        assert all(ms is not None and ms > 0 for ms in row["ms_per_ask"].values())


def test_many_nodes_benchmark_spreads_trials_over_its_loopback_nodes(tmp_path: Path) -> None:
    result = run_script("many_nodes", tmp_path / "m.json")
    assert result["nodes"] == 2 and len(result["rows"]) == 2
    for row in result["rows"]:
        assert row["trials_ok"] == 8 and row["nodes_used"] == 2  # both nodes ran trials
        assert row["trials_per_s"] > 0 and row["ask_ms_median"] > 0
    slept = [r for r in result["rows"] if r["trial_seconds"] > 0]
    assert slept and all(r["body_seconds"] == pytest.approx(8 * r["trial_seconds"])
                         for r in slept)


def test_storage_benchmark_times_every_backend(tmp_path: Path) -> None:
    result = run_script("storage", tmp_path / "s.json")
    cells = {(r["store"], r["backend"]) for r in result["rows"]}
    assert cells == {("optuna", "journal"), ("optuna", "sqlite"), ("optuna", "postgresql"),
                     ("mlflow", "sqlite"), ("mlflow", "postgresql")}
    for row in result["rows"]:
        assert row["first_ms"] > 0 and row["last_ms"] > 0 and row["total_s"] > 0
