"""A narrow fix to Ray Tune's failure handling (ray 2.60), installed by the driver.

When a node dies, every task in flight on a trial's actor there fails (its training step, a
save), and Tune handles those failures one by one. The first requeues the trial as
`search.max_failures` allows (status PENDING, its actor dropped); Tune may at once hand the
trial a cached actor to reset. The later failures, of tasks on the actor the trial already
left, then reach `TuneController._process_trial_failure`, and Tune errors a PENDING trial
outright. So one dead node used up a trial that still had retries left: it ended FAILED,
and its Optuna trial FAIL.

The fix drops an actor failure of a task scheduled before its trial was last requeued:
that death was already counted, and retried. Tasks scheduled after the requeue (the reset
of a reused actor, the next attempt's training) and every failure that is not an actor's
go to Tune unchanged.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayActorError
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial

log = logging.getLogger(__name__)

_original_schedule = TuneController._schedule_trial_task
_original_requeue = TuneController._requeue_trial
# controller -> trial id -> how often Tune requeued that trial (kept off the controller,
# whose attributes Tune saves with the experiment state)
_requeues: weakref.WeakKeyDictionary[TuneController, dict[str, int]] = (
    weakref.WeakKeyDictionary())


def _count(controller: TuneController, trial: Trial) -> int:
    return _requeues.get(controller, {}).get(trial.trial_id, 0)


def _requeue_trial(self: TuneController, trial: Trial) -> None:
    counts = _requeues.setdefault(self, {})
    counts[trial.trial_id] = counts.get(trial.trial_id, 0) + 1
    _original_requeue(self, trial)


def _drop_stale(controller: TuneController, trial: Trial,
                on_error: Callable[[Trial, Exception], None]
                ) -> Callable[[Trial, Exception], None]:
    scheduled_at = _count(controller, trial)

    def on_error_unless_stale(failed: Trial, exception: Exception) -> None:
        if isinstance(exception, RayActorError) and _count(controller, failed) != scheduled_at:
            log.debug("trial %s: ignoring a failure of the actor it left: %s", failed,
                      exception)
            return
        on_error(failed, exception)

    return on_error_unless_stale


def _schedule_trial_task(self: TuneController, trial: Trial, method_name: str,
                         args: Any = None, kwargs: Any = None, on_result: Any = None,
                         on_error: Any = None, _return_future: bool = False) -> Any:
    if on_error is not None:
        on_error = _drop_stale(self, trial, on_error)
    return _original_schedule(self, trial, method_name, args, kwargs, on_result, on_error,
                              _return_future)


def install() -> None:
    """Idempotent."""
    TuneController._requeue_trial = _requeue_trial  # type: ignore[method-assign]
    TuneController._schedule_trial_task = _schedule_trial_task  # type: ignore[method-assign]
