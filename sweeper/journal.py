"""Append-only JSON-lines files in the sweep folder: every trial result as it arrives, so a
sweep loses nothing to an unreachable MLflow store or a killed driver."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TRIALS = "trials.jsonl"


def append(path: Path, record: dict[str, Any]) -> None:
    """One line, written with a single O_APPEND write and fsynced before returning."""
    line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete line; a line cut short by a kill mid-write is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
