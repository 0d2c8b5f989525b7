"""The hypervolume after every finished trial: the curve of how fast a sweep finds its front.

Read from the sweep folder's trials.jsonl (every result in the order it arrived, kept across
resumes), so the step metric the parent run logs while the sweep runs and the third panel of
front.png are the same numbers, and the last point equals the parent's `hypervolume` (the
baseline competes in both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.core import journal
from sweeper.results.pareto import normalised_hypervolume, pareto_front

METRIC = "hypervolume_history"  # the parent run's step metric; step = finished trials
# the axes of normalised_hypervolume: only points on this front add volume
_HV_AXES = (("val_acc", "max"), ("size_ratio", "min"), ("speedup", "max"))


def baseline_point(baseline_val_acc: float) -> dict[str, Any]:
    """The uncompressed model as a result: ratios of 1 by definition."""
    return {"trial": "baseline", "val_acc": baseline_val_acc, "size_ratio": 1.0, "speedup": 1.0}


def finished(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per trial in the order trials first finished (a resume reports a trial
    that had finished before again; it keeps its place). A trial stopped at a rung counts
    as finished but holds no final point: its accuracy is only the rung's."""
    seen: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.get("event") != "complete" or rec.get("trial") in seen:
            continue
        metrics = dict(rec.get("metrics") or {})
        metrics["feasible"] = (rec.get("tags") or {}).get("feasible", "true") != "false"
        metrics["stopped"] = "stopped_at_rung" in metrics
        seen[str(rec.get("trial"))] = metrics
    return list(seen.values())


def history(results: list[dict[str, Any]], baseline_val_acc: float) -> list[float]:
    """Normalised hypervolume (pareto.normalised_hypervolume) after each result in turn."""
    base = baseline_point(baseline_val_acc)
    out, pool = [], [base]
    value = normalised_hypervolume(pool, base)
    for r in results:
        if not r.get("stopped"):
            grown = pareto_front([*pool, r], _HV_AXES)  # dominated points add no volume
            if any(p is r for p in grown):
                pool = grown
                value = normalised_hypervolume(pool, base)
        out.append(value)
    return out


def from_journal(path: Path, baseline_val_acc: float) -> list[float]:
    return history(finished(journal.read(path)), baseline_val_acc)
