"""The driver's whole sweep: validate, baseline, Tune, front, MLflow, report.

Everything that can be rejected (space, overrides, data, model limits) is checked before the
first file is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sweeper.cluster import resources, stop_signal
from sweeper.core import journal
from sweeper.core.config import Config
from sweeper.core.errors import UserError
from sweeper.core.files import exclusive
from sweeper.core.sweep_folder import SWEEP_VERSION, find_sweep, read_sweep_meta
from sweeper.data.loading import Splits, load_splits
from sweeper.measure import hardware
from sweeper.measure.size import serialized_size
from sweeper.models import checkpoint
from sweeper.models.baseline import load_or_train_baseline
from sweeper.models.vit import create_model
from sweeper.search import scale_note
from sweeper.spaces.space import check_against_model, load_space
from sweeper.sweep import preflight
from sweeper.sweep.front import finish
from sweeper.sweep.state import Prepared, Sweep, SweepOutcome
from sweeper.trial.run import TrialInputs

if TYPE_CHECKING:  # mlflow is imported only when a sweep really runs
    pass

Log = Callable[[str], None]


def prepare(cfg: Config, tracking_uri: str | None = None, splits: Splits | None = None
            ) -> Prepared:
    """All validation that needs no writes: space file, folders, services, resources, data,
    model-dependent limits (`tracking_uri`: the one a resumed sweep keeps; `splits`: the
    Python API's datasets instead of the config's data)."""
    space = load_space(cfg.space)
    preflight.check_launch(cfg, tracking_uri)
    source = "config" if splits is None else "datasets"
    splits = load_splits(cfg.data, cfg.output_dir, cfg.model) if splits is None else splits
    model = create_model(cfg.model, splits.num_classes)
    if cfg.model.checkpoint:  # a bad checkpoint is rejected here, before any write
        checkpoint.load_into(model, cfg.model.checkpoint, splits.num_classes, cfg.model.name)
    device = cfg.resources.trial_device()
    check_against_model(space, model, device)
    if cfg.measure.runtime == "onnxruntime":
        from sweeper.measure.runtime import check_providers

        check_providers(device)
    return Prepared(cfg, space, splits, source)


def baseline_device(cfg: Config) -> torch.device:
    return torch.device("cuda" if cfg.resources.gpus > 0 and torch.cuda.is_available() else "cpu")


def _inputs(cfg: Config, splits: Splits, log: Log) -> tuple[TrialInputs, Any]:
    torch.set_num_threads(resources.driver_threads())  # the driver trains the baseline
    base = load_or_train_baseline(cfg, splits, baseline_device(cfg), log)
    base_model = base.model.cpu().eval()
    inputs = TrialInputs(
        config=cfg,
        baseline_state=base_model.state_dict(),
        baseline_val_acc=base.val_acc,
        baseline_size_bytes=serialized_size(base_model),
        num_classes=splits.num_classes,
        train=splits.train,
        val=splits.val,
        preprocessing=splits.preprocessing,
    )
    return inputs, base


DRIVER_LOCK = "driver.lock"  # held by the process driving the sweep (launch or resume)


def launch(prep: Prepared, log: Log = print) -> SweepOutcome:
    """A new sweep: its baseline, folder, MLflow parent run, then Tune."""

    cfg, space = prep.cfg, prep.space
    check_cluster(cfg, log)  # an attached cluster: before the folder exists
    note = scale_note(cfg)  # before the baseline, which may train for hours
    if note:
        log(note)
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.output_dir)
    # the baseline first: a Ctrl-C or a failure while it trains (hours on a real model) leaves
    # no sweep folder behind, only the cache once it is trained
    inputs, base = _inputs(cfg, prep.splits, log)
    folder = new_sweep_dir(out / "sweeps", space.name, stamp)
    with exclusive(folder / DRIVER_LOCK, wait=False):  # a new folder: no one else holds it
        sweep = _start(prep, inputs, base, folder, log, started)
        log(f"sweep {sweep.name}: {cfg.search.trials} trials of space '{space.name}', "
            f"concurrency {cfg.search.concurrency}, sampler {cfg.search.sampler}, MLflow run "
            f"{sweep.parent_run_id}")
        return drive(sweep, restore=False)


def _start(prep: Prepared, inputs: TrialInputs, base: Any, folder: Path, log: Log,
           started: float) -> Sweep:
    """The MLflow parent run and sweep.json (RUNNING). Should either fail or be stopped, the
    launch leaves nothing half-made: the folder goes, and a parent run already started ends
    FAILED (KILLED for a Ctrl-C)."""
    from sweeper.tracking.client import Tracker

    cfg, space = prep.cfg, prep.space
    tracker, parent = None, None
    try:
        tracker = Tracker(cfg.resolved_tracking_uri(), cfg.experiment,
                          Path(cfg.output_dir) / "mlartifacts")
        parent = tracker.start_sweep(
            folder.name,
            {"config": cfg.to_dict(), "space": space.name},
            {"sweeper.space": space.name, "baseline.cache": str(base.path)},
        )
        tracker.log_metrics(parent, {"baseline_val_acc": base.val_acc,
                                     "baseline_size_mb": inputs.baseline_size_bytes / 1e6})
        meta = {"schema_version": SWEEP_VERSION, "name": folder.name, "space": space.name,
                "parent_run_id": parent, "tracking_uri": cfg.resolved_tracking_uri(),
                "experiment_id": tracker.experiment_id, "config": cfg.to_dict(),
                "machine": hardware.machine(), "num_classes": prep.splits.num_classes,
                "preprocessing": prep.splits.preprocessing.to_dict(),  # read back by export
                "classes": list(prep.splits.classes)}
        if prep.data_source != "config":  # the API's own datasets: resume needs them again
            meta["data_source"] = prep.data_source
        sweep = Sweep(cfg, space, prep.splits, inputs, folder, meta, tracker, log, started)
        sweep.save_meta(status="RUNNING")
        return sweep
    except BaseException as exc:
        if parent is not None:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            with contextlib.suppress(Exception):  # the store may be what failed
                tracker.end_sweep(parent, status)  # type: ignore[union-attr]
        shutil.rmtree(folder, ignore_errors=True)
        raise


def new_sweep_dir(sweeps: Path, space: str, stamp: str) -> Path:
    """A new folder <space>-<stamp>, or <space>-<stamp>-2, -3, ... when launches share the
    second: mkdir is the atomic claim, so concurrent drivers never share one."""
    sweeps.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = sweeps / (f"{space}-{stamp}" if n == 1 else f"{space}-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"too many sweeps named {space}-{stamp}* under {sweeps}")


def resume(ref: str, output_dir: str, log: Log = print, splits: Splits | None = None
           ) -> SweepOutcome | None:
    """Continue a sweep whose driver died or was interrupted: same Tune experiment, Optuna
    study, MLflow parent. A finished sweep only gets the MLflow writes it missed (None).
    `splits`: the datasets a sweep launched from Python with its own was given again."""
    from sweeper.core.config import config_from_dict
    from sweeper.tracking.client import Tracker

    folder = find_sweep(ref, output_dir)
    meta = read_sweep_meta(folder)
    if meta.get("status") == "FINISHED":
        sync_finished(folder, meta, log)
        return None
    if "schema_version" not in meta:  # version 0: Tune's state pickled the modules of 0.1
        raise UserError(f"sweep {meta['name']} was left unfinished by a sweeper from before "
                        "sweep records had versions; its Tune state names modules that have "
                        "moved since, so resume it with that sweeper (select and export "
                        "read it here)")
    # the sweep folder sits at <output_dir>/sweeps/<name>, wherever it was launched from
    cfg = dataclasses.replace(config_from_dict(meta["config"]),
                              output_dir=str(folder.resolve().parents[1]))
    if not (folder / "ray" / "tune" / "tuner.pkl").is_file():
        raise UserError(f"sweep {meta['name']} has no Tune state to resume from")
    if meta.get("data_source") == "datasets" and splits is None:
        raise UserError(f"sweep {meta['name']} was launched from Python with its own datasets; "
                        "resume it with sweeper.resume(..., train=, val=, test=)")
    prep = prepare(cfg, meta["tracking_uri"], splits)
    check_cluster(cfg, log)
    with _driving(folder, meta["name"]):
        _cut_partial_records(folder, log)
        started = time.perf_counter()
        inputs, _ = _inputs(cfg, prep.splits, log)
        tracker = Tracker(meta["tracking_uri"], cfg.experiment,
                          Path(cfg.output_dir) / "mlartifacts")
        tracker.reopen(meta["parent_run_id"])
        sweep = Sweep(cfg, prep.space, prep.splits, inputs, folder, meta, tracker, log, started)
        sweep.save_meta(status="RUNNING", resumed=int(meta.get("resumed", 0)) + 1)
        log(f"resuming sweep {sweep.name} (MLflow run {sweep.parent_run_id})")
        _say_if_other_machine(meta.get("machine"), log)
        return drive(sweep, restore=True)


@contextlib.contextmanager
def _driving(folder: Path, name: str) -> Iterator[None]:
    """The sweep's driver lock, or a UserError while another driver holds it (its `launch`
    or an earlier `resume` still running): two drivers would run one Tune experiment twice
    and interleave the study's journal. The kernel drops a killed driver's lock."""
    lock, held = folder / DRIVER_LOCK, contextlib.ExitStack()
    try:
        held.enter_context(exclusive(lock, wait=False))
    except BlockingIOError:
        holder = lock.read_text().strip() or "?"
        raise UserError(f"sweep {name} is still being driven (process {holder} on this "
                        f"machine); stop it (Ctrl-C) before resuming") from None
    with held:
        yield


def _cut_partial_records(folder: Path, log: Log) -> None:
    """A driver killed mid-write can leave a record cut short at the end of the study's
    journal or of trials.jsonl; a resume appends after it, so it goes first."""
    from sweeper.search import OPTUNA_JOURNAL

    for name, strict in ((OPTUNA_JOURNAL, True), (journal.TRIALS, False)):
        if dropped := journal.cut_partial_tail(folder / name, every_line_json=strict):
            log(f"note: {name} ended in a record cut short ({dropped} bytes, never complete); "
                "dropped it")


def _say_if_other_machine(launched_on: dict[str, str] | None, log: Log) -> None:
    here = hardware.machine()
    if launched_on and (launched_on.get("cpu"), launched_on.get("cpu_isa")) != (
            here["cpu"], here["cpu_isa"]):
        log(f"note: this sweep was launched on {launched_on.get('cpu')} "
            f"({launched_on.get('cpu_isa')}); this machine is {here['cpu']} ({here['cpu_isa']}). "
            "Trials run here time their own baseline here; the front keeps the trials of one "
            "hardware fingerprint only and names the others")


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; its state is saved and `command` continues it."""

    def __init__(self, name: str, command: str) -> None:
        super().__init__(name)
        self.name, self.command = name, command


