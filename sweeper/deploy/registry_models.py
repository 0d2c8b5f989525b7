"""The front in MLflow's Model Registry: a registered model named after the sweep, one version
per front member, aliases `best-accuracy`, `smallest`, `fastest` and `knee`.

Each version's model is the member's deployable ONNX file (exactly what `python -m sweeper
export` writes) saved in MLflow's ONNX flavor, with the preprocessing JSON beside it, logged
to the member's child run. A user loads one by alias with MLflow's own API:

    path = mlflow.artifacts.download_artifacts("models:/<sweep name>@knee")
    sess = onnxruntime.InferenceSession(f"{path}/model.onnx")   # preprocessing: model.onnx.json

The files are written into the sweep folder (registry/<trial>/) at finish; the MLflow writes
go through the sweep's Mirror like every other, so an unreachable store replays them on
`resume`, and every write is idempotent (a replay finds the versions already there).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeper.core.errors import UserError
from sweeper.deploy.export import TrialArtifact, check_onnx, export_onnx, find_trial
from sweeper.results.menu import front_members, members_by_alias
from sweeper.tracking.registry import save_onnx_flavor

FOLDER = "registry"  # in the sweep folder: one MLflow ONNX model folder per member
ONNX_FILE = "model.onnx"  # the member's graph inside its folder


def prepare(sweep_dir: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Export every front member that has an ONNX lowering into the sweep folder; return the
    entries for `write` (trial, folder, aliases). Members without one (token merging) are
    left out with a note; the aliases go to the members that can be served."""
    entries, members = [], []
    for member in front_members(sweep_dir):
        try:
            art = find_trial(str(sweep_dir), member.trial, "")
            check_onnx(art)
        except UserError as exc:
            log(f"registry: front member {member.trial} not registered ({exc})")
            continue
        folder = sweep_dir / FOLDER / member.trial
        if not (folder / "MLmodel").is_file():
            _save(art, folder)
        members.append(member)
        entries.append({"trial": member.trial, "dir": str(folder), "aliases": []})
    if members:
        for alias, member in members_by_alias(members).items():
            next(e for e in entries if e["trial"] == member.trial)["aliases"].append(alias)
    return entries


def _save(art: TrialArtifact, folder: Path) -> None:
    """The ONNX file and its preprocessing JSON as `export` writes them, in MLflow's ONNX
    flavor folder layout (MLmodel, model.onnx, requirements)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ONNX_FILE
        export_onnx(art, path)
        save_onnx_flavor(path, folder)
