"""The driver's state: what `prepare` checked, the sweep being driven, and what it ends with.
Shared by launch, resume, `finish` and the Python API; the cluster layer sees a sweep only
through `cluster.orchestrate.TuneJob`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.core.config import Config
from sweeper.core.files import write_json
from sweeper.core.sweep_folder import SWEEP_VERSION, resume_command
from sweeper.data.loading import Splits
from sweeper.results.report import Front
from sweeper.spaces.space import Space
from sweeper.trial.run import TrialInputs

if TYPE_CHECKING:  # mlflow is imported only when a sweep really runs
    from sweeper.tracking.client import Mirror, Tracker

Log = Callable[[str], None]


@dataclass
class Prepared:
    cfg: Config
    space: Space
    splits: Splits
    data_source: str = "config"  # "datasets": the Python API's own; resume needs them again


@dataclass
class Sweep:
    """One sweep as the driver holds it: what launch, resume, run_tune and finish share."""

    cfg: Config
    space: Space
    splits: Splits
    inputs: TrialInputs
    folder: Path
    meta: dict[str, Any]  # the folder's sweep.json
    tracker: Tracker
    log: Log = print
    started: float = field(default_factory=time.perf_counter)
    mirror: Mirror | None = None  # the MLflow writer, open while the sweep is driven

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def parent_run_id(self) -> str:
        return self.meta["parent_run_id"]

    def save_meta(self, **changes: Any) -> None:
        # a resumed sweep's record, of whatever version it was read as, is written as this one
        self.meta.update(changes, schema_version=SWEEP_VERSION)
        write_json(self.folder / "sweep.json", self.meta)

    def resume_command(self) -> str:
        return resume_command(self.name, self.cfg.output_dir)


@dataclass
class SweepOutcome:
    sweep_dir: Path
    parent_run_id: str
    rows: list[dict[str, Any]]
    front: Front  # prints as the table the CLI prints
    baseline: dict[str, Any]
    hypervolume: float
    wall_seconds: float  # the whole sweep, baseline and front included
    table: str
    tune_seconds: float = 0.0  # Tune's fit alone: scheduling plus the trials
