"""Size and latency, as docs/architecture.md's measurement protocol describes.

- size: bytes of the serialised state_dict, the artifact a user would ship;
- latency: on the given device and thread count, after warm-up, model and baseline timed in
  interleaved pairs on the same input, with the device synchronised around each call; the
  ratio is the median of the paired ratios, with a moving-block bootstrap 95% confidence
  interval (successive pairs share the machine's state, so they are resampled in runs).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sweeper import node_lock
from sweeper.config import MeasureConfig


def state_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def serialized_size(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: what a user would ship."""
    return len(state_bytes(model))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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


def paired_ratio(
    time_model: Callable[[], float],
    time_baseline: Callable[[], float],
    warmup: int,
    min_pairs: int,
    max_seconds: float,
    target: float = 0.03,
) -> PairedRatio:
    """Time model and baseline in pairs, alternating which goes first, so that drift (another
    process starting, clocks changing) lands on both halves of a pair alike. Pairs come in
    rounds of `min_pairs` until the ratio's 95% interval is within +-target of it, or
    `max_seconds` have passed (at least one round always runs)."""
    for _ in range(warmup):
        time_baseline()
        time_model()
    model_s: list[float] = []
    base_s: list[float] = []
    start = time.perf_counter()
    while True:
        for _ in range(min_pairs):
            if len(model_s) % 2:
                model_s.append(time_model())
                base_s.append(time_baseline())
            else:
                base_s.append(time_baseline())
                model_s.append(time_model())
        ratios = np.asarray(model_s) / np.asarray(base_s)
        ratio = float(np.median(ratios))
        lo, hi = bootstrap_median_ci(ratios, block=block_length(len(ratios)))
        converged = (hi - lo) / 2 <= target * ratio
        if converged or time.perf_counter() - start >= max_seconds:
            return PairedRatio(1000 * statistics.median(model_s),
                               1000 * statistics.median(base_s), ratio, lo, hi,
                               len(ratios), converged)


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


@dataclass(frozen=True)
class Timing:
    """How to time: warm-up calls, pairs per round (the floor), the per-batch-size time cap
    and the target half-width of the ratio's interval (relative)."""

    warmup: int = 5
    repeats: int = 30
    max_seconds: float = 5.0
    target: float = 0.03

    @classmethod
    def of(cls, m: MeasureConfig) -> Timing:
        return cls(m.warmup, m.repeats, m.max_seconds, m.target_halfwidth)


DEFAULT_TIMING = Timing()


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
    out = {}
    for batch, x in paired_inputs(img_size, batch_sizes).items():
        x = x.to(device)
        with node_lock.measuring():  # the node's other trials pause their batches
            out[batch] = paired_ratio(torch_timer(model, x), torch_timer(baseline, x),
                                      timing.warmup, timing.repeats, timing.max_seconds,
                                      timing.target)
    return LatencyPair(out)
