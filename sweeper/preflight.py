"""Pre-flight checks of a launch, resume or export: whatever can reject the input before the
first file is written. Folders must be writable (or creatable), services must answer within a
few seconds (MLflow's own retries, and Ray's, take minutes), one trial must fit on a node (or
Tune waits forever), and a sweep folder's record must be one of ours. Each raises UserError.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sweeper.config import (
    Config,
    check_tracking_uri,
    config_from_dict,
    redact,
    url_scheme,
)
from sweeper.errors import UserError

SERVICE_TIMEOUT_S = 3.0
DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
# what sweep.json must hold for resume and export to use it
SWEEP_RECORD = {"name": str, "parent_run_id": str, "tracking_uri": str, "config": dict}


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
def writable_folder(key: str, path: str | os.PathLike[str]) -> None:
    """`path` is a folder we may write in, or can become one: its nearest existing ancestor
    is a writable folder (probed with an empty folder, removed at once)."""
    target = Path(path).absolute()
    try:
        existing = next(p for p in (target, *target.parents) if p.exists())
    except OSError as exc:  # e.g. a parent we may not even look into
        raise UserError(f"{key}={path}: cannot access it ({exc.strerror})") from None
    if not existing.is_dir():
        raise UserError(f"{key}={path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path}: {existing} is not writable")
    try:  # root passes os.access everywhere; a read-only mount or /proc still refuses
        os.rmdir(tempfile.mkdtemp(prefix=".sweeper-probe-", dir=existing))
    except OSError as exc:
        raise UserError(f"{key}={path}: cannot create folders in {existing} "
                        f"({exc.strerror})") from None


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
    from mlflow.exceptions import MlflowException

    from sweeper.tracking import client, client_settings, live_experiment

    client_settings()  # bounded retries: a server that fails answers within a minute
    try:
        live_experiment(client(uri), name, uri)
    except MlflowException as exc:
        raise UserError(f"MLflow at {redact(uri)} refused to look up experiment={name}: "
                        f"{exc.message}") from None


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


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def tcp_reachable(what: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=SERVICE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UserError(f"{what} is unreachable at {host}:{port} ({reason})") from None


# -- resources --------------------------------------------------------------------------------
def local_cpus() -> int:
    """CPUs a local Ray instance counts: the machine's, capped by a container's quota."""
    count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return count


def driver_threads() -> int:
    """Threads for the driver's own torch work (training and evaluating the baseline):
    OMP_NUM_THREADS when it is set, else the CPUs this process may run on (its affinity,
    capped by a container's quota). More threads than free cores is far worse than fewer:
    torch's OpenMP workers spin waiting for each other, and two trainings of 2 threads each on
    2 cores took 5-7x as long as two of 1 thread (the tiny test ViT: 40-58 s against 8 s)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = os.cpu_count() or 1
    return max(1, min(allowed, local_cpus()))


def check_local_resources(cfg: Config) -> None:
    """A local cluster is this machine; an attached one is checked by orchestrate.init_ray."""
    if cfg.ray.address:
        return
    import torch

    check_fits(cfg, [{"CPU": local_cpus(), "GPU": torch.cuda.device_count()}], "this machine")


def check_fits(cfg: Config, nodes: list[dict[str, float]], where: str) -> None:
    """One trial needs resources.cpus and resources.gpus on a single node; Tune would wait
    forever for a node that has them."""
    need = {"CPU": cfg.resources.cpus, "GPU": cfg.resources.gpus}
    if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
        return
    cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    raise UserError(f"one trial asks for resources.cpus={cfg.resources.cpus:g} and "
                    f"resources.gpus={cfg.resources.gpus:g}, but the largest node of {where} "
                    f"has {cpus:g} CPUs and {gpus:g} GPUs")


def check_cluster(cfg: Config, log: Callable[[str], None]) -> None:
    """Attach to an existing cluster now, before the sweep folder exists: orchestrate.init_ray
    rejects an unreachable one or one with no node big enough for a trial."""
    if cfg.ray.address:
        from sweeper import orchestrate

        orchestrate.init_ray(cfg, log)


# -- sweep folders ----------------------------------------------------------------------------
def read_sweep_meta(sweep_dir: Path) -> dict[str, Any]:
    """sweep.json of a sweep folder, checked to be a sweep record whose config loads."""
    path = sweep_dir / "sweep.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise UserError(f"{path} is not a readable sweep record ({exc})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a sweep record (a JSON {type(meta).__name__})")
    bad = [k for k, kind in SWEEP_RECORD.items() if not isinstance(meta.get(k), kind)]
    if bad or not re.fullmatch(r"[\w.-]+", meta["name"]):
        raise UserError(f"{path} is not a sweep record: missing or malformed "
                        f"{', '.join(bad) or 'name'}")
    try:
        config_from_dict(meta["config"])
    except UserError as exc:
        raise UserError(f"{path}: bad config: {exc}") from None
    return meta
