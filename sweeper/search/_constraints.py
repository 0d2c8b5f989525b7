"""The accuracy budget (`max_accuracy_drop`) as Optuna constraints, and Ray Tune's
OptunaSearch that records them before telling a result."""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from sweeper.core.objectives import METRICS
from sweeper.early_stop.board import STOPPED

CONSTRAINT = "accuracy_drop_over_budget"  # points of val accuracy beyond max_accuracy_drop


def feasible(result: dict[str, Any], max_drop: float | None) -> bool:
    """Within the accuracy budget? `max_drop` is in points, val_acc_drop a fraction."""
    return max_drop is None or 100.0 * result.get("val_acc_drop", 0.0) <= max_drop


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that sets the accuracy-drop constraint on the Optuna trial before telling
    its result (`Trial.set_constraint`: feasible when <= 0), so NSGA-II, TPE and GP, which
    read a trial's constraints from the study, steer away from infeasible regions."""

    def __init__(self, *args: Any, max_drop: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_drop = max_drop

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        ot_trial = self._reopen(trial_id)
        if (self.max_drop is not None and result and ot_trial is not None
                and CONSTRAINT not in ot_trial.constraints):  # set: a resumed sweep's repeat
            excess = 100.0 * result.get("val_acc_drop", 0.0) - self.max_drop
            ot_trial.set_constraint(CONSTRAINT, excess)
        if result and STOPPED in result and ot_trial is not None:
            # PRUNED, not the rung's values: a partial accuracy told as final would rank the
            # configuration below what it reaches (docs/early-stopping.md)
            ot_trial.set_user_attr(STOPPED, int(result[STOPPED]))
            ot_trial.set_user_attr("rung_values", [result.get(m) for m in METRICS])
            result = None  # OptunaSearch tells a result without values as PRUNED
        super().on_trial_complete(trial_id, result, error)

    def _reopen(self, trial_id: str) -> Any:
        """The trial's Optuna trial. One stopped by Ctrl-C was told FAIL (nothing stays
        RUNNING); Tune runs it again after `resume`, and its result goes to a new Optuna
        trial with the same parameters (telling a FAIL trial again is an error)."""
        ot_trial = self._ot_trials.get(trial_id)
        if (ot_trial is None or trial_id in self._completed_trials
                or not hasattr(ot_trial, "_trial_id")):
            return ot_trial
        storage, study = self._ot_study._storage, self._ot_study
        frozen = storage.get_trial(ot_trial._trial_id)
        # COMPLETE: told before a SIGKILLed driver saved Tune's state; the rerun's (reused)
        # result is then a repeat, which OptunaSearch declines with a warning
        if frozen.state != optuna.trial.TrialState.FAIL:
            return ot_trial
        template = optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, params=frozen.params,
            distributions=frozen.distributions, user_attrs=frozen.user_attrs)
        new_id = storage.create_new_trial(study._study_id, template_trial=template)
        self._ot_trials[trial_id] = optuna.Trial(study, new_id)
        return self._ot_trials[trial_id]
