"""A narrow fix to Ray Tune's failure handling (ray 2.60), installed by the driver.

When a node dies, every task in flight on a trial's actor there fails, and Tune can take two
of those failures in one batch. The first requeues the trial (status PENDING, its actor
dropped) as `search.max_failures` allows; the second then reaches
`TuneController._process_trial_failure` with the trial PENDING, and Tune errors a PENDING
trial outright. So one dead node used up a trial that still had retries left: it ended
FAILED, and its Optuna trial FAIL.

The fix drops such a late failure. Tune schedules a trial's tasks only once it is RUNNING,
so an actor error for a PENDING trial comes either from resetting a reused actor for it, or
from the actor the trial already left, whose death was already counted (and retried). The
first goes to Tune unchanged, as does every other failure; the second is dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.exceptions import RayActorError
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial

log = logging.getLogger(__name__)

_original = TuneController._process_trial_failure


def _already_requeued(controller: TuneController, trial: Trial, exception: Exception) -> bool:
    return (isinstance(exception, RayActorError) and trial.status == Trial.PENDING
            and trial not in controller._resetting_trials)


def _process_trial_failure(self: TuneController, trial: Trial, exception: Any) -> None:
    if _already_requeued(self, trial, exception):
        log.debug("trial %s: ignoring a second failure of the actor it left: %s", trial,
                  exception)
        return
    _original(self, trial, exception)


def install() -> None:
    """Idempotent."""
    TuneController._process_trial_failure = _process_trial_failure  # type: ignore[method-assign]
