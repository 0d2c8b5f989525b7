"""A sweep's folder on disk: finding it from a run id, name or path, reading its record
(`sweep.json`) and its trials' `pipeline.json`, and the command that resumes it. Every command
that takes a sweep (resume, select, export, the registry) reads it through here.

Each record sweeper writes carries its format's `schema_version`, read by `check_version`:
a record from a newer sweeper is refused (upgrade sweeper), one without a version is version
0 (written before versions were), and any other version is refused by name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sweeper.core.config import config_from_dict
from sweeper.core.errors import UserError


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


def resume_command(name: str, output_dir: str) -> str:
    where = "" if output_dir == "outputs" else f" output_dir={output_dir}"
    return f"python -m sweeper resume {name}{where}"


# sweep.json's format: 1 is version 0 (every record before versions were written) plus its
# schema_version; both are read
SWEEP_VERSION = 1
# a trial checkpoint's pipeline.json: 0 is the bare pipeline ({technique: params}, as
# compress.pipeline_to_dict gives it); 1 is {"schema_version": 1, "pipeline": <that>}
PIPELINE_VERSION = 1


def check_version(what: str, record: dict[str, Any], reads: tuple[int, ...]) -> int:
    """The version of `record` (its `schema_version`; version 0 where it has none) if this
    sweeper reads it (`reads`, the newest last); a UserError naming `what` otherwise."""
    version = record.get("schema_version", 0)
    current = reads[-1]
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError(f"{what} has schema_version {version!r}, not a version number "
                        f"(this sweeper reads up to version {current})")
    if version > current:
        raise UserError(f"{what} is version {version}, written by a newer sweeper; this "
                        f"sweeper reads up to version {current}: upgrade sweeper to read it")
    if version not in reads:
        raise UserError(f"{what} is version {version}, which this sweeper does not read "
                        f"(it reads version {', '.join(map(str, reads))})")
    return version


def pipeline_record(pipeline: dict[str, Any]) -> dict[str, Any]:
    """pipeline.json's content for a pipeline as compress.pipeline_to_dict gives it."""
    return {"schema_version": PIPELINE_VERSION, "pipeline": pipeline}


def read_pipeline(path: Path) -> dict[str, Any]:
    """The pipeline ({technique: params}, for compress.pipeline_from_dict) of a trial
    checkpoint's pipeline.json, of any version this sweeper reads."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8, not JSON
        raise UserError(f"{path} is not a trial's pipeline ({exc})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} is not a trial's pipeline (a JSON {type(record).__name__})")
    if check_version(str(path), record, (0, PIPELINE_VERSION)) == 0:
        return record
    pipeline = record.get("pipeline")
    if not isinstance(pipeline, dict):
        raise UserError(f"{path} is not a trial's pipeline (no pipeline object)")
    return pipeline


# what sweep.json must hold for resume and export to use it
SWEEP_RECORD = {"name": str, "parent_run_id": str, "tracking_uri": str, "config": dict}


def read_sweep_meta(sweep_dir: Path) -> dict[str, Any]:
    """sweep.json of a sweep folder, checked to be a sweep record whose config loads."""
    path = sweep_dir / "sweep.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise UserError(f"{path} is not a readable sweep record ({exc})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a sweep record (a JSON {type(meta).__name__})")
    check_version(str(path), meta, (0, SWEEP_VERSION))
    bad = [k for k, kind in SWEEP_RECORD.items() if not isinstance(meta.get(k), kind)]
    if bad or not re.fullmatch(r"[\w.-]+", meta["name"]):
        raise UserError(f"{path} is not a sweep record: missing or malformed "
                        f"{', '.join(bad) or 'name'}")
    try:
        config_from_dict(meta["config"])
    except UserError as exc:
        raise UserError(f"{path}: bad config: {exc}") from None
    return meta
