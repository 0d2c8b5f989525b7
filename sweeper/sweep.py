"""The driver's whole sweep: validate, baseline, Tune, front, MLflow, report.

Everything that can be rejected (space, overrides, data, model limits) is checked before the
first file is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sweeper import checkpoint, compress, preflight
from sweeper.config import Config
from sweeper.data import Splits, load_splits
from sweeper.errors import UserError
from sweeper.files import write_json
from sweeper.measure import serialized_size
from sweeper.models import create_model, load_or_train_baseline
from sweeper.pareto import normalised_hypervolume, pareto_front
from sweeper.report import Front, format_front_table, front_to_csv, front_to_json, plot_front
from sweeper.spaces import Space, check_against_model, load_space
from sweeper.train import accuracy
from sweeper.trial import TrialInputs, build_baseline, evaluate_artefact

Log = Callable[[str], None]
# Latency enters the front as the ratio to the baseline timed in the same process.
FRONT_OBJECTIVES = (("val_acc", "max"), ("size_mb", "min"), ("latency_ratio", "min"))


@dataclass
class Prepared:
    cfg: Config
    space: Space
    splits: Splits
    data_source: str = "config"  # "datasets": the Python API's own; resume needs them again


@dataclass
class SweepOutcome:
    sweep_dir: Path
    parent_run_id: str
    rows: list[dict[str, Any]]
    front: list[dict[str, Any]]
    baseline: dict[str, Any]
    hypervolume: float
    wall_seconds: float  # the whole sweep, baseline and front included
    table: str
    tune_seconds: float = 0.0  # Tune's fit alone: scheduling plus the trials


def prepare(cfg: Config, tracking_uri: str | None = None, splits: Splits | None = None
            ) -> Prepared:
    """All validation that needs no writes: space file, folders, services, resources, data,
    model-dependent limits (`tracking_uri`: the one a resumed sweep keeps; `splits`: the
    Python API's datasets instead of the config's data)."""
    space = load_space(cfg.space)
    preflight.check_launch(cfg, tracking_uri)
    source = "config" if splits is None else "datasets"
    splits = load_splits(cfg.data, cfg.output_dir) if splits is None else splits
    model = create_model(cfg.model, splits.num_classes)
    if cfg.model.checkpoint:  # a bad checkpoint is rejected here, before any write
        checkpoint.load_into(model, cfg.model.checkpoint, splits.num_classes, cfg.model.name)
    check_against_model(space, model)
    return Prepared(cfg, space, splits, source)


def baseline_device(cfg: Config) -> torch.device:
    return torch.device("cuda" if cfg.resources.gpus > 0 and torch.cuda.is_available() else "cpu")


def baseline_row(
    cfg: Config, splits: Splits, inputs: TrialInputs, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The uncompressed model as a row of the table; its latency is the median of the
    baseline timings every trial took in its own process."""
    base_lat = [r["baseline_latency_ms"] for r in rows if "baseline_latency_ms" in r]
    return {
        "trial": "baseline",
        "config": {},
        "val_acc": inputs.baseline_val_acc,
        "test_acc": accuracy(build_baseline(inputs), splits.test, cfg.model.img_size,
                             splits.mean, splits.std, torch.device("cpu"),
                             cfg.measure.eval_batch_size),
        "size_mb": inputs.baseline_size_bytes / 1e6,
        "latency_ms": statistics.median(base_lat) if base_lat else float("nan"),
        "latency_ratio": 1.0,
        "speedup": 1.0,
        "size_ratio": 1.0,
    }


def _inputs(cfg: Config, splits: Splits, log: Log) -> tuple[TrialInputs, Any]:
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
        mean=splits.mean,
        std=splits.std,
    )
    return inputs, base


def launch(prep: Prepared, log: Log = print) -> SweepOutcome:
    """A new sweep: its folder, baseline, MLflow parent run, then Tune."""
    from sweeper.tracking import Tracker

    cfg, space, splits = prep.cfg, prep.space, prep.splits
    preflight.check_cluster(cfg, log)  # an attached cluster: before the folder exists
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    sweep_dir = new_sweep_dir(out / "sweeps", space.name, time.strftime("%Y%m%d-%H%M%S"))
    name = sweep_dir.name
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    inputs, base = _inputs(cfg, splits, log)
    tracker = Tracker(cfg.resolved_tracking_uri(), cfg.experiment, out / "mlartifacts")
    parent = tracker.start_sweep(
        name,
        {"config": cfg.to_dict(), "space": space.name},
        {"sweeper.space": space.name, "baseline.cache": str(base.path)},
    )
    tracker.log_metrics(parent, {"baseline_val_acc": base.val_acc,
                                 "baseline_size_mb": inputs.baseline_size_bytes / 1e6})
    meta = {"name": name, "space": space.name, "parent_run_id": parent,
            "tracking_uri": cfg.resolved_tracking_uri(), "config": cfg.to_dict(),
            "status": "RUNNING"}
    write_json(sweep_dir / "sweep.json", meta)
    log(f"sweep {name}: {cfg.search.trials} trials of space '{space.name}', concurrency "
        f"{cfg.search.concurrency}, sampler {cfg.search.sampler}, MLflow run {parent}")
    return _drive(prep, inputs, tracker, meta, sweep_dir, started, restore=False, log=log)


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


