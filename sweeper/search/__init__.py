"""The search side of a sweep (Optuna): sampler, constraints, study storage. Ray Tune sees
only `ConstrainedOptunaSearch`; everything here takes a `Config` or a study, never Ray.
Private modules behind these names: `_samplers` (`make_sampler`, `NoRepeatSampler`,
`scale_note`), `_constraints` (the accuracy budget), `_storage` (journal, SQLite or a database
server) and `_rdb_retry` (a database server's restarts ridden out, loaded only when one is
used)."""

import optuna

from sweeper.search._constraints import CONSTRAINT, ConstrainedOptunaSearch, feasible
from sweeper.search._samplers import NoRepeatSampler, make_sampler, scale_note
from sweeper.search._storage import OPTUNA_JOURNAL, fail_orphans, optuna_storage

# Optuna resets its logger when first imported, so its study-creation chatter is quieted here,
# where sweeper first uses it, not by sweeper.core.quiet (a trial worker never imports Optuna)
optuna.logging.set_verbosity(optuna.logging.WARNING)

__all__ = ["CONSTRAINT", "OPTUNA_JOURNAL", "ConstrainedOptunaSearch", "NoRepeatSampler",
           "fail_orphans", "feasible", "make_sampler", "optuna_storage", "scale_note"]