# Why child runs still RUNNING when a sweep ends early are closed (as KILLED)
_STOPPED = {"KILLED": "sweep interrupted before this trial finished; resume runs it again",
            "FAILED": "sweep failed before this trial finished"}


def drive(sweep: Sweep, restore: bool) -> SweepOutcome:
    """Ray, Tune, the front; on any end, the sweep's status in its folder and in MLflow."""
    from sweeper.cluster import orchestrate  # ray is imported only when a sweep really runs
    from sweeper.tracking.client import Mirror, SweepRuns, load_pending

    sweep.mirror = Mirror(SweepRuns(sweep.tracker, sweep.parent_run_id, sweep.log))
    for op in load_pending(sweep.folder):  # what MLflow missed before, minus the old end mark
        if op[0] != "end_sweep":
            sweep.mirror.submit(*op)
    with stop_signal.last_words(lambda: _stop_hung(sweep)):
        return _drive(sweep, restore, orchestrate)


def _drive(sweep: Sweep, restore: bool, orchestrate: Any) -> SweepOutcome:
    status = "FAILED"
    try:
        url = orchestrate.init_ray(sweep.cfg, sweep.log)
        if url:
            sweep.log(f"Ray dashboard: {url}  (token: run `ray get-auth-token` in this venv)")
        tuned = orchestrate.run_tune(sweep, restore=restore)
        outcome = finish(sweep, tuned)
        status = "FINISHED"
        outcome.wall_seconds = time.perf_counter() - sweep.started
        return outcome
    except KeyboardInterrupt:
        status = "KILLED"
        raise SweepInterrupted(sweep.name, sweep.resume_command()) from None
    finally:
        try:
            orchestrate.shutdown()
        finally:
            sweep.save_meta(status=status)
            _close_mlflow(sweep, status)


