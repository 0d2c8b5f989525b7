"""Paired, interleaved latency ratios with bootstrap intervals, on synthetic clocks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sweeper.measure.latency import (
    MIN_ROUNDS,
    Timing,
    bootstrap_median_ci,
    bootstrap_rounds_ci,
    paired_ratio,
    paired_ratios,
)


class Clock:
    """Synthetic call times: a true cost per model times a machine load that changes with
    every call (drift), plus multiplicative noise."""

    def __init__(self, drift: float = 0.0, noise: float = 0.0, seed: int = 0):
        self.calls = itertools.count()
        self.drift, self.noise = drift, noise
        self.rng = np.random.default_rng(seed)

    def timer(self, cost: float):
        def call() -> float:
            load = 1.0 + self.drift * next(self.calls)
            return cost * load * (1 + self.noise * self.rng.standard_normal())
        return call


def test_known_ratio_recovered_with_an_interval_around_it() -> None:
    clock = Clock(noise=0.05)
    r = paired_ratio(clock.timer(0.5e-3), clock.timer(1e-3), warmup=2, min_pairs=30,
                     max_seconds=10.0)
    assert r.lo <= 0.5 <= r.hi and r.ratio == pytest.approx(0.5, rel=0.03)
    assert r.converged and r.half_width <= 0.03 and r.pairs % 30 == 0
    assert r.model_ms == pytest.approx(0.5, rel=0.05) and r.baseline_ms == pytest.approx(1.0,
                                                                                        rel=0.05)


def test_drift_during_the_measurement_does_not_move_the_ratio() -> None:
    """The load doubles over the measurement. Timing all baseline calls, then all model
    calls (the old protocol) would see the model 2x slower than it is; pairs do not."""
    clock = Clock(drift=1 / 120)
    r = paired_ratio(clock.timer(1e-3), clock.timer(1e-3), warmup=0, min_pairs=60,
                     max_seconds=0.0)
    assert r.ratio == pytest.approx(1.0, abs=0.02)
    blocked = Clock(drift=1 / 120)
    base = [blocked.timer(1e-3)() for _ in range(60)]
    model = [blocked.timer(1e-3)() for _ in range(60)]
    assert np.median(model) / np.median(base) > 1.3  # what the pairing avoids


def test_rounds_stop_at_the_time_cap_and_say_so() -> None:
    clock = Clock(noise=0.8)
    r = paired_ratio(clock.timer(1e-3), clock.timer(1e-3), warmup=1, min_pairs=5,
                     max_seconds=0.0)
    # the floor of 5 pairs, taken in 3 rounds of 2
    assert r.pairs == 6 and r.rounds == 3 and not r.converged and r.lo < r.ratio < r.hi


def test_bootstrap_interval_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(1)
    small = bootstrap_median_ci(rng.normal(1.0, 0.1, 20))
    large = bootstrap_median_ci(rng.normal(1.0, 0.1, 2000))
    assert small[0] < 1.0 < small[1] and large[0] < 1.0 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 4


def test_block_bootstrap_covers_autocorrelated_timings_more_often() -> None:
    """Successive pairs share the machine's state: an AR(1) series around a true ratio of 0.8.
    Resampling pairs one by one treats them as independent and misses 0.8 about half the
    time; resampling runs of consecutive pairs (what paired_ratio does) misses it less."""
    from sweeper.measure.latency import block_length

    rng = np.random.default_rng(0)
    iid = blocks = 0
    for rep in range(200):
        noise, x = np.zeros(30), 0.0
        for i in range(30):
            x = 0.8 * x + rng.normal(0, 0.02)
            noise[i] = x
        values = 0.8 + noise
        lo, hi = bootstrap_median_ci(values, seed=rep)
        iid += lo <= 0.8 <= hi
        lo, hi = bootstrap_median_ci(values, seed=rep, block=block_length(30))
        blocks += lo <= 0.8 <= hi
    assert blocks >= iid + 20, (iid, blocks)
    # independent values: both intervals cover about as often as they should
    flat = rng.normal(0.8, 0.02, 30)
    lo, hi = bootstrap_median_ci(flat, block=block_length(30))
    assert lo < 0.8 < hi


def test_rounds_of_each_batch_size_are_spread_between_the_others() -> None:
    """Rounds go round-robin over the batch sizes, so each batch size's rounds are taken at
    different times; each batch size warms up once, before its first round."""
    calls: list[int] = []

    def timer(batch: int):
        def call() -> float:
            calls.append(batch)
            return 1e-3
        return call

    out = paired_ratios({1: (timer(1), timer(1)), 8: (timer(8), timer(8))},
                        Timing(warmup=2, repeats=6, max_seconds=0.0))
    assert {b: (r.rounds, r.pairs) for b, r in out.items()} == {1: (3, 6), 8: (3, 6)}
    runs = [batch for batch, _ in itertools.groupby(calls)]
    assert runs == [1, 8] * MIN_ROUNDS
    assert [len(list(g)) for _, g in itertools.groupby(calls)] == [8, 8, 4, 4, 4, 4]


def test_two_level_bootstrap_covers_a_ratio_that_drifts_between_rounds() -> None:
    """Each round of pairs sits at its own level (the ratio drifts at time scales longer than a
    round, as measured on real CPUs): pooling the pairs as one series gives intervals that
    miss the true ratio most of the time; drawing whole rounds first covers it about as often
    as a 95% interval should."""
    rng = np.random.default_rng(0)
    pooled = two_level = 0
    for rep in range(200):
        levels = 0.8 * (1 + rng.normal(0, 0.015, size=(6, 1)))
        table = levels * (1 + rng.normal(0, 0.01, size=(6, 20)))
        lo, hi = bootstrap_median_ci(table.ravel(), seed=rep, block=3)
        pooled += lo <= 0.8 <= hi
        lo, hi = bootstrap_rounds_ci(table, seed=rep)
        two_level += lo <= 0.8 <= hi
    assert pooled < 120 and two_level >= 160, (pooled, two_level)
    # one round: the moving-block bootstrap of that round
    one = rng.normal(0.8, 0.01, size=(1, 30))
    lo, hi = bootstrap_rounds_ci(one)
    assert lo < np.median(one) < hi and hi - lo < 0.02
