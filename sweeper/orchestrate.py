"""Ray Tune + OptunaSearch on the driver: schedules trials and feeds MLflow (what runs in a
worker is sweeper/worker.py).

The driver owns MLflow (a Tune callback logs every child run), so workers on other nodes never
need to reach the tracking store; trial artefacts travel back as Tune checkpoints.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from sweeper import compress, early_stop, hv_history, journal
from sweeper.config import Config
from sweeper.errors import UserError
from sweeper.report import describe_config
from sweeper.spaces import Space
from sweeper.tracking import Mirror, Tracker
from sweeper.trial import TrialInputs
from sweeper.worker import ARTIFACTS, trainable

OBJECTIVE_METRICS = ["val_acc", "size_mb", "latency_ratio"]
OBJECTIVE_MODES = ["max", "min", "min"]
OPTUNA_JOURNAL = "optuna.journal"  # the study, in the sweep folder


def feasible(result: dict[str, Any], max_drop: float | None) -> bool:
    """Within the accuracy budget? `max_drop` is in points, val_acc_drop a fraction."""
    return max_drop is None or 100.0 * result.get("val_acc_drop", 0.0) <= max_drop


def constraint_values(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Optuna's convention: feasible when every value is <= 0."""
    return trial.user_attrs.get("constraint", [0.0])


