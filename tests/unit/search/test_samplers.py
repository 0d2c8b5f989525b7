"""NoRepeatSampler's bookkeeping: the configurations taken are those of the finished and
running trials, and a finished trial's configuration is keyed once, not at every ask."""

from __future__ import annotations

import optuna
import pytest

from sweeper.search import _samplers as samplers
from sweeper.search._samplers import NoRepeatSampler, _params_key


def define(trial: optuna.Trial) -> None:
    trial.suggest_categorical("a", [0, 1, 2, 3])
    trial.suggest_categorical("b", ["x", "y", "z"])


def study_of(sampler: NoRepeatSampler) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=sampler, directions=["minimize"])


def started(study: optuna.Study, a: int, b: str) -> optuna.Trial:
    """A trial of the given configuration, running."""
    study.enqueue_trial({"a": a, "b": b})
    trial = study.ask()
    define(trial)
    return trial


def test_a_sweep_of_the_whole_space_repeats_nothing() -> None:
    study = study_of(NoRepeatSampler(optuna.samplers.RandomSampler(seed=0), define, seed=0))
    for _ in range(12):  # 4 x 3 configurations
        t = study.ask()
        define(t)
        study.tell(t, 0.0)
    assert len({_params_key(t.params) for t in study.trials}) == 12


def test_taken_follows_the_trials_states() -> None:
    sampler = NoRepeatSampler(optuna.samplers.RandomSampler(seed=1), define, seed=1)
    study = study_of(sampler)
    done, running, failed = started(study, 0, "x"), started(study, 1, "y"), started(study, 2, "z")
    study.tell(done, 1.0)
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    asking = study.ask()
    assert sampler.taken(study, asking) == {_params_key(done.params),
                                            _params_key(running.params)}
    study.tell(running, 2.0)  # running -> complete: still taken
    assert sampler.taken(study, asking) == {_params_key(done.params),
                                            _params_key(running.params)}


def test_a_finished_trial_is_keyed_once_over_many_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    keyed: list[int] = []
    real = samplers._params_key
    monkeypatch.setattr(samplers, "_params_key", lambda p: keyed.append(1) or real(p))
    sampler = NoRepeatSampler(optuna.samplers.RandomSampler(seed=2), define, seed=2)
    study = study_of(sampler)
    for a in range(4):
        for b in "xyz":
            study.tell(started(study, a, b), 0.0)
    asking = study.ask()
    keyed.clear()
    for _ in range(50):
        sampler.taken(study, asking)
    assert len(keyed) == 12  # the first pass keys the 12 finished trials; later passes none


def test_the_launch_notes_a_gp_sweep_past_the_size_gp_is_meant_for() -> None:
    from sweeper.core.config import build_config
    from sweeper.search import scale_note
    from sweeper.search._samplers import GP_TRIALS

    past = scale_note(build_config(["search.sampler=gp", f"search.trials={GP_TRIALS + 1}"]))
    assert past is not None and past.startswith("note: search.sampler=gp")
    assert f"about {GP_TRIALS} trials" in past
    assert scale_note(build_config(["search.sampler=gp", f"search.trials={GP_TRIALS}"])) is None
    for sampler in ("nsga2", "tpe", "random"):  # flat at thousands of trials
        assert scale_note(build_config([f"search.sampler={sampler}",
                                        "search.trials=10000"])) is None
