"""Value checks shared by `Config` and every technique config, so that every out-of-range
setting reads the same way: ``NAME=VALUE is out of range [LOW, HIGH]``; and `setting`, which
declares a config field's default, meaning and valid values once for `check_declared` to
enforce (and sweeper.cli.config_help to document).

They raise `UserError` (a `ValueError`): a bad value in an override or in a search-space file
is the user's to fix, and a technique's own validation is reached through both.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
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


# -- declared settings: one declaration gives a field its meaning and the values it takes -----

SETTING = "sweeper.setting"  # the dataclasses.field metadata key of a Declared


@dataclass(frozen=True)
class Declared:
    """What a config field means and which values it takes; `check_declared` enforces it and
    the help and docs/configuration.md are written from it.

    `lo`/`hi`: inclusive bounds (None: open) of a number, or of each item of a list; a bound
    may name another field of the same config (model.patch_size <= model.img_size).
    `choices`: the valid values. `increasing`: a list's items strictly increase. `must`: what
    a list must be, as its whole error (`NAME must be ...`), `{lo}` and `{hi}` filled in;
    without it each item is checked alone."""

    meaning: str
    lo: float | str | None = None
    hi: float | str | None = None
    choices: tuple[Any, ...] | None = None
    increasing: bool = False
    must: str | None = None

    def bounds(self, obj: Any = None) -> tuple[Any, Any]:
        """(lo, hi), a bound naming a field read from `obj` (left as the name without one)."""
        return tuple(getattr(obj, b) if isinstance(b, str) and obj is not None else b
                     for b in (self.lo, self.hi))  # type: ignore[return-value]


def setting(default: Any, meaning: str, *, lo: float | str | None = None,
            hi: float | str | None = None, choices: Iterable[Any] | None = None,
            increasing: bool = False, must: str | None = None) -> Any:
    """A config field declared once: its default, one-line meaning and valid values."""
    if not meaning.strip() or "\n" in meaning:
        raise ValueError(f"a setting's meaning is one line of text, got {meaning!r}")
    if must is not None and (lo is None or hi is None):
        raise ValueError("a setting with `must` declares both bounds")
    spec = Declared(meaning, lo, hi, None if choices is None else tuple(choices), increasing,
                    must)
    return field(default=default, metadata={SETTING: spec})


def declared(f: dataclasses.Field[Any]) -> Declared | None:
    """The declaration of a dataclass field made with `setting`, else None."""
    return f.metadata.get(SETTING)


def value_type(hint: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether None is allowed) of a field's type hint."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), len(rest) < len(typing.get_args(hint))
    return hint, False


@functools.cache
def _declared_fields(cls: type) -> tuple[tuple[str, Any, Declared], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name], spec) for f in dataclasses.fields(cls)
                 if (spec := declared(f)) is not None)


def check_declared(obj: Any, prefix: str = "") -> None:
    """Check every declared field of the dataclass instance `obj` against its declaration, in
    field order, naming each `prefix + field` (check_int, check_float, check_choice's errors;
    a list with `must` as a whole). None passes where the type allows it."""
    for name, hint, spec in _declared_fields(type(obj)):
        value = getattr(obj, name)
        kind, optional = value_type(hint)
        if value is None and optional:
            continue
        key = prefix + name
        lo, hi = spec.bounds(obj)
        if spec.choices is not None:
            check_choice(key, value, spec.choices)
        elif typing.get_origin(kind) is tuple:
            _check_list(key, value, typing.get_args(kind)[0], spec, lo, hi)
        else:
            _check_number(key, value, kind, lo, hi)


def _check_number(key: str, value: Any, kind: Any, lo: Any, hi: Any) -> None:
    if kind is int:
        check_int(key, value, lo, hi)
    elif kind is float:
        check_float(key, value, lo, hi)


def _check_list(key: str, items: Any, kind: Any, spec: Declared, lo: Any, hi: Any) -> None:
    if spec.must is None:
        for item in items:
            _check_number(key, item, kind, lo, hi)
    elif (not items or any(not lo <= item <= hi for item in items)
          or (spec.increasing and list(items) != sorted(set(items)))):
        raise UserError(f"{key} must be {spec.must.format(lo=lo, hi=hi)}")