def make_sampler(
    cfg: Config, define: Callable[[Any], Any] | None = None
) -> optuna.samplers.BaseSampler:
    """The sweep's Optuna sampler; given the space's define-by-run function, wrapped in
    `NoRepeatSampler` so no trial repeats a configuration another trial already has."""
    s = cfg.search
    constraints = constraint_values if cfg.max_accuracy_drop is not None else None
    sampler: optuna.samplers.BaseSampler
    if s.sampler == "nsga2":
        population = s.population or max(4, min(50, s.trials // 4))
        sampler = optuna.samplers.NSGAIISampler(
            population_size=population, seed=s.seed, constraints_func=constraints
        )
    elif s.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(
            seed=s.seed, multivariate=True, constraints_func=constraints
        )
    elif s.sampler == "gp":
        sampler = optuna.samplers.GPSampler(seed=s.seed, constraints_func=constraints)
    else:
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    return sampler if define is None else NoRepeatSampler(sampler, define, seed=s.seed)


class NoRepeatSampler(optuna.samplers.BaseSampler):
    """Wraps a sampler so that a trial does not repeat the configuration of a finished or
    running trial. Discrete spaces make samplers propose those often (an NSGA-II child equal
    to a parent, a categorical drawn again): on benchmarks/search_efficiency.py NSGA-II spent
    13 of 32 trials on repeats. When a trial takes its first parameter, the define-by-run
    space is rehearsed, up to `tries` times, until a new configuration comes out: through the
    wrapped sampler for the first `own_tries`, then through a random sampler (TPE and GP
    propose the maximum of their acquisition, the same point again; a random new point is
    the exploration they skip). An exhausted space keeps the last rehearsal. The trial's
    suggestions then return that plan, so the study holds one trial per sweep trial, as
    without the wrapper. GP only draws its always-present parameters again at the cost of
    another model fit for the same answer, so its relative proposal is made once."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, define: Callable[[Any], Any],
                 seed: int | None = None, tries: int = 10, own_tries: int = 3) -> None:
        self.sampler, self.define, self.tries, self.own_tries = sampler, define, tries, own_tries
        # seed + 1: with the sweep's seed it would be the twin of a wrapped RandomSampler
        # and draw the very repeats it is there to replace
        self.random = optuna.samplers.RandomSampler(seed=None if seed is None else seed + 1)
        self.redraw_relative = not isinstance(sampler, optuna.samplers.GPSampler)
        self._plans: dict[int, dict[str, Any]] = {}

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        taken = {_params_key(t.params) for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                    optuna.trial.TrialState.RUNNING,
                                    optuna.trial.TrialState.PRUNED))
            if t.number != trial.number}
        relative = self.sampler.sample_relative(study, trial, search_space)
        verbosity = optuna.logging.get_verbosity()
        try:
            for attempt in range(self.tries):
                own = attempt < self.own_tries
                if attempt:  # the wrapped sampler's notices were shown once already
                    optuna.logging.set_verbosity(optuna.logging.ERROR)
                    if own and self.redraw_relative:
                        relative = self.sampler.sample_relative(study, trial, search_space)
                rehearsal = _Rehearsal(self.sampler if own else self.random, study, trial,
                                       relative if own else {})
                self.define(rehearsal)
                if _params_key(rehearsal.params) not in taken:
                    break
        finally:
            optuna.logging.set_verbosity(verbosity)
        self._plans[trial.number] = rehearsal.params
        return {}  # every parameter is served from the plan by sample_independent

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str,
                           param_distribution: Any) -> Any:
        plan = self._plans.get(trial.number, {})
        if param_name in plan:
            value = plan[param_name]
            if param_distribution._contains(param_distribution.to_internal_repr(value)):
                return value
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self._plans.pop(trial.number, None)
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


class _Rehearsal:
    """Stands in for an Optuna trial while a define-by-run function is played through a
    sampler: the relative proposal where it has the parameter, else the sampler's
    independent draw, as `optuna.Trial` would pick."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, study: optuna.Study, trial: Any,
                 relative: dict[str, Any]) -> None:
        self.sampler, self.study, self.trial, self.relative = sampler, study, trial, relative
        self.params: dict[str, Any] = {}

    def _suggest(self, name: str, dist: Any) -> Any:
        if name in self.params:
            return self.params[name]
        if dist.single():
            value = dist.choices[0] if hasattr(dist, "choices") else dist.low
        elif name in self.relative and dist._contains(dist.to_internal_repr(self.relative[name])):
            value = self.relative[name]
        else:
            value = self.sampler.sample_independent(self.study, self.trial, name, dist)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._suggest(name, optuna.distributions.CategoricalDistribution(choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1,
                    log: bool = False) -> int:
        return self._suggest(name, optuna.distributions.IntDistribution(low, high, log, step))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float:
        return self._suggest(name, optuna.distributions.FloatDistribution(low, high, log, step))


def _params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that stores the accuracy-drop constraint on the Optuna trial before
    telling its result, so constraint-aware samplers steer away from infeasible regions."""

    def __init__(self, *args: Any, max_drop: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_drop = max_drop

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        ot_trial = self._reopen(trial_id)
        if self.max_drop is not None and result and ot_trial is not None:
            excess = 100.0 * result.get("val_acc_drop", 0.0) - self.max_drop
            ot_trial.set_user_attr("constraint", [excess])
        if result and early_stop.STOPPED in result and ot_trial is not None:
            # PRUNED, not the rung's values: a partial accuracy told as final would rank the
            # configuration below what it reaches (README, early stopping)
            ot_trial.set_user_attr(early_stop.STOPPED, int(result[early_stop.STOPPED]))
            ot_trial.set_user_attr("rung_values", [result.get(m) for m in OBJECTIVE_METRICS])
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


def pipeline_params(space: Space, config: dict[str, Any]) -> dict[str, Any]:
    try:
        return compress.pipeline_to_dict(space.pipeline(config))
    except ValueError:  # an invalid sample is logged raw; the trial itself fails with why
        return {"raw": config}


@dataclass
class MlflowChildren(tune.Callback):
    """Driver-side: every trial result appended to the sweep folder's trials.jsonl as it
    arrives, and one MLflow child run per Tune trial, FAILED ones included, written through
    the sweep's `Mirror` (retried while the store is unreachable)."""

    tracker: Tracker
    parent_id: str
    space: Space
    total: int
    max_drop: float | None = None
    log: Callable[[str], None] = print
    attempts: dict[str, int] = field(default_factory=dict)
    done: int = 0
    started: set[str] = field(default_factory=set)  # trials whose child run was asked for
    mirror: Mirror | None = None  # set by run_tune, also after a restore
    journal: Path | None = None  # <sweep folder>/trials.jsonl
    baseline_val_acc: float | None = None  # set by run_tune: the hypervolume history needs it

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the mirror holds a thread
        return {k: v for k, v in self.__dict__.items() if k != "mirror"}

    def setup(self, **info: Any) -> None:
        """Also runs after a restore: re-find the child runs earlier drivers created."""
        self.stopped: set[str] = set()  # closed as KILLED by Ctrl-C; Tune runs them again
        for run in self.tracker.children(self.parent_id):
            trial_id = run.data.tags.get("sweeper.trial_id")
            if trial_id:
                self.started.add(trial_id)
                if run.info.status in ("FINISHED", "FAILED"):
                    self.done += 1
                elif run.info.status == "KILLED":
                    self.stopped.add(trial_id)

    def _write(self, name: str, *args: Any) -> None:
        assert self.mirror is not None, "run_tune sets the mirror"
        self.mirror.submit(name, *args)

    def _record(self, record: dict[str, Any]) -> None:
        if self.journal is not None:
            journal.append(self.journal, {"time": time.time(), **record})

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.started:  # a retried trial keeps its child run
            if trial.trial_id in self.stopped:
                self.stopped.discard(trial.trial_id)
                self._write("reopen_trial", trial.trial_id)
            return
        self.started.add(trial.trial_id)
        params = pipeline_params(self.space, trial.config)
        self._write("start_trial", trial.trial_id, params,
                    {"sweeper.config": describe_config(params)})

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        n = self.attempts[trial.trial_id] = self.attempts.get(trial.trial_id, 1) + 1
        tags = {"attempts": str(n), f"attempt_{n - 1}_error": _error_text(trial)[-400:]}
        self._write("tag_trial", trial.trial_id, tags)
        self.log(f"  trial {trial.trial_id} failed, retrying (attempt {n})")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        metrics = {k: v for k, v in result.items() if k in _METRIC_KEYS or
                   k.startswith(("latency_ms_b", "baseline_latency_ms_b", "speedup_b",
                                 "latency_ratio", "latency_pairs", "latency_converged",
                                 "quiet_wait_s", "measure_wait_s"))}
        tags = {str(k): str(v) for k, v in (result.get("tags") or {}).items()}
        tags["attempts"] = str(self.attempts.get(trial.trial_id, 1))
        ok = feasible(result, self.max_drop)
        tags["feasible"] = str(ok).lower()
        checkpoint = trial.checkpoint
        files = str(Path(checkpoint.path, ARTIFACTS)) if checkpoint is not None else None
        params = pipeline_params(self.space, trial.config)
        self._record({"trial": trial.trial_id, "event": "complete", "params": params,
                      "metrics": metrics, "tags": tags,
                      "checkpoint": checkpoint.path if checkpoint is not None else None})
        # idempotent: a reused result's run may have missed its end when the driver died
        self._write("finish_trial", trial.trial_id, params, metrics, tags, files)
        if result.get("reused"):
            self.log(f"  trial {trial.trial_id} had finished before the resume; result kept")
            return
        self.done += 1
        if self.journal is not None and self.baseline_val_acc is not None:
            curve = hv_history.from_journal(self.journal, self.baseline_val_acc)
            self._write("parent_metrics", {hv_history.METRIC: curve[-1]}, len(curve))
        head = f"[{self.done}/{self.total}] {trial.trial_id} {describe_config(params)}: "
        if early_stop.STOPPED in metrics:
            self.log(head + f"stopped at rung {int(metrics[early_stop.STOPPED])} (epoch "
                     f"{int(metrics['stopped_at_epoch'])}): val {metrics['val_acc']:.1%} so "
                     f"far, {metrics['size_mb']:.3f} MB, latency ratio "
                     f"{metrics['latency_ratio']:.2f}  {metrics.get('trial_seconds', 0):.0f}s")
            return
        self.log(
            head +
            f"val {metrics.get('val_acc', float('nan')):.1%}  "
            f"{metrics.get('size_mb', float('nan')):.3f} MB  "
            f"{metrics.get('latency_ms', float('nan')):.2f} ms "
            f"({metrics.get('speedup', float('nan')):.2f}x)  "
            f"{metrics.get('trial_seconds', 0):.0f}s" + ("" if ok else "  (infeasible)")
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = _error_text(trial)
        tags = {"attempts": str(self.attempts.get(trial.trial_id, 1))}
        params = pipeline_params(self.space, trial.config)
        self._record({"trial": trial.trial_id, "event": "error", "params": params,
                      "tags": tags, "error": text})
        self._write("fail_trial", trial.trial_id, params, text, tags)
        self.done += 1
        last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
        self.log(f"[{self.done}/{self.total}] {trial.trial_id} FAILED: {last}")


_METRIC_KEYS = {
    "val_acc", "val_acc_drop", "size_mb", "size_bytes", "size_ratio", "latency_ms",
    "baseline_latency_ms", "speedup", "latency_ratio", "params", "trial_seconds",
    "simulated", "onnx_size_bytes", "onnx_size_mb", "ort_val_acc",
    "stopped_at_rung", "stopped_at_epoch",
}


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        return Path(path).read_text()
    return str(getattr(trial, "error_msg", "") or "trial failed")


_dashboard_url: str | None = None  # of the Ray instance init_ray started or attached to


def init_ray(cfg: Config, log: Callable[[str], None]) -> str | None:
    """Start (or attach to) Ray; return the dashboard URL when one is running. Attaching
    checks the cluster first (reachable, a node big enough for one trial), so launch calls
    this before the sweep folder exists; the driver's later call finds Ray running."""
    global _dashboard_url
    if ray.is_initialized():
        return _dashboard_url
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Tune's JSON/CSV/TensorBoard loggers write every result to disk again; the metrics
    # reach MLflow and Tune's own experiment state without them.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Save Tune's experiment state every 2 s (default: at least 10 s), so a killed driver
    # loses little; saving is cheap next to trials that take seconds.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True,
                              "logging_level": "ERROR"}
    if cfg.ray.address:
        ctx = _attach(cfg, kwargs)
    else:
        ctx = ray.init(
            # "local": always a new instance; a bare init() would attach to whatever
            # cluster `ray start` last left on this machine, even a dead one
            address="local",
            include_dashboard=cfg.dashboard,
            dashboard_host=cfg.ray.dashboard_host,
            dashboard_port=cfg.ray.dashboard_port,
            **kwargs,
        )
    url = getattr(ctx, "dashboard_url", None)
    _dashboard_url = (url if url.startswith("http") else f"http://{url}") if url else None
    return _dashboard_url


def _attach(cfg: Config, kwargs: dict[str, Any]) -> Any:
    """ray.init on an existing cluster, bounded: an address that does not answer, or a
    cluster where one trial fits on no node, is a UserError within seconds (ray.init itself
    retries for minutes, and Tune would wait forever for the resources)."""
    from sweeper import preflight

    address = cfg.ray.address or ""
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            address = get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise UserError("ray.address=auto: no running Ray cluster found on this machine "
                            "(start one with `ray start --head`)") from None
    host, port = preflight.split_host_port(address.removeprefix("ray://"))
    preflight.tcp_reachable(f"the Ray cluster at ray.address={cfg.ray.address}", host, port)
    ctx = ray.init(address=cfg.ray.address, **kwargs)
    try:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        preflight.check_fits(cfg, nodes, f"the Ray cluster at {cfg.ray.address}")
    except BaseException:
        ray.shutdown()
        raise
    return ctx


@dataclass
class SweepRun:
    """What the driver gets back from Tune: one row per trial, with its artefact dir."""

    rows: list[dict[str, Any]]
    checkpoints: dict[str, str]
    wall_seconds: float


def optuna_storage(cfg: Config, sweep_dir: Path) -> optuna.storages.BaseStorage:
    """The sweep's Optuna study storage: `search.storage` (e.g. a PostgreSQL database shared
    by a cluster) when set, else an append-only journal file in the sweep folder. The journal
    costs less per trial than a SQLite file, whose every ask, suggest and tell is a committed
    transaction (benchmarks/orchestration.py, `trivial` against `trivial-sqlite`).
    Sweeps started with the SQLite default keep their optuna.db on resume."""
    if cfg.search.storage:
        return optuna.storages.RDBStorage(cfg.search.storage)
    legacy = sweep_dir / "optuna.db"
    if legacy.exists():
        return optuna.storages.RDBStorage(f"sqlite:///{legacy}")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / OPTUNA_JOURNAL)))


