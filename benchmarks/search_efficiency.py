"""Search efficiency: how much of the exhaustive Pareto front each sampler finds in N trials.

On `sweeper/search_spaces/search_bench.yaml`, a choices-only space small enough to enumerate (48
distinct pipelines: structured prune ratio x Nyström off/16/32 x quantization off/int8/4/2-bit):

1. **Table.** Every distinct pipeline of the space is measured once with
   `sweeper.trial.run.run_trial` on the embedded default, exactly as a sweep measures a trial
   (baseline from the cache, validation accuracy, saved size, latency ratio to the baseline
   timed in the same process). The table is cached as JSON, keyed by the space file's
   content, the baseline key and the measurement settings, so reruns only reload it.
2. **Exhaustive front.** The non-dominated pipelines and their normalised hypervolume, with
   the uncompressed baseline competing exactly as `sweeper.sweep.front.finish` does.
3. **Samplers.** For each sampler (nsga2, tpe, gp, random), budget (8/16/32 trials) and seed
   (0/1/2): an Optuna study with three directions and the production sampler, built by
   `sweeper.search.make_sampler` from a Config with search.sampler / search.seed /
   search.trials set (so NSGA-II gets the population size rule a real sweep gets), wrapped
   in `NoRepeatSampler` (no trial repeats a finished or running configuration) as `run_tune`
   builds it; `--plain` leaves the wrapper out, to show what repeats cost. It is
   driven by ask/tell as Ray Tune's OptunaSearch drives it: `study.ask()` then
   `Space.define(trial)`, `search.concurrency` trials in flight (the oldest is told before
   the next is asked). A trial's objectives are **looked up** in the table, not
   re-measured: every sampler sees the same numbers for the same pipeline, which isolates
   the sampler's quality from measurement noise (and costs no trial time: the studies take
   about two minutes, mostly GP fitting). Score: hypervolume of the distinct pipelines
   found (baseline competing) as a fraction of the exhaustive one.
   Also reported: `gain`, the same fraction of the part above the baseline alone's volume
   (the baseline alone already holds a large share), and how many distinct pipelines the
   trials covered (samplers may propose a pipeline they already tried).

    python benchmarks/search_efficiency.py                  # embedded default (~5 min; ~1.5 min
                                                            # once the table is cached)
    python benchmarks/search_efficiency.py cache_dir=tests/.cache/cache measure.repeats=10
    python benchmarks/search_efficiency.py --plain          # samplers without NoRepeatSampler
    python benchmarks/search_efficiency.py --quick          # smoke test: tiny model, 4/8 trials
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import statistics
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

from sweeper import compress  # noqa: E402
from sweeper.core import objectives  # noqa: E402
from sweeper.core.config import Config, build_config  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.core.quiet import quiet_third_party  # noqa: E402
from sweeper.data.loading import load_splits  # noqa: E402
from sweeper.models.baseline import baseline_key  # noqa: E402
from sweeper.results.pareto import normalised_hypervolume  # noqa: E402
from sweeper.search import make_sampler  # noqa: E402
from sweeper.spaces.space import Space, load_space, resolve_path  # noqa: E402
from sweeper.sweep.driver import _inputs  # noqa: E402
from sweeper.sweep.front import front_of  # noqa: E402
from sweeper.trial.run import run_trial  # noqa: E402

SPACE = "search_bench"
SAMPLERS = ("nsga2", "tpe", "gp", "random")
BUDGETS = (8, 16, 32)
SEEDS = (0, 1, 2)
# tests/conftest.py TINY: a 2-block ViT on 600 digits (trains in seconds)
QUICK = ["model.embed_dim=64", "model.depth=2", "model.num_heads=2", "train.epochs=25",
         "train.lr=3e-3", "data.limit=600", "measure.batch_sizes=1,8", "measure.warmup=2",
         "measure.repeats=5", "measure.max_seconds=0"]
QUICK_BUDGETS = (4, 8)
TARGET = 0.95  # the default sampler's mean fraction at the largest budget
KEPT = ("val_acc", "val_acc_drop", "size_mb", "size_ratio", "latency_ms",
        "baseline_latency_ms", "speedup", "latency_ratio", "simulated", "trial_seconds")

Log = Callable[[str], None]


def pipeline_key(space: Space, values: dict[str, Any]) -> str:
    """One pipeline, however it was sampled (a disabled technique's other values drop out)."""
    return json.dumps(compress.pipeline_to_dict(space.pipeline(values)), sort_keys=True)


def distinct_grid(space: Space) -> dict[str, dict[str, Any]]:
    """key -> the first grid combination that builds that pipeline."""
    out: dict[str, dict[str, Any]] = {}
    for values in space.grid():
        out.setdefault(pipeline_key(space, values), values)
    return out


def table_path(cfg: Config, space_file: Path, table_dir: Path) -> Path:
    splits = load_splits(cfg.data, cfg.output_dir)
    ident = {"space": hashlib.sha256(space_file.read_bytes()).hexdigest(),
             "baseline": baseline_key(cfg, splits),
             "measure": dataclasses.asdict(cfg.measure), "cpus": cfg.resources.cpus}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return table_dir / f"{space_file.stem}-{digest}.json"


def measure_table(cfg: Config, space: Space, path: Path, log: Log) -> dict[str, Any]:
    """Every distinct pipeline measured once (rows already in the cached file are kept)."""
    grid = distinct_grid(space)
    table: dict[str, Any] = {"rows": {}}
    if path.is_file():
        try:
            table = json.loads(path.read_text())
        except ValueError:
            log(f"table {path} is unreadable; measuring again")
    missing = [k for k in grid if k not in table["rows"]]
    if not missing:
        log(f"table: {len(grid)} pipelines reused from {path}")
        return table
    splits = load_splits(cfg.data, cfg.output_dir)
    inputs, base = _inputs(cfg, splits, log)
    table.update(baseline_val_acc=inputs.baseline_val_acc,
                 baseline_size_bytes=inputs.baseline_size_bytes, baseline_key=base.key,
                 config=cfg.to_dict())
    for i, key in enumerate(missing, 1):
        start = time.perf_counter()
        result = run_trial(inputs, space.pipeline(grid[key]))
        m = result.metrics
        table["rows"][key] = {"params": grid[key], "pipeline": json.loads(key),
                              **{k: m[k] for k in KEPT}}
        write_json(path, table)  # an interrupted run resumes here
        log(f"[{i}/{len(missing)}] {describe(grid[key])}: val {m['val_acc']:.1%}  "
            f"size {m['size_ratio']:.3f}  latency {m['latency_ratio']:.2f}x  "
            f"{time.perf_counter() - start:.1f}s")
    return table


def describe(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def baseline_row(table: dict[str, Any]) -> dict[str, Any]:
    """The uncompressed model as front.baseline_row builds it (ratios 1; no test split)."""
    return {"trial": "baseline", "config": {}, "val_acc": table["baseline_val_acc"],
            "size_mb": table["baseline_size_bytes"] / 1e6, "latency_ratio": 1.0,
            "speedup": 1.0, "size_ratio": 1.0}


def front_and_hv(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> tuple[list, float]:
    """As front.finish: the baseline competes for the front and enters the hypervolume."""
    return front_of(rows, baseline), normalised_hypervolume([*rows, baseline], baseline)


def search(cfg: Config, space: Space, rows: dict[str, dict[str, Any]], sampler: str,
           budget: int, seed: int, no_repeats: bool = True) -> list[str]:
    """One Optuna study of `budget` trials with the sweep's sampler, driven as OptunaSearch
    drives it; returns the pipeline key of every trial in order (objectives come from the
    table). no_repeats: the sampler wrapped in NoRepeatSampler."""
    run_cfg = build_config([f"search.sampler={sampler}", f"search.seed={seed}",
                            f"search.trials={budget}"], base=cfg)
    define = space.define if no_repeats else None
    study = optuna.create_study(directions=objectives.DIRECTIONS,
                                sampler=make_sampler(run_cfg, define))
    pending: deque = deque()
    keys: list[str] = []
    while len(keys) < budget:
        while len(pending) < run_cfg.search.concurrency and len(keys) + len(pending) < budget:
            trial = study.ask()
            space.define(trial)
            pending.append(trial)
        trial = pending.popleft()
        key = pipeline_key(space, trial.params)
        study.tell(trial, [rows[key][m] for m in objectives.METRICS])
        keys.append(key)
    return keys


def run(cfg: Config, space_file: Path, table_dir: Path, samplers: list[str],
        budgets: list[int], seeds: list[int], no_repeats: bool = True,
        log: Log = print) -> dict[str, Any]:
    space = load_space(str(space_file))
    path = table_path(cfg, space_file, table_dir)
    table = measure_table(cfg, space, path, log)
    grid = distinct_grid(space)
    rows = {k: {"trial": k, **table["rows"][k]} for k in grid}
    baseline = baseline_row(table)
    front, hv_all = front_and_hv(list(rows.values()), baseline)
    hv_base = front_and_hv([], baseline)[1]
    log(f"exhaustive: {len(rows)} pipelines, front {len(front)}, normalised hypervolume "
        f"{hv_all:.4f} (baseline alone {hv_base:.4f})")
    torch.set_num_threads(1)  # GP fits: tiny models, threads only contend on a shared machine
    runs = []
    for sampler in samplers:
        for budget in budgets:
            for seed in seeds:
                start = time.perf_counter()
                keys = search(cfg, space, rows, sampler, budget, seed, no_repeats)
                found = [rows[k] for k in dict.fromkeys(keys)]
                hv = front_and_hv(found, baseline)[1]
                runs.append({
                    "sampler": sampler, "budget": budget, "seed": seed, "hypervolume": hv,
                    "fraction": hv / hv_all,
                    "gain": (hv - hv_base) / (hv_all - hv_base) if hv_all > hv_base else 1.0,
                    "distinct": len(found), "seconds": time.perf_counter() - start,
                    "front_found": sum(k in keys for k in (r["trial"] for r in front)),
                })
    summary = summarise(runs, samplers, budgets)
    return {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
            "space": space.name, "space_file": str(space_file), "table_file": str(path),
            "baseline_val_acc": table["baseline_val_acc"], "pipelines": len(rows),
            "exhaustive_hypervolume": hv_all, "baseline_hypervolume": hv_base,
            "front": [{"config": r["pipeline"], **{k: r[k] for k in KEPT}} for r in front],
            "table": [{"config": r["pipeline"], **{k: r[k] for k in KEPT}}
                      for r in rows.values()],
            "config": cfg.to_dict(), "samplers": samplers, "budgets": budgets, "seeds": seeds,
            "no_repeat_sampler": no_repeats,
            "runs": runs, "summary": summary}


def summarise(runs: list[dict[str, Any]], samplers: list[str],
              budgets: list[int]) -> dict[str, dict[str, dict[str, float]]]:
    """sampler -> budget -> mean/min fraction, mean gain, mean distinct pipelines."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for s in samplers:
        out[s] = {}
        for b in budgets:
            sel = [r for r in runs if r["sampler"] == s and r["budget"] == b]
            out[s][str(b)] = {
                "mean": statistics.fmean(r["fraction"] for r in sel),
                "min": min(r["fraction"] for r in sel),
                "gain_mean": statistics.fmean(r["gain"] for r in sel),
                "distinct_mean": statistics.fmean(r["distinct"] for r in sel),
            }
    return out


def format_report(report: dict[str, Any]) -> str:
    budgets, summary = report["budgets"], report["summary"]
    lines = [
        f"space {report['space']}: {report['pipelines']} pipelines, exhaustive front "
        f"{len(report['front'])} members, normalised hypervolume "
        f"{report['exhaustive_hypervolume']:.4f} (baseline alone "
        f"{report['baseline_hypervolume']:.4f}, val acc {report['baseline_val_acc']:.2%})",
        f"hypervolume reached / exhaustive, mean and min over seeds "
        f"{','.join(map(str, report['seeds']))}; [gain above the baseline alone, mean; "
        "distinct pipelines tried, mean]; samplers "
        + ("in NoRepeatSampler, as run_tune builds them" if report["no_repeat_sampler"]
           else "without NoRepeatSampler (--plain)"),
    ]
    head = f"{'sampler':<8}" + "".join(f"{f'{b} trials':>30}" for b in budgets)
    lines += [head, "-" * len(head)]
    for s in report["samplers"]:
        cells = []
        for b in budgets:
            c = summary[s][str(b)]
            cells.append(f"{c['mean']:.3f} / {c['min']:.3f} [{c['gain_mean']:.2f}; "
                         f"{c['distinct_mean']:4.1f}]")
        lines.append(f"{s:<8}" + "".join(f"{cell:>30}" for cell in cells))
    default, top = Config().search.sampler, str(budgets[-1])
    if default in summary and "random" in summary:
        d, r = summary[default][top]["mean"], summary["random"][top]["mean"]
        lines.append(
            f"target: default sampler {default} at {top} trials reaches {d:.1%} of the "
            f"exhaustive hypervolume ({'meets' if d >= TARGET else 'misses'} {TARGET:.0%}); "
            f"random {r:.1%} ({'beaten' if d > r else 'not beaten'}, by "
            f"{100 * (d - r):+.1f} points; a seed's luck moves a mean by a few)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny model, budgets 4/8, seed 0")
    parser.add_argument("--space", default=SPACE, help="a choices-only space name or file")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "benchmarks" / "results" / "search_efficiency.json")
    parser.add_argument("--table-dir", type=Path, default=Path("outputs/bench"),
                        help="where the measured table is cached")
    parser.add_argument("--output-dir", default="outputs", help="sweeper output_dir")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--budgets", nargs="+", type=int)
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--plain", action="store_true",
                        help="samplers without sweeper.search.NoRepeatSampler (which "
                        "launch uses), so trials may repeat a configuration")
    parser.add_argument("overrides", nargs="*",
                        help="sweeper key=value overrides, e.g. cache_dir=DIR measure.repeats=10")
    args = parser.parse_args(argv)
    quiet_third_party()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # fallback notices
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*(independent|multivariate|dynamic).*")
    cfg = build_config([*(QUICK if args.quick else []), f"output_dir={args.output_dir}",
                        *args.overrides])
    budgets = args.budgets or list(QUICK_BUDGETS if args.quick else BUDGETS)
    seeds = args.seeds or ([0] if args.quick else list(SEEDS))
    report = run(cfg, resolve_path(args.space).resolve(), args.table_dir, args.samplers,
                 budgets, seeds, no_repeats=not args.plain)
    text = format_report(report)
    print(text)
    write_json(args.json, {**report, "report": text})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
