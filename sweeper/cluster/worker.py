"""What a Ray worker runs for one trial. Kept apart from `orchestrate` so that a worker never
imports the driver's MLflow and Optuna (~0.85 s).

torch, timm and the techniques are imported inside the trial, not with this module: Tune
counts a trial actor as started once this module has loaded, and when an already started
actor frees up first, Tune hands it the trial of an actor still starting and cancels that
one, so slow imports at start can leave a sweep of short trials on a single worker
(benchmarks/orchestration.py measures the per-trial overhead)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from sweeper.core.files import ARTIFACTS, RESULT, TRIAL_STATE_FILE
from sweeper.core.sweep_folder import pipeline_record

if TYPE_CHECKING:
    from sweeper.early_stop.board import Rungs
    from sweeper.spaces.space import Space
    from sweeper.trial.run import TrialInputs



def _finished_before(experiment_dir: str, trial_id: str) -> Path | None:
    """A checkpoint this trial already reported: the driver died after the trial finished
    but before Tune saved its experiment state. Its result is reused, not recomputed.
    (Looked up in the experiment's storage folder: the worker's own trial dir is a
    per-session staging copy that a resumed session does not have.)"""
    done = sorted(Path(experiment_dir).glob(f"*_{trial_id}_*/checkpoint_*/{RESULT}"))
    return done[-1].parent if done else None


def trainable(
    config: dict[str, Any], inputs: TrialInputs, space: Space, experiment_dir: str,
    rungs: Rungs | None = None,
) -> None:
    """Runs inside a Ray worker: one trial, reported with its artifact as a checkpoint."""
    # torch and the techniques load here, in the trial, not when Ray starts the actor (a
    # starting actor that imports for seconds loses its trial to one that freed up)
    from sweeper import compress
    from sweeper.core.quiet import quiet_third_party
    from sweeper.trial.run import run_trial

    quiet_third_party()
    previous = _finished_before(experiment_dir, tune.get_context().get_trial_id())
    if previous is not None:
        saved = json.loads((previous / RESULT).read_text())
        tune.report({**saved, "reused": 1}, checkpoint=tune.Checkpoint.from_directory(previous))
        return
    pipeline = space.pipeline(config)
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp, ARTIFACTS)
        files.mkdir()
        plan = rungs.plan(tune.get_context().get_trial_id()) if rungs is not None else None
        result = run_trial(inputs, pipeline, files, rungs=plan)
        tags = {**result.tags, "ray_node_id": ray.get_runtime_context().get_node_id()}
        metrics = {**result.metrics, "tags": tags}
        Path(tmp, TRIAL_STATE_FILE).write_bytes(result.artifact)
        Path(tmp, "pipeline.json").write_text(
            json.dumps(pipeline_record(compress.pipeline_to_dict(pipeline))))
        Path(tmp, RESULT).write_text(json.dumps(metrics))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
