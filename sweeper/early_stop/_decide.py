"""The rung decision of multi-objective successive halving (pure numpy, no Ray).

At a rung (after some epochs of a trial's training stage) a trial is one point (validation
accuracy so far, size, latency ratio) among every trial that reached that rung. The points
are sorted as NSGA-II sorts a population: by non-dominated rank (front 0, then the front of
what is left, ...), within a rank by crowding distance (larger first: the points that spread
the front). A trial continues when it is within the best ceil(n / eta), and always when no
other point dominates it: a rung never stops a trial that could still be on the front.
Fewer than `min_peers` points at a rung is too little to judge; the trial continues.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sweeper.core.objectives import MODES
from sweeper.results.pareto import non_dominated


def senses() -> list[str]:
    """The objectives' senses, in the order of a rung point (objectives.OBJECTIVES)."""
    return list(MODES)


def ranks(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Non-dominated rank of each row (0: on the front)."""
    n = len(points)
    rank = np.full(n, -1)
    left = np.arange(n)
    level = 0
    while len(left):
        front = non_dominated(points[left], modes)
        if not front.any():  # only NaN rows left: they share the last rank
            front[:] = True
        rank[left[front]] = level
        left = left[~front]
        level += 1
    return rank


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within its own set (ends: infinite)."""
    n, d = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, math.inf)
    for j in range(d):
        order = np.argsort(points[:, j], kind="stable")
        col = points[order, j]
        span = col[-1] - col[0]
        dist[order[0]] = dist[order[-1]] = math.inf
        if span > 0:
            dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return dist


def keep(points: np.ndarray, eta: int, modes: Sequence[str] | None = None) -> np.ndarray:
    """Boolean mask: which points continue at this rung."""
    n = len(points)
    rank = ranks(points, senses() if modes is None else modes)
    crowd = np.zeros(n)
    for level in np.unique(rank):
        members = rank == level
        crowd[members] = crowding(points[members])
    order = sorted(range(n), key=lambda i: (rank[i], -crowd[i], i))
    mask = np.zeros(n, dtype=bool)
    mask[order[: math.ceil(n / eta)]] = True
    return mask | (rank == 0)


def decide(points: dict[str, Sequence[float]], trial: str, eta: int,
           min_peers: int | None = None) -> bool:
    """True: `trial` continues. `points` holds every trial at this rung, `trial` included."""
    if len(points) < (eta if min_peers is None else min_peers):
        return True
    names = sorted(points)
    mask = keep(np.array([points[t] for t in names], dtype=float), eta)
    return bool(mask[names.index(trial)])
