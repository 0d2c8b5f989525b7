"""The quiet-measurement lock between trials of one node: real processes, real flock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.core.node_lock import NodeLock
from tests.helpers.paths import ROOT

HOLD = """
import sys, time
from pathlib import Path
from sweeper.core.node_lock import NodeLock
lock = NodeLock(Path(sys.argv[1]))
with getattr(lock, sys.argv[2])():
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold(stem: Path, side: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(stem), side, str(seconds)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def timed(ctx) -> float:
    start = time.perf_counter()
    with ctx:
        pass
    return time.perf_counter() - start


@pytest.mark.timeout(60)
def test_batches_wait_while_another_process_measures(tmp_path: Path) -> None:
    stem = tmp_path / "node"
    lock = NodeLock(stem)
    assert timed(lock.computing()) < 0.5  # nobody measuring: no wait
    proc = hold(stem, "measuring", 1.5)
    try:
        assert timed(lock.computing()) > 1.0
        assert lock.waits.computing_s > 1.0
    finally:
        proc.wait(timeout=30)


@pytest.mark.timeout(60)
def test_measurement_waits_for_the_batch_in_flight(tmp_path: Path) -> None:
    stem = tmp_path / "node"
    proc = hold(stem, "computing", 1.5)
    lock = NodeLock(stem)
    try:
        assert timed(lock.measuring()) > 1.0 and lock.waits.measuring_s > 1.0
    finally:
        proc.wait(timeout=30)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("side", ["measuring", "computing"])
def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path, side: str) -> None:
    stem = tmp_path / "node"
    proc = hold(stem, side, 600)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    lock = NodeLock(stem)
    assert timed(lock.measuring()) < 0.5
    assert timed(lock.computing()) < 0.5


@pytest.mark.timeout(60)
def test_every_batch_loop_yields_to_a_measurement_once_activated(tmp_path: Path) -> None:
    import torch

    from sweeper.core import node_lock
    from sweeper.data.loading import batches

    pair = (torch.zeros(8, 3, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    stem = tmp_path / "node"
    node_lock.deactivate()  # a trial run earlier in this process leaves its node's lock active
    proc = hold(stem, "measuring", 1.5)
    try:
        start = time.perf_counter()
        assert len(list(batches(pair, 4))) == 2  # not active: runs straight through
        assert time.perf_counter() - start < 0.5
        lock = node_lock.activate(stem)
        assert len(list(batches(pair, 4))) == 2
        assert lock.waits.computing_s > 1.0
    finally:
        node_lock.deactivate()
        proc.wait(timeout=30)
