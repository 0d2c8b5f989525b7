"""python -m sweeper select RUN [max_accuracy_drop=X] [max_size_ratio=Y] [max_latency_ratio=Z]
[prefer=accuracy|size|latency] [export=PATH] [format=onnx|torch] [output_dir=DIR]

The front as a menu: prints the members of a finished sweep's Pareto front that meet the
limits and picks one (`prefer`, default accuracy); `export=PATH` writes the pick exactly as
`python -m sweeper export` does. Limits are relative to the sweep's own baseline: accuracy
drop in validation points, size and batch-1 latency as ratios (the latency ratio is the
paired one the sweep optimised). No member within the limits is an `error:` line, exit 2,
nothing written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper import journal
from sweeper.errors import UserError

PREFER = ("accuracy", "size", "latency")
LIMITS = ("max_accuracy_drop", "max_size_ratio", "max_latency_ratio")


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


@dataclass(frozen=True)
class Options:
    limits: dict[str, float]
    prefer: str = "accuracy"
    export: str | None = None
    format: str = "onnx"
    output_dir: str = "outputs"


def parse(args: list[str]) -> Options:
    limits: dict[str, float] = {}
    opts: dict[str, str] = {}
    valid = (*LIMITS, "prefer", "export", "format", "output_dir")
    for item in args:
        key, sep, value = item.partition("=")
        if not sep or key not in valid:
            raise UserError(f"select takes {', '.join(f'{k}=...' for k in valid)}; "
                            f"got {item!r}")
        if key in LIMITS:
            try:
                number = float(value)
            except ValueError:
                raise UserError(f"{key}={value!r} is not a number") from None
            positive = key != "max_accuracy_drop"
            if not math.isfinite(number) or number < 0 or (positive and number == 0):
                raise UserError(f"{key}={value} must be a finite number "
                                f"{'> 0' if positive else '>= 0'}")
            limits[key] = number
        else:
            opts[key] = value
    prefer = opts.get("prefer", "accuracy")
    if prefer not in PREFER:
        raise UserError(f"prefer={prefer!r} is not valid; choose one of: {', '.join(PREFER)}")
    if opts.get("format", "onnx") not in ("onnx", "torch"):
        raise UserError(f"format={opts['format']!r} is not valid; choose one of: onnx, torch")
    if "export" in opts and not opts["export"].strip():
        raise UserError("export= is empty; give the file to write")
    return Options(limits, prefer, opts.get("export"), opts.get("format", "onnx"),
                   opts.get("output_dir", "outputs"))


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


def _limits_text(limits: dict[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in limits.items()) or "no limits"


def table(members: list[Member], chosen: Member) -> str:
    head = f"  {'trial':<12} {'val acc':>8} {'drop':>6} {'size':>7} {'latency':>8}  configuration"
    lines = [head]
    for m in members:
        mark = "*" if m is chosen else " "
        lines.append(f"{mark} {m.trial:<12} {100 * m.val_acc:7.1f}% {m.drop_points:6.1f} "
                     f"{m.size_ratio:6.3f}x {m.latency_ratio:7.3f}x  {m.description}")
    return "\n".join(lines)


def cmd_select(run: str, args: list[str]) -> int:
    from sweeper.preflight import read_sweep_meta
    from sweeper.sweep import find_sweep

    opts = parse(args)
    sweep_dir = find_sweep(run, opts.output_dir)
    meta = read_sweep_meta(sweep_dir)
    members = front_members(sweep_dir)
    ok = pick(members, opts.limits, opts.prefer)
    if not ok:
        raise UserError(f"none of the {len(members)} front members of sweep {meta['name']} "
                        f"meets {_limits_text(opts.limits)}")
    chosen = ok[0]
    written = None
    if opts.export is not None:  # first: a bad path is one error line, nothing printed
        from sweeper.export import run_export

        written = run_export(str(sweep_dir), chosen.trial, [
            f"format={opts.format}", f"out={opts.export}", f"output_dir={opts.output_dir}"])
    print(f"{len(ok)} of {len(members)} front members of sweep {meta['name']} meet "
          f"{_limits_text(opts.limits)} (drop in validation points, size and latency as "
          "ratios to the baseline):")
    print(table(ok, chosen))
    print(f"picked {chosen.trial} (prefer={opts.prefer}): {chosen.description}")
    if written is None:
        where = "" if opts.output_dir == "outputs" else f" output_dir={opts.output_dir}"
        print(f"export it with: python -m sweeper export {meta['name']} {chosen.trial} "
              f"out=PATH{where}  (or select ... export=PATH)")
    else:
        from sweeper.export import print_written

        print_written(*written)
    return 0


def members_by_alias(members: list[Member]) -> dict[str, Any]:
    """The registry's aliases (sweeper.registry): one front member each."""
    return {
        "best-accuracy": pick(members, {}, "accuracy")[0],
        "smallest": pick(members, {}, "size")[0],
        "fastest": pick(members, {}, "latency")[0],
        "knee": knee(members),
    }