def find_sweep(ref: str, output_dir: str) -> Path:
    """A sweep folder from its MLflow parent run id, its name, or its path."""
    if not ref.strip():
        raise UserError("give a parent run id, sweep name or sweep folder")
    if (Path(ref) / "sweep.json").is_file():
        return Path(ref)
    sweeps = Path(output_dir) / "sweeps"
    if (sweeps / ref / "sweep.json").is_file():
        return sweeps / ref
    for meta_path in sorted(sweeps.glob("*/sweep.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("parent_run_id") == ref:
            return meta_path.parent
    raise UserError(f"no sweep {ref!r} under {sweeps} (give a parent run id or sweep name)")


def resume(ref: str, output_dir: str, log: Log = print, splits: Splits | None = None
           ) -> SweepOutcome | None:
    """Continue a sweep whose driver died or was interrupted: same Tune experiment, Optuna
    study, MLflow parent. A finished sweep only gets the MLflow writes it missed (None).
    `splits`: the datasets a sweep launched from Python with its own was given again."""
    from sweeper.config import config_from_dict
    from sweeper.tracking import Tracker

    sweep_dir = find_sweep(ref, output_dir)
    meta = preflight.read_sweep_meta(sweep_dir)
    if meta.get("status") == "FINISHED":
        sync_finished(sweep_dir, meta, log)
        return None
    # the sweep folder sits at <output_dir>/sweeps/<name>, wherever it was launched from
    cfg = dataclasses.replace(config_from_dict(meta["config"]),
                              output_dir=str(sweep_dir.resolve().parents[1]))
    if not (sweep_dir / "ray" / "tune" / "tuner.pkl").is_file():
        raise UserError(f"sweep {meta['name']} has no Tune state to resume from")
    if meta.get("data_source") == "datasets" and splits is None:
        raise UserError(f"sweep {meta['name']} was launched from Python with its own datasets; "
                        "resume it with sweeper.resume(..., train=, val=, test=)")
    prep = prepare(cfg, meta["tracking_uri"], splits)
    preflight.check_cluster(cfg, log)
    started = time.perf_counter()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    inputs, _ = _inputs(cfg, prep.splits, log)
    tracker = Tracker(meta["tracking_uri"], cfg.experiment, Path(cfg.output_dir) / "mlartifacts")
    tracker.reopen(meta["parent_run_id"])
    meta["status"] = "RUNNING"
    meta["resumed"] = int(meta.get("resumed", 0)) + 1
    write_json(sweep_dir / "sweep.json", meta)
    log(f"resuming sweep {meta['name']} (MLflow run {meta['parent_run_id']})")
    return _drive(prep, inputs, tracker, meta, sweep_dir, started, restore=True, log=log)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; its state is saved and `command` continues it."""

    def __init__(self, name: str, command: str) -> None:
        super().__init__(name)
        self.name, self.command = name, command


def resume_command(name: str, output_dir: str) -> str:
    where = "" if output_dir == "outputs" else f" output_dir={output_dir}"
    return f"python -m sweeper resume {name}{where}"


# Why child runs still RUNNING when a sweep ends early are closed (as KILLED)
_STOPPED = {"KILLED": "sweep interrupted before this trial finished; resume runs it again",
            "FAILED": "sweep failed before this trial finished"}


def _drive(
    prep: Prepared,
    inputs: TrialInputs,
    tracker: Any,
    meta: dict[str, Any],
    sweep_dir: Path,
    started: float,
    restore: bool,
    log: Log,
) -> SweepOutcome:
    from sweeper import orchestrate  # ray is imported only when a sweep really runs
    from sweeper.tracking import Mirror, SweepRuns, load_pending

    cfg, space, splits = prep.cfg, prep.space, prep.splits
    if prep.data_source != "config":  # resume must be handed the same datasets again
        meta["data_source"] = prep.data_source
        write_json(sweep_dir / "sweep.json", meta)
    mirror = Mirror(SweepRuns(tracker, meta["parent_run_id"], log))
    for op in load_pending(sweep_dir):  # what MLflow missed before, minus the old end mark
        if op[0] != "end_sweep":
            mirror.submit(*op)
    status = "FAILED"
    try:
        url = orchestrate.init_ray(cfg, log)
        if url:
            log(f"Ray dashboard: {url}  (token: run `ray get-auth-token` in this venv)")
        tuned = orchestrate.run_tune(cfg, space, inputs, mirror, sweep_dir, meta["name"], log,
                                     restore=restore)
        outcome = finish(cfg, space, splits, inputs, mirror, sweep_dir, tuned, log)
        status = "FINISHED"
        outcome.wall_seconds = time.perf_counter() - started
        return outcome
    except KeyboardInterrupt:
        status = "KILLED"
        raise SweepInterrupted(meta["name"], resume_command(meta["name"], cfg.output_dir)) from None
    finally:
        try:
            orchestrate.shutdown()
        finally:
            meta["status"] = status
            write_json(sweep_dir / "sweep.json", meta)
            _close_mlflow(mirror, status, sweep_dir, meta,
                          resume_command(meta["name"], cfg.output_dir))


def _close_mlflow(mirror: Any, status: str, sweep_dir: Path, meta: dict[str, Any],
                  command: str) -> None:
    """End the parent run, wait a while for the writes still queued, and keep in the sweep
    folder those an unreachable store did not take, with a warning (the sweep's results are
    all in its folder either way)."""
    from sweeper.tracking import PENDING, final_grace_s, save_pending

    if status in _STOPPED:
        mirror.submit("close_orphans", _STOPPED[status])
    mirror.submit("end_sweep", status)
    save_pending(sweep_dir, mirror.queued())  # in case the driver dies while waiting
    left = mirror.close(final_grace_s())
    save_pending(sweep_dir, left)
    for refusal in mirror.refused:
        print(f"warning: MLflow refused a write: {refusal}", file=sys.stderr, flush=True)
    if left:
        print(f"warning: MLflow at {meta['tracking_uri']} was unreachable; {len(left)} write(s) "
              f"it missed are kept in {sweep_dir / PENDING}. Once it is back, run "
              f"`{command}` to sync them", file=sys.stderr, flush=True)


def sync_finished(sweep_dir: Path, meta: dict[str, Any], log: Log) -> None:
    """`resume` of a finished sweep: replay the MLflow writes its driver could not make."""
    from sweeper.tracking import (
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


def finish(
    cfg: Config,
    space: Space,
    splits: Splits,
    inputs: TrialInputs,
    mirror: Any,
    sweep_dir: Path,
    tuned: Any,
    log: Log,
) -> SweepOutcome:
    """Front, its test accuracy (the only use of the test split), files, then MLflow marks
    (queued on the mirror: the files never wait for MLflow)."""
    rows = tuned.rows
    baseline = baseline_row(cfg, splits, inputs, rows)
    # The baseline competes: a trial it dominates is no reason to compress.
    front = [r for r in pareto_front([*rows, baseline], FRONT_OBJECTIVES) if r is not baseline]
    for row in front:
        ckpt = tuned.checkpoints.get(row["trial"])
        if ckpt is None:
            continue
        state = torch.load(Path(ckpt) / "model.pt", map_location="cpu", weights_only=True)
        pipeline = compress.pipeline_from_dict(row["config"])
        row["test_acc"] = evaluate_artefact(inputs, pipeline, state, splits.test)
    hv = normalised_hypervolume([*rows, baseline], baseline)
    table = format_front_table(front, baseline)
    files = [sweep_dir / "front.csv", sweep_dir / "front.json", sweep_dir / "front.png",
             sweep_dir / "front.txt"]
    front_to_csv(front, files[0], baseline=baseline)
    front_to_json(front, files[1], baseline=baseline)
    plot_front(rows, front, baseline, files[2])
    files[3].write_text(table + "\n")

    # child runs a killed driver started but Tune never recorded (their trial ran again)
    mirror.submit("close_orphans", "driver died before Tune recorded this trial")
    front_ids = {r["trial"] for r in front}
    for row in rows:
        mirror.submit("tag_trial", row["trial"],
                      {"pareto": str(row["trial"] in front_ids).lower()})
        if "test_acc" in row:
            mirror.submit("trial_metrics", row["trial"], {"test_acc": row["test_acc"]})
    mirror.submit("log_front", hv, [str(f) for f in files],
                  {"front_size": len(front), "trials_ok": len(rows),
                   "baseline_test_acc": baseline["test_acc"]})
    return SweepOutcome(sweep_dir, mirror.runs.parent_id, rows, Front(front, baseline), baseline,
                        hv, tuned.wall_seconds, table, tune_seconds=tuned.wall_seconds)
