"""Real sweeps end to end: real Ray (local), real Optuna storage, real MLflow store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import Shared, sweep_study_storage
from tests.helpers.cluster import free_port
from tests.helpers.launch import launch, sweep_dir
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow


def test_sweep_logs_parent_children_front_and_artifacts(tmp_path: Path) -> None:
    port = free_port()
    proc = launch(tmp_path, "space=nystrom_m", "search.trials=4", "search.concurrency=2",
                  "dashboard=true", f"ray.dashboard_port={port}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Ray dashboard: http://127.0.0.1:{port}" in proc.stdout  # loopback only
    assert "Pareto front" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    assert "[4/4]" in proc.stdout  # progress printed per trial

    meta = json.loads((sweep_dir(tmp_path) / "sweep.json").read_text())
    assert meta["status"] == "FINISHED"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(meta["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["hypervolume"] > 0
    # the MLflow UI opens the experiment on its runs (model-training view)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    curve = client.get_metric_history(parent.info.run_id, "hypervolume_history")
    assert sorted(m.step for m in curve) == [1, 2, 3, 4]
    values = [m.value for m in sorted(curve, key=lambda m: m.step)]
    assert values == sorted(values)  # never falls: the front only grows
    assert values[-1] == pytest.approx(parent.data.metrics["hypervolume"])
    from PIL import Image  # matplotlib's dependency: front.png has its third panel

    assert Image.open(sweep_dir(tmp_path) / "front.png").width > 1800
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"front.csv", "front.json", "front.png", "front.txt"} <= artifacts

    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED"
        for key in ("val_acc", "size_mb", "latency_ms", "speedup", "size_ratio"):
            assert key in child.data.metrics, key
        assert any(k.startswith("nystrom.") for k in child.data.params)
        assert child.data.tags["device"] == "cpu"
        assert child.data.tags["node"] and child.data.tags["ray_node_id"]
        assert child.data.tags["pareto"] in ("true", "false")

    on_front = {c.info.run_name for c in children if c.data.tags["pareto"] == "true"}
    with (sweep_dir(tmp_path) / "front.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["trial"] != "baseline"]
    assert on_front == {r["trial"] for r in rows}
    for child in children:  # test accuracy exists exactly for the front
        assert ("test_acc" in child.data.metrics) == (child.info.run_name in on_front)

    study = optuna.load_study(study_name=meta["name"],
                              storage=sweep_study_storage(sweep_dir(tmp_path)))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and all(len(t.values) == 3 for t in done)
    assert study.metric_names == ["val_acc", "size_mb", "latency_ratio"]


def test_trials_failing_inside_are_failed_children(tmp_path: Path) -> None:
    """Asking for CUDA on a machine without one fails inside each trial, not at launch
    (a space without int8, which launch refuses for CUDA trials: tests/test_device.py)."""
    proc = launch(tmp_path, "resources.device=cuda", "search.trials=2",
                  "search.max_failures=0", "space=prune_ratio")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    meta = json.loads((sweep_dir(tmp_path) / "sweep.json").read_text())
    children = client.search_runs(
        [client.get_experiment_by_name("sweeper").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{meta['parent_run_id']}'",
    )
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert "CUDA" in child.data.tags["error"]
    assert proc.returncode == 1
    assert "no trial finished" in proc.stderr


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for extra in (["space=nope"], ["search.trialz=2"], ["search.trials=x"],
                  ["data.name=cifar10", f"data.root={tmp_path / 'missing'}"]):
        proc = launch(out, *extra, timeout=120)
        assert proc.returncode == 2, (extra, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert not out.exists()


def test_no_trial_repeats_a_configuration_of_a_small_discrete_space(
        tmp_path: Path, shared: Shared) -> None:
    """Six configurations, six trials through Tune's OptunaSearch: each one once (plain
    NSGA-II repeats one with probability 1 - 6!/6**6 = 98%), and the study holds exactly the
    sweep's trials."""
    space = ROOT / "tests" / "helpers" / "spaces" / "discrete_cheap.yaml"
    proc = launch(tmp_path, f"space={space}", "search.trials=6", "search.concurrency=2",
                  shared=shared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((sweep_dir(tmp_path) / "sweep.json").read_text())
    study = optuna.load_study(study_name=meta["name"],
                              storage=sweep_study_storage(sweep_dir(tmp_path)))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 6
    configs = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(configs) == 6, [t.params for t in study.trials]
