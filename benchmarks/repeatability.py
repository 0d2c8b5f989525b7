"""How repeatable is a trial's latency ratio? 8 trials of one fixed configuration, two at a
time on this machine (as a sweep at concurrency 2 runs them), with the quiet-measurement
lock on and off, in the same run: beside a copy of itself, and beside a trial that trains
(a pruned model's 3-epoch recovery), the case the lock is for.

For each configuration it prints every trial's batch-1 latency ratio with its 95% interval,
the max/min of the ratios (target <= 1.10) and whether every trial's interval contains the
median of the other seven.

    python benchmarks/repeatability.py            # structured pruning 50% and dynamic int8
    python benchmarks/repeatability.py --quick    # smoke test: tiny model, 2 trials
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from sweeper.compress.prune import PruneConfig
from sweeper.compress.quantize import QuantizeConfig
from sweeper.compress.recover import RecoverConfig
from sweeper.core.config import Config, build_config
from sweeper.core.files import write_json
from sweeper.measure.hardware import cpu_model, isa_summary

CONFIGS = {"structured prune 50%": [PruneConfig(ratio=0.5, kind="structured")],
           "int8 dynamic": [QuantizeConfig.from_params(scheme="dynamic8")]}
NEIGHBOUR = [PruneConfig(ratio=0.3), RecoverConfig(epochs=3)]  # trains while the other times
QUICK = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "train.epochs=2",
         "data.limit=200", "measure.batch_sizes=1,8", "measure.max_seconds=1"]

_inputs: Any = None


def _load(cfg: Config) -> None:
    global _inputs
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from techniques import trial_inputs

    _inputs = trial_inputs(cfg, log=lambda _m: None)


def _trial(job: tuple[str, bool]) -> dict[str, float]:
    from sweeper.trial.run import run_trial

    name, quiet = job
    cfg = _inputs.config
    inputs = dataclasses.replace(_inputs, config=dataclasses.replace(
        cfg, measure=dataclasses.replace(cfg.measure, quiet=quiet)))
    torch.set_num_threads(1)
    m = run_trial(inputs, CONFIGS.get(name, NEIGHBOUR)).metrics
    keys = ("latency_ratio", "latency_ratio_lo", "latency_ratio_hi", "latency_pairs",
            "latency_converged", "quiet_wait_s", "measure_wait_s")
    return {k: m.get(k, 0.0) for k in keys}  # no waits without the lock


def summarise(trials: list[dict[str, float]]) -> dict[str, Any]:
    ratios = [t["latency_ratio"] for t in trials]
    covered = 0
    for i, t in enumerate(trials):
        others = statistics.median(ratios[:i] + ratios[i + 1:])
        covered += t["latency_ratio_lo"] <= others <= t["latency_ratio_hi"]
    return {"max_over_min": max(ratios) / min(ratios), "intervals_cover_others": covered,
            "trials": trials}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/repeatability.json"))
    parser.add_argument("--output-dir", default="outputs", help="sweeper output_dir (cache)")
    args = parser.parse_args(argv)
    trials = 2 if args.quick else args.trials
    cfg = build_config([*(QUICK if args.quick else []), f"output_dir={args.output_dir}"])
    _load(cfg)  # trains and caches the baseline once, before the workers load it
    report: dict[str, Any] = {"cpu": cpu_model(), "isa": isa_summary(), "trials": trials,
                              "concurrency": 2, "results": {}}
    lines = [f"{trials} trials per row, 2 at a time, 1 thread each, on {cpu_model()} "
             f"[{isa_summary()}]",
             f"{'configuration':<22} {'beside':<9} {'lock':<4} {'max/min':>7} {'cover':>5}  "
             "batch-1 latency ratio [95% interval] per trial"]
    ctx = mp.get_context("spawn")
    with ctx.Pool(2, initializer=_load, initargs=(cfg,)) as pool:
        for beside in ("itself", "training"):
            for name in CONFIGS:
                for quiet in (True, False):
                    job = (name, quiet)
                    jobs = [job] * trials if beside == "itself" else \
                        [j for _ in range(trials) for j in (job, ("neighbour", quiet))]
                    got = [r for j, r in zip(jobs, pool.map(_trial, jobs, chunksize=1),
                                             strict=True) if j == job]
                    s = summarise(got)
                    label = f"{name}, beside {beside}, lock {'on' if quiet else 'off'}"
                    report["results"][label] = s
                    cells = " ".join(f"{t['latency_ratio']:.3f}[{t['latency_ratio_lo']:.3f},"
                                     f"{t['latency_ratio_hi']:.3f}]" for t in got)
                    lines.append(f"{name:<22} {beside:<9} {'on' if quiet else 'off':<4} "
                                 f"{s['max_over_min']:>7.3f} {s['intervals_cover_others']:>3}/"
                                 f"{trials}  {cells}")
                    print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    write_json(args.out, {**report, "table": text})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
