"""Where the sweep's Optuna study lives, and the repair of trials a dead driver left open."""

from __future__ import annotations

from pathlib import Path

import optuna

from sweeper.core.config import Config

OPTUNA_JOURNAL = "optuna.journal"  # the study, in the sweep folder


def optuna_storage(cfg: Config, sweep_dir: Path) -> optuna.storages.BaseStorage:
    """The sweep's Optuna study storage: `search.storage` (e.g. a PostgreSQL database shared
    by a cluster) when set, else an append-only journal file in the sweep folder. The journal
    costs less per trial than a SQLite file, whose every ask, suggest and tell is a committed
    transaction (benchmarks/orchestration.py, `trivial` against `trivial-sqlite`).
    Sweeps started with the SQLite default keep their optuna.db on resume."""
    if cfg.search.storage:  # a database server: ride out its restarts (_rdb_retry.py)
        from sweeper.search._rdb_retry import RetryingRDBStorage  # SQLAlchemy: servers only

        return RetryingRDBStorage(cfg.search.storage)
    legacy = sweep_dir / "optuna.db"
    if legacy.exists():
        return optuna.storages.RDBStorage(f"sqlite:///{legacy}")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / OPTUNA_JOURNAL)))


def fail_orphans(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Optuna trials still RUNNING after Tune finished were asked for by a driver that died
    before Tune recorded them; mark them FAIL so the study's history stays truthful."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)
