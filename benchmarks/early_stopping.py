"""Early stopping: the same trial budget with the rung scheduler on and off.

For each space (default: `kd_temperature` and the training-heavy `hybrid_train`) and seed
(0, 1, 2), two real sweeps (`python -m sweeper launch`, local Ray, real MLflow store) with the
same `search.trials` and, unless overridden, `search.sampler=random`: a random sampler draws
the same configurations for both runs whatever their results, so the two differ only by the
scheduler. (With NSGA-II or TPE, a stopped trial changes what the sampler proposes next and
the runs part ways after a few trials; pass `search.sampler=nsga2` to see that too.) Trials
are handed out in the same order; with concurrency 2 they may finish in another.

- **on**: `search.early_stop=on`;
- **off**: `search.early_stop=observe`, i.e. no trial is ever stopped, but each is judged at
  its rungs as the scheduler would judge it and tagged `would_stop_at_rung`; the seconds that
  judging cost (`rung_seconds`) are subtracted from its compute, so it counts as a run
  without the scheduler.

Compute is trial CPU-seconds: each trial's `trial_seconds` times its `resources.cpus`, summed
in the order trials finished (trials.jsonl). Printed per space and seed:

- hypervolume (the sweep's normalised one, baseline competing) against cumulative trial
  CPU-seconds, for both runs;
- CPU-seconds the scheduler run took to reach 95% of the no-scheduler run's final
  hypervolume, and that as a fraction of what the no-scheduler run took to reach it
  (target at most 0.6);
- the same ratio "paired": the scheduler run's trials in its own order and compute, each
  scored by the no-scheduler run's measurement of the same configuration (both train it
  identically; only the two runs' latency noise differs, and near the 95% line that noise
  alone can move the crossing by several trials);
- the final hypervolume ratio, on / off (target at least 0.98);
- how many final front members of the no-scheduler run the scheduler would have stopped
  (judged against the same run's trials that had reached the rung before them).

Timings on a machine whose cores are shared with other work vary; say so when quoting them.

    python benchmarks/early_stopping.py                     # 2 spaces x 3 seeds x on/off
    python benchmarks/early_stopping.py --tiny              # tiny model, 600 images, 16 trials
    python benchmarks/early_stopping.py --spaces kd_temperature --seeds 0 search.trials=8
    python benchmarks/early_stopping.py --quick              # smoke run: tiny model, 4 trials
    python benchmarks/early_stopping.py --keep DIR --reanalyse ...  # analyse kept sweeps again
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.core import journal  # noqa: E402
from sweeper.core.config import layered  # noqa: E402
from sweeper.measure.hardware import cpu_model, isa_summary  # noqa: E402
from sweeper.results.hv_history import finished, history  # noqa: E402

TINY = ["model.embed_dim=64", "model.depth=2", "model.num_heads=2", "train.epochs=25",
        "train.lr=3e-3", "data.limit=600", "measure.batch_sizes=1,8", "measure.warmup=2",
        "measure.repeats=5", "measure.max_seconds=1"]
QUICK_SPACE = str(ROOT / "tests" / "helpers" / "spaces" / "rungs_cheap.yaml")


def sweep(out: Path, space: str, seed: int, mode: str, extra: list[str]) -> Path:
    """One real sweep; its folder."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    args = [sys.executable, "-m", "sweeper", "launch", *layered(
        "registry=false", "quiet=true", *extra, f"space={space}", f"search.seed={seed}",
        f"search.early_stop={mode}", f"output_dir={out}")]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(args[3:])}):\n{proc.stderr[-3000:]}")
    (folder,) = [p for p in (out / "sweeps").iterdir() if p.is_dir()]
    return folder


def kept(out: Path) -> Path:
    """The sweep folder an earlier run left under `out` (--reanalyse)."""
    sweeps = out / "sweeps"
    found = [p for p in sweeps.iterdir() if p.is_dir()] if sweeps.is_dir() else []
    if len(found) != 1:
        raise SystemExit(f"error: expected one kept sweep under {sweeps}, found {len(found)}")
    return found[0]