def _stop_hung(sweep: Sweep) -> None:
    """A stop that hung (stop_signal): what the end of `drive` would have written."""
    sweep.save_meta(status="KILLED")
    _close_mlflow(sweep, "KILLED", grace=5.0)
    print(interrupted_line(sweep.name, sweep.resume_command()), file=sys.stderr, flush=True)


def interrupted_line(name: str, command: str) -> str:
    return f"interrupted: sweep {name} stopped; continue it with `{command}`"


def _close_mlflow(sweep: Sweep, status: str, grace: float | None = None) -> None:
    """End the parent run, wait a while for the writes still queued, and keep in the sweep
    folder those an unreachable store did not take, with a warning (the sweep's results are
    all in its folder either way)."""
    from sweeper.tracking.client import PENDING, final_grace_s, save_pending

    mirror = sweep.mirror
    assert mirror is not None
    if status in _STOPPED:
        mirror.submit("close_orphans", _STOPPED[status])
    mirror.submit("end_sweep", status)
    save_pending(sweep.folder, mirror.queued())  # in case the driver dies while waiting
    left = mirror.close(final_grace_s() if grace is None else grace)
    save_pending(sweep.folder, left)
    for refusal in mirror.refused:
        print(f"warning: MLflow refused a write: {refusal}", file=sys.stderr, flush=True)
    if left:
        print(f"warning: MLflow at {sweep.meta['tracking_uri']} was unreachable; {len(left)} "
              f"write(s) it missed are kept in {sweep.folder / PENDING}. Once it is back, run "
              f"`{sweep.resume_command()}` to sync them", file=sys.stderr, flush=True)


