"""A real tiny sweep launched in its own process, and the folder it leaves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Shared, tiny_overrides
from tests.helpers.paths import ROOT

# one cheap trial: dynamic int8 needs no data
QUICK_SPACE = "description: one cheap trial\ntechniques:\n  quantize:\n" \
              "    scheme: {choices: [dynamic8]}\n"


def launch(tmp: Path, *extra: str, timeout: int = 600, shared: Shared | None = None
           ) -> subprocess.CompletedProcess:
    """A tiny sweep in its own process; with `shared`, on the tests' Ray head."""
    if shared is None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        args = tiny_overrides(tmp, *extra)
    else:
        env, args = shared.env, shared.overrides(tmp, *extra)
    return subprocess.run([sys.executable, "-m", "sweeper", "launch", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def sweep_dir(tmp: Path) -> Path:
    """The one sweep folder under `tmp` (a launch's output_dir)."""
    (only,) = list((tmp / "sweeps").iterdir())
    return only
