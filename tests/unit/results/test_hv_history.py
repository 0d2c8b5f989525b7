"""The hypervolume history: one point per finished trial, read from trials.jsonl."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.core import journal
from sweeper.results.hv_history import baseline_point, from_journal
from sweeper.results.pareto import normalised_hypervolume


def _complete(path: Path, trial: str, acc: float, size: float, speedup: float,
              feasible: bool = True, **extra: float) -> None:
    journal.append(path, {"trial": trial, "event": "complete", "tags": {
        "feasible": str(feasible).lower()}, "metrics": {
        "val_acc": acc, "size_ratio": size, "speedup": speedup, **extra}})


def test_one_point_per_finished_trial_ending_at_the_sweeps_hypervolume(tmp_path: Path) -> None:
    path = tmp_path / journal.TRIALS
    _complete(path, "a", 0.90, 0.5, 1.0)
    _complete(path, "b", 0.80, 0.6, 0.9)  # dominated by a: the curve stays flat
    _complete(path, "c", 0.95, 0.3, 1.5)
    _complete(path, "d", 0.99, 0.1, 3.0, feasible=False)  # never on the front
    _complete(path, "e", 0.99, 0.1, 3.0, stopped_at_rung=1)  # rung accuracy is no result
    journal.append(path, {"trial": "b", "event": "error"})
    _complete(path, "a", 0.10, 9.0, 0.1)  # a resume reporting a again: first one counts
    curve = from_journal(path, 0.97)
    assert len(curve) == 5
    assert curve[1] == curve[0] and curve[4] == curve[3] == curve[2] > curve[1]
    rows = [{"val_acc": 0.90, "size_ratio": 0.5, "speedup": 1.0},
            {"val_acc": 0.80, "size_ratio": 0.6, "speedup": 0.9},
            {"val_acc": 0.95, "size_ratio": 0.3, "speedup": 1.5}]
    base = baseline_point(0.97)
    assert curve[-1] == pytest.approx(normalised_hypervolume([*rows, base], base))
    assert curve[0] == pytest.approx(normalised_hypervolume([rows[0], base], base))


def test_no_journal_is_an_empty_history(tmp_path: Path) -> None:
    assert from_journal(tmp_path / journal.TRIALS, 0.9) == []


def test_tied_results_keep_a_step_at_the_fronts_size_and_the_curve_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials that tie (a discrete space, a trivial benchmark trial) add no volume: the curve
    keeps one of them, so a step's work stays the size of the front, not of the sweep (tied
    points used to pile up in the front: 2,000 ties made each step 8x slower by the end)."""
    from sweeper.results import hv_history

    seen: list[int] = []
    front = hv_history.pareto_front
    monkeypatch.setattr(hv_history, "pareto_front",
                        lambda pool, axes: seen.append(len(pool)) or front(pool, axes))
    tie = {"val_acc": 0.9, "size_ratio": 0.5, "speedup": 1.2, "feasible": True}
    better = {"val_acc": 0.8, "size_ratio": 0.2, "speedup": 2.0, "feasible": True}
    results = [dict(tie) for _ in range(300)] + [better] + [dict(tie) for _ in range(300)]
    curve = hv_history.Curve(0.95)
    values = [curve.add(r) for r in results]
    assert max(seen) <= 3  # baseline, one tie, `better`: never the ties piled up
    base = baseline_point(0.95)
    assert values[0] == pytest.approx(normalised_hypervolume([base, tie], base))
    assert values[-1] == pytest.approx(normalised_hypervolume([base, tie, better], base))
    assert values[-1] > values[0] and len(set(values[:300])) == 1
