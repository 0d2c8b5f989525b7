"""Ray and Ray Tune on the driver: start or attach to the cluster, run Tune's fit with the
Optuna search (sweeper/search/) and the trial records (sweeper/trial_records.py), and collect
its results. What runs in a worker is sweeper/worker.py."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from sweeper.cluster import resources, stop_signal, tune_fixes
from sweeper.cluster.stack import cmdline
from sweeper.cluster.trial_records import MlflowChildren, pipeline_params
from sweeper.cluster.worker import trainable
from sweeper.core import journal, objectives
from sweeper.core.config import Config
from sweeper.core.errors import UserError
from sweeper.early_stop import board as early_stop
from sweeper.search import (
    ConstrainedOptunaSearch,
    fail_orphans,
    feasible,
    make_sampler,
    optuna_storage,
)
from sweeper.spaces.space import Space

if TYPE_CHECKING:
    from sweeper.tracking.client import Mirror, Tracker
    from sweeper.trial.run import TrialInputs

_dashboard_url: str | None = None  # of the Ray instance init_ray started or attached to
_owned = False  # init_ray started or attached to Ray here, so shutdown() may end it
_local: LocalRay | None = None  # the instance init_ray started on this machine


def init_ray(cfg: Config, log: Callable[[str], None]) -> str | None:
    """Start (or attach to) Ray; return the dashboard URL when one is running. Attaching
    checks the cluster first (reachable, a node big enough for one trial), so launch calls
    this before the sweep folder exists; the driver's later call finds Ray running. A Ray the
    caller initialised itself (`ray.init()` in a notebook, a benchmark sharing one instance
    across sweeps) is used as it is, and `shutdown` leaves it running."""
    global _dashboard_url, _owned
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Tune's JSON/CSV/TensorBoard loggers write every result to disk again; the metrics
    # reach MLflow and Tune's own experiment state without them.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Save Tune's experiment state every 2 s (default: at least 10 s), so a killed driver
    # loses little; saving is cheap next to trials that take seconds.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if ray.is_initialized():
        return _dashboard_url
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True,
                              "logging_level": "ERROR"}
    if cfg.ray.address:
        ctx = _attach(cfg, kwargs)
    else:
        local = LocalRay()
        try:
            with local.marking():
                ctx = ray.init(
                    # "local": always a new instance; a bare init() would attach to whatever
                    # cluster `ray start` last left on this machine, even a dead one
                    address="local",
                    include_dashboard=cfg.dashboard,
                    dashboard_host=cfg.ray.dashboard_host,
                    dashboard_port=cfg.ray.dashboard_port,
                    **kwargs,
                )
        except BaseException:  # what a failed or interrupted start had started
            local.end()
            raise
        _start_local(local)
    _owned = True
    stop_signal.sigterm_as_ctrl_c()  # ray.init made SIGTERM a bare exit
    url = getattr(ctx, "dashboard_url", None)
    _dashboard_url = (url if url.startswith("http") else f"http://{url}") if url else None
    return _dashboard_url


def _attach(cfg: Config, kwargs: dict[str, Any]) -> Any:
    """ray.init on an existing cluster, bounded: an address that does not answer, or a
    cluster where one trial fits on no node, is a UserError within seconds (ray.init itself
    retries for minutes, and Tune would wait forever for the resources)."""
    address = cfg.ray.address or ""
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            address = get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise UserError("ray.address=auto: no running Ray cluster found on this machine "
                            "(start one with `ray start --head`)") from None
    host, port = resources.split_host_port(address.removeprefix("ray://"))
    resources.tcp_reachable(f"the Ray cluster at ray.address={cfg.ray.address}", host, port)
    ctx = ray.init(address=cfg.ray.address, **kwargs)
    try:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        resources.check_fits(cfg, nodes, f"the Ray cluster at {cfg.ray.address}")
    except BaseException:
        ray.shutdown()
        raise
    return ctx


class TuneJob(Protocol):
    """What Tune needs of the sweep being driven (the driver's `sweep.state.Sweep` is one)."""

    cfg: Config
    space: Space
    inputs: TrialInputs
    folder: Path
    tracker: Tracker
    log: Callable[[str], None]
    mirror: Mirror | None

    @property
    def name(self) -> str: ...

    @property
    def parent_run_id(self) -> str: ...


@dataclass
class SweepRun:
    """What the driver gets back from Tune: one row per trial, with its artifact dir."""

    rows: list[dict[str, Any]]
    checkpoints: dict[str, str]
    wall_seconds: float


def run_tune(sweep: TuneJob, restore: bool = False) -> SweepRun:
    """Tune's fit. Raises KeyboardInterrupt when Ctrl-C stopped it: Tune catches SIGINT,
    stops its trials, saves its state (what `resume` restores) and returns as if done."""
    cfg, mirror = sweep.cfg, sweep.mirror
    assert mirror is not None, "the driver opens the sweep's mirror before Tune runs"
    tune_fixes.install()
    storage = optuna_storage(cfg, sweep.folder)
    experiment_dir = (sweep.folder / "ray" / "tune").resolve()
    job = tune.with_resources(
        tune.with_parameters(trainable, inputs=sweep.inputs, space=sweep.space,
                             experiment_dir=str(experiment_dir),
                             rungs=early_stop.start(cfg, sweep.space, sweep.name)),
        {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus},
    )
    if restore:
        # Tune reloads its trials, the searcher (with the Optuna study) and our callback.
        tuner = tune.Tuner.restore(
            str(experiment_dir), job,
            resume_unfinished=True, resume_errored=False, restart_errored=False,
        )
        callback = _our_callback(tuner)
        callback.log = sweep.log
    else:
        callback = MlflowChildren(sweep.tracker, sweep.parent_run_id, sweep.space,
                                  cfg.search.trials, cfg.max_accuracy_drop, sweep.log)
        tuner = _new_tuner(sweep, job, storage, experiment_dir, callback)
    callback.mirror, callback.journal = mirror, sweep.folder / journal.TRIALS
    callback.baseline_val_acc = sweep.inputs.baseline_val_acc
    stop_signal.announce_stops()
    start = time.perf_counter()
    with stop_signal.handlers_kept():
        grid = tuner.fit()
    wall = time.perf_counter() - start
    fail_orphans(storage, sweep.name)
    if _ended(grid) < cfg.search.trials:
        raise KeyboardInterrupt
    return collect(grid, sweep.space, dict(mirror.runs.runs), wall, cfg.max_accuracy_drop)


def _new_tuner(sweep: TuneJob, job: Any, storage: Any, experiment_dir: Path,
               callback: MlflowChildren) -> tune.Tuner:
    cfg = sweep.cfg
    searcher = ConstrainedOptunaSearch(
        max_drop=cfg.max_accuracy_drop,
        space=sweep.space.define,
        metric=objectives.METRICS,
        mode=objectives.MODES,
        sampler=make_sampler(cfg, sweep.space.define),
        study_name=sweep.name,
        storage=storage,
    )
    # named objectives: optuna-dashboard and optuna.visualization label their axes
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still is
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        searcher._ot_study.set_metric_names(objectives.METRICS)
    return tune.Tuner(
        job,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=cfg.search.concurrency),
            num_samples=cfg.search.trials,
            reuse_actors=True,  # a fresh worker per trial costs seconds of imports
        ),
        run_config=tune.RunConfig(
            name=experiment_dir.name,
            storage_path=str(experiment_dir.parent),
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
            # upload the saved experiment state to storage_path at once, not every
            # 300 s: what `resume` restores is only as fresh as the last upload
            sync_config=tune.SyncConfig(sync_period=1),
            verbose=0,
        ),
    )


