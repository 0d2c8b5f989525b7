"""The cluster stack run for real: PostgreSQL, an MLflow tracking server on it, Ray with token
authentication, started by `python -m sweeper stack up` in a temporary folder on loopback.

A sweep tracks to http://127.0.0.1:PORT and keeps its study in PostgreSQL with the password in
PGPASSWORD only; its driver is SIGKILLed and resumed; PostgreSQL is restarted and the MLflow
server stopped for 30 s mid-sweep; a Ray node with a wrong token is refused. Every check is
the file-based path's: children, tags, front, hypervolume, artifacts, no lost or repeated
trial. Deselect with `-m "not integration"`.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from sweeper.cluster import stack
from tests.conftest import tiny_overrides
from tests.e2e.test_outage import results, sweep_folder, tail, write_space
from tests.helpers.cluster import (
    RAY,
    ROOT,
    LoopbackCluster,
    free_port,
    kill_tree,
    start_sweep,
    wait_for,
)
from tests.helpers.sweeps import children

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Stack:
    folder: Path
    ports: dict[str, int]
    password: str
    up_output: str

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow_port']}"

    @property
    def postgres(self) -> stack.Postgres:
        return stack.Postgres(self.folder / "postgres", self.ports["pg_port"], self.password)

    def state(self) -> dict:
        return json.loads((self.folder / stack.STATE).read_text())

    def stop_mlflow(self) -> None:
        stack.stop_group(self.state()["mlflow_pid"])

    def start_mlflow(self) -> None:
        """Same port, same PostgreSQL store; `stack down` stops the new process."""
        proc = stack.start_mlflow(self.folder / "mlflow", self.ports["mlflow_port"],
                                  self.postgres.url("mlflow"), self.password)
        stack._save(self.folder, {**self.state(), "mlflow_pid": proc.pid})

    def env(self, **extra: str) -> dict[str, str]:
        """A driver's environment: the password only in PGPASSWORD, Ray's token mode on."""
        base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        return {**base, "PGPASSWORD": self.password, "RAY_AUTH_MODE": "token", **extra}

    def overrides(self, out: Path, *extra: str) -> list[str]:
        # measure.quiet=false: latency is not what this suite checks, and the quiet lock is
        # per machine, so any other sweep on it would hold these trials back
        return tiny_overrides(out, f"tracking_uri={self.mlflow}",
                              f"search.storage={self.postgres.url('optuna')}",
                              "measure.quiet=false", *extra)


def sweeper(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def up() -> Iterator[Stack]:
    # PostgreSQL refuses root; as root it runs as `postgres`, who must be able to enter the
    # folder: a fresh one under the temp dir, not pytest's private tmp_path.
    base = Path(tempfile.mkdtemp(prefix="sweeper-stack-"))
    base.chmod(0o755)
    ports = {k: free_port() for k in stack.DEFAULT_PORTS}
    password = os.urandom(12).hex()
    env = {**os.environ, "PGPASSWORD": password}
    args = [f"dir={base / 'stack'}", *(f"{k}={p}" for k, p in ports.items())]
    proc = sweeper("stack", "up", *args, env=env, timeout=400)
    try:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        yield Stack(base / "stack", ports, password, proc.stdout)
    finally:
        if (base / "stack" / stack.STATE).exists():
            sweeper("stack", "down", f"dir={base / 'stack'}", env=env, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def study_counts(st: Stack, name: str) -> collections.Counter:
    study = optuna.load_study(study_name=name, storage=st.postgres.url("optuna").replace(
        "sweeper@", f"sweeper:{st.password}@"))
    return collections.Counter(t.state.name for t in study.trials)


def files_holding(root: Path, secret: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if secret.encode() in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


def check_sweep(st: Stack, out: Path, trials: int, logs: list[str]) -> tuple[list, dict]:
    """The file-based path's checks, read back through the MLflow server."""
    folder, meta = sweep_folder(out)
    assert meta["status"] == "FINISHED"
    client = MlflowClient(st.mlflow)
    parent = client.get_run(meta["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["hypervolume"] > 0
    runs = children(client, meta["parent_run_id"])
    finished = [r for r in runs if r.info.status == "FINISHED"]
    names = [r.info.run_name for r in finished]
    assert len(names) == trials == len(set(names)), names  # none lost, none twice
    for run in runs:
        if run.info.status != "FINISHED":  # a trial the killed driver left: closed, rerun
            assert run.info.status == "KILLED" and "driver died" in run.data.tags["error"]
    kept = results(out)
    front = {r["trial"] for r in json.loads((folder / "front.json").read_text())}
    assert front - {"baseline"} <= set(names) == set(kept)
    for run in finished:
        assert run.data.tags["pareto"] == str(run.info.run_name in front).lower()
        assert run.data.tags["feasible"] == "true" and "ray_node_id" in run.data.tags
        assert run.data.metrics["val_acc"] == pytest.approx(
            kept[run.info.run_name]["metrics"]["val_acc"])
        assert any(k.startswith("quantize.") for k in run.data.params)
    # the front's files went up through the server (--serve-artifacts) and come back equal
    got = Path(client.download_artifacts(parent.info.run_id, "", str(out / "downloaded")))
    for name in ("front.csv", "front.json", "front.png", "front.txt"):
        assert (got / name).read_bytes() == (folder / name).read_bytes(), name
    states = study_counts(st, meta["name"])
    # Optuna's COMPLETE trials are MLflow's FINISHED ones; what a killed driver had asked for
    # is FAIL (its MLflow run, if it had one yet, KILLED); nothing is left RUNNING
    assert states["COMPLETE"] == trials and set(states) <= {"COMPLETE", "FAIL"}
    assert states["FAIL"] >= len(runs) - trials
    # the password is nowhere: not in MLflow's params or tags, files, or any log
    for run in [parent, *runs]:
        assert st.password not in json.dumps([run.data.params, run.data.tags])
    assert not files_holding(out, st.password)
    assert not files_holding(st.folder / "mlflow", st.password)
    assert not [log for log in logs if st.password in log]
    return runs, meta


def test_stack_up_prints_what_to_launch_with(up: Stack) -> None:
    text = up.up_output
    assert f"http://127.0.0.1:{up.ports['mlflow_port']}" in text
    assert f"http://127.0.0.1:{up.ports['dashboard_port']}" in text
    assert "get-auth-token" in text and "RAY_AUTH_MODE=token" in text
    assert f"search.storage={up.postgres.url('optuna')}" in text
    assert up.password not in text
    conn = psycopg2.connect(host="127.0.0.1", port=up.ports["pg_port"], user=stack.USER,
                            password=up.password, dbname="optuna")
    conn.close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=up.ports["pg_port"], user=stack.USER,
                         password="wrong", dbname="optuna")
    assert stack.mlflow_healthy(up.ports["mlflow_port"])
    again = sweeper("stack", "up", f"dir={up.folder}", env=dict(os.environ), timeout=60)
    assert again.returncode == 2 and again.stderr.startswith("error: a stack is already up")


def done(log: Path) -> int:
    """Trials a driver has reported finished, by its `[k/N]` lines."""
    return sum(line.startswith("[") for line in log.read_text().splitlines())


def test_sweep_survives_a_killed_driver_server_faults_and_a_wrong_token_node(
        up: Stack, tmp_path: Path) -> None:
    """One sweep through it all: on a two-node token-authenticated Ray cluster, its driver is
    SIGKILLed after the first trial; a node with a wrong token tries to join meanwhile; the
    resumed driver then loses PostgreSQL (restarted) and the MLflow server (30 s)."""
    cluster = LoopbackCluster()
    log, log2 = tmp_path / "sweep.log", tmp_path / "resume.log"
    env = up.env(SWEEPER_MLFLOW_GRACE_S="150")  # the end may wait for MLflow to come back
    pg = up.postgres
    intruder = proc = resumed = None
    try:
        cluster.start()
        # A node with the wrong token tries to join while the sweep runs: the GCS refuses it.
        intruder = subprocess.Popen(
            [RAY, "start", f"--address={cluster.address}", "--node-ip-address=127.0.0.1",
             "--num-cpus=1", f"--node-manager-port={free_port()}", "--disable-usage-stats"],
            env={**env, "RAY_AUTH_TOKEN": "0" * 64}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        args = up.overrides(tmp_path, f"space={write_space(tmp_path, epochs=6)}",
                            f"ray.address={cluster.address}", "search.trials=5",
                            "search.concurrency=2", "resources.cpus=1", "registry=true")
        proc = start_sweep(["launch", *args], log, env=env)
        assert wait_for(lambda: done(log) >= 1, 400), tail(log)
        os.kill(proc.pid, signal.SIGKILL)  # the other trial is mid-way
        proc.wait(timeout=30)
        intruder_out, _ = intruder.communicate(timeout=120)
        assert intruder.returncode != 0 and "InvalidAuthToken" in intruder_out, intruder_out[-2000:]

        folder, meta = sweep_folder(tmp_path)
        assert meta["status"] == "RUNNING"
        resumed = start_sweep(["resume", meta["name"], f"output_dir={tmp_path}"], log2, env=env)
        assert wait_for(lambda: done(log2) >= 1, 400), tail(log2)
        # PostgreSQL (the study, and MLflow's store) goes down while trials run (the kill left
        # at least 3 of 5, so one is still to be told), until the driver has felt it, then
        # comes back: Optuna's calls are retried meanwhile. The MLflow server is down for 30 s.
        stopped, before = time.monotonic(), done(log2)
        pg.stop()
        up.stop_mlflow()
        felt = wait_for(lambda: "Optuna storage unreachable" in log2.read_text(), 120)
        pg.start()
        assert felt, tail(log2)
        assert wait_for(lambda: "Optuna storage reachable again" in log2.read_text(), 60)
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        during = done(log2) - before
        up.start_mlflow()
        rc = resumed.wait(timeout=400)
    finally:
        for child in (intruder, proc, resumed):
            if child is not None:
                kill_tree([child.pid])
        cluster.stop()
        if not (pg.data / "postmaster.pid").exists():
            pg.start()
        if not stack.mlflow_healthy(up.ports["mlflow_port"]):
            up.start_mlflow()
    text = log2.read_text()
    assert rc == 0, text[-3000:]
    assert "Pareto front (" in text and "of 5 trials" in text, text[-3000:]
    assert during >= 1, text[-3000:]  # trials finished while MLflow was away
    assert "Traceback" not in text and "was unreachable" not in text, text[-3000:]
    assert "MLflow reachable again" in text
    runs, meta = check_sweep(up, tmp_path, 5, [log.read_text(), text, intruder_out])
    nodes = {r.data.tags["ray_node_id"] for r in runs if r.info.status == "FINISHED"}
    assert 1 <= len(nodes) <= 2, nodes  # the cluster's two nodes, never a third
    assert not files_holding(up.folder / "postgres", up.password)
    print(f"\nkill+resume: MLflow children {collections.Counter(r.info.status for r in runs)}, "
          f"Optuna {study_counts(up, meta['name'])}")

    # export reads the finished trial back and writes a model that loads and runs
    trial = next(r.info.run_name for r in runs if r.info.status == "FINISHED")
    out = tmp_path / "trial.pt"
    exported = sweeper("export", meta["parent_run_id"], trial, "format=torch", f"out={out}",
                       f"output_dir={tmp_path}", env=env)
    assert exported.returncode == 0, exported.stderr[-2000:]
    from sweeper.deploy.export import load_torch

    assert load_torch(out)(__import__("torch").zeros(1, 3, 32, 32)).shape == (1, 10)
    # select picks a front member of the same sweep and exports it the same way
    picked = tmp_path / "pick.pt"
    chosen = sweeper("select", meta["parent_run_id"], f"export={picked}", "format=torch",
                     f"output_dir={tmp_path}", env=env)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert load_torch(picked)(__import__("torch").zeros(1, 3, 32, 32)).shape == (1, 10)
    # the front's models come back through the server (PostgreSQL store, proxied
    # artifacts): each registry alias resolves, downloads and runs in ONNX Runtime
    from sweeper.results.menu import front_members, members_by_alias
    from tests.e2e.test_menu import _aliases_run

    expected = {a: m.trial for a, m in members_by_alias(front_members(folder)).items()}
    assert _aliases_run(up.mlflow, meta["name"], folder) == expected


def test_stack_down_stops_everything(up: Stack) -> None:
    state = up.state()
    down = sweeper("stack", "down", f"dir={up.folder}", env=dict(os.environ), timeout=120)
    assert down.returncode == 0, down.stderr[-2000:]
    assert "Ray head, MLflow server, PostgreSQL" in down.stdout
    for port in up.ports.values():
        assert not stack.listening(port), port
    assert not stack.ray_pids(up.ports["ray_port"])
    assert not (up.folder / "postgres" / "data" / "postmaster.pid").exists()
    for key in ("mlflow_pid", "ray_pid"):
        assert not stack.group_alive(state[key]), key
    again = sweeper("stack", "down", f"dir={up.folder}", env=dict(os.environ), timeout=60)
    assert again.returncode == 2 and again.stderr.startswith("error: no stack is up")