def run_tune(
    cfg: Config,
    space: Space,
    inputs: TrialInputs,
    mirror: Mirror,
    sweep_dir: Path,
    sweep_name: str,
    log: Callable[[str], None],
    restore: bool = False,
) -> SweepRun:
    """Tune's fit. Raises KeyboardInterrupt when Ctrl-C stopped it: Tune catches SIGINT,
    stops its trials, saves its state (what `resume` restores) and returns as if done."""
    storage = optuna_storage(cfg, sweep_dir)
    experiment_dir = (sweep_dir / "ray" / "tune").resolve()
    job = tune.with_resources(
        tune.with_parameters(trainable, inputs=inputs, space=space,
                             experiment_dir=str(experiment_dir),
                             rungs=early_stop.start(cfg, space, sweep_name)),
        {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus},
    )
    if restore:
        # Tune reloads its trials, the searcher (with the Optuna study) and our callback.
        tuner = tune.Tuner.restore(
            str(experiment_dir), job,
            resume_unfinished=True, resume_errored=False, restart_errored=False,
        )
        callback = _our_callback(tuner)
        callback.log = log
    else:
        searcher = ConstrainedOptunaSearch(
            max_drop=cfg.max_accuracy_drop,
            space=space.define,
            metric=OBJECTIVE_METRICS,
            mode=OBJECTIVE_MODES,
            sampler=make_sampler(cfg, space.define),
            study_name=sweep_name,
            storage=storage,
        )
        # named objectives: optuna-dashboard and optuna.visualization label their axes
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still is
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            searcher._ot_study.set_metric_names(OBJECTIVE_METRICS)
        callback = MlflowChildren(mirror.runs.tracker, mirror.runs.parent_id, space,
                                  cfg.search.trials, cfg.max_accuracy_drop, log)
        tuner = tune.Tuner(
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
    callback.mirror, callback.journal = mirror, sweep_dir / journal.TRIALS
    callback.baseline_val_acc = inputs.baseline_val_acc
    # Tune's own Ctrl-C notices point to Tuner.restore; the driver says how to resume
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    fail_orphans(storage, sweep_name)
    if _ended(grid) < cfg.search.trials:
        raise KeyboardInterrupt
    return collect(grid, space, dict(mirror.runs.runs), wall, cfg.max_accuracy_drop)


def _ended(grid: Any) -> int:
    """Trials that reached an end: a result or a final error (a trial stopped by Ctrl-C has
    neither)."""
    return sum(1 for r in grid if r.error is not None or "val_acc" in (r.metrics or {}))


def fail_orphans(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Optuna trials still RUNNING after Tune finished were asked for by a driver that died
    before Tune recorded them; mark them FAIL so the study's history stays truthful."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


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
            **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
        })
        if result.checkpoint is not None:
            checkpoints[trial_id] = result.checkpoint.path
    return SweepRun(rows, checkpoints, wall)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
