"""Each sampler's cost per ask as a study grows: sweeper's sampler (make_sampler, wrapped in
NoRepeatSampler) on a built-in space, asked K times on a study that already holds N finished
trials (random configurations, three objectives, the accuracy-budget constraint set as
ConstrainedOptunaSearch sets it), in the study storage sweeper uses by default (a journal
file) or in SQLite.

    python benchmarks/samplers.py                         # N = 100 and 2000, every sampler
    python benchmarks/samplers.py --sizes 100 --asks 3    # quicker
    python benchmarks/samplers.py --quick                 # smoke test

It prints milliseconds per ask (median of K, each ask followed by its tell) and the ratio
between the largest and the smallest N. An ask that takes longer than --cap seconds stops
that sampler's row there (GP refits a Gaussian process on every finished trial).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.core.config import SAMPLERS, build_config  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.measure.hardware import cpu_model, isa_summary  # noqa: E402
from sweeper.search import CONSTRAINT, make_sampler  # noqa: E402
from sweeper.spaces.space import load_space  # noqa: E402


def storage(kind: str, folder: Path) -> optuna.storages.BaseStorage:
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "journal.log")))


def objectives(rng: random.Random) -> tuple[list[float], float]:
    """(accuracy, size ratio, latency ratio) and the accuracy-budget excess (<= 0: feasible)."""
    acc = rng.uniform(0.5, 0.97)
    return [acc, rng.uniform(0.1, 1.2), rng.uniform(0.3, 3.0)], 100 * (0.95 - acc) - 5.0


def prefill(study: optuna.Study, define: Any, n: int, seed: int) -> None:
    """n finished trials of random configurations, written straight to the storage."""
    rng = random.Random(seed)
    filler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed),
                                 directions=["maximize", "minimize", "minimize"])
    for _ in range(n):
        t = filler.ask()
        define(t)
        values, excess = objectives(rng)
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, values=values,
            constraints={CONSTRAINT: excess}))


def timed_round(study: optuna.Study, define: Any, rng: random.Random) -> float:
    """Seconds of one round as a sweep makes it: ask, the space's suggestions, the
    accuracy-budget constraint, tell."""
    start = time.perf_counter()
    trial = study.ask()
    define(trial)
    values, excess = objectives(rng)
    trial.set_constraint(CONSTRAINT, excess)
    study.tell(trial, values)
    return time.perf_counter() - start


def time_asks(sampler_name: str, n: int, asks: int, space: str, kind: str,
              cap: float) -> float | None:
    """Median milliseconds of ask+tell on a study of n finished trials (None: over cap)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sp = load_space(space)
    cfg = build_config([f"search.sampler={sampler_name}", "search.trials=2000", "search.seed=0"])
    with tempfile.TemporaryDirectory() as tmp:
        study = optuna.create_study(storage=storage(kind, Path(tmp)),
                                    sampler=make_sampler(cfg, sp.define),
                                    directions=["maximize", "minimize", "minimize"])
        prefill(study, sp.define, n, seed=n)
        rng = random.Random(1)
        times = []
        for _ in range(asks):
            times.append(timed_round(study, sp.define, rng))
            if times[-1] > cap:
                return None
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--asks", type=int, default=10)
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--space", default="hybrid")
    parser.add_argument("--storage", choices=("journal", "sqlite"), default="journal")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds per ask at most")
    parser.add_argument("--quick", action="store_true", help="smoke test: N = 10 and 30")
    parser.add_argument("--json", default="benchmarks/results/samplers.json")
    args = parser.parse_args()
    sizes = [10, 30] if args.quick else args.sizes
    asks = 2 if args.quick else args.asks
    print(f"CPU: {cpu_model()} ({isa_summary()}), {os.cpu_count()} cores; storage "
          f"{args.storage}; space {args.space}; {asks} asks per cell")
    rows = []
    for name in args.samplers:
        cells: dict[int, float | None] = {}
        for n in sizes:
            cells[n] = time_asks(name, n, asks, args.space, args.storage, args.cap)
            if cells[n] is None:
                break
        shown = "  ".join(f"N={n}: " + (f"{ms:8.1f} ms" if ms is not None else
                                        f"> {args.cap:.0f} s") for n, ms in cells.items())
        first, last = cells.get(sizes[0]), cells.get(sizes[-1])
        ratio = last / first if first and last else None
        print(f"{name:7s} {shown}" + (f"  ratio {ratio:.1f}x" if ratio else ""), flush=True)
        rows.append({"sampler": name, "ms_per_ask": {str(k): v for k, v in cells.items()},
                     "ratio": ratio})
    write_json(Path(args.json), {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(),
                                 "isa": isa_summary(), "machine": platform.platform(),
                                 "storage": args.storage, "space": args.space, "asks": asks,
                                 "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
