"""A finished sweep's front as a menu: its members with their drop, size and latency ratios,
the limits a member meets, the pick by preference, the knee, and the registry's aliases."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.core import journal
from sweeper.core.errors import UserError


@dataclass(frozen=True)
class Member:
    trial: str
    description: str
    val_acc: float
    test_acc: float | None
    size_ratio: float
    latency_ratio: float
    drop_points: float  # validation accuracy points below the baseline

    def key(self, prefer: str) -> tuple[float, ...]:
        """Sort key, best first: the preferred objective, then the other two."""
        acc, size, lat = -self.val_acc, self.size_ratio, self.latency_ratio
        order = {"accuracy": (acc, size, lat), "size": (size, acc, lat),
                 "latency": (lat, acc, size)}
        return order[prefer]


def front_members(sweep_dir: Path) -> list[Member]:
    """The front of a finished sweep (front.json) with each member's latency ratio from
    trials.jsonl (front.json shows speed-up, the ratio of medians; the sweep optimised the
    median of paired ratios)."""
    path = sweep_dir / "front.json"
    try:
        rows = json.loads(path.read_text())
    except OSError:
        raise UserError(f"sweep {sweep_dir.name} has no front yet ({path} is missing: the "
                        "sweep has not finished)") from None
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    base = next((r for r in rows if r.get("trial") == "baseline"), None)
    if base is None or base.get("val_acc") is None:
        raise UserError(f"{path} has no baseline row")
    ratios = {str(rec.get("trial")): (rec.get("metrics") or {}).get("latency_ratio")
              for rec in journal.read(sweep_dir / journal.TRIALS)
              if rec.get("event") == "complete"}
    members = []
    for r in rows:
        if r.get("trial") == "baseline" or r.get("val_acc") is None:
            continue
        lat = ratios.get(r["trial"])
        if lat is None and r.get("speedup"):
            lat = 1.0 / r["speedup"]
        members.append(Member(
            trial=r["trial"], description=r.get("description", ""), val_acc=r["val_acc"],
            test_acc=r.get("test_acc"), size_ratio=r["size_ratio"],
            latency_ratio=float("nan") if lat is None else float(lat),
            drop_points=100.0 * (base["val_acc"] - r["val_acc"]),
        ))
    return members


def meets(m: Member, limits: dict[str, float]) -> bool:
    checks = {"max_accuracy_drop": m.drop_points, "max_size_ratio": m.size_ratio,
              "max_latency_ratio": m.latency_ratio}
    # a small tolerance: front.json rounds nothing, but float sums of points do
    return all(checks[k] <= v + 1e-9 for k, v in limits.items())


def pick(members: list[Member], limits: dict[str, float], prefer: str) -> list[Member]:
    """The members within the limits, the pick first."""
    return sorted((m for m in members if meets(m, limits)), key=lambda m: m.key(prefer))


def knee(members: list[Member]) -> Member:
    """The member nearest the ideal point (best accuracy, size and latency of the front),
    each objective scaled to the front's range: the balanced choice."""
    def scaled(values: list[float], best_low: bool) -> list[float]:
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        return [((v - lo) if best_low else (hi - v)) / span for v in values]

    cols = [scaled([m.val_acc for m in members], best_low=False),
            scaled([m.size_ratio for m in members], best_low=True),
            scaled([m.latency_ratio for m in members], best_low=True)]
    dist = [math.dist((0.0, 0.0, 0.0), point) for point in zip(*cols, strict=True)]
    return members[min(range(len(members)), key=lambda i: (dist[i], members[i].trial))]


def members_by_alias(members: list[Member]) -> dict[str, Any]:
    """The registry's aliases (sweeper.registry): one front member each."""
    return {
        "best-accuracy": pick(members, {}, "accuracy")[0],
        "smallest": pick(members, {}, "size")[0],
        "fastest": pick(members, {}, "latency")[0],
        "knee": knee(members),
    }