def _ended(grid: Any) -> int:
    """Trials that reached an end: a result or a final error (a trial stopped by Ctrl-C has
    neither)."""
    return sum(1 for r in grid if r.error is not None or "val_acc" in (r.metrics or {}))


def _our_callback(tuner: tune.Tuner) -> MlflowChildren:
    """The MlflowChildren callback a restored Tuner unpickled from its saved run config."""
    run_config = tuner._local_tuner.get_run_config()  # no public getter in Ray 2.60
    for cb in run_config.callbacks or []:
        if isinstance(cb, MlflowChildren):
            return cb
    raise RuntimeError("restored Tune experiment has no sweeper MLflow callback")


def collect(
    grid: Any, space: Space, runs: dict[str, str], wall: float, max_drop: float | None = None
) -> SweepRun:
    rows, checkpoints = [], {}
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        if result.error is not None or "val_acc" not in metrics:
            continue
        rows.append({
            "trial": trial_id,
            "run_id": runs.get(trial_id),
            "config": pipeline_params(space, result.config),
            "feasible": feasible(metrics, max_drop),
            # the trial's hardware fingerprint: a front only compares trials of one
            "fingerprint": (metrics.get("tags") or {}).get("fingerprint"),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
        })
        if result.checkpoint is not None:
            checkpoints[trial_id] = result.checkpoint.path
    return SweepRun(rows, checkpoints, wall)


def shutdown() -> None:
    """End the Ray instance init_ray started or attached to; never one it found running. One
    it started ends whole: what `ray.shutdown` leaves of it is ended too (LocalRay.end)."""
    global _owned, _dashboard_url, _local
    local, _local = _local, None
    if local is not None:
        local.forget_gcs()  # the GCS ends now, on purpose: no longer a reason to hurry a stop
    try:
        if _owned and ray.is_initialized():
            ray.shutdown()
    finally:
        _owned, _dashboard_url = False, None
        if local is not None:
            local.end()


