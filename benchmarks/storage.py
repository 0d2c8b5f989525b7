"""Where the study and the runs live, as a sweep grows: the Optuna study in sweeper's journal
file, a SQLite file, and PostgreSQL (the stack's database, `python -m sweeper stack up`); the
MLflow runs in SQLite (sweeper's default store) and PostgreSQL.

Per backend, N trials go through the store as a sweep sends them:
- Optuna: ask, the space's suggestions, the accuracy-budget constraint, tell; with sweeper's
  sampler (make_sampler: NoRepeatSampler over the configured sampler, NSGA-II by default);
- MLflow: the driver's writes for one trial (SweepRuns.start_trial, finish_trial and the
  parent's hypervolume point), then, once at the end, the listing of every child run that
  the report and `resume` make.

It prints the median milliseconds per trial over the first and the last 100 trials, and
their ratio: a store whose cost per trial grows with its size shows it there. PostgreSQL is
a throwaway cluster on 127.0.0.1 (initdb in a temporary folder), spoken to directly through
SQLAlchemy; the stack puts `mlflow server` in front of it, which adds an HTTP round trip per
write and is not timed here.

    python benchmarks/storage.py                   # N = 2000
    python benchmarks/storage.py --trials 500 --skip postgresql
    python benchmarks/storage.py --quick           # smoke test: N = 30
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from samplers import storage as file_storage  # noqa: E402
from samplers import timed_round  # noqa: E402

from sweeper.cluster import stack  # noqa: E402
from sweeper.core.config import build_config  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.core.quiet import quiet_third_party  # noqa: E402
from sweeper.measure.hardware import cpu_model, isa_summary  # noqa: E402
from sweeper.search import make_sampler  # noqa: E402
from sweeper.spaces.space import load_space  # noqa: E402
from sweeper.tracking.client import SweepRuns, Tracker  # noqa: E402

OPTUNA_BACKENDS = ("journal", "sqlite", "postgresql")
MLFLOW_BACKENDS = ("sqlite", "postgresql")
WINDOW = 100


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[stack.Postgres]:
    """A throwaway PostgreSQL on a free loopback port, with the stack's two databases."""
    port = next(p for p in range(55432, 55532) if stack.port_free(p))
    pg = stack.Postgres(folder / "pg", port, secrets.token_hex(8)).init().start()
    os.environ["PGPASSWORD"] = pg.password
    try:
        pg.create_databases()
        yield pg
    finally:
        pg.stop()


def optuna_storage(kind: str, folder: Path, pg: stack.Postgres | None) -> Any:
    if kind in ("journal", "sqlite"):
        return file_storage(kind, folder)
    assert pg is not None
    return optuna.storages.RDBStorage(pg.url("optuna"))


def mlflow_uri(kind: str, folder: Path, pg: stack.Postgres | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{folder / 'mlflow.db'}"
    assert pg is not None
    return pg.url("mlflow")


def optuna_trials(storage: Any, n: int, space: str, sampler: str) -> list[float]:
    """Seconds of each of n ask/suggest/tell rounds, in order."""
    sp = load_space(space)
    cfg = build_config([f"search.sampler={sampler}", f"search.trials={n}", "search.seed=0"])
    study = optuna.create_study(storage=storage, sampler=make_sampler(cfg, sp.define),
                                study_name="bench",
                                directions=["maximize", "minimize", "minimize"])
    rng = random.Random(0)
    return [timed_round(study, sp.define, rng) for _ in range(n)]


def mlflow_trials(uri: str, n: int, folder: Path) -> tuple[list[float], float]:
    """Seconds of each of n trials' driver writes, in order; then seconds to list them."""
    tracker = Tracker(uri, "storage-bench", folder / "mlartifacts")
    parent = tracker.start_sweep("bench", {"space": "bench"}, {})
    runs = SweepRuns(tracker, parent, log=lambda _m: None)
    rng, times = random.Random(0), []
    for i in range(n):
        params = {"prune": {"ratio": rng.uniform(0, 0.5)}, "quantize": {"bits": 8}}
        metrics = {"val_acc": rng.uniform(0.5, 0.97), "size_mb": rng.uniform(1, 300),
                   "latency_ms": rng.uniform(1, 50), "speedup": rng.uniform(0.5, 3)}
        start = time.perf_counter()
        runs.start_trial(f"t{i:05d}", params, {"sweeper.config": "prune 0.3"})
        runs.finish_trial(f"t{i:05d}", params, metrics, {"feasible": "true"}, None)
        runs.parent_metrics({"hypervolume": rng.random()}, i + 1)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    listed = len(tracker.children(parent))
    listing = time.perf_counter() - start
    assert listed == n, (listed, n)
    return times, listing


def summarise(times: list[float]) -> dict[str, float]:
    w = min(WINDOW, max(1, len(times) // 4))
    first, last = statistics.median(times[:w]), statistics.median(times[-w:])
    return {"first_ms": 1000 * first, "last_ms": 1000 * last, "growth": last / first,
            "window": w, "total_s": sum(times)}


def run_backends(names: tuple[str, ...], skip: list[str], tmp: Path,
                 each: Callable[[str, Path], dict[str, Any]], label: str) -> list[dict[str, Any]]:
    rows = []
    for kind in names:
        if kind in skip:
            continue
        folder = tmp / f"{label}-{kind}"
        folder.mkdir()
        row = {"store": label, "backend": kind, **each(kind, folder)}
        rows.append(row)
        extra = f"  list all: {row['list_s']:.2f} s" if "list_s" in row else ""
        print(f"{label:6s} {kind:10s} first {row['window']} trials {row['first_ms']:7.2f} ms"
              f"  last {row['window']} {row['last_ms']:7.2f} ms  ({row['growth']:.2f}x)"
              f"  total {row['total_s']:6.1f} s{extra}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--sampler", default="nsga2")
    parser.add_argument("--space", default="hybrid")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=sorted(set(OPTUNA_BACKENDS) | {"optuna", "mlflow"}))
    parser.add_argument("--quick", action="store_true", help="smoke test: N = 30")
    parser.add_argument("--json", default="benchmarks/results/storage.json")
    args = parser.parse_args()
    # a SIGTERM (`timeout`, a killed job) unwinds too, so the throwaway PostgreSQL is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quiet_third_party()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n = 30 if args.quick else args.trials
    print(f"CPU: {cpu_model()} ({isa_summary()}), {os.cpu_count()} cores; N={n}; sampler "
          f"{args.sampler}; space {args.space}; PostgreSQL {stack.pg_version()}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        tmp.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must reach its folder
        with (contextlib.nullcontext() if "postgresql" in args.skip else postgres(tmp)) as pg:

            def optuna_cell(kind: str, folder: Path) -> dict[str, Any]:
                times = optuna_trials(optuna_storage(kind, folder, pg), n, args.space,
                                      args.sampler)
                return summarise(times)

            def mlflow_cell(kind: str, folder: Path) -> dict[str, Any]:
                times, listing = mlflow_trials(mlflow_uri(kind, folder, pg), n, folder)
                return {**summarise(times), "list_s": listing}

            if "optuna" not in args.skip:
                rows += run_backends(OPTUNA_BACKENDS, args.skip, tmp, optuna_cell, "optuna")
            if "mlflow" not in args.skip:
                rows += run_backends(MLFLOW_BACKENDS, args.skip, tmp, mlflow_cell, "mlflow")
    write_json(Path(args.json), {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(),
                                 "isa": isa_summary(), "trials": n, "sampler": args.sampler,
                                 "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
