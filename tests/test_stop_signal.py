"""SIGTERM does what Ctrl-C does (sweeper.stop_signal); end to end in test_outage.py."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from sweeper.stop_signal import sigterm_as_ctrl_c


@pytest.fixture()
def handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_sigterm_is_ctrl_c_whatever_handles_ctrl_c(handlers: None) -> None:
    sigterm_as_ctrl_c()
    with pytest.raises(KeyboardInterrupt):  # Python's own Ctrl-C
        signal.raise_signal(signal.SIGTERM)
    seen: list[int] = []
    signal.signal(signal.SIGINT, lambda sig, frame: seen.append(sig))  # as Tune's, mid-fit
    signal.raise_signal(signal.SIGTERM)
    assert seen == [signal.SIGINT]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a job started with `&`: still a stop
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)
