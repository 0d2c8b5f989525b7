"""The hypervolume after every finished trial: the curve of how fast a sweep finds its front.

Read from the sweep folder's trials.jsonl (every result in the order it arrived, kept across
resumes), so the step metric the parent run logs while the sweep runs and the third panel of
front.png are the same numbers, and the last point equals the parent's `hypervolume` (the
baseline competes in both). While a sweep runs, `Curve` extends it one trial at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.core import journal
from sweeper.results.pareto import covers, normalised_hypervolume, pareto_front

METRIC = "hypervolume_history"  # the parent run's step metric; step = finished trials
# the axes of normalised_hypervolume: only points on this front add volume
_HV_AXES = (("val_acc", "max"), ("size_ratio", "min"), ("speedup", "max"))


def baseline_point(baseline_val_acc: float) -> dict[str, Any]:
    """The uncompressed model as a result: ratios of 1 by definition."""
    return {"trial": "baseline", "val_acc": baseline_val_acc, "size_ratio": 1.0, "speedup": 1.0}


def _result(rec: dict[str, Any]) -> dict[str, Any]:
    """A trials.jsonl `complete` record as a point: its metrics, whether it was feasible, and
    whether it stopped at a rung (then it holds no final point: its accuracy is only the
    rung's)."""
    metrics = dict(rec.get("metrics") or {})
    metrics["feasible"] = (rec.get("tags") or {}).get("feasible", "true") != "false"
    metrics["stopped"] = "stopped_at_rung" in metrics
    return metrics


def finished(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per trial in the order trials first finished (a resume reports a trial
    that had finished before again; it keeps its place)."""
    seen: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.get("event") == "complete" and str(rec.get("trial")) not in seen:
            seen[str(rec.get("trial"))] = _result(rec)
    return list(seen.values())


class Curve:
    """The history kept one result at a time. It holds the current front (baseline
    included), so a step costs O(front), never O(trials so far): the driver extends it after
    each finished trial instead of re-reading trials.jsonl."""

    def __init__(self, baseline_val_acc: float) -> None:
        self._base = baseline_point(baseline_val_acc)
        self._pool = [self._base]
        self._seen: set[str] = set()
        self.values: list[float] = []
        self._value = normalised_hypervolume(self._pool, self._base)

    def add(self, result: dict[str, Any]) -> float:
        """The hypervolume once `result` (a point as `finished` gives) is in."""
        if not result.get("stopped") and not self._covered(result):
            grown = pareto_front([*self._pool, result], _HV_AXES)  # dominated: no volume
            if any(p is result for p in grown):
                self._pool = grown
                self._value = normalised_hypervolume(self._pool, self._base)
        self.values.append(self._value)
        return self._value

    def _covered(self, result: dict[str, Any]) -> bool:
        """A point of the pool at least as good on every axis: `result` adds no volume. Kept
        out, an equal point (trials that tie) cannot grow the pool past the front's size."""
        keys, senses = zip(*_HV_AXES, strict=True)
        try:
            mine = [float(result[k]) for k in keys]
        except (KeyError, TypeError, ValueError):
            return False  # pareto_front decides what an incomplete result is
        return any(covers([p[k] for k in keys], mine, senses) for p in self._pool)

    def add_record(self, rec: dict[str, Any]) -> bool:
        """A trials.jsonl record; False (and nothing added) unless it is a trial's first
        `complete` record."""
        trial = str(rec.get("trial"))
        if rec.get("event") != "complete" or trial in self._seen:
            return False
        self._seen.add(trial)
        self.add(_result(rec))
        return True

    @classmethod
    def from_journal(cls, path: Path, baseline_val_acc: float) -> Curve:
        curve = cls(baseline_val_acc)
        for rec in journal.read(path):
            curve.add_record(rec)
        return curve


def history(results: list[dict[str, Any]], baseline_val_acc: float) -> list[float]:
    """Normalised hypervolume (pareto.normalised_hypervolume) after each result in turn."""
    curve = Curve(baseline_val_acc)
    for r in results:
        curve.add(r)
    return curve.values


def from_journal(path: Path, baseline_val_acc: float) -> list[float]:
    return Curve.from_journal(path, baseline_val_acc).values
