"""Value checks shared by `Config` and every technique config, so that every out-of-range
setting reads the same way: ``NAME=VALUE is out of range [LOW, HIGH]``.

They raise `UserError` (a `ValueError`): a bad value in an override or in a search-space file
is the user's to fix, and a technique's own validation is reached through both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sweeper.core.errors import UserError


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> None:
    """An integer (not a bool) within [low, high]; a bound left None is open."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    _within(name, value, low, high, low_open=False)


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> None:
    """A finite number within [low, high] (or (low, high] with low_open); ints are numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    _within(name, value, low, high, low_open)


def check_choice(name: str, value: Any, valid: Iterable[Any]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise UserError(f"{name}={value!r} is not valid; choose one of: "
                        f"{', '.join(str(v) for v in valid)}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}")


def _within(name: str, value: float, low: float | None, high: float | None,
            low_open: bool) -> None:
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and value > high
    if below or above:
        left = "(" if low_open else "["
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise UserError(f"{name}={value} is out of range {left}{lo}, {hi}]")
