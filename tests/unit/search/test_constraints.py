"""The accuracy budget reaches Optuna as a trial constraint the samplers read from the study
(Optuna 5's `Trial.set_constraint`), with no deprecated `constraints_func` warning."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
import pytest

from sweeper.core import objectives
from sweeper.core.config import build_config
from sweeper.search import CONSTRAINT, ConstrainedOptunaSearch, make_sampler


def define(trial: Any) -> None:
    trial.suggest_float("x", 0.0, 1.0)


def result(drop: float) -> dict[str, float]:
    return {"val_acc": 0.9, "size_ratio": 0.5, "latency_ratio": 0.5, "val_acc_drop": drop}


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "gp", "random"])
def test_a_budget_is_a_constraint_on_each_told_trial_without_warnings(sampler: str) -> None:
    cfg = build_config([f"search.sampler={sampler}", "max_accuracy_drop=2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna 5 deprecates constraints_func with a warning
        search = ConstrainedOptunaSearch(
            max_drop=cfg.max_accuracy_drop, space=define, metric=objectives.METRICS,
            mode=objectives.MODES, sampler=make_sampler(cfg, define), study_name="budget",
            storage=optuna.storages.InMemoryStorage())
        for trial_id, drop in (("over", 0.05), ("within", 0.01)):
            assert search.suggest(trial_id) is not None
            search.on_trial_complete(trial_id, result(drop))
        search.on_trial_complete("over", result(0.05))  # told again after a resume: ignored
    told = {t.number: t.constraints for t in search._ot_study.get_trials()}
    # points beyond the budget: 5 - 2 (infeasible, > 0) and 1 - 2 (feasible)
    assert told == {0: {CONSTRAINT: pytest.approx(3.0)}, 1: {CONSTRAINT: pytest.approx(-1.0)}}
    feasible = optuna.study._constrained_optimization._get_feasible_trials(
        search._ot_study.get_trials())
    assert [t.number for t in feasible] == [1]


def test_without_a_budget_no_trial_is_constrained() -> None:
    cfg = build_config(["search.sampler=nsga2"])
    search = ConstrainedOptunaSearch(
        max_drop=None, space=define, metric=objectives.METRICS, mode=objectives.MODES,
        sampler=make_sampler(cfg, define), study_name="free",
        storage=optuna.storages.InMemoryStorage())
    search.suggest("t")
    search.on_trial_complete("t", result(0.5))
    assert search._ot_study.get_trials()[0].constraints == {}
