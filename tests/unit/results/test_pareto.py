"""Pareto set and hypervolume against brute force, hand-computed cases and Optuna."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sweeper.results.pareto import (
    NORMALISED_REFERENCE,
    OBJECTIVES,
    dominates,
    hypervolume,
    non_dominated,
    normalised_hypervolume,
    pareto_front,
)


def brute_non_dominated(points: np.ndarray, senses: list[str]) -> np.ndarray:
    return np.array(
        [
            not any(dominates(q, p, senses) for j, q in enumerate(points) if j != i)
            for i, p in enumerate(points)
        ]
    )


def box_union_volume(points: np.ndarray, ref: np.ndarray) -> float:
    """Minimisation boxes [p, ref]: exact union volume by inclusion-exclusion."""
    pts = [p for p in points if np.all(p < ref)]
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = np.max(subset, axis=0)  # intersection of boxes [p, ref]
            total += (-1) ** (k + 1) * float(np.prod(np.clip(ref - corner, 0.0, None)))
    return total


def random_points(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    # Coarse grid values so ties in single coordinates are common, plus exact duplicates.
    pts = rng.integers(0, 6, size=(n, d)).astype(float) / 5
    dup = rng.integers(0, n, size=n // 4)
    return np.concatenate([pts, pts[dup]])


def test_dominates() -> None:
    senses = ["max", "min"]
    assert dominates([0.9, 1.0], [0.8, 1.0], senses)
    assert dominates([0.9, 0.5], [0.8, 1.0], senses)
    assert not dominates([0.9, 1.0], [0.9, 1.0], senses)  # equal: no
    assert not dominates([0.9, 2.0], [0.8, 1.0], senses)  # trade-off: no
    assert not dominates([0.8, 1.0], [0.9, 1.0], senses)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("senses", [["min", "min"], ["max", "min"], ["max", "min", "min"]])
def test_non_dominated_matches_brute_force(seed: int, senses: list[str]) -> None:
    rng = np.random.default_rng(seed)
    pts = random_points(rng, 40, len(senses))
    mask = non_dominated(pts, senses)
    np.testing.assert_array_equal(mask, brute_non_dominated(pts, senses))


def test_non_dominated_keeps_duplicates_and_handles_chunks() -> None:
    pts = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    assert non_dominated(pts, ["min", "min"]).tolist() == [True, True, False]
    # More rows than one broadcast block: same answer as brute force.
    rng = np.random.default_rng(7)
    big = random_points(rng, 300, 3)
    assert len(big) > 256
    np.testing.assert_array_equal(
        non_dominated(big, ["min"] * 3), brute_non_dominated(big, ["min"] * 3)
    )
    assert non_dominated(np.empty((0, 3)), ["min"] * 3).shape == (0,)


def test_hypervolume_hand_computed() -> None:
    mm = ["min", "min"]
    assert hypervolume([[1.0, 1.0]], [3.0, 4.0], mm) == pytest.approx(6.0)
    # Two boxes 2x1 and 1x2 overlapping in a 1x1 square.
    assert hypervolume([[1.0, 2.0], [2.0, 1.0]], [3.0, 3.0], mm) == pytest.approx(3.0)
    # Maximised accuracy: (0.9 - 0) * (1.1 - 0.5) * (1.1 - 0.6).
    assert hypervolume([[0.9, 0.5, 0.6]], [0.0, 1.1, 1.1], ["max", "min", "min"]) == (
        pytest.approx(0.9 * 0.6 * 0.5)
    )
    # Two 3-D points: unit cube corners.
    two = [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert hypervolume(two, [2.0, 2.0, 2.0], ["min"] * 3) == pytest.approx(4 + 2 - 1)
    assert hypervolume([[1.0]], [3.0], ["min"]) == pytest.approx(2.0)


def test_hypervolume_ignores_points_not_dominating_reference() -> None:
    mm = ["min", "min"]
    assert hypervolume([[3.0, 1.0], [1.0, 5.0]], [3.0, 4.0], mm) == 0.0
    assert hypervolume([[3.0, 1.0], [1.0, 1.0]], [3.0, 4.0], mm) == pytest.approx(6.0)
    assert hypervolume([[np.nan, 1.0], [1.0, 1.0]], [3.0, 4.0], mm) == pytest.approx(6.0)
    assert hypervolume([], [3.0, 4.0], mm) == 0.0
    with pytest.raises(ValueError):
        hypervolume([[1.0, 1.0]], [3.0, 4.0], ["min", "up"])


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_matches_inclusion_exclusion(d: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 9))
    pts = rng.random((n, d))
    if seed % 2:  # ties and duplicates
        pts = np.round(pts * 4) / 4
        pts[-1] = pts[0]
    ref = np.full(d, 0.9)  # some points fall outside and must be ignored
    assert hypervolume(pts, ref, ["min"] * d) == pytest.approx(box_union_volume(pts, ref))


def test_hypervolume_max_senses_equal_negated_min() -> None:
    rng = np.random.default_rng(3)
    pts = rng.random((8, 3))
    ref = np.array([0.1, 1.0, 1.0])
    mixed = hypervolume(pts, ref, ["max", "min", "min"])
    flipped = pts * np.array([-1, 1, 1])
    assert mixed == pytest.approx(box_union_volume(flipped, ref * np.array([-1, 1, 1])))


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_matches_optuna(d: int, seed: int) -> None:
    # Optuna 5.0.0 has no public hypervolume function; the private one is what its
    # samplers and plot_hypervolume_history use.
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(200 + seed)
    pts = rng.random((60, d))
    pts[:5] = pts[5:10]  # duplicates
    ref = np.full(d, 1.0)
    expected = compute_hypervolume(pts, ref)
    assert hypervolume(pts, ref, ["min"] * d) == pytest.approx(expected, rel=1e-12)


def result(trial: str, acc: float, size: float, lat: float, **extra: object) -> dict:
    # latency_ratio orders the front like latency_ms does for a common baseline
    return {"trial": trial, "val_acc": acc, "size_mb": size, "latency_ms": lat,
            "latency_ratio": lat, **extra}


def test_pareto_front_excludes_infeasible_and_sorts() -> None:
    results = [
        result("t0", 0.90, 1.0, 1.0),
        result("t1", 0.95, 2.0, 1.0, feasible=True),
        result("t2", 0.99, 0.1, 0.1, feasible=False),  # dominates all, but infeasible
        result("t3", 0.80, 2.0, 2.0),  # dominated by t0
        result("t4", 0.85, 0.5, 1.5),
        result("t5", None, 0.1, 0.1),  # failed trial
        result("t6", 0.90, 1.0, 1.0),  # duplicate of t0: kept
    ]
    front = pareto_front(results)
    assert [r["trial"] for r in front] == ["t1", "t0", "t6", "t4"]
    assert pareto_front([]) == []
    # Other objectives: accuracy alone.
    assert [r["trial"] for r in pareto_front(results, (("val_acc", "max"),))] == ["t1"]
    assert OBJECTIVES[0] == ("val_acc", "max")


def test_normalised_hypervolume() -> None:
    baseline = {"val_acc": 0.9, "size_mb": 2.0, "latency_ms": 4.0}
    assert NORMALISED_REFERENCE == (0.0, 2.0, 2.0)
    # The baseline itself scores its accuracy.
    same = result("b", 0.9, 2.0, 4.0)
    assert normalised_hypervolume([same], baseline) == pytest.approx(0.9)
    # Reported ratios win over derived ones; half size, twice as fast: 0.8 * 1.5 * 1.5.
    r = result("t1", 0.8, 999.0, 999.0, size_ratio=0.5, speedup=2.0)
    assert normalised_hypervolume([r], baseline) == pytest.approx(0.8 * 1.5 * 1.5)
    derived = result("t2", 0.8, 1.0, 2.0)
    assert normalised_hypervolume([derived], baseline) == pytest.approx(0.8 * 1.5 * 1.5)
    infeasible = result("t3", 1.0, 0.1, 0.1, feasible=False)
    broken = result("t4", 0.99, None, None)
    assert normalised_hypervolume([r, infeasible, broken], baseline) == pytest.approx(1.8)
    assert normalised_hypervolume([], baseline) == 0.0
