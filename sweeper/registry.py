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

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeper.errors import UserError

FOLDER = "registry"  # in the sweep folder: one MLflow ONNX model folder per member
ARTIFACT = "onnx_model"  # where each member's model goes in its child run
MODEL_FILE = "model.onnx"


def prepare(sweep_dir: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Export every front member that has an ONNX lowering into the sweep folder; return the
    entries for `write` (trial, folder, aliases). Members without one (token merging) are
    left out with a note; the aliases go to the members that can be served."""
    from sweeper import export
    from sweeper.select import front_members, members_by_alias

    entries, members = [], []
    for member in front_members(sweep_dir):
        try:
            art = export.find_trial(str(sweep_dir), member.trial, "")
            export.check_onnx(art)
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


def _save(art: Any, folder: Path) -> None:
    """The ONNX file and its preprocessing JSON as `export` writes them, in MLflow's ONNX
    flavor folder layout (MLmodel, model.onnx, requirements)."""
    import mlflow.onnx
    import onnx

    from sweeper.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        export_onnx(art, path)
        staged = Path(tmp) / "mlflow"
        mlflow.onnx.save_model(onnx.load(str(path)), str(staged), save_as_external_data=False)
        shutil.copy(f"{path}.json", staged / f"{MODEL_FILE}.json")
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.move(str(staged), folder)


def write(client: Any, model_name: str, entries: list[dict[str, Any]],
          run_of: Callable[[str], str], sweep: str) -> None:
    """The registered model, a version per entry (logged to the trial's run) and the
    aliases; idempotent."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            model_name, tags={"sweeper.sweep": sweep},
            description=f"Pareto front of sweeper sweep {sweep}: one version per member")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    versions = {v.tags.get("sweeper.trial_id"): v.version
                for v in client.search_model_versions(f"name='{model_name}'")}
    for entry in entries:
        trial = entry["trial"]
        if trial not in versions:
            run_id = run_of(trial)
            client.log_artifacts(run_id, entry["dir"], ARTIFACT)
            version = client.create_model_version(
                model_name, source=f"runs:/{run_id}/{ARTIFACT}", run_id=run_id,
                tags={"sweeper.trial_id": trial})
            versions[trial] = version.version
        for alias in entry["aliases"]:
            client.set_registered_model_alias(model_name, alias, versions[trial])