# -- the processes of a Ray instance started here ---------------------------------------------
MARK = "SWEEPER_RAY_INSTANCE"  # in the environment of every process of a local instance
END_TERM_S = 1.0  # SIGTERM to SIGKILL for what outlives ray.shutdown (Ray gives its own 1 s)


def _start_local(local: LocalRay) -> None:
    """`local` ends with shutdown(), or, when a stop hangs, right before the watchdog ends the
    driver (stop_signal): os._exit would leave the raylet's children (DashboardAgent,
    RuntimeEnvAgent, workers) behind, a minute each, reporting the raylet's death to a GCS
    that is gone too."""
    global _local
    _local = local
    forget_kill = stop_signal.at_hung_exit(local.kill)
    gcs = {pid: start for pid, start in local.processes().items() if "gcs_server" in cmdline(pid)}

    def gcs_gone() -> bool:
        return bool(gcs) and not any(_alive(pid, start) for pid, start in gcs.items())

    # while the instance should be up: a stop that finds its GCS dead need not wait it out
    local.forget_gcs = stop_signal.hopeless_when(gcs_gone)

    def forget() -> None:
        local.forget_gcs()
        forget_kill()

    local.forget = forget


class LocalRay:
    """A Ray instance `ray.init` starts on this machine, and every process it is made of: the
    GCS, raylet, dashboard and monitors ray.init starts, the agents and workers the raylet
    starts, and whatever trials start. They all inherit `MARK=<token>` from the driver's
    environment during ray.init (the driver drops it after), so they are found wherever they
    are, even those whose parent died and left them to init (`ray.shutdown` gives the raylet
    1 s, then SIGKILLs it; its agents then spend a minute reporting that to the dead GCS, Ray
    2.60), and their descendants with them (a process may write its title over its
    environment, as the dashboard's modules do). Linux (/proc); elsewhere only ray.shutdown
    ends the instance."""

    def __init__(self) -> None:
        self.token = f"{os.getpid()}-{secrets.token_hex(8)}"
        self.forget: Callable[[], None] = lambda: None
        self.forget_gcs: Callable[[], None] = lambda: None

    @contextlib.contextmanager
    def marking(self) -> Iterator[None]:
        """The block's new processes carry the mark (ray.init's); the driver's later ones do
        not."""
        before = os.environ.get(MARK)
        os.environ[MARK] = self.token
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(MARK, None)
            else:
                os.environ[MARK] = before

    def processes(self) -> dict[int, int]:
        """pid -> start time of each live process of the instance (a few ms)."""
        needle = f"{MARK}={self.token}".encode()
        children: dict[int, list[int]] = {}
        started: dict[int, int] = {}
        marked = []
        try:
            pids = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
        except OSError:
            return {}
        for pid in pids:
            stat = _stat(pid)
            if stat is None or pid == os.getpid():
                continue
            children.setdefault(stat[0], []).append(pid)
            started[pid] = stat[1]
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:  # gone, or another user's
                continue
            if needle in environ.split(b"\0"):
                marked.append(pid)
        found: dict[int, int] = {}
        while marked:
            pid = marked.pop()
            if pid not in found:
                found[pid] = started[pid]
                marked.extend(children.get(pid, []))
        return found

    def end(self, term_s: float = END_TERM_S) -> None:
        """SIGTERM what is left of the instance, SIGKILL what still is `term_s` later; returns
        within term_s + 1 s. Until it has, a stop that hangs still kills the instance."""
        try:
            left = self.processes()
            for sig, wait_s in ((signal.SIGTERM, term_s), (signal.SIGKILL, 1.0)):
                _signal(left, sig)
                deadline = time.monotonic() + wait_s
                while left and time.monotonic() < deadline:
                    time.sleep(0.05)
                    left = {pid: start for pid, start in left.items() if _alive(pid, start)}
                if not left:
                    return
        finally:
            self.forget()

    def kill(self) -> None:
        """SIGKILL every process of the instance, at once: a stop hung, and the driver ends
        right after."""
        _signal(self.processes(), signal.SIGKILL)


def _signal(processes: dict[int, int], sig: signal.Signals) -> None:
    for pid, start in processes.items():
        if _alive(pid, start):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process; None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else (int(fields[1]), int(fields[19]))


def _alive(pid: int, start: int) -> bool:
    """The process `pid` that started at `start` is still there (not a later one reusing
    its pid)."""
    stat = _stat(pid)
    return stat is not None and stat[1] == start
