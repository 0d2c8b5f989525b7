"""Smoke test of benchmarks/quantization.py: every method runs in both runtimes, JSON written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmark_writes_a_row_per_method(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/quantization.py", "--quick", "--json", str(out),
         "--output-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scheme" in proc.stdout and "ort_speedup_b1" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    digits = {r["scheme"]: r for r in rows if r["model"] == "digits-vit"}
    assert set(digits) == {"dynamic8", "static8", "weight_only4", "weight_only3", "lsq2"}
    assert any(r["model"] == "vit_small_patch16_224" for r in rows)
    for r in rows:
        assert 0 < r["size_ratio"] < 1 and r["torch_speedup_b1"] > 0 and r["ort_speedup_b1"] > 0
    # where each runtime only simulates low precision
    assert digits["weight_only4"]["sim_torch"] and not digits["weight_only4"]["sim_ort"]
    assert digits["weight_only3"]["sim_ort"]  # no 3-bit ORT kernel: unpacked to float
    assert not digits["static8"]["sim_torch"] and not digits["static8"]["sim_ort"]
    assert digits["lsq2"]["size_ratio"] < digits["weight_only4"]["size_ratio"]