def sync_finished(sweep_dir: Path, meta: dict[str, Any], log: Log) -> None:
    """`resume` of a finished sweep: replay the MLflow writes its driver could not make."""
    from sweeper.tracking.client import (
        PENDING,
        Mirror,
        SweepRuns,
        Tracker,
        final_grace_s,
        load_pending,
        save_pending,
    )

    ops = load_pending(sweep_dir)
    if not ops:
        raise UserError(f"sweep {meta['name']} already finished; nothing to resume")
    uri, experiment = meta["tracking_uri"], meta["config"].get("experiment", "sweeper")
    log(f"sweep {meta['name']} finished; syncing {len(ops)} MLflow write(s) it missed")
    try:
        tracker = Tracker(uri, experiment, sweep_dir.resolve().parents[1] / "mlartifacts")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"MLflow at {uri} is unreachable ({first}); the writes stay in "
                        f"{sweep_dir / PENDING}, run resume again later") from None
    mirror = Mirror(SweepRuns(tracker, meta["parent_run_id"], log))
    for op in ops:
        mirror.submit(*op)
    left = mirror.close(final_grace_s())
    save_pending(sweep_dir, left)
    if left:
        raise UserError(f"MLflow at {uri} is still unreachable; {len(left)} write(s) stay in "
                        f"{sweep_dir / PENDING}, run resume again later")
    log(f"MLflow is in sync with sweep {meta['name']}")


def check_cluster(cfg: Config, log: Log) -> None:
    """Attach to an existing cluster now, before the sweep folder exists: orchestrate.init_ray
    rejects an unreachable one or one with no node big enough for a trial."""
    if cfg.ray.address:
        from sweeper.cluster import orchestrate

        orchestrate.init_ray(cfg, log)
