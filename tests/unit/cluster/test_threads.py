"""The driver's torch threads: what the user or the machine allows, never more."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sweeper.cluster import resources
from tests.helpers.cluster import ROOT


@pytest.mark.parametrize("value, expected", [("3", 3), ("1", 1)])
def test_omp_num_threads_is_honoured(value: str, expected: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert resources.driver_threads() == expected


@pytest.mark.parametrize("value", ["", "0", "two", "4,2", "-1"])
def test_an_unusable_omp_num_threads_falls_back_to_the_cpus_allowed(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    allowed = len(os.sched_getaffinity(0))
    assert resources.driver_threads() == min(allowed, resources.local_cpus())


def test_a_container_quota_caps_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(resources, "local_cpus", lambda: 1)
    assert resources.driver_threads() == 1


def test_a_process_pinned_to_one_core_trains_with_one_thread() -> None:
    """`taskset -c 0 python -m sweeper launch ...`: os.cpu_count() still says every core."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from sweeper.cluster import resources; "
            "print(os.cpu_count(), resources.driver_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[1] == "1", out
