"""The Optuna storage for `search.storage=postgresql://...`, against a real throwaway
PostgreSQL on loopback: a connection lost mid-query or a restarted server is ridden out; an
outage longer than the retry window, or an error that is not a lost connection, is raised."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import psycopg2
import pytest
import sqlalchemy

from sweeper.cluster import stack
from sweeper.search._rdb_retry import RetryingRDBStorage
from tests.helpers.cluster import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg() -> Iterator[stack.Postgres]:
    # PostgreSQL refuses root; as root it runs as `postgres`, who must be able to enter the folder
    base = Path(tempfile.mkdtemp(prefix="sweeper-rdb-"))
    base.chmod(0o755)
    server = stack.Postgres(base / "pg", free_port(), os.urandom(12).hex())
    try:
        server.init().start().create_databases()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def storage(pg: stack.Postgres, monkeypatch: pytest.MonkeyPatch) -> RetryingRDBStorage:
    monkeypatch.setenv("PGPASSWORD", pg.password)  # as the driver gets it: never in the URL
    return RetryingRDBStorage(pg.url("optuna"), retry_s=30)


def finished_study(storage: RetryingRDBStorage, trials: int = 3) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=f"s{time.monotonic_ns()}",
                                directions=["maximize", "minimize"])
    for k in range(trials):
        study.tell(study.ask(), [float(k), 1.0])
    return study


def test_a_connection_lost_mid_query_is_retried(
        pg: stack.Postgres, storage: RetryingRDBStorage, capfd: pytest.CaptureFixture) -> None:
    """The server ends the backend between checkout and query, in the incremental trial read
    Optuna's cache makes after every tell. Optuna catches that OperationalError and queries
    again in the same session, which fails as PendingRollbackError: still a lost connection."""
    study = finished_study(storage)
    killed: list[int] = []

    def end_backend(conn, cursor, statement, *rest) -> None:  # noqa: ANN001
        if not killed and "trials.trial_id >" in statement:
            killed.append(conn.connection.dbapi_connection.get_backend_pid())
            admin = psycopg2.connect(host="127.0.0.1", port=pg.port, user=stack.USER,
                                     password=pg.password, dbname="postgres")
            admin.autocommit = True
            admin.cursor().execute("SELECT pg_terminate_backend(%s)", (killed[0],))
            admin.close()

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", end_backend)
    first = study.trials[0]._trial_id
    trials = storage._get_trials(study._study_id, None, set(), first)  # those after the first
    assert killed, "the trial read never ran its incremental query"
    assert [t.number for t in trials] == [1, 2]
    err = capfd.readouterr().err
    assert err.count("Optuna storage unreachable") == 1
    assert "Optuna storage reachable again" in err


def test_a_restarted_server_is_waited_for(
        pg: stack.Postgres, storage: RetryingRDBStorage, capfd: pytest.CaptureFixture) -> None:
    study = finished_study(storage, trials=1)
    pg.stop()
    restart = threading.Timer(3.0, pg.start)
    restart.start()
    try:
        started = time.monotonic()
        study.tell(study.ask(), [5.0, 0.5])  # asked and told while the server is down
        waited = time.monotonic() - started
    finally:
        restart.join()
    assert waited >= 2.0, waited
    values = [t.values for t in optuna.load_study(study_name=study.study_name,
                                                  storage=storage).trials]
    assert values == [[0.0, 1.0], [5.0, 0.5]]
    err = capfd.readouterr().err
    assert "Optuna storage unreachable" in err and "Optuna storage reachable again" in err


def test_an_outage_longer_than_the_window_is_raised(
        pg: stack.Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", pg.password)
    storage = RetryingRDBStorage(pg.url("optuna"), retry_s=3)
    study = finished_study(storage, trials=1)
    pg.stop()
    try:
        started = time.monotonic()
        with pytest.raises(optuna.exceptions.StorageInternalError):
            storage.get_all_trials(study._study_id)
        assert time.monotonic() - started < 10
    finally:
        pg.start()


def test_an_error_that_is_not_a_lost_connection_is_raised_at_once(
        storage: RetryingRDBStorage, capfd: pytest.CaptureFixture) -> None:
    started = time.monotonic()
    with pytest.raises(optuna.exceptions.StorageInternalError):  # the name is VARCHAR(512)
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "x" * 600)
    assert time.monotonic() - started < 2
    assert "unreachable" not in capfd.readouterr().err
