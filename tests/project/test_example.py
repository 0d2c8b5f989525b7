"""examples/own_model.py runs at its smallest setting: image folder, fine-tune, checkpoint,
sweep, export, ONNX Runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow


def test_own_model_example_runs_tiny(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [sys.executable, "examples/own_model.py", "--tiny", "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "finetuned.pt").is_file() and (out / "chosen.onnx").is_file()
    assert (out / "chosen.onnx.json").is_file()
    assert "used as is" not in proc.stderr  # the API was given log=None
    assert "ONNX Runtime test accuracy:" in proc.stdout
    assert "baseline" in proc.stdout  # the front table
    (sweep,) = (out / "sweeps").iterdir()
    assert (sweep / "front.csv").is_file()