def analyse(folder: Path, observed: bool) -> dict[str, Any]:
    """Cumulative CPU-seconds and hypervolume after each finished trial, the final front,
    and (observed runs) which of its members the scheduler would have stopped."""
    meta = json.loads((folder / "sweep.json").read_text())
    cpus = float(meta["config"]["resources"]["cpus"])
    records = [r for r in journal.read(folder / journal.TRIALS) if r.get("event") == "complete"]
    base = json.loads((folder / "front.json").read_text())[0]
    assert base["trial"] == "baseline"
    results = finished(records)
    curve = history(results, base["val_acc"])
    cpu, total, keys = [], 0.0, []
    seen: set[str] = set()
    for rec in records:  # the order of `finished`: each trial's first result
        if rec["trial"] in seen:
            continue
        seen.add(rec["trial"])
        keys.append(json.dumps(rec.get("params"), sort_keys=True))
        seconds = float(rec["metrics"].get("trial_seconds", 0.0))
        if observed:  # what judging at the rungs cost: not part of a run without it
            seconds -= float(rec.get("tags", {}).get("rung_seconds", 0.0))
        total += cpus * seconds
        cpu.append(total)
    front = {r["trial"] for r in json.loads((folder / "front.json").read_text())} - {"baseline"}
    would = {r["trial"] for r in records if "would_stop_at_rung" in r.get("tags", {})}
    stopped = sum(1 for r in records if "stopped_at_rung" in r.get("metrics", {}))
    return {"cpu": cpu, "hv": curve, "front": sorted(front), "stopped": stopped,
            "front_would_stop": sorted(front & would), "results": results, "keys": keys,
            "baseline_val_acc": base["val_acc"]}


def paired(on: dict[str, Any], off: dict[str, Any]) -> list[float]:
    """The scheduler run's hypervolume curve with each trial it finished scored by the
    no-scheduler run's measurement of the same configuration: both runs train the same
    configurations identically, so this leaves out only the latency noise between the two
    runs, which can decide a 95% crossing by itself. Stopped trials still count nothing."""
    measured = dict(zip(off["keys"], off["results"], strict=True))
    swapped = [r if r["stopped"] else measured.get(k, r)
               for k, r in zip(on["keys"], on["results"], strict=True)]
    return history(swapped, off["baseline_val_acc"])


def reach(run: dict[str, Any], target: float) -> float | None:
    """CPU-seconds at which the run's hypervolume first reached `target` (None: never)."""
    for cpu, hv in zip(run["cpu"], run["hv"], strict=True):
        if hv >= target - 1e-12:
            return cpu
    return None


