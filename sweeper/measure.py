"""Size and latency, as docs/architecture.md's measurement protocol describes.

- size: bytes of the serialised state_dict, the artefact a user would ship;
- latency: on the given device and thread count, after warm-up, median of many timed calls,
  with the device synchronised before each clock read.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


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


@torch.inference_mode()
def latency_ms(
    model: nn.Module,
    example: torch.Tensor,
    warmup: int = 5,
    repeats: int = 30,
) -> float:
    """Median wall time in milliseconds of `model(example)` on example's device."""
    model.eval()
    device = example.device
    for _ in range(warmup):
        model(example)
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        model(example)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


@dataclass(frozen=True)
class LatencyPair:
    """Latency of a model and of the baseline measured in the same process, per batch size."""

    model_ms: dict[int, float]
    baseline_ms: dict[int, float]

    def speedup(self, batch: int) -> float:
        return self.baseline_ms[batch] / self.model_ms[batch]


def alternate(
    time_model: Callable[[torch.Tensor], float],
    time_baseline: Callable[[torch.Tensor], float],
    img_size: int,
    batch_sizes: tuple[int, ...],
) -> LatencyPair:
    """Time baseline then model on the same seeded input, per batch size, so drift hits both
    equally. Shared by eager PyTorch (below) and ONNX Runtime (sweeper.runtime)."""
    model_ms: dict[int, float] = {}
    base_ms: dict[int, float] = {}
    gen = torch.Generator().manual_seed(0)
    for batch in batch_sizes:
        x = torch.randn(batch, 3, img_size, img_size, generator=gen)
        base_ms[batch] = time_baseline(x)
        model_ms[batch] = time_model(x)
    return LatencyPair(model_ms, base_ms)


def compare_latency(
    model: nn.Module,
    baseline: nn.Module,
    img_size: int,
    batch_sizes: tuple[int, ...],
    device: torch.device,
    warmup: int = 5,
    repeats: int = 30,
) -> LatencyPair:
    """Eager PyTorch latency of model and baseline on `device`, alternating."""
    return alternate(
        lambda x: latency_ms(model, x.to(device), warmup, repeats),
        lambda x: latency_ms(baseline, x.to(device), warmup, repeats),
        img_size, batch_sizes,
    )
