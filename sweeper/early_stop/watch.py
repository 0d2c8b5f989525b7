"""The trial's side of multi-objective successive halving (sweeper.early_stop): at each rung
epoch of its training stage the trial evaluates validation accuracy so far, asks the driver
whether to go on, and stops by raising `StoppedAtRung` when told to.

Size and latency do not change with training: they are those of the trial's final model
structure, measured once, at its first rung, on a structure-only rebuild of its pipeline
(no data, no training), the same way `compress.rebuild` reloads a saved trial. Evaluating
at a rung draws nothing from the training generators, so a trial that is never stopped
trains exactly as with early stopping off. No Ray here: `ask` is whatever the worker gives.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sweeper import compress
from sweeper.data.preprocess import Preprocessing
from sweeper.measure.latency import Timing, compare_latency
from sweeper.measure.size import state_bytes

MB = 1e6
Point = tuple[float, float, float]  # (val acc so far, size MB, latency ratio): objectives.METRICS


@dataclass(frozen=True)
class RungPlan:
    epochs: tuple[int, ...]  # stage epochs after which the trial is judged (1, 3, 9 ...)
    ask: Callable[[int, Point], bool]  # (rung index, point) -> continue?
    # judge but never stop: the decision is only noted (benchmarks/early_stopping.py counts
    # what a scheduler would have stopped in a run without one)
    observe: bool = False


class StoppedAtRung(Exception):  # noqa: N818 (a stop, not an error)
    def __init__(self, rung: int, epoch: int, point: Point) -> None:
        super().__init__(f"stopped at rung {rung} (epoch {epoch})")
        self.rung, self.epoch, self.point = rung, epoch, point


def final_form(baseline: nn.Module, pipeline: list[Any], device: torch.device,
               preprocessing: Preprocessing, timing: Timing,
               batch: int) -> tuple[float, float]:
    """(size MB, batch latency ratio) of the pipeline's final model structure."""
    ctx = compress.TrialContext(device=device, preprocessing=preprocessing, structure_only=True)
    probe = compress.apply_pipeline(copy.deepcopy(baseline).cpu(), pipeline, ctx).eval()
    size = len(state_bytes(probe)) / MB
    latency = compare_latency(probe, baseline, preprocessing.img_size, (batch,), device, timing)
    return size, latency.ratio(batch)


def hook(plan: RungPlan, evaluate: Callable[[nn.Module], float],
         measure: Callable[[], tuple[float, float]],
         notes: dict[str, Any] | None = None) -> Callable[[nn.Module, int], None]:
    """`TrialContext.on_epoch`: called by a training stage after each epoch. `notes` (the
    trial's tags) get the seconds the rungs cost and, observing, where it would have
    stopped."""
    cache: list[tuple[float, float]] = []
    notes = {} if notes is None else notes

    def on_epoch(model: nn.Module, done: int) -> None:
        if done not in plan.epochs:
            return
        began = time.perf_counter()
        was = model.training
        acc = evaluate(model)
        model.train(was)
        if not cache:
            cache.append(measure())
        point = (acc, *cache[0])
        rung = plan.epochs.index(done)
        go_on = plan.ask(rung, point)
        notes["rung_seconds"] = notes.get("rung_seconds", 0.0) + time.perf_counter() - began
        if not go_on:
            if not plan.observe:
                raise StoppedAtRung(rung, done, point)
            notes.setdefault("would_stop_at_rung", rung)

    return on_epoch


def stopped_metrics(stop: StoppedAtRung, baseline_val_acc: float,
                    baseline_size_bytes: int) -> dict[str, float]:
    """What a stopped trial reports: its rung point, named as a finished trial's metrics
    (partial: the accuracy is the rung's), and where it stopped."""
    acc, size_mb, ratio = stop.point
    return {"val_acc": acc, "val_acc_drop": baseline_val_acc - acc, "size_mb": size_mb,
            "size_ratio": size_mb * MB / baseline_size_bytes, "latency_ratio": ratio,
            "stopped_at_rung": float(stop.rung), "stopped_at_epoch": float(stop.epoch)}


def timing_of(timing: Timing) -> Timing:
    """The rung's latency: the sweep's protocol with a shorter cap (it is measured again,
    in full, if the trial finishes)."""
    return dataclasses.replace(timing, max_seconds=min(timing.max_seconds, 2.0))
