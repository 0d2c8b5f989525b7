"""An Optuna RDB storage that rides out a database restart (search.storage=postgresql://...).

Optuna's RDBStorage turns a dropped connection into StorageInternalError at once, and the
driver's OptunaSearch would end the sweep on it. A restart of PostgreSQL takes seconds, so
every storage call here is retried on connection errors for up to SWEEPER_STORAGE_RETRY_S
(default 120 s), and `pool_pre_ping` replaces the pool's dead connections on the next use.

Retrying is safe because a call that lost its connection was rolled back by the server: a
restart aborts open transactions. Only a commit whose acknowledgement was lost in flight could
be applied twice; Optuna's writes are keyed by trial, so such a repeat of a write lands on the
same row (or fails as "already finished", which is then raised, not hidden).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage

RETRY_ENV = "SWEEPER_STORAGE_RETRY_S"


def _connection_lost(exc: BaseException | None) -> bool:
    """A dropped or refused connection: directly, as the cause of Optuna's wrapper, or as the
    error being handled when this one was raised. The last covers Optuna's `_get_trials`, which
    catches an OperationalError and retries in the same session; that second query then fails
    with PendingRollbackError (the connection is gone), whose context is the lost connection."""
    while exc is not None:
        if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        deadline, delay, said = time.monotonic() + self.retry_s, 0.5, False
        while True:
            try:
                result = method(self, *args, **kwargs)
            except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
                if not _connection_lost(exc) or time.monotonic() + delay > deadline:
                    raise
                if not said:  # one line per outage, not per try
                    print(f"warning: Optuna storage unreachable ({type(exc).__name__}); "
                          f"retrying for up to {self.retry_s:.0f}s", file=sys.stderr, flush=True)
                    said = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if said:
                print("Optuna storage reachable again", file=sys.stderr, flush=True)
            return result

    return call


class RetryingRDBStorage(RDBStorage):
    """RDBStorage whose every storage call is retried while the database is unreachable."""

    def __init__(self, url: str, retry_s: float | None = None) -> None:
        self.retry_s = float(os.environ.get(RETRY_ENV, "120")) if retry_s is None else retry_s
        super().__init__(url, engine_kwargs={"pool_pre_ping": True})


# Every call that opens a session: BaseStorage's interface, and the private methods that
# Optuna's _CachedStorage (which wraps any RDBStorage) calls instead of the public ones.
_PRIVATE = ("_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
            "_get_stale_trial_ids")
for _name in [n for n in vars(BaseStorage) if not n.startswith("_")] + list(_PRIVATE):
    if callable(getattr(RDBStorage, _name, None)):
        setattr(RetryingRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))
