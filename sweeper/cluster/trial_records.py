"""Driver-side record of every trial: a Ray Tune callback appending each result to the
sweep folder's trials.jsonl and writing one MLflow child run per trial (through the sweep's
`Mirror`, so workers on other nodes never need the tracking store)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from sweeper import compress
from sweeper.core import journal
from sweeper.core.files import ARTIFACTS
from sweeper.early_stop import board as early_stop
from sweeper.results import hv_history
from sweeper.results.report import describe_config
from sweeper.search import feasible
from sweeper.spaces.space import Space

if TYPE_CHECKING:  # the driver's types; a worker importing this need not load MLflow
    from sweeper.tracking.client import Mirror, Tracker


def pipeline_params(space: Space, config: dict[str, Any]) -> dict[str, Any]:
    try:
        return compress.pipeline_to_dict(space.pipeline(config))
    except ValueError:  # an invalid sample is logged raw; the trial itself fails with why
        return {"raw": config}


@dataclass
class MlflowChildren(tune.Callback):
    """Driver-side: every trial result appended to the sweep folder's trials.jsonl as it
    arrives, and one MLflow child run per Tune trial, FAILED ones included, written through
    the sweep's `Mirror` (retried while the store is unreachable)."""

    tracker: Tracker
    parent_id: str
    space: Space
    total: int
    max_drop: float | None = None
    log: Callable[[str], None] = print
    attempts: dict[str, int] = field(default_factory=dict)
    done: int = 0
    started: set[str] = field(default_factory=set)  # trials whose child run was asked for
    mirror: Mirror | None = None  # set by run_tune, also after a restore
    journal: Path | None = None  # <sweep folder>/trials.jsonl
    baseline_val_acc: float | None = None  # set by run_tune: the hypervolume history needs it

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the mirror holds a thread
        # the curve is rebuilt from trials.jsonl, once, after a restore
        return {k: v for k, v in self.__dict__.items() if k not in ("mirror", "_curve")}

    def _hypervolume(self, record: dict[str, Any]) -> hv_history.Curve | None:
        """The hypervolume curve with `record` (just appended to trials.jsonl) in: read from
        the journal once, then extended one record at a time."""
        if self.journal is None or self.baseline_val_acc is None:
            return None
        curve = self.__dict__.get("_curve")
        if curve is None:
            curve = self._curve = hv_history.Curve.from_journal(self.journal,
                                                                self.baseline_val_acc)
        else:
            curve.add_record(record)
        return curve

    def setup(self, **info: Any) -> None:
        """Also runs after a restore: re-find the child runs earlier drivers created."""
        self.stopped: set[str] = set()  # closed as KILLED by Ctrl-C; Tune runs them again
        for run in self.tracker.children(self.parent_id):
            trial_id = run.data.tags.get("sweeper.trial_id")
            if trial_id:
                self.started.add(trial_id)
                if run.info.status in ("FINISHED", "FAILED"):
                    self.done += 1
                elif run.info.status == "KILLED":
                    self.stopped.add(trial_id)

    def _write(self, name: str, *args: Any) -> None:
        assert self.mirror is not None, "run_tune sets the mirror"
        self.mirror.submit(name, *args)

    def _record(self, record: dict[str, Any]) -> None:
        if self.journal is not None:
            journal.append(self.journal, {"time": time.time(), **record})

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.started:  # a retried trial keeps its child run
            if trial.trial_id in self.stopped:
                self.stopped.discard(trial.trial_id)
                self._write("reopen_trial", trial.trial_id)
            return
        self.started.add(trial.trial_id)
        params = pipeline_params(self.space, trial.config)
        self._write("start_trial", trial.trial_id, params,
                    {"sweeper.config": describe_config(params)})

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        n = self.attempts[trial.trial_id] = self.attempts.get(trial.trial_id, 1) + 1
        tags = {"attempts": str(n), f"attempt_{n - 1}_error": _error_text(trial)[-400:]}
        self._write("tag_trial", trial.trial_id, tags)
        self.log(f"  trial {trial.trial_id} failed, retrying (attempt {n})")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        metrics = {k: v for k, v in result.items() if k in _METRIC_KEYS or
                   k.startswith(("latency_ms_b", "baseline_latency_ms_b", "speedup_b",
                                 "latency_ratio", "latency_pairs", "latency_rounds",
                                 "latency_converged", "quiet_wait_s", "measure_wait_s"))}
        tags = {str(k): str(v) for k, v in (result.get("tags") or {}).items()}
        tags["attempts"] = str(self.attempts.get(trial.trial_id, 1))
        ok = feasible(result, self.max_drop)
        tags["feasible"] = str(ok).lower()
        checkpoint = trial.checkpoint
        files = str(Path(checkpoint.path, ARTIFACTS)) if checkpoint is not None else None
        params = pipeline_params(self.space, trial.config)
        record = {"trial": trial.trial_id, "event": "complete", "params": params,
                  "metrics": metrics, "tags": tags,
                  "checkpoint": checkpoint.path if checkpoint is not None else None}
        self._record(record)
        curve = self._hypervolume(record)
        # idempotent: a reused result's run may have missed its end when the driver died
        self._write("finish_trial", trial.trial_id, params, metrics, tags, files)
        if result.get("reused"):
            self.log(f"  trial {trial.trial_id} had finished before the resume; result kept")
            return
        self.done += 1
        if curve is not None:
            self._write("parent_metrics", {hv_history.METRIC: curve.values[-1]},
                        len(curve.values))
        head = f"[{self.done}/{self.total}] {trial.trial_id} {describe_config(params)}: "
        if early_stop.STOPPED in metrics:
            self.log(head + f"stopped at rung {int(metrics[early_stop.STOPPED])} (epoch "
                     f"{int(metrics['stopped_at_epoch'])}): val {metrics['val_acc']:.1%} so "
                     f"far, {metrics['size_mb']:.3f} MB, latency ratio "
                     f"{metrics['latency_ratio']:.2f}  {metrics.get('trial_seconds', 0):.0f}s")
            return
        self.log(
            head +
            f"val {metrics.get('val_acc', float('nan')):.1%}  "
            f"{metrics.get('size_mb', float('nan')):.3f} MB  "
            f"{metrics.get('latency_ms', float('nan')):.2f} ms "
            f"({metrics.get('speedup', float('nan')):.2f}x)  "
            f"{metrics.get('trial_seconds', 0):.0f}s" + ("" if ok else "  (infeasible)")
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = _error_text(trial)
        tags = {"attempts": str(self.attempts.get(trial.trial_id, 1))}
        params = pipeline_params(self.space, trial.config)
        self._record({"trial": trial.trial_id, "event": "error", "params": params,
                      "tags": tags, "error": text})
        self._write("fail_trial", trial.trial_id, params, text, tags)
        self.done += 1
        last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
        self.log(f"[{self.done}/{self.total}] {trial.trial_id} FAILED: {last}")


_METRIC_KEYS = {
    "val_acc", "val_acc_drop", "size_mb", "size_bytes", "size_ratio", "latency_ms",
    "baseline_latency_ms", "speedup", "latency_ratio", "params", "trial_seconds",
    "simulated", "onnx_size_bytes", "onnx_size_mb", "ort_val_acc",
    "stopped_at_rung", "stopped_at_epoch", "torch_size_bytes",
    "baseline_onnx_size_bytes",
}


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        return Path(path).read_text()
    return str(getattr(trial, "error_msg", "") or "trial failed")
