"""Load: 200 cheap trials through the real stack, driver memory sampled all along."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.test_faults import children, sweep_meta
from tests.helpers.cluster import ROOT, start_sweep

pytestmark = pytest.mark.slow
TRIALS = 200


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else None


def test_200_cheap_trials_complete_with_bounded_driver_memory(tmp_path: Path) -> None:
    log = tmp_path / "sweep.log"
    space = ROOT / "tests" / "helpers" / "spaces" / "cheap.yaml"
    from tests.conftest import tiny_overrides

    proc = start_sweep(["launch", *tiny_overrides(
        tmp_path, f"space={space}", f"search.trials={TRIALS}", "search.concurrency=2",
        "measure.batch_sizes=1", "measure.warmup=1", "measure.repeats=5",
        "measure.max_seconds=0")], log)
    samples: list[tuple[int, float]] = []  # (trials done, driver RSS in MB)
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        rss = rss_mb(proc.pid)
        if rss is not None:
            samples.append((log.read_text().count("\n["), rss))
        time.sleep(1)
    if proc.poll() is None:
        proc.kill()
    assert proc.wait() == 0, log.read_text()[-3000:]

    _, meta = sweep_meta(tmp_path)
    runs = children(tmp_path, meta["parent_run_id"])
    assert len(runs) == TRIALS and {r.info.status for r in runs} == {"FINISHED"}
    # Bounded: the driver's memory after the first quarter of the trials grows by less than
    # 1 MB per trial over the rest (it holds results, not models), and stays under 3 GB. Only
    # samples taken while trials run count towards growth: after the last one, `finish`
    # evaluates the front on test and draws the plot, a one-off cost, bounded by the 3 GB.
    early = [rss for done, rss in samples if TRIALS // 4 <= done < TRIALS]
    assert early, samples[-5:]
    growth = max(early) - early[0]
    assert growth < 0.75 * TRIALS, f"driver RSS grew {growth:.0f} MB over the sweep"
    assert max(rss for _, rss in samples) < 3072
    text = log.read_text()
    wall = float(re.search(r"wall (\d+)s", text).group(1))
    print(f"\n{TRIALS} cheap trials: sweep wall {wall:.0f}s, driver RSS "
          f"{early[0]:.0f} -> {max(early):.0f} MB")
