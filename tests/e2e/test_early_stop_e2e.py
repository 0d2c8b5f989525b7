"""A real sweep with early stopping on: a trial stopped at a rung is a finished MLflow child
run with its partial metrics and `stopped_at_rung`, a PRUNED trial in the Optuna study, and
never on the front."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import Shared, sweep_study_storage
from tests.helpers.launch import launch, sweep_dir
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow


def test_stopped_trials_are_in_mlflow_and_pruned_in_the_study(
        tmp_path: Path, shared: Shared) -> None:
    # Four configurations, one trial each, one at a time, in the order the seeded random
    # sampler draws them: the unpruned, wrecked one (lr=1) comes after the pruned, healthy
    # one that dominates it at the first rung (smaller, faster, more accurate).
    space = ROOT / "tests" / "helpers" / "spaces" / "rungs_cheap.yaml"
    proc = launch(tmp_path, f"space={space}", "search.trials=4", "search.concurrency=1",
                  "search.sampler=random", "search.seed=0", "search.early_stop=on",
                  "search.rungs=1,2", "search.eta=2", shared=shared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped at rung 0 (epoch 1)" in proc.stdout

    folder = sweep_dir(tmp_path)
    meta = json.loads((folder / "sweep.json").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    children = client.search_runs(
        [client.get_experiment_by_name("sweeper").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{meta['parent_run_id']}'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    stopped = {c.info.run_name: c for c in children if "stopped_at_rung" in c.data.metrics}
    assert stopped, "no trial was stopped"
    for run in stopped.values():
        assert run.data.tags["stopped_at_rung"] == str(int(run.data.metrics["stopped_at_rung"]))
        for key in ("val_acc", "size_mb", "latency_ratio", "stopped_at_epoch"):
            assert key in run.data.metrics, key  # the partial metrics at its rung
        assert run.data.tags.get("fingerprint"), "a stopped trial names its hardware too"
        assert "pareto" not in run.data.tags
    parent = client.get_run(meta["parent_run_id"])
    assert parent.data.metrics["trials_stopped"] == len(stopped)

    study = optuna.load_study(study_name=meta["name"], storage=sweep_study_storage(folder))
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(stopped)
    for t in pruned:
        assert t.values is None and "stopped_at_rung" in t.user_attrs
        # only wrecked trials are stopped (which of the two lr=1 ones depends on timing noise:
        # pruned or not, at rung 0 each may be dominated by the healthy pruned trial)
        assert t.params["recover.lr"] == 1.0, t.params
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 4 - len(
        stopped)

    front = {r["trial"] for r in json.loads((folder / "front.json").read_text())}
    assert not front & set(stopped)
