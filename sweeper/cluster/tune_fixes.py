"""A narrow fix to Ray Tune's failure handling (ray 2.60), installed by the driver.

When a node dies, every task in flight on a trial's actor there fails (its training step, a
save), and Tune handles those failures one by one. The first requeues the trial as
`search.max_failures` allows (status PENDING, its actor dropped); Tune may at once hand the
trial a cached actor to reset. The later failures, of tasks on the actor the trial already
left, then reach `TuneController._process_trial_failure`, and Tune errors a PENDING trial
outright. So one dead node used up a trial that still had retries left: it ended FAILED,
and its Optuna trial FAIL.

The fix drops an actor failure of a task scheduled before its trial was last requeued:
that death was already counted, and retried. Tasks scheduled after the requeue (the next
attempt's training) and every failure that is not an actor's go to Tune unchanged.

A reused actor can die too (a trial finished on the node, its actor was cached, and the next
trial is being reset onto it when the node goes). Tune handled that in one of two ways,
whichever news came first:
- the reset task's failure errored the trial outright, retries left or not (it was PENDING);
- the actor's death requeued it but cleared the reset's future with the actor, so the trial
  stayed in `_resetting_trials` forever: PENDING, never started, the sweep hung.
Both are now what Tune does for an actor that dies while it starts (`_actor_failed`): a
failed attempt, retried as `max_failures` allows; a requeued trial is never left resetting.
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
    self._resetting_trials.discard(trial)  # its reset died with the actor it was reset onto
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


def _reset_death_is_a_failed_start(controller: TuneController,
                                   on_error: Callable[[Trial, Exception], None]
                                   ) -> Callable[[Trial, Exception], None]:
    def on_reset_error(failed: Trial, exception: Exception) -> None:
        if isinstance(exception, RayActorError) and failed in controller._resetting_trials:
            # as _actor_failed treats a death in the creation task: RUNNING, so that Tune's
            # failure handling recovers the trial (or errors it when no retry is left)
            controller._resetting_trials.discard(failed)
            if failed in controller._staged_trials:
                controller._unstage_trial_with_resources(failed)
            controller._set_trial_status(failed, Trial.RUNNING)
        on_error(failed, exception)

    return on_reset_error


def _schedule_trial_task(self: TuneController, trial: Trial, method_name: str,
                         args: Any = None, kwargs: Any = None, on_result: Any = None,
                         on_error: Any = None, _return_future: bool = False) -> Any:
    if on_error is not None:
        if method_name == "reset":
            on_error = _reset_death_is_a_failed_start(self, on_error)
        on_error = _drop_stale(self, trial, on_error)
    return _original_schedule(self, trial, method_name, args, kwargs, on_result, on_error,
                              _return_future)


def install() -> None:
    """Idempotent."""
    TuneController._requeue_trial = _requeue_trial  # type: ignore[method-assign]
    TuneController._schedule_trial_task = _schedule_trial_task  # type: ignore[method-assign]
