"""The Model Registry side of the front: an ONNX file saved in MLflow's ONNX flavor layout,
and the registered model with one version per member and its aliases (written through the
sweep's Mirror, so every write is idempotent and replayable)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ARTIFACT = "onnx_model"  # where each member's model goes in its child run


def save_onnx_flavor(onnx_path: Path, folder: Path) -> None:
    """`onnx_path` and its preprocessing JSON (`<onnx_path>.json`) as an MLflow ONNX model
    folder (MLmodel, the graph, requirements), replacing `folder`."""
    import mlflow.onnx
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "mlflow"
        mlflow.onnx.save_model(onnx.load(str(onnx_path)), str(staged),
                               save_as_external_data=False)
        shutil.copy(f"{onnx_path}.json", staged / f"{onnx_path.name}.json")
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
