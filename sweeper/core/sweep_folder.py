"""A sweep's folder on disk: finding it from a run id, name or path, reading its record
(`sweep.json`), and the command that resumes it. Every command that takes a sweep (resume,
select, export, the registry) reads it through here."""

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
    bad = [k for k, kind in SWEEP_RECORD.items() if not isinstance(meta.get(k), kind)]
    if bad or not re.fullmatch(r"[\w.-]+", meta["name"]):
        raise UserError(f"{path} is not a sweep record: missing or malformed "
                        f"{', '.join(bad) or 'name'}")
    try:
        config_from_dict(meta["config"])
    except UserError as exc:
        raise UserError(f"{path}: bad config: {exc}") from None
    return meta
