"""sweeper.tune_fixes on Ray Tune's real controller and trials: the later failures of a dead
node's actor no longer error a trial Tune has already requeued, whether it waits or is
resetting a reused actor; Tune's other failure paths are unchanged. Tasks are scheduled
through the controller's own `_schedule_trial_task` (which wraps their error callbacks); only
the actor manager's dispatch is replaced, to hold the callbacks instead of sending the
tasks. (The end-to-end case is tests/test_faults.py's dead-node test, where the race shows
only now and then.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.air.execution import FixedResourceManager
from ray.air.execution._internal.tracked_actor import TrackedActor
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.train._internal.storage import StorageContext
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial
from ray.tune.registry import register_trainable
from ray.tune.search import BasicVariantGenerator

from sweeper.cluster import tune_fixes


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    # Tune's controller initialises Ray on its own otherwise, attaching to whatever cluster
    # this machine last started
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    register_trainable("noop", lambda config: None)
    yield
    ray.shutdown()


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fix, for this test only (a sweep run in this process installs it for good)."""
    for name in ("_schedule_trial_task", "_requeue_trial"):  # restored after the test
        monkeypatch.setattr(TuneController, name, getattr(TuneController, name))
    tune_fixes.install()


@pytest.fixture
def unfixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TuneController, "_schedule_trial_task", tune_fixes._original_schedule)
    monkeypatch.setattr(TuneController, "_requeue_trial", tune_fixes._original_requeue)


def running_trial(tmp_path: Path, max_failures: int = 3) -> tuple[TuneController, Trial]:
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp")
    controller = TuneController(resource_manager_factory=FixedResourceManager,
                                storage=storage, search_alg=BasicVariantGenerator())
    trial = Trial("noop", config={}, storage=storage, max_failures=max_failures)
    trial.init_local_path()
    controller.add_trial(trial)
    controller._set_trial_status(trial, Trial.RUNNING)
    return controller, trial


_actor_ids = iter(range(1, 1_000_000))


def holding(controller: TuneController) -> list[Callable[[Exception], None]]:
    """From now on the actor manager holds each task's failure callback instead of sending
    the task (the stop Tune sends to an actor it drops has none, and never fails)."""
    held: list[Callable[[Exception], None]] = []

    def hold(tracked_actor: TrackedActor, method_name: str, args: Any = None,
             kwargs: Any = None, on_result: Any = None, on_error: Any = None,
             _return_future: bool = False) -> None:
        if on_error is not None:
            held.append(lambda exc: on_error(tracked_actor, exc))

    controller._actor_manager.schedule_actor_task = hold  # type: ignore[method-assign]
    # the test's actors are not the manager's: dropping one is only Tune's own bookkeeping
    controller._actor_manager.remove_actor = (  # type: ignore[method-assign]
        lambda tracked_actor, kill=False, stop_future=None: True)
    return held


def tasks_on_an_actor(controller: TuneController, trial: Trial, *methods: str
                      ) -> list[Callable[[Exception], None]]:
    """Schedule the trial's tasks on a new actor as Tune does, then lose the actor as a dead
    node does (Tune drops it before its tasks' failures arrive); each task's failure."""
    actor = TrackedActor(next(_actor_ids))
    controller._trial_to_actor[trial] = actor
    controller._actor_to_trial[actor] = trial
    held = holding(controller)
    for method in methods:
        controller._schedule_trial_task(trial, method, on_result=lambda *_: None,
                                        on_error=controller._trial_task_failure)
    del controller._trial_to_actor[trial], controller._actor_to_trial[actor]
    return held


def resetting_on_a_cached_actor(controller: TuneController, trial: Trial
                                ) -> tuple[TrackedActor, Callable[[Exception], None]]:
    """Hand the pending trial a cached actor as Tune's _maybe_reuse_cached_actor does (staged,
    mapped to the actor, its reset scheduled); the actor and its reset's failure."""
    actor = TrackedActor(next(_actor_ids))
    controller._staged_trials.add(trial)
    controller._actor_cache.increase_max(trial.placement_group_factory)
    controller._trial_to_actor[trial] = actor
    controller._actor_to_trial[actor] = trial
    held = holding(controller)
    controller._schedule_trial_reset(trial, trial.config, trial.experiment_tag)
    assert trial in controller._resetting_trials
    return actor, held[0]


def dead_node() -> RayActorError:
    return ActorUnavailableError("The actor is temporarily unavailable: Socket closed", None)


