"""The front as a menu: `select` under each limit, and the front in MLflow's Model Registry,
each alias resolved through MLflow's own API and run with ONNX Runtime (local store and a
real `mlflow server`). One real sweep serves every test."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow
import pytest

from sweeper.cli.main import main
from sweeper.core import journal
from sweeper.deploy import registry_models as registry
from sweeper.results.menu import members_by_alias
from tests.conftest import Shared, tiny_overrides
from tests.e2e.test_outage import MlflowServer
from tests.helpers.launch import launch, sweep_dir
from tests.helpers.registry import aliases_run

pytestmark = pytest.mark.slow
_aliases_run = aliases_run  # tests/e2e/test_stack.py imports it from here


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, shared: Shared) -> Path:
    tmp = tmp_path_factory.mktemp("menu")
    proc = launch(tmp, "space=nystrom_m", "search.trials=5", "search.concurrency=2",
                  "registry=true", shared=shared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tiny_overrides(tmp)  # the same tiny settings as every e2e sweep
    return sweep_dir(tmp)


def front(folder: Path) -> dict[str, dict[str, float]]:
    """Each member's drop (points), size ratio and latency ratio, read from the files."""
    rows = json.loads((folder / "front.json").read_text())
    base = next(r for r in rows if r["trial"] == "baseline")
    lat = {r["trial"]: r["metrics"]["latency_ratio"]
           for r in journal.read(folder / journal.TRIALS) if r["event"] == "complete"}
    return {r["trial"]: {"drop": 100 * (base["val_acc"] - r["val_acc"]),
                         "size": r["size_ratio"], "latency": lat[r["trial"]],
                         "acc": r["val_acc"]}
            for r in rows if r["trial"] != "baseline"}


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def listed(out: str, members: dict[str, Any]) -> tuple[set[str], str]:
    """The trials of the printed table, and the picked one (marked *)."""
    shown, picked = set(), ""
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] in ("*", *members):
            trial = parts[1] if parts[0] == "*" else parts[0]
            if trial in members:
                shown.add(trial)
                picked = trial if parts[0] == "*" else picked
    return shown, picked


@pytest.mark.parametrize(("limit", "field"), [("max_accuracy_drop", "drop"),
                                              ("max_size_ratio", "size"),
                                              ("max_latency_ratio", "latency")])
