"""The search side of a sweep (Optuna): sampler, constraints, study storage. Ray Tune sees
only `ConstrainedOptunaSearch`; everything here takes a `Config` or a study, never Ray."""

from sweeper.search.constraints import ConstrainedOptunaSearch, constraint_values, feasible
from sweeper.search.samplers import NoRepeatSampler, make_sampler
from sweeper.search.storage import OPTUNA_JOURNAL, fail_orphans, optuna_storage

__all__ = ["OPTUNA_JOURNAL", "ConstrainedOptunaSearch", "NoRepeatSampler", "constraint_values",
           "fail_orphans", "feasible", "make_sampler", "optuna_storage"]
