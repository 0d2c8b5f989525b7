"""Do latency intervals cover what a repeat measurement finds? One pair (structured pruning 50%
of the embedded default model against the model itself, random weights, 1 thread), measured
W times in one process, back to back:

- `one run`: each measurement one contiguous run of pairs lasting `--seconds`, its interval
  the moving-block bootstrap of that run (the protocol before rounds);
- `rounds`: each measurement `sweeper.measure.latency.paired_ratios` with its defaults, at batch
  sizes 1 and 8 (rounds spread over both, two-level bootstrap), reported at batch 1.

For each it prints the spread of the W ratios (max/min, standard deviation), the mean
half-width of the intervals and in how many of the W measurements the interval contains the
median of the other W-1 (a calibrated 95% interval: about 0.9 W, since the others' median has
its own noise).

    python benchmarks/interval_calibration.py              # W=20, 1.5 s runs (~2 min)
    python benchmarks/interval_calibration.py --quick      # smoke run: W=4
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.compress import TrialContext  # noqa: E402
from sweeper.compress.prune import PruneConfig, apply  # noqa: E402
from sweeper.core.config import build_config  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.measure.hardware import cpu_model, isa_summary  # noqa: E402
from sweeper.measure.latency import (  # noqa: E402
    DEFAULT_TIMING,
    _Series,
    block_length,
    bootstrap_median_ci,
    paired_inputs,
    paired_ratios,
    torch_timer,
)
from sweeper.models.vit import create_model  # noqa: E402


def one_run(time_model: Any, time_base: Any, seconds: float) -> tuple[float, float, float]:
    """A contiguous run of alternating pairs after 5 warm-up pairs; median, interval."""
    for _ in range(5):
        time_base()
        time_model()
    series = _Series(time_model, time_base)  # the sweep's pair loop, run for `seconds`
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(series.model_s) < 10:
        series.pair()
    ratios = np.asarray(series.model_s) / np.asarray(series.base_s)
    lo, hi = bootstrap_median_ci(ratios, block=block_length(len(ratios)))
    return float(np.median(ratios)), lo, hi


def summarise(rows: list[tuple[float, float, float]]) -> dict[str, float]:
    ratios = [r for r, _, _ in rows]
    covered = sum(lo <= statistics.median(ratios[:i] + ratios[i + 1:]) <= hi
                  for i, (_, lo, hi) in enumerate(rows))
    return {"max_over_min": max(ratios) / min(ratios), "sd": float(np.std(ratios, ddof=1)),
            "mean_half_width": float(np.mean([(hi - lo) / 2 / r for r, lo, hi in rows])),
            "covered": covered, "measurements": len(rows), "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measurements", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="benchmarks/results/interval_calibration.json")
    args = parser.parse_args()
    count, seconds = (4, 0.2) if args.quick else (args.measurements, args.seconds)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = create_model(build_config([]).model, 10).eval()
    model = apply(copy.deepcopy(base), PruneConfig(ratio=0.5), TrialContext()).eval()
    inputs = paired_inputs(base.patch_embed.img_size[0], (1, 8))
    timers = {b: (torch_timer(model, x), torch_timer(base, x)) for b, x in inputs.items()}
    runs = [one_run(*timers[1], seconds) for _ in range(count)]
    rounds = []
    for _ in range(count):
        r = paired_ratios(timers, DEFAULT_TIMING)[1]
        rounds.append((r.ratio, r.lo, r.hi))
    result = {"cpu": cpu_model(), "isa": isa_summary(), "threads": 1,
              "one_run": {"seconds": seconds, **summarise(runs)},
              "rounds": {"timing": DEFAULT_TIMING.__dict__, **summarise(rounds)}}
    print(f"{count} measurements of prune 50% vs baseline, batch 1, 1 thread, on "
          f"{cpu_model()} [{isa_summary()}]")
    for name in ("one_run", "rounds"):
        s = result[name]
        print(f"{name:8s} max/min {s['max_over_min']:.3f}  sd {s['sd']:.4f}  mean half-width "
              f"{s['mean_half_width']:.3f}  covered {s['covered']}/{count}")
    write_json(Path(args.json), result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
