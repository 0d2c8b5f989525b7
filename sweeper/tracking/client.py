"""MLflow: one parent run per sweep, one child run per trial. The only module using mlflow.

Explicit run ids through `MlflowClient` (no global active run), so the driver can log
children from Tune callbacks while the parent stays open.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeper.core.config import redact
from sweeper.core.errors import UserError
from sweeper.core.files import write_json
from sweeper.tracking import registry

MAX_PARAM_LEN = 500
# The experiment tag MLflow 3's UI reads to pick its view (the UI bundle of MLflow 3.17 names
# the values genai_development and custom_model_development); without it the UI opens an
# experiment on its GenAI overview instead of the runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

# mlflow sets its own logger to INFO on import; table-creation notices are not for users
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:MAX_PARAM_LEN]


def flatten(data: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    _flatten("", data, out)
    return out


def client(uri: str) -> MlflowClient:
    """A client whose Model Registry is the tracking store, unless MLFLOW_REGISTRY_URI says
    otherwise. MLflow's own default is that store too, except for a `file:` one, whose
    registry it puts in `mlflow.db` of the working directory: the front's versions would land
    wherever the command ran."""
    return MlflowClient(tracking_uri=uri,
                        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


@contextlib.contextmanager
def default_store(uri: str) -> Iterator[None]:
    """MLflow 3.17's file registry reads logged models through the default tracking URI
    (a TODO in its code), which, when nobody set one, is `mlflow.db` in the working
    directory, created on the spot. For a `file:` store that default is the store while the
    block runs, and nothing is left set after it."""
    import mlflow

    if not uri.startswith("file:") or mlflow.tracking.is_tracking_uri_set():
        yield
        return
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def live_experiment(mlflow_client: MlflowClient, name: str, uri: str) -> Any:
    """The experiment called `name`, None if there is none; one deleted in the MLflow UI (in
    its trash, where its name stays taken) cannot take runs, which is a UserError."""
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise UserError(
            f"experiment={name} is deleted in MLflow at {redact(uri)} (in its trash): restore "
            f"it with `MLFLOW_TRACKING_URI={redact(uri)} mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}`, or give another name with experiment=NAME")
    return exp


def check_experiment_usable(uri: str, name: str) -> None:
    """Look the experiment up with bounded retries (a server that fails answers within a
    minute); a deleted one, or a store that refuses the look-up (authentication), is a
    UserError."""
    client_settings()
    try:
        live_experiment(client(uri), name, uri)
    except MlflowException as exc:
        raise UserError(f"MLflow at {redact(uri)} refused to look up experiment={name}: "
                        f"{exc.message}") from None


def client_settings() -> None:
    """How sweeper's MLflow clients behave, unless the user's environment says otherwise."""
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # MLflow's own HTTP retries take ~4 min per call against a store that is down; the
    # sweep's writes are retried by `Mirror` instead, without holding anything up.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # against a server MLflow prints two "View run ... at" lines per closed run, between
    # the trial lines; the sweep prints the parent run's page once, at the end
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        client_settings()
        self.uri = uri
        self.client = client(uri)
        exp = live_experiment(self.client, experiment, uri)
        if exp is None:
            # A tracking server stores artifacts where it is configured to; a local store
            # keeps them beside the sweep's outputs instead of in the working directory.
            remote = uri.startswith(("http://", "https://", "databricks"))
            location = artifact_root.resolve().as_uri() if artifact_root and not remote else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location, tags=EXPERIMENT_KIND
            )
        else:
            self.experiment_id = exp.experiment_id

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a client holds DB engines.
        return {"uri": self.uri, "experiment_id": self.experiment_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.uri = state["uri"]
        self.experiment_id = state["experiment_id"]
        self.client = client(self.uri)

    # -- parent ---------------------------------------------------------------------------
    def reopen(self, run_id: str) -> None:
        """Mark a sweep's parent run as running again (resume)."""
        self.client.update_run(run_id, status="RUNNING")

    def start_sweep(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={"sweeper.kind": "sweep", **tags}
        )
        self._log(run.info.run_id, params=flatten(params))
        return run.info.run_id

    def end_sweep(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_front(
        self,
        parent_id: str,
        hypervolume: float,
        files: list[Path],
        metrics: dict[str, float] | None = None,
    ) -> None:
        self._log(parent_id, metrics={"hypervolume": hypervolume, **(metrics or {})})
        for path in files:
            self.client.log_artifact(parent_id, str(path))

    # -- children -------------------------------------------------------------------------
    def start_trial(
        self, parent_id: str, trial_id: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_id,
            tags={"mlflow.parentRunId": parent_id, "sweeper.kind": "trial",
                  "sweeper.trial_id": trial_id, **tags},
        )
        self._log(run.info.run_id, params=flatten(params))
        return run.info.run_id

    def finish_trial(
        self, run_id: str, metrics: dict[str, float], tags: dict[str, str]
    ) -> None:
        self._log(run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(run_id, status="FINISHED")

    def fail_trial(self, run_id: str, error: str, tags: dict[str, str] | None = None) -> None:
        short = error.strip().splitlines()[-1][:MAX_PARAM_LEN] if error.strip() else "failed"
        self._log(run_id, tags={"error": short, **(tags or {})})
        self.client.log_text(run_id, error, "error.txt")
        self.client.set_terminated(run_id, status="FAILED")

    def reopen_trial(self, run_id: str) -> None:
        """A child run closed as KILLED whose trial runs again (after Ctrl-C and resume)."""
        try:
            self.client.delete_tag(run_id, "error")
        except MlflowException as exc:  # already gone: a replayed write
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        self.client.update_run(run_id, status="RUNNING")

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        if any(folder.iterdir()):
            self.client.log_artifacts(run_id, str(folder))

    def close_orphans(self, parent_id: str, reason: str) -> int:
        """End child runs still RUNNING after the sweep (their driver died before Tune
        recorded the trial): KILLED with the reason, so no run is left dangling."""
        orphans = [r for r in self.children(parent_id) if r.info.status == "RUNNING"]
        for run in orphans:
            self._log(run.info.run_id, tags={"error": reason})
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(orphans)

    def tag(self, run_id: str, tags: dict[str, str]) -> None:
        self._log(run_id, tags=tags)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self._log(run_id, metrics=metrics, step=step)

    # -- queries (used by report/resume/tests) --------------------------------------------
    def children(self, parent_id: str) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            max_results=50_000,
        )

    def run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    def _log(
        self,
        run_id: str,
        metrics: dict[str, float] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        step: int = 0,
    ) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, v) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )


# A failed write is tried again after these delays, then every MAX_DELAY_S: bounded, so a
# store that comes back is written to within seconds.
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
# What MLflow's store answers to a request it refuses; trying again cannot help.
REFUSALS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
            "BAD_REQUEST", "INVALID_STATE"}
PENDING = "mlflow_pending.json"  # in the sweep folder: the writes MLflow missed

Op = list[Any]  # [name of a SweepRuns method, its JSON-able arguments...]


def final_grace_s() -> float:
    """How long the end of a sweep waits for an unreachable store before leaving its writes
    pending in the sweep folder."""
    return float(os.environ.get("SWEEPER_MLFLOW_GRACE_S", "30"))


class SweepRuns:
    """The MLflow writes of one sweep, each named by trial id rather than run id and each
    idempotent, so that a write the store missed can be replayed by a later process."""

    def __init__(self, tracker: Tracker, parent_id: str, log: Callable[[str], None]) -> None:
        self.tracker, self.parent_id, self.log = tracker, parent_id, log
        self.runs: dict[str, str] = {}  # trial id -> child run id
        # after a failed write the store may hold a run we never heard back about
        self.stale = True

    def _refresh(self) -> None:
        if self.stale:
            for run in self.tracker.children(self.parent_id):
                tid = run.data.tags.get("sweeper.trial_id")
                if tid:
                    self.runs.setdefault(tid, run.info.run_id)
            self.stale = False

    def _run_id(self, trial_id: str, params: dict[str, Any] | None = None,
                tags: dict[str, str] | None = None) -> str:
        """The trial's child run; created (with the params) if no write reached MLflow yet."""
        self._refresh()
        if trial_id not in self.runs:
            self.runs[trial_id] = self.tracker.start_trial(self.parent_id, trial_id,
                                                           params or {}, tags or {})
        return self.runs[trial_id]

    def start_trial(self, trial_id: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        self._refresh()
        if trial_id in self.runs:  # created by a try whose answer was lost, or a retried trial
            self.tracker._log(self.runs[trial_id], params=flatten(params), tags=tags)
        else:
            self._run_id(trial_id, params, tags)

    def reopen_trial(self, trial_id: str) -> None:
        self.tracker.reopen_trial(self._run_id(trial_id))

    def tag_trial(self, trial_id: str, tags: dict[str, str]) -> None:
        self.tracker.tag(self._run_id(trial_id), tags)

    def trial_metrics(self, trial_id: str, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics(self._run_id(trial_id), metrics)

    def finish_trial(self, trial_id: str, params: dict[str, Any], metrics: dict[str, float],
                     tags: dict[str, str], artifacts: str | None) -> None:
        run_id = self._run_id(trial_id, params)
        if artifacts and Path(artifacts).is_dir():
            self.tracker.log_artifacts(run_id, Path(artifacts))
        self.tracker.finish_trial(run_id, metrics, tags)

    def fail_trial(self, trial_id: str, params: dict[str, Any], error: str,
                   tags: dict[str, str]) -> None:
        self.tracker.fail_trial(self._run_id(trial_id, params), error, tags)

    def close_orphans(self, reason: str) -> None:
        lost = self.tracker.close_orphans(self.parent_id, reason)
        if lost:
            self.log(f"{lost} trial run(s) left RUNNING marked KILLED in MLflow: {reason}")

    def parent_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Step metrics of the sweep's parent run (replayed writes log the same point)."""
        self.tracker.log_metrics(self.parent_id, metrics, step)

    def register_models(self, model_name: str, entries: list[dict[str, Any]]) -> None:
        """The front in the Model Registry (sweeper.tracking.registry)."""
        with default_store(self.tracker.uri):
            registry.write(self.tracker.client, model_name, entries, self._run_id, model_name)

    def log_front(self, hypervolume: float, files: list[str], metrics: dict[str, float]) -> None:
        self.tracker.log_front(self.parent_id, hypervolume, [Path(f) for f in files], metrics)

    def end_sweep(self, status: str) -> None:
        self.tracker.end_sweep(self.parent_id, status)


class Mirror:
    """A sweep's MLflow writes on one thread, in submission order, off Tune's event loop.

    Each trial costs the MLflow store ~0.09 s of writes (SQLite here); done inline, that time
    is added to every trial's scheduling. A write the store does not take (unreachable, down
    for a restart) is tried again with bounded backoff while the sweep goes on, holding back
    the writes after it; `close` waits a grace period and hands back what is still unwritten,
    to be kept in the sweep folder and replayed by `resume`. Every result is in the sweep
    folder anyway (trials.jsonl), so an outage loses nothing.
    """

    def __init__(self, runs: SweepRuns) -> None:
        self.runs = runs
        self.refused: list[str] = []  # writes the store answered with an error
        self._queue: collections.deque[Op] = collections.deque()
        self._cond = threading.Condition()
        self._give_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None

    def submit(self, name: str, *args: Any) -> None:
        with self._cond:
            self._queue.append([name, *args])
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="mlflow-writer",
                                                daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._give_up.is_set():
                        return
                    self._cond.wait(timeout=1.0)
                op = self._queue[0]
            if not self._write(op):
                return  # given up: the op stays queued, to be handed back as pending
            with self._cond:
                self._queue.popleft()
                self._cond.notify_all()

    def _write(self, op: Op) -> bool:
        delay = FIRST_DELAY_S
        while not self._give_up.is_set():
            try:
                getattr(self.runs, op[0])(*op[1:])
            except Exception as exc:
                if getattr(exc, "error_code", None) in REFUSALS:
                    self.refused.append(f"{op[0]}: {exc}")
                    return True
                self._note_down(exc)
                self._give_up.wait(delay)
                delay = min(2 * delay, MAX_DELAY_S)
                continue
            if self._down_since is not None:
                down = time.monotonic() - self._down_since
                self.runs.log(f"MLflow reachable again after {down:.0f}s; catching up")
                self._down_since = None
            return True
        return False

    def _note_down(self, exc: Exception) -> None:
        self.runs.stale = True
        if self._down_since is None:
            self._down_since = time.monotonic()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            first = first if len(first) <= 160 else first[:160] + "..."
            self.runs.log(f"warning: MLflow write failed ({first}); retrying in the background, "
                          "results are kept in the sweep folder")

    @property
    def backlog(self) -> int:
        """Writes queued, not yet taken by the store."""
        with self._cond:
            return len(self._queue)

    def queued(self) -> list[Op]:
        with self._cond:
            return [list(op) for op in self._queue]

    def close(self, grace: float) -> list[Op]:
        """Wait for the queued writes while the store takes them, up to `grace` seconds after
        the last one it took (a store that is slow but up gets the whole backlog: thousands
        of quick trials queue more than `grace` seconds of writes), then stop; returns the
        writes left."""
        last = time.monotonic()
        try:
            with self._cond:
                while self._queue and time.monotonic() < last + grace:
                    left = len(self._queue)
                    self._cond.wait(timeout=min(1.0, max(0.0, last + grace - time.monotonic())))
                    if len(self._queue) < left:
                        last = time.monotonic()
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, keep what is left
            pass
        with self._cond:
            self._give_up.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._cond:
            return [list(op) for op in self._queue]


class BackgroundWriter:
    """Kept so that Tune states pickled before `Mirror` replaced it still unpickle (resume of
    a sweep started by an older version); it holds nothing."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        pass


def save_pending(sweep_dir: Path, ops: list[Op]) -> None:
    """The writes MLflow missed, for `resume` to replay; no file when there are none."""
    path = sweep_dir / PENDING
    if ops:
        write_json(path, {"ops": ops})
    else:
        path.unlink(missing_ok=True)


def load_pending(sweep_dir: Path) -> list[Op]:
    path = sweep_dir / PENDING
    return json.loads(path.read_text())["ops"] if path.is_file() else []


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)