def test_select_lists_exactly_the_members_within_each_limit(
    sweep: Path, capsys: pytest.CaptureFixture, limit: str, field: str
) -> None:
    members = front(sweep)
    values = sorted(m[field] for m in members.values())
    cut = max(0.0, values[len(values) // 2])  # about half the front meets it
    code, out, _ = run(capsys, "select", str(sweep), f"{limit}={cut!r}")
    assert code == 0
    shown, picked = listed(out, members)
    assert shown == {t for t, m in members.items() if m[field] <= cut}
    assert picked == min(shown, key=lambda t: (-members[t]["acc"], members[t]["size"],
                                               members[t]["latency"]))  # prefer=accuracy
    code, out, _ = run(capsys, "select", str(sweep), "prefer=size")
    assert listed(out, members)[1] == min(members, key=lambda t: (members[t]["size"],
                                                                  -members[t]["acc"]))


def test_the_export_command_select_suggests_runs_as_printed(
    sweep: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    out_dir = sweep.parents[1]  # not ./outputs: the command must say where the sweep is
    code, out, _ = run(capsys, "select", sweep.name, f"output_dir={out_dir}")
    (line,) = [ln for ln in out.splitlines() if ln.startswith("export it with: ")]
    command = line.removeprefix("export it with: python -m sweeper ").split("  (")[0]
    args = command.replace("out=PATH", f"out={tmp_path / 'hinted.onnx'}").split()
    assert run(capsys, *args)[0] == 0 and (tmp_path / "hinted.onnx").is_file()


def test_export_writes_both_files_or_neither(
    sweep: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    trial = next(iter(front(sweep)))
    (tmp_path / "m.onnx.json").mkdir()  # where the preprocessing would go
    code, out, err = run(capsys, "export", str(sweep), trial, f"out={tmp_path / 'm.onnx'}")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'm.onnx.json'} is a folder; give " \
        "out= a file name", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.json"]  # no model alone


def test_select_exports_its_pick_as_export_does(
    sweep: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "select", str(sweep), "prefer=latency",
                       f"export={tmp_path / 'pick.onnx'}")
    assert code == 0
    picked = listed(out, front(sweep))[1]
    assert run(capsys, "export", str(sweep), picked, f"out={tmp_path / 'same.onnx'}")[0] == 0
    assert (tmp_path / "pick.onnx").read_bytes() == (tmp_path / "same.onnx").read_bytes()
    assert (json.loads((tmp_path / "pick.onnx.json").read_text())
            == json.loads((tmp_path / "same.onnx.json").read_text()))


@pytest.mark.parametrize("args", [["max_size_ratio=0.000001"], ["max_accuracy_drop=-1"],
                                  ["max_latency_ratio=0"], ["max_size_ratio=nan"],
                                  ["prefer=speed"], ["fastest=1"], ["max_size_ratio"]])
def test_select_refuses_with_one_error_line_and_writes_nothing(
    sweep: Path, capsys: pytest.CaptureFixture, tmp_path: Path, args: list[str]
) -> None:
    out = tmp_path / "never.onnx"
    code, stdout, stderr = run(capsys, "select", str(sweep), *args, f"export={out}")
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not out.exists() and not Path(f"{out}.json").exists()


def test_registry_aliases_resolve_through_mlflow_and_run(sweep: Path) -> None:
    from sweeper.results.menu import front_members

    expected = {a: m.trial for a, m in members_by_alias(front_members(sweep)).items()}
    uri = f"sqlite:///{sweep.parents[1]}/mlflow.db"
    assert aliases_run(uri, sweep.name, sweep) == expected
    versions = mlflow.MlflowClient(uri).search_model_versions(f"name='{sweep.name}'")
    assert {v.tags["sweeper.trial_id"] for v in versions} == set(front(sweep))


def test_registry_on_an_http_tracking_server(sweep: Path, tmp_path: Path) -> None:
    """The same writes against a real `mlflow server` (artifacts proxied by the server),
    twice: the second is a replay and changes nothing."""
    from sweeper.tracking.client import SweepRuns, Tracker

    server = MlflowServer(tmp_path)
    server.start()
    try:
        tracker = Tracker(server.uri, "sweeper")
        parent = tracker.start_sweep(sweep.name, {}, {})
        runs = SweepRuns(tracker, parent, print)
        entries = registry.prepare(sweep, print)  # the sweep's exports are reused
        runs.register_models(sweep.name, entries)
        runs.register_models(sweep.name, entries)
        served = aliases_run(server.uri, sweep.name, sweep)
        assert set(served.values()) <= set(front(sweep)) and len(served) == 4
        assert len(tracker.client.search_model_versions(f"name='{sweep.name}'")) == len(entries)
    finally:
        server.stop()


def test_registry_in_a_file_store_stays_in_it(sweep: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow 3.17 puts a file store's registry, and its logged-model reads, in mlflow.db of
    the working directory unless told otherwise: the versions must land in the store."""
    from mlflow.tracking._tracking_service import utils

    from sweeper.tracking.client import SweepRuns, Tracker

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # recorded, so restored as it was after
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setattr(utils, "_tracking_uri", None)  # as a fresh process; restored after
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # not the store's parent: MLflow's default looks there
    uri = (tmp_path / "mlruns").as_uri()
    tracker = Tracker(uri, "sweeper")
    runs = SweepRuns(tracker, tracker.start_sweep(sweep.name, {}, {}), print)
    runs.register_models(sweep.name, registry.prepare(sweep, print))
    assert not list((tmp_path / "cwd").iterdir())  # no mlflow.db where the command ran
    assert "MLFLOW_TRACKING_URI" not in os.environ and utils._tracking_uri is None  # nothing set
    assert (tmp_path / "mlruns" / "models" / sweep.name).is_dir()
    assert set(aliases_run(uri, sweep.name, sweep).values()) <= set(front(sweep))
