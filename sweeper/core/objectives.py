"""The three objectives of every sweep, declared once.

Optuna's study directions, Ray Tune's metric/mode lists, the front and the rows the CLI
prints all derive from `OBJECTIVES`. Latency enters as the ratio to the baseline timed in
the same process (paired, see measure.paired_ratio), size as megabytes of what ships.
"""

from __future__ import annotations

OBJECTIVES: tuple[tuple[str, str], ...] = (
    ("val_acc", "max"),
    ("size_mb", "min"),
    ("latency_ratio", "min"),
)
METRICS: list[str] = [name for name, _ in OBJECTIVES]
MODES: list[str] = [mode for _, mode in OBJECTIVES]
DIRECTIONS: list[str] = ["maximize" if mode == "max" else "minimize" for mode in MODES]
