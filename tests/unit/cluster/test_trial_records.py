"""The driver's per-trial bookkeeping stays O(front): over a 200-trial replay through the
real Tune callback, trials.jsonl is read once (to start the curve) and the hypervolume curve
is extended, never recomputed; the curve it logs equals the one read from the journal."""

from __future__ import annotations

import json
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sweeper.cluster import trial_records
from sweeper.cluster.trial_records import MlflowChildren
from sweeper.core import journal
from sweeper.results import hv_history
from sweeper.spaces.space import load_space
from tests.helpers.paths import ROOT

TRIALS = 200


@dataclass
class FakeTrial:
    """What the callback reads of a Tune trial."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any]
    checkpoint: Any = None


@dataclass
class Writes:
    """Stands in for the MLflow Mirror: the callback's writes, in order."""

    calls: list[tuple[str, tuple]] = field(default_factory=list)

    def submit(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))


def results(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(TRIALS):
        speedup = rng.uniform(0.3, 3.0)
        out.append({"val_acc": rng.uniform(0.5, 0.95), "size_ratio": rng.uniform(0.1, 1.2),
                    "speedup": speedup, "latency_ratio": 1 / speedup, "size_mb": 0.1,
                    "latency_ms": 1.0, "trial_seconds": 0.0,
                    "tags": {} if i % 17 else {"note": "x"}})
    return out


def silent(_message: str) -> None:
    pass


def replay(tmp: Path, seed: int) -> tuple[MlflowChildren, Writes]:
    space = load_space("search_bench")
    config = {"prune.ratio": 0.1, "nystrom.enabled": False, "quantize.enabled": False}
    writes = Writes()
    cb = MlflowChildren(tracker=None, parent_id="p", space=space, total=TRIALS,  # type: ignore[arg-type]
                        max_drop=0.3, log=silent)
    cb.mirror, cb.journal, cb.baseline_val_acc = writes, tmp / journal.TRIALS, 0.9  # type: ignore[assignment]
    for i, result in enumerate(results(seed)):
        cb.on_trial_complete(i, [], FakeTrial(f"t{i:04d}", config, result))
    return cb, writes


def test_a_trial_step_neither_rereads_the_journal_nor_recomputes_the_curve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads, full = [], []
    real_read, real_history = journal.read, hv_history.history
    monkeypatch.setattr(journal, "read", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    monkeypatch.setattr(hv_history, "history",
                        lambda *a, **k: full.append(a) or real_history(*a, **k))
    replay(tmp_path, seed=0)
    assert len(reads) <= 1 and not full


def test_the_logged_curve_equals_the_journal_s(tmp_path: Path) -> None:
    _, writes = replay(tmp_path, seed=1)
    logged = [args for name, args in writes.calls if name == "parent_metrics"]
    assert [step for _m, step in logged] == list(range(1, TRIALS + 1))
    curve = [m[hv_history.METRIC] for m, _step in logged]
    assert curve == hv_history.from_journal(tmp_path / journal.TRIALS, 0.9)
    assert curve == sorted(curve) and curve[-1] > curve[0]  # a hypervolume never shrinks


def test_a_restored_callback_rebuilds_the_curve_from_the_journal_once(tmp_path: Path) -> None:
    cb, _ = replay(tmp_path, seed=2)
    restored = pickle.loads(pickle.dumps(cb))  # as Tune saves and restores its callbacks
    assert "_curve" not in restored.__dict__
    restored.mirror = writes = Writes()
    extra = results(3)[0]
    restored.on_trial_complete(0, [], FakeTrial("t9999", {"prune.ratio": 0.0,
                                                           "nystrom.enabled": False,
                                                           "quantize.enabled": False}, extra))
    (metrics, step), = [args for name, args in writes.calls if name == "parent_metrics"]
    assert step == TRIALS + 1
    assert metrics[hv_history.METRIC] == hv_history.from_journal(
        tmp_path / journal.TRIALS, 0.9)[-1]


def test_the_module_under_test_uses_the_incremental_curve() -> None:
    assert trial_records.hv_history is hv_history


def test_the_curve_is_the_one_sweeper_drew_before_on_recorded_trials() -> None:
    """tests/helpers/data/trials_200.jsonl (infeasible, rung-stopped, errored and repeated
    records among them) and the curve sweeper's earlier, re-reading code drew from it."""
    data = ROOT / "tests" / "helpers" / "data"
    recorded = json.loads((data / "trials_200_curve.json").read_text())
    assert hv_history.from_journal(data / "trials_200.jsonl",
                                   recorded["baseline_val_acc"]) == recorded["curve"]
