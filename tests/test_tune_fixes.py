"""sweeper.tune_fixes on Ray Tune's real controller and trials: the second failure of a dead
node's actor no longer errors a trial Tune has already requeued; Tune's other failure paths
are unchanged. (The end-to-end case is tests/test_faults.py's dead-node test, where the race
shows only now and then.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.air.execution import FixedResourceManager
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.train._internal.storage import StorageContext
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial
from ray.tune.registry import register_trainable
from ray.tune.search import BasicVariantGenerator

from sweeper import tune_fixes


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
    monkeypatch.setattr(TuneController, "_process_trial_failure",
                        TuneController._process_trial_failure)  # restored after the test
    tune_fixes.install()


@pytest.fixture
def unfixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TuneController, "_process_trial_failure", tune_fixes._original)


def running_trial(tmp_path: Path, max_failures: int = 3) -> tuple[TuneController, Trial]:
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp")
    controller = TuneController(resource_manager_factory=FixedResourceManager,
                                storage=storage, search_alg=BasicVariantGenerator())
    trial = Trial("noop", config={}, storage=storage, max_failures=max_failures)
    trial.init_local_path()
    controller.add_trial(trial)
    controller._set_trial_status(trial, Trial.RUNNING)
    return controller, trial


def dead_node() -> RayActorError:
    return ActorUnavailableError("The actor is temporarily unavailable: Socket closed", None)


def test_without_the_fix_tune_errors_a_requeued_trial(tmp_path: Path, unfixed: None) -> None:
    """What the fix is for (if Tune changes this, the fix may go)."""
    controller, trial = running_trial(tmp_path)
    controller._process_trial_failure(trial, dead_node())
    assert trial.status == Trial.PENDING  # requeued: retries are left
    controller._process_trial_failure(trial, dead_node())  # the same death, a second task
    assert trial.status == Trial.ERROR


def test_a_second_failure_of_the_actor_it_left_keeps_the_trial_requeued(
        tmp_path: Path, fixed: None) -> None:
    controller, trial = running_trial(tmp_path)
    controller._process_trial_failure(trial, dead_node())
    controller._process_trial_failure(trial, dead_node())
    assert trial.status == Trial.PENDING and trial.run_metadata.num_failures == 1
    # the next attempt's actor dies too: counted, and requeued again
    controller._set_trial_status(trial, Trial.RUNNING)
    controller._process_trial_failure(trial, dead_node())
    assert trial.status == Trial.PENDING and trial.run_metadata.num_failures == 2


def test_other_failures_take_tunes_own_path(tmp_path: Path, fixed: None) -> None:
    # out of retries: the trial errors
    controller, trial = running_trial(tmp_path, max_failures=0)
    controller._process_trial_failure(trial, dead_node())
    assert trial.status == Trial.ERROR
    # a reused actor that fails its reset for a pending trial: Tune errors it, as before
    controller, trial = running_trial(tmp_path / "reset")
    controller._set_trial_status(trial, Trial.PENDING)
    controller._resetting_trials.add(trial)
    controller._process_trial_failure(trial, dead_node())
    assert trial.status == Trial.ERROR
    # a pending trial's failure that is not an actor's death: Tune's path
    controller, trial = running_trial(tmp_path / "other")
    controller._set_trial_status(trial, Trial.PENDING)
    controller._process_trial_failure(trial, RuntimeError("not an actor"))
    assert trial.status == Trial.ERROR
