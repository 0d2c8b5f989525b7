"""The driver's whole sweep: validate, baseline, Tune, front, MLflow, report.

Everything that can be rejected (space, overrides, data, model limits) is checked before the
first file is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sweeper import compress
from sweeper.config import Config
from sweeper.data import Splits, load_splits
from sweeper.errors import UserError
from sweeper.files import write_json
from sweeper.measure import serialized_size
from sweeper.models import create_model, load_or_train_baseline
from sweeper.pareto import normalised_hypervolume, pareto_front
from sweeper.report import format_front_table, front_to_csv, front_to_json, plot_front
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


def prepare(cfg: Config) -> Prepared:
    """All validation that needs no writes: space file, data, model-dependent limits."""
    space = load_space(cfg.space)
    splits = load_splits(cfg.data, cfg.output_dir)
    model = create_model(cfg.model, splits.num_classes)
    check_against_model(space, model)
    return Prepared(cfg, space, splits)


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
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    name = f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir = out / "sweeps" / name
    sweep_dir.mkdir(parents=True, exist_ok=False)
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


def find_sweep(ref: str, output_dir: str) -> Path:
    """A sweep folder from its MLflow parent run id, its name, or its path."""
    if (Path(ref) / "sweep.json").is_file():
        return Path(ref)
    sweeps = Path(output_dir) / "sweeps"
    if (sweeps / ref / "sweep.json").is_file():
        return sweeps / ref
    for meta_path in sorted(sweeps.glob("*/sweep.json")):
        try:
            if json.loads(meta_path.read_text()).get("parent_run_id") == ref:
                return meta_path.parent
        except (OSError, ValueError):
            continue
    raise UserError(f"no sweep {ref!r} under {sweeps} (give a parent run id or sweep name)")


def resume(ref: str, output_dir: str, log: Log = print) -> SweepOutcome:
    """Continue a sweep whose driver died: same Tune experiment, Optuna study, MLflow parent."""
    from sweeper.config import config_from_dict
    from sweeper.tracking import Tracker

    sweep_dir = find_sweep(ref, output_dir)
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    if meta.get("status") == "FINISHED":
        raise UserError(f"sweep {meta['name']} already finished; nothing to resume")
    # the sweep folder sits at <output_dir>/sweeps/<name>, wherever it was launched from
    cfg = dataclasses.replace(config_from_dict(meta["config"]),
                              output_dir=str(sweep_dir.resolve().parents[1]))
    if not (sweep_dir / "ray" / "tune" / "tuner.pkl").is_file():
        raise UserError(f"sweep {meta['name']} has no Tune state to resume from")
    prep = prepare(cfg)
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

    cfg, space, splits = prep.cfg, prep.space, prep.splits
    parent = meta["parent_run_id"]
    status = "FAILED"
    try:
        url = orchestrate.init_ray(cfg, log)
        if url:
            log(f"Ray dashboard: {url}  (token: run `ray get-auth-token` in this venv)")
        tuned = orchestrate.run_tune(cfg, space, inputs, tracker, parent, sweep_dir,
                                     meta["name"], log, restore=restore)
        outcome = finish(cfg, space, splits, inputs, tracker, parent, sweep_dir, tuned, log)
        status = "FINISHED"
        outcome.wall_seconds = time.perf_counter() - started
        return outcome
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_sweep(parent, status)
        meta["status"] = status
        write_json(sweep_dir / "sweep.json", meta)
        orchestrate.shutdown()


def finish(
    cfg: Config,
    space: Space,
    splits: Splits,
    inputs: TrialInputs,
    tracker: Any,
    parent: str,
    sweep_dir: Path,
    tuned: Any,
    log: Log,
) -> SweepOutcome:
    """Front, its test accuracy (the only use of the test split), files and MLflow marks."""
    rows = tuned.rows
    lost = tracker.close_orphans(parent, "driver died before Tune recorded this trial")
    if lost:
        log(f"{lost} trial run(s) started by a killed driver were never recorded; "
            "marked KILLED in MLflow")
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

    front_ids = {r["trial"] for r in front}
    for row in rows:
        if row.get("run_id"):
            tracker.tag(row["run_id"], {"pareto": str(row["trial"] in front_ids).lower()})
            if "test_acc" in row:
                tracker.log_metrics(row["run_id"], {"test_acc": row["test_acc"]})
    tracker.log_front(parent, hv, files, {"front_size": len(front), "trials_ok": len(rows),
                                          "baseline_test_acc": baseline["test_acc"]})
    return SweepOutcome(sweep_dir, parent, rows, front, baseline, hv, tuned.wall_seconds, table,
                        tune_seconds=tuned.wall_seconds)
