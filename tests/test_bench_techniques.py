"""Smoke test of benchmarks/techniques.py --quick: every row runs through run_trial."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_CACHE

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "techniques.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "techniques.py"), "--quick",
         "--out", str(out), "--output-dir", str(tmp_path), f"cache_dir={SHARED_CACHE}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert {"prune-structured-30", "tome-r8", "distill-deit", "hybrid distill+int8",
            "hybrid prune+distill+int8"} <= set(rows)
    for row in rows.values():
        m = row["metrics"]
        assert 0 <= m["val_acc"] <= 1 and m["size_ratio"] > 0 and m["speedup"] > 0
    assert rows["prune-structured-30"]["metrics"]["size_ratio"] < 0.8
    assert rows["prune-unstructured-50"]["tags"]["stored_sparse"] == "True"
    size = {name: row["metrics"]["size_ratio"] for name, row in rows.items()}
    assert size["hybrid prune+distill+int8"] < min(size["int8"], size["prune-structured-30"])
    assert "hybrid distill+int8" in report["table"] and "speed-up b8" in report["table"]