def test_without_the_fix_tune_errors_a_requeued_trial(tmp_path: Path, unfixed: None) -> None:
    """What the fix is for (if Tune changes this, the fix may go)."""
    controller, trial = running_trial(tmp_path)
    train, save = tasks_on_an_actor(controller, trial, "train", "save")
    train(dead_node())
    assert trial.status == Trial.PENDING  # requeued: retries are left
    save(dead_node())  # the same death, a second task
    assert trial.status == Trial.ERROR


@pytest.mark.parametrize("resetting", [False, True], ids=["waiting", "resetting-reused-actor"])
def test_later_failures_of_the_actor_it_left_keep_the_trial_requeued(
        tmp_path: Path, fixed: None, resetting: bool) -> None:
    controller, trial = running_trial(tmp_path)
    first, second, third = tasks_on_an_actor(controller, trial, "train", "save", "train")
    first(dead_node())
    assert trial.status == Trial.PENDING and trial.run_metadata.num_failures == 1
    if resetting:  # Tune handed the requeued trial a cached actor at once
        controller._resetting_trials.add(trial)
    second(dead_node())
    third(dead_node())
    assert trial.status == Trial.PENDING and trial.run_metadata.num_failures == 1
    # the next attempt's actor dies too: counted, and requeued again
    controller._resetting_trials.discard(trial)
    controller._set_trial_status(trial, Trial.RUNNING)
    (train,) = tasks_on_an_actor(controller, trial, "train")
    train(dead_node())
    assert trial.status == Trial.PENDING and trial.run_metadata.num_failures == 2


def test_other_failures_take_tunes_own_path(tmp_path: Path, fixed: None) -> None:
    # out of retries: the trial errors
    controller, trial = running_trial(tmp_path, max_failures=0)
    (train,) = tasks_on_an_actor(controller, trial, "train")
    train(dead_node())
    assert trial.status == Trial.ERROR
    # a reused actor that fails its reset with no retry left: the trial errors
    controller, trial = running_trial(tmp_path / "reset", max_failures=1)
    (train,) = tasks_on_an_actor(controller, trial, "train")
    train(dead_node())
    assert trial.status == Trial.PENDING
    _actor, reset = resetting_on_a_cached_actor(controller, trial)
    reset(dead_node())
    assert trial.status == Trial.ERROR
    # after a requeue, a failure of an earlier task that is not an actor's death still
    # reaches Tune's callback (the actor's is dropped)
    controller, trial = running_trial(tmp_path / "other")
    seen: list[Exception] = []
    earlier = tune_fixes._drop_stale(controller, trial, lambda _trial, exc: seen.append(exc))
    (train,) = tasks_on_an_actor(controller, trial, "train")
    train(dead_node())
    earlier(trial, RuntimeError("not an actor"))
    earlier(trial, dead_node())
    assert [type(exc) for exc in seen] == [RuntimeError]


def reused_actor_dies(controller: TuneController, trial: Trial, news_first: str) -> None:
    """The trial, requeued once, is being reset onto a cached actor when that actor's node
    dies; Tune hears of it from the reset task or from the actor itself."""
    (train,) = tasks_on_an_actor(controller, trial, "train")
    train(dead_node())
    assert trial.status == Trial.PENDING and trial.run_metadata.num_failures == 1
    actor, reset = resetting_on_a_cached_actor(controller, trial)
    if news_first == "reset":
        reset(dead_node())
    else:
        controller._actor_failed(actor, dead_node())


@pytest.mark.parametrize("news_first", ["reset", "actor"])
def test_without_the_fix_a_reused_actors_death_loses_the_trial(
        tmp_path: Path, unfixed: None, news_first: str) -> None:
    """What the fix is for: the trial errored with retries left, or stayed resetting (never
    started again: the sweep hung, tests/test_faults.py's dead-node test now and then)."""
    controller, trial = running_trial(tmp_path)
    reused_actor_dies(controller, trial, news_first)
    if news_first == "reset":
        assert trial.status == Trial.ERROR
    else:
        assert trial.status == Trial.PENDING and trial in controller._resetting_trials


@pytest.mark.parametrize("news_first", ["reset", "actor"])
def test_a_reused_actor_that_dies_in_its_reset_is_one_failed_attempt(
        tmp_path: Path, fixed: None, news_first: str) -> None:
    controller, trial = running_trial(tmp_path)
    reused_actor_dies(controller, trial, news_first)
    assert trial.status == Trial.PENDING and trial.run_metadata.num_failures == 2
    assert trial not in controller._resetting_trials  # Tune starts it again
    assert trial not in controller._trial_to_actor and not controller._staged_trials
