"""SIGTERM is the Ctrl-C of job schedulers: Slurm at a job's time limit, Kubernetes, systemd
and `timeout` stop a sweep with it. Left alone, Python dies at once, and once Ray is up its
handler (`sys.exit`) skips Tune's last save and ends the sweep as FAILED. Handled here as
Ctrl-C: trials stop, Tune saves its state, the sweep is KILLED and `resume` continues it."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    ctrl_c = signal.getsignal(signal.SIGINT)  # Tune's own while it runs trials
    if callable(ctrl_c):
        ctrl_c(signal.SIGINT, frame)
    else:  # SIGINT ignored (a job started in the background) or default
        raise KeyboardInterrupt


def sigterm_as_ctrl_c() -> None:
    """From now on SIGTERM does what Ctrl-C does. Call it again after `ray.init`, which sets
    its own handler; only the main thread may set one."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_ctrl_c)
