"""The search side of a sweep (Optuna): sampler, constraints, study storage. Ray Tune sees
only `ConstrainedOptunaSearch`; everything here takes a `Config` or a study, never Ray."""

from sweeper.search.constraints import CONSTRAINT, ConstrainedOptunaSearch, feasible
from sweeper.search.samplers import NoRepeatSampler, make_sampler
from sweeper.search.storage import OPTUNA_JOURNAL, fail_orphans, optuna_storage

__all__ = ["CONSTRAINT", "OPTUNA_JOURNAL", "ConstrainedOptunaSearch", "NoRepeatSampler",
           "fail_orphans", "feasible", "make_sampler", "optuna_storage"]
