"""Append-only JSON-lines files in the sweep folder: every trial result as it arrives, so a
sweep loses nothing to an unreachable MLflow store or a killed driver."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sweeper.core.errors import UserError

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


def cut_partial_tail(path: Path, every_line_json: bool) -> int:
    """Before a resume appends to `path`: drop a last record cut short by a kill mid-write
    (no newline; appending after it would glue the next record to it, and Optuna then refuses
    the whole file). With `every_line_json`, a complete line that is not JSON is a UserError,
    found before anything is cut. Returns the bytes dropped."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if every_line_json:
        for number, line in enumerate(data[:complete].splitlines(), start=1):
            try:
                json.loads(line)
            except ValueError:
                raise UserError(f"{path} is damaged at line {number} (not a JSON record), so "
                                f"the study cannot be replayed to resume; the finished trials "
                                f"are in {path.parent / TRIALS} and MLflow") from None
    if complete < len(data):
        os.truncate(path, complete)
    return len(data) - complete
