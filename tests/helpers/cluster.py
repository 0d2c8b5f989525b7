"""Helpers for fault tests: process trees, a loopback two-node Ray cluster, live sweeps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sweeper.cluster.stack import cmdline, ray_pids
from tests.helpers.paths import ROOT

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, out, todo = children_map(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pids_matching(text: str) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and text in cmdline(int(p.name))]


def kill_tree(pids: list[int]) -> None:
    for pid in pids:
        for p in [pid, *descendants(pid)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def kill_ray_session(driver: int) -> None:
    """Whatever of a SIGKILLed driver's local Ray instance outlives it (processes whose
    parent died are not signalled); its session folder ends with the driver's pid."""
    kill_tree(pids_matching(f"_{driver}/logs"))


def wait_for(predicate, timeout: float, step: float = 0.5) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def ray_env() -> dict[str, str]:
    """Token authentication on, explicitly: Ray 2.60 enforces it on a head when a token file
    exists, but a joining node or driver only sends the token when the mode says so."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_AUTH_MODE"] = "token"
    return env


def start_sweep(args: list[str], log: Path, env: dict[str, str] | None = None
                ) -> subprocess.Popen:
    env = env or {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


class LoopbackCluster:
    """A head and one worker node (or a head alone) started with `ray start` on 127.0.0.1,
    stopped by pid (never `ray stop`, which would also end unrelated Ray instances on the
    machine)."""

    def __init__(self, with_worker: bool = True, head_cpus: int = 1) -> None:
        self.with_worker, self.head_cpus = with_worker, head_cpus
        self.port = free_port()
        self.worker_manager_port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def _ray(self, *args: str) -> None:
        proc = subprocess.run([RAY, *args], env=ray_env(), capture_output=True, text=True,
                              timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]

    def start(self) -> LoopbackCluster:
        self._ray("get-auth-token", "--generate")  # make sure a token exists to share
        self._ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                  f"--num-cpus={self.head_cpus}", "--include-dashboard=false",
                  "--disable-usage-stats")
        if self.with_worker:
            self._ray("start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                      "--num-cpus=1", f"--node-manager-port={self.worker_manager_port}",
                      "--disable-usage-stats")
        return self

    def worker_raylet(self) -> list[int]:
        return [p for p in pids_matching(f"--node_manager_port={self.worker_manager_port}")
                if "raylet" in cmdline(p)]

    def stop(self) -> None:
        kill_tree(ray_pids(self.port))
