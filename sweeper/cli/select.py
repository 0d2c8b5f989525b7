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

import math
from dataclasses import dataclass

from sweeper.core.errors import UserError
from sweeper.core.sweep_folder import find_sweep, read_sweep_meta
from sweeper.results.menu import Member, front_members, pick

PREFER = ("accuracy", "size", "latency")
LIMITS = ("max_accuracy_drop", "max_size_ratio", "max_latency_ratio")


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
        from sweeper.cli.export import run_export  # torch, timm, onnx: only to export

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
        from sweeper.cli.export import print_written  # loaded above already

        print_written(*written)
    return 0


