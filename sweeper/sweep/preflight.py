"""Pre-flight checks of a launch, resume or export: whatever can reject the input before the
first file is written. Folders must be writable (or creatable), services must answer within a
few seconds (MLflow's own retries, and Ray's, take minutes), one trial must fit on a node (or
Tune waits forever), and a sweep folder's record must be one of ours. Each raises UserError.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from sweeper.cluster.resources import (
    SERVICE_TIMEOUT_S,
    check_local_resources,
    split_host_port,
    tcp_reachable,
)
from sweeper.core.config import (
    Config,
    check_tracking_uri,
    redact,
    url_scheme,
)
from sweeper.core.errors import UserError
from sweeper.core.files import writable_folder

DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def check_launch(cfg: Config, tracking_uri: str | None = None) -> None:
    """Folders, resources and services of a sweep (`tracking_uri`: the one a resumed sweep
    keeps; default the config's)."""
    writable_folder("output_dir", cfg.output_dir)
    writable_folder("cache_dir", cfg.resolved_cache_dir())
    check_local_resources(cfg)
    launching = tracking_uri is None  # a resume keeps its sweep's store and experiment
    if tracking_uri is None:
        tracking_uri = cfg.resolved_tracking_uri()
        if not cfg.tracking_uri and os.environ.get("MLFLOW_TRACKING_URI"):
            check_tracking_uri("MLFLOW_TRACKING_URI", tracking_uri)
    check_tracking(tracking_uri)
    if launching:
        check_experiment(tracking_uri, cfg.experiment)
    if cfg.search.storage:
        check_database("search.storage", cfg.search.storage)
    if cfg.ray.address and cfg.ray.address != "auto":  # 'auto' is resolved by orchestrate
        host, port = split_host_port(cfg.ray.address.removeprefix("ray://"))
        tcp_reachable(f"the Ray cluster at ray.address={cfg.ray.address}", host, port)


# -- folders ----------------------------------------------------------------------------------


# -- services ---------------------------------------------------------------------------------
def check_tracking(uri: str) -> None:
    scheme = url_scheme(uri)
    if scheme in ("http", "https"):
        http_reachable(uri)
    elif scheme == "sqlite":
        sqlite_folder("tracking_uri", uri)
    elif scheme == "file":
        # MLflow 3 refuses its file store unless told to; it would do so after the baseline
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() not in ("true", "1"):
            raise UserError(f"tracking_uri={redact(uri)}: MLflow keeps its file store in "
                            "maintenance mode and refuses it; use sqlite:///PATH/mlflow.db "
                            "(`mlflow migrate-filestore` moves existing runs) or set "
                            "MLFLOW_ALLOW_FILE_STORE=true")
        writable_folder("tracking_uri", urlsplit(uri).path)
    elif scheme in DB_PORTS:
        check_database("tracking_uri", uri)


def check_experiment(uri: str, name: str) -> None:
    """An experiment deleted in the MLflow UI takes no runs: said before the baseline trains.
    A store not there yet is left alone (checking would create it)."""
    scheme = url_scheme(uri)
    if scheme == "sqlite":
        path = sqlite_path(uri)
        if path in ("", ":memory:") or not Path(path).is_file():
            return
    elif scheme == "file" and not Path(urlsplit(uri).path).is_dir():
        return
    from sweeper.tracking.client import check_experiment_usable  # mlflow: only when needed

    check_experiment_usable(uri, name)


def check_database(key: str, url: str) -> None:
    scheme = url_scheme(url)
    if scheme == "sqlite":
        sqlite_folder(key, url)
        return
    parts = urlsplit(url)
    try:
        port = parts.port or DB_PORTS.get(scheme)
    except ValueError:  # a port that is not a number
        raise UserError(f"{key}={redact(url)!r} has a bad port") from None
    if parts.hostname and port:  # no host: a local socket, left to the driver
        tcp_reachable(f"the database of {key}", parts.hostname, port)


def sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""


def sqlite_folder(key: str, url: str) -> None:
    """The folder of a SQLite file must be creatable (SQLAlchemy creates the file in it)."""
    path = sqlite_path(url)
    if path in ("", ":memory:"):
        return
    if Path(path).is_dir():
        raise UserError(f"{key}={url}: {path} is a folder, not a database file")
    writable_folder(f"the folder of {key}", Path(path).parent)


def http_reachable(uri: str) -> None:
    """One GET of MLflow's /health, bounded: an HTTP answer means the server is there (what
    it allows is for MLflow to say), except a 404: some other web server, or a wrong path.
    No answer in time is the error."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    try:
        netloc += f":{parts.port}" if parts.port else ""
    except ValueError:
        raise UserError(f"tracking URI {redact(uri)!r} has a bad port") from None
    url = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/health"
    try:
        urllib.request.urlopen(url, timeout=SERVICE_TIMEOUT_S).close()  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # every MLflow server since 1.x answers /health
            raise UserError(f"tracking_uri {redact(uri)} is not an MLflow tracking server "
                            f"({url} answers 404); check its host, port and path") from None
        return
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"MLflow at {redact(uri)} is unreachable ({reason}); start it or set "
                        "tracking_uri") from None


# -- resources --------------------------------------------------------------------------------


# -- sweep folders ----------------------------------------------------------------------------
