"""SIGTERM is the Ctrl-C of job schedulers: Slurm at a job's time limit, Kubernetes, systemd
and `timeout` stop a sweep with it. Left alone, Python dies at once, and once Ray is up its
handler (`sys.exit`) skips Tune's last save and ends the sweep as FAILED. Handled here as
Ctrl-C: trials stop, Tune saves its state, the sweep is KILLED and `resume` continues it.

Slurm (and `timeout`, and `kill -- -PGID`) signal every process of the job, Ray's own GCS
and raylet too. The driver's graceful stop then waits on a dead GCS (60 s, then Ray ends the
process from C++, with nothing closed). So a stop that has not ended after
`SWEEPER_STOP_GRACE_S` (default 20 s, within Slurm's default 30 s before its SIGKILL), or
as soon as the Ray instance the driver started is seen dead (`hopeless_when`), runs
the sweep's last words (`last_words`: the sweep KILLED in its folder and in MLflow, the
resume line), then its last acts (`at_hung_exit`: the Ray instance the driver started is
killed, or its processes would outlive the driver), and exits 130. What Tune saved every 2 s
is what `resume` continues from, as after a killed driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

_last_words: list[Callable[[], None]] = []
_last_acts: list[Callable[[], None]] = []
_hopeless: list[Callable[[], bool]] = []
_watching = threading.Event()


def grace_s() -> float:
    return float(os.environ.get("SWEEPER_STOP_GRACE_S", "20"))


@contextlib.contextmanager
def last_words(say: Callable[[], None]) -> Iterator[None]:
    """While the block runs, `say` is what a stop that hangs does before the process ends."""
    _last_words.append(say)
    try:
        yield
    finally:
        _last_words.remove(say)


def at_hung_exit(act: Callable[[], None]) -> Callable[[], None]:
    """Until the function returned is called, `act` is the last thing a stop that hangs does,
    after the last words, right before the process ends: for what no `with` block holds, the
    Ray instance the driver started (sweeper.cluster.orchestrate), whose processes would
    otherwise outlive the driver. Acts run last, so that the last words are said while the
    driver's own stop is still held up by that instance, and the two do not both speak."""
    _last_acts.append(act)

    def forget() -> None:
        with contextlib.suppress(ValueError):  # forgotten already
            _last_acts.remove(act)

    return forget


def hopeless_when(check: Callable[[], bool]) -> Callable[[], None]:
    """Until the function returned is called, a stop under way ends at once, grace or not,
    when `check()` is true: the Ray instance the driver started is gone (a signal to the whole
    job killed its GCS), so the graceful stop can only hang on it, and Ray's core worker may
    end the driver first, with exit 1 and no last words (seen once in five suite runs)."""
    _hopeless.append(check)

    def forget() -> None:
        with contextlib.suppress(ValueError):  # forgotten already
            _hopeless.remove(check)

    return forget


def _hopeless_now() -> bool:
    for check in list(_hopeless):
        with contextlib.suppress(Exception):  # a check that fails says nothing
            if check():
                return True
    return False


def _watch() -> None:
    deadline = time.monotonic() + grace_s()
    while time.monotonic() < deadline and not _hopeless_now():
        time.sleep(0.1)
    for say in [*reversed(_last_words), *reversed(_last_acts)]:
        with contextlib.suppress(BaseException):  # best effort: the process ends regardless
            say()
    os._exit(130)


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    if not _watching.is_set():
        _watching.set()
        threading.Thread(target=_watch, name="stop-watchdog", daemon=True).start()
    ctrl_c = signal.getsignal(signal.SIGINT)  # Tune's own while it runs trials
    if callable(ctrl_c):
        ctrl_c(signal.SIGINT, frame)
    else:  # SIGINT ignored (a job started in the background) or default
        raise KeyboardInterrupt


@contextlib.contextmanager
def handlers_kept() -> Iterator[None]:
    """Ctrl-C and SIGUSR1 handle as before once the block ends. Tune's fit sets its own and
    leaves them set when it ends normally: the caller's next Ctrl-C would only set the flag
    of a Tune run that is over (in a notebook, or a script that goes on after `launch`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)


STOPPING = ("stopping: unfinished trials are closed and the sweep's state saved "
            "(Ctrl-C again skips the wait)")


class _TuneStopNotice(logging.Filter):
    """Tune's notice of a first Ctrl-C points to Tuner.restore, which is not how a sweep
    resumes (the driver prints its resume line once stopped): one line of what happens now
    instead, printed as the stop begins. Tune's other warnings stay hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Stop signal received"):
            print(STOPPING, file=sys.stderr, flush=True)
            return False
        return record.levelno >= logging.ERROR


def announce_stops() -> None:
    """Say at once that a Ctrl-C (or SIGTERM) was heard: stopping takes seconds. Idempotent."""
    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.setLevel(logging.WARNING)
    if not any(isinstance(f, _TuneStopNotice) for f in tune_log.filters):
        tune_log.addFilter(_TuneStopNotice())


def sigterm_as_ctrl_c() -> None:
    """From now on SIGTERM does what Ctrl-C does. Call it again after `ray.init`, which sets
    its own handler; only the main thread may set one."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_ctrl_c)
