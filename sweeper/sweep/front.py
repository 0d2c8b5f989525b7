"""The end of a sweep: the Pareto front with the baseline competing, the test accuracy of
its members (the only use of the test split), the front files, and the MLflow marks."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sweeper import compress
from sweeper.core import journal, objectives
from sweeper.core.files import TRIAL_STATE_FILE
from sweeper.deploy import registry_models as registry
from sweeper.early_stop import board as early_stop
from sweeper.models.train import accuracy
from sweeper.results import hv_history
from sweeper.results.pareto import normalised_hypervolume, pareto_front
from sweeper.results.report import (
    Front,
    format_front_table,
    front_to_csv,
    front_to_json,
    plot_front,
)
from sweeper.sweep.state import SweepOutcome
from sweeper.trial.run import TrialInputs, build_baseline, evaluate_artifact

if TYPE_CHECKING:
    from sweeper.cluster.orchestrate import SweepRun
    from sweeper.sweep.state import Sweep

FRONT_FILES = ("front.csv", "front.json", "front.png", "front.txt")


def baseline_row(sweep: Sweep, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The uncompressed model as a row of the table; its latency is the median of the
    baseline timings every trial took in its own process."""
    cfg, splits, inputs = sweep.cfg, sweep.splits, sweep.inputs
    base_lat = [r["baseline_latency_ms"] for r in rows if "baseline_latency_ms" in r]
    return {
        "trial": "baseline",
        "config": {},
        "val_acc": inputs.baseline_val_acc,
        "test_acc": accuracy(build_baseline(inputs), splits.test, splits.preprocessing,
                             torch.device("cpu"), cfg.measure.eval_batch_size),
        "size_mb": _shipped_baseline_bytes(inputs.baseline_size_bytes, rows) / 1e6,
        "latency_ms": statistics.median(base_lat) if base_lat else float("nan"),
        "latency_ratio": 1.0,
        "speedup": 1.0,
        "size_ratio": 1.0,
    }


def _shipped_baseline_bytes(torch_bytes: int, rows: list[dict[str, Any]]) -> float:
    """The baseline's bytes in the format trials' sizes count: its float ONNX graph when
    the sweep measured in ONNX Runtime, else its state_dict."""
    onnx = [r["baseline_onnx_size_bytes"] for r in rows if "baseline_onnx_size_bytes" in r]
    return statistics.median(onnx) if onnx else float(torch_bytes)


def front_of(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """The baseline competes: a trial it dominates is no reason to compress."""
    return [r for r in pareto_front([*rows, baseline], objectives.OBJECTIVES)
            if r is not baseline]


def add_test_accuracy(front: list[dict[str, Any]], checkpoints: dict[str, str],
                      inputs: TrialInputs, test: Any) -> None:
    for row in front:
        ckpt = checkpoints.get(row["trial"])
        if ckpt is None:
            continue
        state = torch.load(Path(ckpt) / TRIAL_STATE_FILE, map_location="cpu", weights_only=True)
        pipeline = compress.pipeline_from_dict(row["config"])
        row["test_acc"] = evaluate_artifact(inputs, pipeline, state, test)


def finish(sweep: Sweep, tuned: SweepRun) -> SweepOutcome:
    """Front, its test accuracy, files, then MLflow marks (queued on the mirror: the files
    never wait for MLflow)."""
    finished, stopped = early_stop.split(tuned.rows)  # stopped: rung values, not final
    rows = one_fingerprint(finished, sweep.log)
    baseline = baseline_row(sweep, rows)
    front = front_of(rows, baseline)
    add_test_accuracy(front, tuned.checkpoints, sweep.inputs, sweep.splits.test)
    hv = normalised_hypervolume([*rows, baseline], baseline)
    table = format_front_table(front, baseline)
    files = [sweep.folder / name for name in FRONT_FILES]
    front_to_csv(front, files[0], baseline=baseline)
    front_to_json(front, files[1], baseline=baseline)
    plot_front(rows, front, baseline, files[2], hv_history.from_journal(
        sweep.folder / journal.TRIALS, sweep.inputs.baseline_val_acc))
    files[3].write_text(table + "\n")
    _mark_mlflow(sweep, finished, front, baseline, hv, files, len(stopped))
    return SweepOutcome(sweep.folder, sweep.parent_run_id, tuned.rows, Front(front, baseline),
                        baseline, hv, tuned.wall_seconds, table,
                        tune_seconds=tuned.wall_seconds)


def one_fingerprint(rows: list[dict[str, Any]], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The rows measured on the sweep's main hardware (the fingerprint most trials share):
    latency ratios from two machines, thread counts or runtimes are not comparable, so the
    front never mixes them. The others stay in MLflow, marked, and are named in a warning."""
    counts = Counter(r.get("fingerprint") for r in rows)
    if len(counts) <= 1:
        return rows
    main = counts.most_common(1)[0][0]
    others = [r for r in rows if r.get("fingerprint") != main]
    for row in others:
        row["other_hardware"] = True
    log(f"warning: {len(others)} trial(s) ({', '.join(r['trial'] for r in others[:5])}"
        f"{', ...' if len(others) > 5 else ''}) were measured on other hardware than the "
        f"other {len(rows) - len(others)} (fingerprint {main}); their latency ratios are not "
        "comparable, so the front leaves them out (they stay in MLflow)")
    return [r for r in rows if r.get("fingerprint") == main]


def _mark_mlflow(sweep: Sweep, rows: list[dict[str, Any]], front: list[dict[str, Any]],
                 baseline: dict[str, Any], hv: float, files: list[Path], stopped: int) -> None:
    mirror = sweep.mirror
    assert mirror is not None
    # child runs a killed driver started but Tune never recorded (their trial ran again)
    mirror.submit("close_orphans", "driver died before Tune recorded this trial")
    front_ids = {r["trial"] for r in front}
    for row in rows:
        tags = {"pareto": str(row["trial"] in front_ids).lower()}
        if row.get("other_hardware"):
            tags["front_excluded"] = "measured on other hardware than the front's trials"
        mirror.submit("tag_trial", row["trial"], tags)
        if "test_acc" in row:
            mirror.submit("trial_metrics", row["trial"], {"test_acc": row["test_acc"]})
    if sweep.cfg.registry:
        mirror.submit("register_models", sweep.name, registry.prepare(sweep.folder, sweep.log))
    mirror.submit("log_front", hv, [str(f) for f in files],
                  {"front_size": len(front), "trials_ok": len(rows), "trials_stopped": stopped,
                   "baseline_test_acc": baseline["test_acc"]})
