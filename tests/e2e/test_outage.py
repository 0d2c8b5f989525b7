"""Failures mid-sweep lose nothing: an MLflow store that goes away, and Ctrl-C.

The slow tests use real Ray, Optuna and MLflow (a real `mlflow server` on 127.0.0.1), talk
only to 127.0.0.1 and end by themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from sweeper.cluster.stop_signal import STOPPING
from sweeper.core import journal
from sweeper.core.files import exclusive
from sweeper.search import OPTUNA_JOURNAL
from sweeper.sweep.driver import DRIVER_LOCK
from sweeper.tracking.client import PENDING, Mirror
from tests.conftest import tiny_overrides
from tests.helpers.cluster import (
    ROOT,
    cmdline,
    descendants,
    free_port,
    kill_ray_session,
    kill_tree,
    pids_matching,
    wait_for,
)
from tests.helpers.sweeps import children, optuna_states, trial_processes

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def write_space(tmp: Path, epochs: int) -> Path:
    """Four configurations; `epochs` of fine-tuning set how long a trial lasts."""
    path = tmp / "space.yaml"
    path.write_text(
        "description: test-only; quantize schemes with a short fine-tune\n"
        "techniques:\n"
        "  quantize:\n"
        "    scheme: {choices: [dynamic8, weight_only4, weight_only8, weight_only2]}\n"
        "  recover:\n"
        f"    epochs: {epochs}\n"
    )
    return path


def env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **extra}


def start(args: list[str], log: Path, environ: dict[str, str]) -> subprocess.Popen:
    """A driver in its own session, as a terminal would run it: Ctrl-C at its default, even
    when this suite was started with SIGINT ignored (`cmd &` in a script or nohup ignores it,
    and an ignored signal is inherited through exec; a caught one is reset). Faulthandler is
    on, so a driver that does not stop can be made to show where it is (`wait_or_dump`)."""
    kept = signal.getsignal(signal.SIGINT)
    if kept == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT,
                                env={**environ, "PYTHONFAULTHANDLER": "1"},
                                stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if kept == signal.SIG_IGN:
            signal.signal(signal.SIGINT, kept)


def wait_or_dump(proc: subprocess.Popen, timeout: float, log: Path) -> int:
    """The driver's exit code; a driver still running after `timeout` fails the test with
    what it was doing: its signal masks and every thread's stack (faulthandler, on SIGABRT)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        masks = [line for line in status.splitlines() if line.startswith("Sig")]
        os.kill(proc.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        raise AssertionError(f"the driver did not end within {timeout:.0f}s; "
                             f"{' '.join(masks)}\n{log.read_text()[-12000:]}") from None


def sweep_folder(out: Path) -> tuple[Path, dict]:
    (folder,) = list((out / "sweeps").iterdir())
    return folder, json.loads((folder / "sweep.json").read_text())


def results(out: Path) -> dict[str, dict]:
    """The trial results the driver kept in the sweep folder, by trial id."""
    if not (out / "sweeps").is_dir():
        return {}
    return {r["trial"]: r for folder in (out / "sweeps").iterdir()
            for r in journal.read(folder / journal.TRIALS) if r["event"] == "complete"}


def all_runs(out: Path) -> list:
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else ""


class MlflowServer:
    """A real tracking server on 127.0.0.1 in its own process group, stopped by pid."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.port = tmp, free_port()
        self.log = tmp / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{self.tmp}/m.db",
             "--artifacts-destination", str(self.tmp / "mlartifacts-server"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=self.tmp, env=env(), stdout=self.log.open("a"), stderr=subprocess.STDOUT,
            start_new_session=True)
        assert wait_for(self.healthy, 120), tail(self.log)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


# -- the writer, without a store ----------------------------------------------------------
class FlakyRuns:
    """Stands in for SweepRuns: the store refuses connections until `up` is set."""

    def __init__(self) -> None:
        self.up, self.done, self.logged, self.stale = False, [], [], False

    def log(self, msg: str) -> None:
        self.logged.append(msg)

    def write(self, n: int) -> None:
        if not self.up:
            raise ConnectionError("connection refused")
        self.done.append(n)


def test_writes_wait_for_a_store_that_comes_back_in_order() -> None:
    runs = FlakyRuns()
    mirror = Mirror(runs)  # type: ignore[arg-type]
    for n in range(5):
        mirror.submit("write", n)
    time.sleep(1.5)  # a few failed tries, with backoff
    assert runs.done == [] and runs.stale
    runs.up = True
    assert mirror.close(grace=30) == []
    assert runs.done == [0, 1, 2, 3, 4]
    assert any("retrying in the background" in m for m in runs.logged)
    assert any("reachable again" in m for m in runs.logged)


def test_writes_a_store_never_took_are_handed_back_in_order() -> None:
    runs = FlakyRuns()
    mirror = Mirror(runs)  # type: ignore[arg-type]
    for n in range(3):
        mirror.submit("write", n)
    started = time.monotonic()
    assert mirror.close(grace=1) == [["write", 0], ["write", 1], ["write", 2]]
    assert time.monotonic() - started < 10 and runs.done == []


def test_a_slow_store_that_is_up_gets_every_write_however_long_the_backlog() -> None:
    """The grace counts from the store's last write, not from the close: 40 writes of 0.05 s
    (2 s of backlog) all land with a grace of 0.5 s."""
    runs = FlakyRuns()
    runs.up = True
    slow = runs.write
    runs.write = lambda n: time.sleep(0.05) or slow(n)  # type: ignore[method-assign]
    mirror = Mirror(runs)  # type: ignore[arg-type]
    for n in range(40):
        mirror.submit("write", n)
    assert mirror.close(grace=0.5) == []
    assert runs.done == list(range(40))


# -- real sweeps --------------------------------------------------------------------------
def sweep_through_outage(tmp_path: Path, server: MlflowServer, *, epochs: int, grace_s: int,
                         outage: Callable[[], None]) -> str:
    """A 3-trial sweep tracked by `server`: `outage()` once the first result is in, then wait
    for the driver to finish; its log."""
    space = write_space(tmp_path, epochs=epochs)
    log = tmp_path / "sweep.log"
    server.start()  # up at launch (launch checks it)
    proc = start(["launch", *tiny_overrides(
        tmp_path, f"space={space}", "search.trials=3", "search.concurrency=1",
        f"tracking_uri={server.uri}")], log, env(SWEEPER_MLFLOW_GRACE_S=str(grace_s)))
    try:
        assert wait_for(lambda: results(tmp_path), 300), tail(log)
        outage()
        rc = proc.wait(timeout=400)
    finally:
        kill_tree([proc.pid])
        kill_ray_session(proc.pid)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    return text


def resume(tmp_path: Path, name: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sweeper", "resume", name, f"output_dir={tmp_path}"],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def children_of_finished_parent(server: MlflowServer, parent_id: str) -> list[Any]:
    """The sweep's child runs, after checking its parent finished with a hypervolume."""
    client = MlflowClient(server.uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["hypervolume"] > 0
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"front.csv", "front.json", "front.png", "front.txt"} <= artifacts
    return children(client, parent_id)


@pytest.mark.slow
def test_mlflow_down_until_the_end_loses_nothing_and_resume_syncs(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path)
    try:  # down from the first result on
        text = sweep_through_outage(tmp_path, server, epochs=3, grace_s=3, outage=server.stop)
        assert "Traceback" not in text and "Pareto front" in text
        warning = [ln for ln in text.splitlines() if ln.startswith("warning: MLflow at")]
        assert len(warning) == 1 and "python -m sweeper resume" in warning[0], text[-3000:]

        folder, meta = sweep_folder(tmp_path)
        assert meta["status"] == "FINISHED"
        for name in ("front.csv", "front.json", "front.png", "front.txt"):
            assert (folder / name).is_file(), name
        kept = results(tmp_path)
        assert len(kept) == 3 and all("val_acc" in r["metrics"] for r in kept.values())
        front = {r["trial"] for r in json.loads((folder / "front.json").read_text())}
        assert front - {"baseline"} <= set(kept)
        assert (folder / PENDING).is_file()

        server.start()  # same port, same store
        resumed = resume(tmp_path, meta["name"], timeout=300)
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        assert not (folder / PENDING).exists()

        runs = children_of_finished_parent(server, meta["parent_run_id"])
        assert sorted(r.info.run_name for r in runs) == sorted(kept)  # one run per trial
        for run in runs:
            assert run.info.status == "FINISHED", (run.info.run_name, run.info.status)
            assert run.data.metrics["val_acc"] == pytest.approx(
                kept[run.info.run_name]["metrics"]["val_acc"])
            assert run.data.tags["pareto"] == str(run.info.run_name in front).lower()
            assert any(k.startswith("quantize.") for k in run.data.params)

        again = resume(tmp_path, meta["name"], timeout=120)
        assert again.returncode == 2 and "already finished" in again.stderr
    finally:
        server.stop()


@pytest.mark.slow
def test_mlflow_restarted_mid_sweep_catches_up_by_itself(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path)

    def down_15s() -> None:
        server.stop()
        time.sleep(15)
        server.start()  # same port, same store

    try:
        text = sweep_through_outage(tmp_path, server, epochs=8, grace_s=90, outage=down_15s)
        assert "reachable again" in text and "was unreachable" not in text, text[-3000:]
        assert "View run" not in text  # MLflow's own two lines per run, between the trials
        folder, meta = sweep_folder(tmp_path)
        assert not (folder / PENDING).exists()
        runs = children_of_finished_parent(server, meta["parent_run_id"])
        assert sorted(r.info.run_name for r in runs) == sorted(results(tmp_path))
        assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
        assert all("val_acc" in r.data.metrics for r in runs)
    finally:
        server.stop()


def stop_mid_trial(tmp_path: Path, sig: signal.Signals, group: bool = False
                   ) -> tuple[Path, dict, set[str]]:
    """Launch a 4-trial sweep, send `sig` to its driver (`group`: to every process of its
    session, Ray's GCS and raylet too, as Slurm does) while trial 2 trains, and check that it
    stopped as Ctrl-C stops it: exit 130, the resume line, Ray gone, the sweep KILLED
    everywhere. Returns its folder, sweep.json and the trials finished before the stop."""
    space = write_space(tmp_path, epochs=10)  # trial 2 still trains 2 s after it starts
    log = tmp_path / "sweep.log"
    args = tiny_overrides(tmp_path, f"space={space}", "search.trials=4", "search.concurrency=1")
    # A group stop hangs by construction (its GCS is gone): 5 s of grace keeps the test short.
    # A driver's own stop must end gracefully, and Tune alone waits up to 5 s (hard-coded) for
    # the trial actor in flight before Ray's shutdown even starts, so it gets the product's
    # default grace (20 s); with 5 s the watchdog raced Tune on a quiet machine too.
    grace = "5" if group else "20"
    proc = start(["launch", *args], log, env(SWEEPER_STOP_GRACE_S=grace))
    try:
        assert wait_for(lambda: "[1/4]" in log.read_text(), 300), tail(log)
        assert wait_for(lambda: trial_processes(proc.pid), 60), tail(log)
        time.sleep(2)  # trial 2 under way
        ray_pids = descendants(proc.pid)
        if group:
            os.killpg(proc.pid, sig)  # its own session: the group is the driver's pid
        else:
            os.kill(proc.pid, sig)
        signalled = time.monotonic()
        rc = proc.wait(timeout=180)
        # a group stop: within its 5 s grace and the MLflow close, not Ray's 60 s GCS wait
        assert not group or time.monotonic() - signalled < 40
    finally:
        kill_tree([proc.pid])
        kill_ray_session(proc.pid)
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    said = [ln for ln in text.splitlines() if ln.startswith("interrupted:")]
    assert len(said) == 1 and "python -m sweeper resume" in said[0], text[-3000:]
    # heard at once (stopping takes seconds), said once, before the end
    assert text.count(STOPPING) == 1 and text.index(STOPPING) < text.index(said[0]), \
        text[-3000:]
    # Ray went down with the driver: none of its processes, nor any of its session's, is left.
    # The driver ends them itself (orchestrate.LocalRay), also when its stop hung; left to
    # themselves, the raylet's agents outlived a raylet SIGKILLed mid-stop by a minute.
    assert wait_for(lambda: not [p for p in ray_pids if cmdline(p)], 10), \
        [cmdline(p) for p in ray_pids if cmdline(p)]
    assert not pids_matching(f"_{proc.pid}/logs")

    folder, meta = sweep_folder(tmp_path)
    assert meta["status"] == "KILLED"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(meta["parent_run_id"]).info.status == "KILLED"
    before = children(client, meta["parent_run_id"])
    assert {r.info.status for r in before} <= {"FINISHED", "KILLED"}
    finished_before = {r.info.run_name for r in before if r.info.status == "FINISHED"}
    assert finished_before and finished_before <= set(results(tmp_path))
    states = optuna_states(folder, meta["name"])
    assert states["COMPLETE"] == len(finished_before)
    if not group:  # a hung stop ends before Tune closes the trial in flight; resume fails it
        assert states["RUNNING"] == 0
    return folder, meta, finished_before


# A driver's Ray instance, and a process a trial started in a session of its own (Ray ends
# a worker's process group, not that), the way a sweep ends: its stop ends (`shutdown`) or
# hangs (the watchdog's os._exit after SWEEPER_STOP_GRACE_S, here 0 s).
RAY_OF_A_DRIVER = """
import subprocess, sys
import ray
from sweeper.cluster import orchestrate, stop_signal
from sweeper.core.config import build_config

orchestrate.init_ray(build_config(sys.argv[2:]), print)

@ray.remote
def start_a_session() -> int:
    return int(subprocess.run(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"],
                              capture_output=True, text=True, check=True).stdout)

print("started", ray.get(start_a_session.remote()), flush=True)
sys.stdin.readline()
if sys.argv[1] == "shutdown":
    orchestrate.shutdown()
else:
    stop_signal._watch()
"""


@pytest.mark.slow
@pytest.mark.parametrize("end", ["shutdown", "hung"])
def test_a_drivers_ray_instance_ends_whole_with_it(tmp_path: Path, end: str) -> None:
    """No process of the Ray instance a driver started outlives it: not those `ray.shutdown`
    leaves (a raylet SIGKILLed after its 1 s leaves its DashboardAgent and RuntimeEnvAgent
    reporting that to a dead GCS for a minute), not those a stop that hung leaves (os._exit
    mid-stop), not those a trial started elsewhere than its process group."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RAY_OF_A_DRIVER, end, *tiny_overrides(tmp_path)], cwd=ROOT,
        env=env(SWEEPER_STOP_GRACE_S="0"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, start_new_session=True)
    instance: list[int] = []  # its processes, and the one its trial started
    try:
        assert proc.stdout is not None and proc.stdin is not None
        started = next((ln for ln in proc.stdout if ln.startswith("started ")), None)
        assert started, f"the driver ended (rc {proc.wait(timeout=60)}) before its trial ran"
        instance += [*descendants(proc.pid), int(started.split()[1])]
        assert any("raylet" in cmdline(p) for p in instance)
        assert any("DashboardAgent" in cmdline(p) for p in instance)
        proc.stdin.write("end\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == (0 if end == "shutdown" else 130)
        assert wait_for(lambda: not [p for p in instance if cmdline(p)], 5), \
            [cmdline(p) for p in instance if cmdline(p)]
    finally:
        kill_tree([proc.pid, *(p for p in instance if cmdline(p))])
        kill_ray_session(proc.pid)


@pytest.mark.slow
def test_sigterm_stops_a_sweep_as_ctrl_c_does(tmp_path: Path) -> None:
    """What Kubernetes or `kill` send to the driver: before, Ray's handler exited at once
    and the sweep ended FAILED, its trials' runs left RUNNING."""
    stop_mid_trial(tmp_path, signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_to_the_whole_job_stops_it_and_resume_completes(tmp_path: Path) -> None:
    """What Slurm sends at a time limit (every process of the job, Ray's GCS too): before,
    the driver waited 60 s on the dead GCS, Ray ended it from C++ and the sweep stayed
    RUNNING; now the stop ends after SWEEPER_STOP_GRACE_S with the sweep KILLED."""
    folder, meta, _ = stop_mid_trial(tmp_path, signal.SIGTERM, group=True)
    resumed = resume(tmp_path, meta["name"], timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert sweep_folder(tmp_path)[1]["status"] == "FINISHED"
    states = optuna_states(folder, meta["name"])
    assert states["COMPLETE"] == 4 and states["RUNNING"] == 0


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resume_completes(tmp_path: Path) -> None:
    folder, meta, _ = stop_mid_trial(tmp_path, signal.SIGINT)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")

    # a second driver is refused while one holds the sweep, before it writes anything
    with exclusive(folder / DRIVER_LOCK, wait=False):
        busy = resume(tmp_path, meta["name"], timeout=120)
    assert busy.returncode == 2 and "is still being driven (process" in busy.stderr, \
        busy.stdout[-2000:] + busy.stderr[-2000:]
    assert sweep_folder(tmp_path)[1]["status"] == "KILLED"
    # a record a killed driver cut short: appending after it would break the journal
    with (folder / OPTUNA_JOURNAL).open("ab") as journal_file:
        journal_file.write(b'{"op_code": 6, "worker_id": "cut-')

    resumed = resume(tmp_path, meta["name"], timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "Pareto front (" in resumed.stdout and "of 4 trials" in resumed.stdout
    assert "note: optuna.journal ended in a record cut short (33 bytes" in resumed.stdout
    _, meta = sweep_folder(tmp_path)
    assert meta["status"] == "FINISHED"
    runs = children(client, meta["parent_run_id"])
    assert len(runs) == 4 and len({r.info.run_name for r in runs}) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert client.get_run(meta["parent_run_id"]).info.status == "FINISHED"
    assert set(results(tmp_path)) == {r.info.run_name for r in runs}
    states = optuna_states(folder, meta["name"])
    assert states["COMPLETE"] == 4 and states["RUNNING"] == 0
    front = {r["trial"] for r in json.loads((folder / "front.json").read_text())}
    assert front - {"baseline"} <= {r.info.run_name for r in runs}


@pytest.mark.slow
def test_ctrl_c_while_the_baseline_trains_leaves_no_sweep_behind(tmp_path: Path) -> None:
    """The baseline trains before the sweep's folder and MLflow run exist: a stop during a
    fine-tune of hours leaves nothing to resume or clean up, and says so in one line."""
    log = tmp_path / "launch.log"
    args = tiny_overrides(tmp_path, "space=nystrom_m", "train.epochs=500",
                          f"cache_dir={tmp_path / 'cache'}")  # its own: it must train
    proc = start(["launch", *args], log, env())
    try:
        assert wait_for(lambda: "baseline: training" in log.read_text(), 120), tail(log)
        time.sleep(3)  # a few epochs in
        os.kill(proc.pid, signal.SIGINT)
        rc = wait_or_dump(proc, 60, log)
    finally:
        kill_tree([proc.pid])
    text = log.read_text()
    assert rc == 130 and text.splitlines()[-1] == "interrupted", text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert not (tmp_path / "sweeps").exists() or not list((tmp_path / "sweeps").iterdir())
    assert not (tmp_path / "mlflow.db").exists() or not all_runs(tmp_path)


def test_a_launch_that_fails_before_its_sweep_exists_leaves_nothing_half_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A failure after the MLflow parent run started but before sweep.json (here the disk
    filling up as it is written) ends that run FAILED and removes the sweep's folder; a full
    disk is the machine's state, not a bug: one error line, exit 2."""
    from sweeper.cli import main as cli
    from sweeper.sweep.state import Sweep

    def disk_full(self: Sweep, **changes: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Sweep, "save_meta", disk_full)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(cli, "sigterm_as_ctrl_c", lambda: None)  # pytest's own stays
    assert cli.main(["launch", *tiny_overrides(tmp_path, "space=nystrom_m", "quiet=true")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == \
        "error: [Errno 28] No space left on device"
    assert list((tmp_path / "sweeps").iterdir()) == []
    assert [r.info.status for r in all_runs(tmp_path)] == ["FAILED"]