def compare(on: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    target = 0.95 * off["hv"][-1]
    on_at, off_at = reach(on, target), reach(off, target)
    paired_at = reach({"cpu": on["cpu"], "hv": paired(on, off)}, target)
    return {
        "on_cpu_to_95": on_at, "off_cpu_to_95": off_at,
        "compute_ratio_to_95": None if on_at is None or not off_at else on_at / off_at,
        "paired_on_cpu_to_95": paired_at,
        "paired_compute_ratio_to_95": (None if paired_at is None or not off_at
                                       else paired_at / off_at),
        "hv_ratio": on["hv"][-1] / off["hv"][-1],
        "on_total_cpu": on["cpu"][-1], "off_total_cpu": off["cpu"][-1],
        "stopped": on["stopped"],
        "off_front": len(off["front"]), "off_front_would_stop": len(off["front_would_stop"]),
    }


def print_curve(name: str, run: dict[str, Any]) -> None:
    points = "  ".join(f"{c:.0f}s:{h:.4f}" for c, h in zip(run["cpu"], run["hv"], strict=True))
    print(f"    {name:3s} (cum. CPU-s:HV) {points}")


def _fmt(value: float | None, spec: str) -> str:
    return "never" if value is None else format(value, spec)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Hypervolume against cumulative trial CPU-seconds, a panel per space, on solid and
    off dashed, one colour per seed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spaces = sorted({r["space"] for r in runs})
    fig = Figure(figsize=(6 * len(spaces), 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(spaces), squeeze=False)[0]
    for ax, space in zip(axes, spaces, strict=True):
        for i, r in enumerate(r for r in runs if r["space"] == space):
            for mode, style in (("on", "-"), ("observe", "--")):
                c = r["curves"][mode]
                ax.step(c["cpu"], c["hv"], style, where="post", color=f"C{i}",
                        label=f"seed {r['seed']} {'on' if mode == 'on' else 'off'}")
        ax.set(title=space, xlabel="cumulative trial CPU-seconds",
               ylabel="normalised hypervolume")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, format="png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spaces", nargs="+", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=None)
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, 4 trials")
    ap.add_argument("--tiny", action="store_true",
                    help="the test suite's tiny model and 600 images (minutes, not hours)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                    "early_stopping.json")
    ap.add_argument("--keep", type=Path, default=None, help="keep the sweeps in this folder")
    ap.add_argument("--reanalyse", action="store_true",
                    help="run nothing: analyse the sweeps an earlier run left in --keep")
    ap.add_argument("--plot", type=Path, nargs="+", metavar=("PNG", "JSON"),
                    help="only draw PNG from earlier runs' JSON files")
    ap.add_argument("overrides", nargs="*", help="key=value for every sweep")
    args = ap.parse_args()
    if args.plot:
        runs = [r for f in args.plot[1:] for r in json.loads(f.read_text())["runs"]]
        plot(runs, args.plot[0])
        return 0
    if args.reanalyse and args.keep is None:
        ap.error("--reanalyse needs --keep FOLDER (where the earlier run kept its sweeps)")
    spaces = args.spaces or ([QUICK_SPACE] if args.quick else ["kd_temperature", "hybrid_train"])
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    trials = args.trials or (4 if args.quick else 16)
    extra = [f"search.trials={trials}", "search.sampler=random", *args.overrides]
    if args.tiny:
        extra = [*TINY, *extra]
    if args.quick:
        extra = [*TINY, "search.concurrency=1", "search.rungs=1,2",
                 "search.eta=2", *extra]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores; {isa_summary()}), "
          f"{platform.python_version()}; cores may be shared with other work")
    print(f"spaces {spaces}, seeds {seeds}, {trials} trials per sweep, overrides {extra}")
    root = args.keep or Path(tempfile.mkdtemp(prefix="early-stopping-"))
    if not any(o.startswith("cache_dir=") for o in extra):  # one baseline for every sweep
        extra = [f"cache_dir={root / 'cache'}", *extra]
    out: dict[str, Any] = {"cpu": cpu_model(), "isa": isa_summary(), "cores": os.cpu_count(),
                           "trials": trials, "overrides": extra, "runs": []}
    for space in spaces:
        name = Path(space).stem
        rows = []
        for seed in seeds:
            runs = {}
            for mode in ("on", "observe"):
                where = root / f"{name}-{seed}-{mode}"
                folder = (kept(where) if args.reanalyse
                          else sweep(where, space, seed, mode, extra))
                runs[mode] = analyse(folder, observed=mode == "observe")
            row = compare(runs["on"], runs["observe"])
            rows.append(row)
            out["runs"].append({"space": name, "seed": seed, **row,
                                "curves": {m: {"cpu": r["cpu"], "hv": r["hv"]}
                                           for m, r in runs.items()}})
            args.json.parent.mkdir(parents=True, exist_ok=True)  # after each pair: partial
            args.json.write_text(json.dumps(out, indent=2) + "\n")  # runs keep what they did
            print(f"\n{name}, seed {seed}:", flush=True)
            print_curve("on", runs["on"])
            print_curve("off", runs["observe"])
            print(f"    CPU-s to 95% of off's final HV: on {_fmt(row['on_cpu_to_95'], '.0f')}, "
                  f"off {_fmt(row['off_cpu_to_95'], '.0f')} (ratio "
                  f"{_fmt(row['compute_ratio_to_95'], '.2f')}, target <= 0.6; paired "
                  f"{_fmt(row['paired_compute_ratio_to_95'], '.2f')}); final HV ratio "
                  f"{row['hv_ratio']:.4f} (target >= 0.98); stopped {row['stopped']}/{trials}; "
                  f"off's front members the scheduler would have stopped: "
                  f"{row['off_front_would_stop']}/{row['off_front']}")
        ratios = [r["compute_ratio_to_95"] for r in rows if r["compute_ratio_to_95"] is not None]
        print(f"\n{name}: median compute ratio to 95% "
              f"{_fmt(statistics.median(ratios) if ratios else None, '.2f')}, median final HV "
              f"ratio {statistics.median(r['hv_ratio'] for r in rows):.4f}, total CPU-s on/off "
              f"{sum(r['on_total_cpu'] for r in rows):.0f}/"
              f"{sum(r['off_total_cpu'] for r in rows):.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.json}; sweeps under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
