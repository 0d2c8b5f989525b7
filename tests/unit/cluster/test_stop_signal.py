"""SIGTERM does what Ctrl-C does (sweeper.stop_signal); end to end in test_outage.py."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from sweeper.cluster import stop_signal
from sweeper.cluster.stop_signal import sigterm_as_ctrl_c


@pytest.fixture()
def handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Python's own Ctrl-C whatever earlier tests of this worker left, and no watchdog: a real
    one would end this pytest worker SWEEPER_STOP_GRACE_S after the first SIGTERM."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    watching = threading.Event()
    watching.set()
    monkeypatch.setattr(stop_signal, "_watching", watching)
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


def test_a_stop_that_hangs_says_its_last_words_then_exits_130(
        monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    exits: list[int] = []
    monkeypatch.setenv("SWEEPER_STOP_GRACE_S", "0")
    monkeypatch.setattr(stop_signal.os, "_exit", exits.append)
    with stop_signal.last_words(lambda: said.append("outer")):
        with stop_signal.last_words(lambda: 1 / 0):  # a failing one does not silence the rest
            with stop_signal.last_words(lambda: said.append("inner")):
                stop_signal._watch()
    assert said == ["inner", "outer"]
    assert exits == [130]
    assert stop_signal._last_words == []


def test_tunes_stop_notice_becomes_one_line_saying_what_happens(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    stop_signal.announce_stops()
    stop_signal.announce_stops()  # idempotent: one filter, one line
    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.warning("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run.")
    tune_log.warning("another of Tune's warnings")
    assert capsys.readouterr().err.splitlines() == [stop_signal.STOPPING]
    assert not [r for r in caplog.records if r.name == "ray.tune.tune"]  # neither reached a log


def test_a_stop_whose_ray_is_gone_says_its_last_words_without_waiting_out_its_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal to the whole job kills Ray's GCS too: the stop can only hang on it, and Ray's
    core worker may end the driver first (exit 1, no last words). The watchdog ends the stop
    as soon as the check says so, and waits out the grace while it does not."""
    said: list[str] = []
    exits: list[int] = []
    monkeypatch.setenv("SWEEPER_STOP_GRACE_S", "30")
    monkeypatch.setattr(stop_signal.os, "_exit", exits.append)
    forget = stop_signal.hopeless_when(lambda: True)
    try:
        with stop_signal.last_words(lambda: said.append("killed")):
            started = time.monotonic()
            stop_signal._watch()
            assert time.monotonic() - started < 5
    finally:
        forget()
    assert said == ["killed"] and exits == [130]
    monkeypatch.setenv("SWEEPER_STOP_GRACE_S", "0.5")
    forget = stop_signal.hopeless_when(lambda: False)
    try:
        started = time.monotonic()
        stop_signal._watch()
        assert time.monotonic() - started >= 0.5
    finally:
        forget()
    assert stop_signal._hopeless == []
