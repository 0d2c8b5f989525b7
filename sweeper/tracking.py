"""MLflow: one parent run per sweep, one child run per trial. The only module using mlflow.

Explicit run ids through `MlflowClient` (no global active run), so the driver can log
children from Tune callbacks while the parent stays open.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

MAX_PARAM_LEN = 500

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


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            # A tracking server stores artifacts where it is configured to; a local store
            # keeps them beside the sweep's outputs instead of in the working directory.
            remote = uri.startswith(("http://", "https://", "databricks"))
            location = artifact_root.resolve().as_uri() if artifact_root and not remote else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location
            )
        else:
            self.experiment_id = exp.experiment_id

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a client holds DB engines.
        return {"uri": self.uri, "experiment_id": self.experiment_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.uri = state["uri"]
        self.experiment_id = state["experiment_id"]
        self.client = MlflowClient(tracking_uri=self.uri)

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

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        self._log(run_id, metrics=metrics)

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
    ) -> None:
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, v) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )


class BackgroundWriter:
    """Runs tracking calls on one thread, in submission order, off Tune's event loop.

    Each trial costs the MLflow store ~0.09 s of writes (SQLite here); done inline, that time
    is added to every trial's scheduling. `flush` waits for the queue and re-raises the first
    error, so nothing is lost silently.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="mlflow-writer",
                                            daemon=True)
            self._thread.start()
        self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                fn(*args)
            except BaseException as exc:  # reported by flush, on the driver's thread
                self._errors.append(exc)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()
        if self._errors:
            raise RuntimeError(f"MLflow logging failed: {self._errors[0]!r}") from self._errors[0]

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; threads do not pickle
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)
