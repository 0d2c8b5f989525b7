"""Pareto fronts and hypervolume of sweep results (pure numpy).

A result is the plain dict a trial reports, e.g. ``{"trial": "t0003", "val_acc": 0.93,
"size_mb": 0.21, "latency_ms": 1.4, "speedup": 1.3, "size_ratio": 0.36, "feasible": True}``.
Internally every objective is turned into one to minimise by negating the maximised ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sweeper.core.objectives import OBJECTIVES

# Reference point of `normalised_hypervolume` in (val_acc, size_ratio, 1/speedup) space.
NORMALISED_REFERENCE: tuple[float, float, float] = (0.0, 2.0, 2.0)
NORMALISED_SENSES: tuple[str, str, str] = ("max", "min", "min")

_CHUNK = 256  # rows per broadcast block in non_dominated: bounds memory at CHUNK * n * d


def _signs(senses: Sequence[str]) -> np.ndarray:
    """+1 for a minimised objective, -1 for a maximised one."""
    bad = [s for s in senses if s not in ("min", "max")]
    if bad:
        raise ValueError(f"senses must be 'min' or 'max', got {bad}")
    return np.array([-1.0 if s == "max" else 1.0 for s in senses])


def _to_min(points: Any, senses: Sequence[str]) -> np.ndarray:
    signs = _signs(senses)
    pts = np.asarray(points, dtype=float).reshape(-1, len(signs))
    return pts * signs


def dominates(a: Sequence[float], b: Sequence[float], senses: Sequence[str]) -> bool:
    """True when `a` is no worse than `b` in every objective and strictly better in one."""
    ma, mb = _to_min([a, b], senses)
    return bool(np.all(ma <= mb) and np.any(ma < mb))


def covers(a: Sequence[float], b: Sequence[float], senses: Sequence[str]) -> bool:
    """True when `a` is no worse than `b` in every objective (dominates or ties it)."""
    ma, mb = _to_min([a, b], senses)
    return bool(np.all(ma <= mb))


def non_dominated(points: np.ndarray, senses: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows of `points` (n, d) that no other row dominates.

    Identical rows do not dominate each other, so duplicates on the front are all kept.
    A row holding NaN neither dominates nor is dominated (comparisons with NaN are false).
    """
    pts = _to_min(points, senses)
    n = len(pts)
    mask = np.ones(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        block = pts[start : start + _CHUNK, None, :]  # (c, 1, d): candidates
        others = pts[None, :, :]  # (1, n, d): possible dominators
        no_worse = np.all(others <= block, axis=2)
        better = np.any(others < block, axis=2)
        mask[start : start + _CHUNK] = ~np.any(no_worse & better, axis=1)
    return mask


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _eligible(result: dict[str, Any], objectives: Sequence[tuple[str, str]]) -> bool:
    """Feasible (or not marked) and every objective a finite number (failed trials are not)."""
    if result.get("feasible") is False:
        return False
    return all(_is_number(result.get(key)) for key, _ in objectives)


def pareto_front(
    results: list[dict[str, Any]],
    objectives: Sequence[tuple[str, str]] = OBJECTIVES,
) -> list[dict[str, Any]]:
    """The non-dominated feasible results, sorted by val_acc descending.

    Results with ``feasible`` False, or with a missing or non-finite objective, never enter.
    Ties on val_acc are broken by the remaining objectives, then by trial id, so the order
    is deterministic.
    """
    pool = [r for r in results if _eligible(r, objectives)]
    if not pool:
        return []
    keys = [k for k, _ in objectives]
    senses = [s for _, s in objectives]
    points = np.array([[float(r[k]) for k in keys] for r in pool])
    front = [r for r, keep in zip(pool, non_dominated(points, senses), strict=True) if keep]

    signs = _signs(senses)

    def order(r: dict[str, Any]) -> tuple:
        acc = -float(r["val_acc"]) if "val_acc" in r else 0.0
        rest = tuple(float(r[k]) * s for k, s in zip(keys, signs, strict=True))
        return (acc, *rest, str(r.get("trial", "")))

    return sorted(front, key=order)


def _hv_2d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by minimisation points in 2-D: sweep along x, keep the running min y."""
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    prev_min_y = np.concatenate(([ref[1]], np.minimum.accumulate(pts[:-1, 1])))
    gain = np.clip(prev_min_y - pts[:, 1], 0.0, None)
    return float(np.sum((ref[0] - pts[:, 0]) * gain))


def _hv_min(pts: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume by slicing objectives (HSO): cut along the last axis at every point's
    value; each slab is as thick as the gap to the next cut and its cross-section is the
    (d-1)-dimensional volume of the points at or below the slab. All points must strictly
    dominate `ref`."""
    n, d = pts.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(ref[0] - pts[:, 0].min())
    if d == 2:
        return _hv_2d(pts, ref)
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    cuts = np.append(pts[:, -1], ref[-1])
    volume = 0.0
    for i in range(n):
        depth = cuts[i + 1] - cuts[i]
        if depth > 0:
            section = pts[: i + 1, :-1]
            if d > 3:  # the 2-D sweep copes with dominated points on its own
                section = section[non_dominated(section, ["min"] * (d - 1))]
            volume += depth * _hv_min(section, ref[:-1])
    return volume


def hypervolume(points: Any, reference: Sequence[float], senses: Sequence[str]) -> float:
    """Exact volume of the region dominated by `points` (n, d) and bounded by `reference`.

    Maximised objectives are negated so everything is minimised. Points that do not strictly
    dominate the reference in every objective (or hold a non-finite value) contribute nothing.
    Exact for any d. In 3-D it costs O(n^2 log n) (about 0.1 s for 1000 front points);
    beyond that it grows quickly with d, fine for the d <= 4 a sweep has.
    """
    signs = _signs(senses)
    if len(reference) != len(signs):
        raise ValueError(f"reference has {len(reference)} values for {len(signs)} senses")
    ref = np.asarray(reference, dtype=float) * signs
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference must be finite, got {list(reference)}")
    pts = _to_min(points, senses)
    pts = pts[np.all(np.isfinite(pts), axis=1) & np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[non_dominated(pts, ["min"] * len(signs))]
    return _hv_min(pts, ref)


def relative_to_baseline(result: dict[str, Any], baseline: dict[str, Any]) -> tuple[float, float]:
    """(size_ratio, speedup) of a result: the reported values, else derived from the baseline.

    size_ratio = size_mb / baseline size_mb; speedup = baseline latency_ms / latency_ms.
    """
    size_ratio = result.get("size_ratio")
    if size_ratio is None:
        size_ratio = float(result["size_mb"]) / float(baseline["size_mb"])
    speedup = result.get("speedup")
    if speedup is None:
        speedup = float(baseline["latency_ms"]) / float(result["latency_ms"])
    return float(size_ratio), float(speedup)


def normalised_hypervolume(results: list[dict[str, Any]], baseline: dict[str, Any]) -> float:
    """The sweep's ``hypervolume`` metric, comparable across runs, machines and models.

    Each feasible result becomes the point (val_acc, size_ratio, 1/speedup): accuracy as a
    fraction in [0, 1] (maximised), size and batch-1 latency relative to the uncompressed
    baseline measured in the same run (both minimised; ratios survive a noisy machine where
    absolute times do not).

    Reference point: ``NORMALISED_REFERENCE = (0.0, 2.0, 2.0)``, i.e. zero accuracy and twice
    the baseline's size and latency. With it the baseline itself, the point (acc_b, 1, 1),
    encloses exactly acc_b * 1 * 1 = acc_b, so a sweep that finds nothing better than the
    baseline scores about the baseline's accuracy, and the ceiling is 1 * 2 * 2 = 4. The
    factor 2 (not just above 1) keeps trials that are slightly slower than the baseline
    through timing noise or fake quantization (smaller but not faster) in the volume.
    Infeasible results and those missing a metric contribute nothing.
    """
    points = []
    for r in results:
        if r.get("feasible") is False or not _is_number(r.get("val_acc")):
            continue
        try:
            size_ratio, speedup = relative_to_baseline(r, baseline)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue  # a failed trial without size or latency
        if speedup > 0 and math.isfinite(size_ratio):
            points.append((float(r["val_acc"]), size_ratio, 1.0 / speedup))
    return hypervolume(np.array(points).reshape(-1, 3), NORMALISED_REFERENCE, NORMALISED_SENSES)
