"""What the fault and outage tests read back from a sweep: its MLflow child runs, its Optuna
trials' states, its trial processes."""

from __future__ import annotations

import collections
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from tests.conftest import sweep_study_storage
from tests.helpers.cluster import cmdline, descendants


def children(store: MlflowClient | Path, parent: str) -> list:
    """The child runs of the sweep whose MLflow parent run is `parent`. `store`: a client of
    the store the sweep tracked to, or the sweep's output folder, whose own SQLite store
    (mlflow.db, the default tracking_uri) it tracked to."""
    client = store if isinstance(store, MlflowClient) else \
        MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


def optuna_states(folder: Path, name: str) -> collections.Counter:
    """How many of the sweep's Optuna trials are in each state (COMPLETE, RUNNING, FAIL...)."""
    study = optuna.load_study(study_name=name, storage=sweep_study_storage(folder))
    return collections.Counter(t.state.name for t in study.trials)


def trial_processes(driver: int) -> list[int]:
    """The Ray worker processes below `driver` that are running a trial."""
    return [p for p in descendants(driver) if "ray::ImplicitFunc" in cmdline(p)]
