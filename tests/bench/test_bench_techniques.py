"""Smoke test of benchmarks/techniques.py --quick: every row runs through run_trial."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_CACHE
from tests.helpers.paths import ROOT


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
    # every row the technique table must have
    assert {"int8 dynamic", "int8 static", "4-bit weights", "2-bit weights", "lsq 4-bit",
            "nystrom m=8", "nystrom m=32+recover", "prune unstructured 10%",
            "prune structured 50%", "tome r=8", "distill soft T=1", "distill soft T=4",
            "hybrid distill T=4+int8", "hybrid prune 30%+distill+int8"} <= set(rows)
    for row in rows.values():
        m = row["metrics"]
        assert 0 <= m["val_acc"] <= 1 and 0 <= m["test_acc"] <= 1
        assert m["size_ratio"] > 0 and m["speedup"] > 0 and m["size_bytes"] > 0
    assert 0 < report["baseline_test_acc"] <= 1
    size = {name: row["metrics"]["size_ratio"] for name, row in rows.items()}
    assert size["prune structured 30%"] < 0.8
    assert size["2-bit weights"] < size["4-bit weights"] < size["int8 dynamic"] < 1
    assert rows["prune unstructured 50%"]["tags"]["stored_sparse"] == "True"
    assert size["hybrid prune 30%+distill+int8"] < min(size["int8 dynamic"],
                                                        size["prune structured 30%"])
    assert "hybrid distill T=4+int8" in report["table"] and "ms b8" in report["table"]
