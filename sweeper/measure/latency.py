"""Latency, as docs/architecture.md's measurement protocol describes: on the given
device and thread count, after warm-up, model and baseline timed in
  interleaved pairs on the same input, with the device synchronised around each call; the
  ratio is the median of the paired ratios, with a 95% confidence interval from a two-level
  bootstrap: rounds of pairs taken at different times, then runs of successive pairs inside
  each (successive pairs share the machine's state, and so, less, do rounds close in time).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sweeper.core import node_lock
from sweeper.core.config import MeasureConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_timer(model: nn.Module, example: torch.Tensor) -> Callable[[], float]:
    """One call of `model(example)`, in seconds, with the device synchronised around it."""
    device = example.device

    @torch.inference_mode()
    def call() -> float:
        _sync(device)
        start = time.perf_counter()
        model(example)
        _sync(device)
        return time.perf_counter() - start

    return call


@dataclass(frozen=True)
class PairedRatio:
    """Model against baseline at one batch size, timed in interleaved pairs.

    `ratio` is the median of the per-pair ratios model/baseline, `lo`..`hi` its bootstrap 95%
    confidence interval; `converged` says whether the interval's half-width reached the
    target before the time cap."""

    model_ms: float
    baseline_ms: float
    ratio: float
    lo: float
    hi: float
    pairs: int
    converged: bool
    rounds: int = 1

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2 / self.ratio


def bootstrap_median_ci(values: np.ndarray, resamples: int = 1000, seed: int = 0,
                        block: int = 1) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the median of `values`. With `block` > 1 it
    resamples runs of `block` consecutive values (moving-block bootstrap): successive
    timings share the machine's state (caches, clocks, a neighbour's load), and resampling
    them one by one would treat them as independent and give too narrow an interval."""
    rng = np.random.default_rng(seed)
    n = len(values)
    block = max(1, min(block, n))
    starts = rng.integers(0, n - block + 1, size=(resamples, -(-n // block)))
    picks = (starts[..., None] + np.arange(block)).reshape(resamples, -1)[:, :n]
    medians = np.median(values[picks], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def block_length(n: int) -> int:
    """The usual n^(1/3) block length for a moving-block bootstrap of n values."""
    return max(1, round(n ** (1 / 3)))


@dataclass(frozen=True)
class Timing:
    """How to time: warm-up calls, the floor of pairs per batch size (taken in MIN_ROUNDS
    rounds), the per-batch-size time cap and the target half-width of the ratio's interval
    (relative)."""

    warmup: int = 5
    repeats: int = 30
    max_seconds: float = 5.0
    target: float = 0.03

    @classmethod
    def of(cls, m: MeasureConfig) -> Timing:
        return cls(m.warmup, m.repeats, m.max_seconds, m.target_halfwidth)


DEFAULT_TIMING = Timing()


MIN_ROUNDS = 3  # rounds per batch size, spread in time (see paired_ratios)


def bootstrap_rounds_ci(rounds: np.ndarray, resamples: int = 1000,
                        seed: int = 0) -> tuple[float, float]:
    """Two-level bootstrap 95% interval of the median of `rounds` ([R, n]: R rounds of n
    consecutive values): draw R rounds with replacement, then runs of consecutive values
    inside each drawn round (moving blocks of n^(1/3)). The ratio drifts at time scales longer
    than one round (benchmarks/interval_calibration.py: back-to-back 1.5 s runs of one pair
    spread by more than each run's own interval allows); rounds taken at different times see
    that drift, and drawing whole rounds puts it in the interval. With one round it is the
    moving-block bootstrap of that round."""
    rng = np.random.default_rng(seed)
    count, n = rounds.shape
    block = block_length(n)
    picks = rng.integers(0, count, size=(resamples, count))
    starts = rng.integers(0, n - block + 1, size=(resamples, count, -(-n // block)))
    inside = (starts[..., None] + np.arange(block)).reshape(resamples, count, -1)[..., :n]
    medians = np.median(rounds[picks[..., None], inside].reshape(resamples, -1), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


@dataclass
class _Series:
    """One batch size's pairs, round by round."""

    time_model: Callable[[], float]
    time_baseline: Callable[[], float]
    model_s: list[float] = field(default_factory=list)
    base_s: list[float] = field(default_factory=list)
    rounds: list[np.ndarray] = field(default_factory=list)
    spent: float = 0.0
    next_check: int = 0  # rounds before the interval is computed again
    result: PairedRatio | None = None

    def run_round(self, pairs: int, warmup: int) -> None:
        if not self.rounds:
            for _ in range(warmup):
                self.time_baseline()
                self.time_model()
        start, first = time.perf_counter(), len(self.model_s)
        for _ in range(pairs):
            self.pair()
        self.spent += time.perf_counter() - start
        self.rounds.append(np.asarray(self.model_s[first:]) / np.asarray(self.base_s[first:]))

    def pair(self) -> None:
        """One model/baseline pair, the order flipped every pair."""
        if len(self.model_s) % 2:
            self.model_s.append(self.time_model())
            self.base_s.append(self.time_baseline())
        else:
            self.base_s.append(self.time_baseline())
            self.model_s.append(self.time_model())

    def judge(self, timing: Timing) -> PairedRatio | None:
        """The result once MIN_ROUNDS rounds ran and the interval fits or time is up. The
        interval is recomputed only after the rounds grew by a quarter (its bootstrap costs
        more than a round of a small model's pairs), and always at the time cap."""
        count = len(self.rounds)
        timed_out = self.spent >= timing.max_seconds
        if count < MIN_ROUNDS or (count < self.next_check and not timed_out):
            return None
        table = np.stack(self.rounds)
        ratio = float(np.median(table))
        lo, hi = bootstrap_rounds_ci(table)
        converged = (hi - lo) / 2 <= timing.target * ratio
        if not (converged or timed_out):
            self.next_check = count + max(1, count // 4)
            return None
        return PairedRatio(1000 * statistics.median(self.model_s),
                           1000 * statistics.median(self.base_s), ratio, lo, hi,
                           table.size, converged, count)


def paired_ratios(
    timers: dict[int, tuple[Callable[[], float], Callable[[], float]]],
    timing: Timing,
) -> dict[int, PairedRatio]:
    """Time model and baseline in pairs, alternating which goes first, so that drift (another
    process starting, clocks changing) lands on both halves of a pair alike; one
    (model, baseline) timer pair per batch size. Pairs come in rounds of
    ceil(repeats / MIN_ROUNDS), taken round-robin over the batch sizes so that each batch
    size's rounds are spread in time. The node's measuring lock is held throughout (the
    node's other trials pause at their next batch until it ends). A batch size
    is done after at least MIN_ROUNDS rounds (so at least `repeats` pairs), once its
    ratio's 95% interval (bootstrap_rounds_ci) is within +-target of it or its pairs have
    taken `max_seconds`."""
    per_round = max(1, -(-timing.repeats // MIN_ROUNDS))
    series = {b: _Series(model, baseline) for b, (model, baseline) in timers.items()}
    # one hold for the whole measurement: released between rounds, the lock would let a
    # neighbour's batch in before every round, and each round would wait for it
    with node_lock.measuring():
        while pending := [s for s in series.values() if s.result is None]:
            for one in pending:
                one.run_round(per_round, timing.warmup)
                one.result = one.judge(timing)
    return {b: s.result for b, s in series.items() if s.result is not None}


def paired_ratio(
    time_model: Callable[[], float],
    time_baseline: Callable[[], float],
    warmup: int,
    min_pairs: int,
    max_seconds: float,
    target: float = 0.03,
) -> PairedRatio:
    """paired_ratios for one batch size."""
    timing = Timing(warmup, min_pairs, max_seconds, target)
    return paired_ratios({0: (time_model, time_baseline)}, timing)[0]


@dataclass(frozen=True)
class LatencyPair:
    """Model and baseline timed in the same process, per batch size (see `paired_ratio`)."""

    by_batch: dict[int, PairedRatio]

    @property
    def model_ms(self) -> dict[int, float]:
        return {b: r.model_ms for b, r in self.by_batch.items()}

    @property
    def baseline_ms(self) -> dict[int, float]:
        return {b: r.baseline_ms for b, r in self.by_batch.items()}

    def ratio(self, batch: int) -> float:
        return self.by_batch[batch].ratio

    def speedup(self, batch: int) -> float:
        return 1.0 / self.by_batch[batch].ratio


def paired_inputs(img_size: int, batch_sizes: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """The same seeded images for every trial and runtime."""
    gen = torch.Generator().manual_seed(0)
    return {b: torch.randn(b, 3, img_size, img_size, generator=gen) for b in batch_sizes}


def compare_latency(
    model: nn.Module,
    baseline: nn.Module,
    img_size: int,
    batch_sizes: tuple[int, ...],
    device: torch.device,
    timing: Timing = DEFAULT_TIMING,
) -> LatencyPair:
    """Eager PyTorch latency of model against baseline on `device`, in interleaved pairs."""
    model.eval()
    baseline.eval()
    inputs = {b: x.to(device) for b, x in paired_inputs(img_size, batch_sizes).items()}
    return LatencyPair(paired_ratios(
        {b: (torch_timer(model, x), torch_timer(baseline, x)) for b, x in inputs.items()},
        timing))
