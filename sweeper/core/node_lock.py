"""Quiet latency measurement on a shared node.

Trials of a sweep share a node's cores. While one trial times latency, the others must not
compute, or the timing measures their load. Two `flock` files per node and user do it:

- computing (training, evaluation, calibration) takes, for each batch, a brief shared lock on
  the *gate*, then a shared lock on *work* held for the batch;
- measuring takes the gate exclusively (no new batch starts), then work exclusively (the
  batches in flight finish), times, and releases both.

The kernel drops a dead process's flocks, so a trial killed while measuring never leaves the
node locked. Waiting is counted in both directions and reported by the trial. Only trials
call `activate`; elsewhere (tests, benchmarks, export) every hook is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Waits:
    computing_s: float = 0.0  # this process's batches waited for others' measurements
    measuring_s: float = 0.0  # this process's measurements waited for others' batches


def default_stem() -> Path:
    return Path(tempfile.gettempdir()) / f"sweeper-node-{os.getuid()}"


class NodeLock:
    def __init__(self, stem: Path | None = None):
        stem = stem or default_stem()
        self.gate = os.open(f"{stem}.gate", os.O_RDWR | os.O_CREAT, 0o600)
        self.work = os.open(f"{stem}.work", os.O_RDWR | os.O_CREAT, 0o600)
        self.waits = Waits()

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        start = time.perf_counter()
        fcntl.flock(self.gate, fcntl.LOCK_SH)
        fcntl.flock(self.gate, fcntl.LOCK_UN)
        fcntl.flock(self.work, fcntl.LOCK_SH)
        self.waits.computing_s += time.perf_counter() - start
        try:
            yield
        finally:
            fcntl.flock(self.work, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        start = time.perf_counter()
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.work, fcntl.LOCK_EX)
            self.waits.measuring_s += time.perf_counter() - start
            try:
                yield
            finally:
                fcntl.flock(self.work, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self.gate, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.gate)
        os.close(self.work)


_active: NodeLock | None = None


def activate(stem: Path | None = None) -> NodeLock:
    """Use the node lock in this process (once; later calls return the same lock)."""
    global _active
    if _active is None:
        _active = NodeLock(stem)
    return _active


def deactivate() -> None:
    global _active
    if _active is not None:
        _active.close()
        _active = None


def active() -> NodeLock | None:
    return _active


@contextlib.contextmanager
def computing() -> Iterator[None]:
    """Wrap one batch of training or evaluation."""
    if _active is None:
        yield
    else:
        with _active.computing():
            yield


@contextlib.contextmanager
def measuring() -> Iterator[None]:
    """Wrap a latency measurement."""
    if _active is None:
        yield
    else:
        with _active.measuring():
            yield
