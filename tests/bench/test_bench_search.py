"""Smoke test of benchmarks/search_efficiency.py --quick: table, exhaustive front, samplers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_CACHE
from tests.helpers.paths import ROOT


@pytest.mark.slow
def test_quick_benchmark_scores_every_sampler_and_budget(tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "search_efficiency.py"), "--quick",
           "--json", str(out), "--table-dir", str(tmp_path / "tables"),
           "--output-dir", str(tmp_path), f"cache_dir={SHARED_CACHE}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["pipelines"] == len(report["table"]) == 48
    assert report["front"] and report["exhaustive_hypervolume"] >= report["baseline_hypervolume"]
    assert report["no_repeat_sampler"] is True  # as launch builds the samplers
    assert all(run["distinct"] == run["budget"] for run in report["runs"])
    cells = {(r["sampler"], r["budget"]) for r in report["runs"]}
    assert cells == {(s, b) for s in ("nsga2", "tpe", "gp", "random") for b in (4, 8)}
    for run in report["runs"]:
        assert 0 < run["fraction"] <= 1 + 1e-9, run
        assert 1 <= run["distinct"] <= run["budget"]
    for sampler, by_budget in report["summary"].items():
        for budget, cell in by_budget.items():
            assert 0 < cell["min"] <= cell["mean"] <= 1 + 1e-9, (sampler, budget)
    assert "nsga2" in proc.stdout and "exhaustive" in proc.stdout

    # a second run reuses the measured table instead of measuring again; --plain samplers
    # are the bare Optuna ones
    proc = subprocess.run([*cmd, "--samplers", "nsga2", "random", "--plain"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reused from" in proc.stdout
    report = json.loads(out.read_text())
    assert report["no_repeat_sampler"] is False
