"""Orchestration overhead: what Ray Tune + Optuna + MLflow cost per trial, beyond the trials.

Four sweeps of N trials at concurrency C, in one process and one Ray instance (started once:
its start-up is not what is measured), one after the other:

- `ray-defaults`: a bare Ray Tune run of a trivial function with Tune's defaults (a fresh
  worker per trial, result loggers on) and no Optuna or MLflow: the reference;
- `trivial`: sweeper's own path (OptunaSearch with its journal-file storage, MLflow child
  runs, a worker reused across trials) with a trial body that does nothing;
- `trivial-sqlite`: the same with the study in a SQLite file (sweeper's earlier default);
- `cheap`: sweeper's path with real cheap trials (copy the baseline, evaluate, time it).

overhead per trial = (Tune wall time - sum of trial bodies / C) / N

    python benchmarks/orchestration.py                # N=100, C=2
    python benchmarks/orchestration.py --quick        # smoke test, N=6
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.cluster import orchestrate  # noqa: E402
from sweeper.core.config import build_config  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.core.quiet import quiet_third_party  # noqa: E402
from sweeper.sweep.driver import launch, prepare  # noqa: E402

TINY = ["model.embed_dim=64", "model.depth=2", "model.num_heads=2", "train.epochs=2",
        "data.limit=200", "measure.batch_sizes=1", "measure.warmup=1", "measure.repeats=5",
        "measure.max_seconds=0",
        "quiet=true", "registry=false"]  # no ONNX export per front member: not orchestration
SWEEPS = ("ray-defaults", "trivial", "trivial-sqlite", "cheap")
TARGET_S = 0.15  # overhead per trial at concurrency 2, MLflow tracking on
TRIVIAL_METRICS = {"val_acc": 0.5, "val_acc_drop": 0.0, "size_mb": 1.0, "latency_ms": 1.0,
                   "latency_ratio": 1.0, "speedup": 1.0, "size_ratio": 1.0,
                   "baseline_latency_ms": 1.0, "trial_seconds": 0.0}


def _trivial_trainable(config: dict[str, Any], **_: Any) -> None:
    from ray import tune

    tune.report(dict(TRIVIAL_METRICS, tags={}))


def ray_defaults(n: int, concurrency: int) -> dict[str, float]:
    """Tune with its defaults on a trivial function: the cost before any tuning."""
    from ray import tune

    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            lambda config: tune.report({"x": config["x"]}),
            param_space={"x": tune.uniform(0, 1)},
            tune_config=tune.TuneConfig(num_samples=n, max_concurrent_trials=concurrency,
                                        metric="x", mode="max"),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        )
        start = time.perf_counter()
        tuner.fit()
        wall = time.perf_counter() - start
    return {"tune_seconds": wall, "body_seconds": 0.0}


def sweeper_run(n: int, concurrency: int, out: Path, trivial: bool,
                *extra: str) -> dict[str, float]:
    space = ROOT / "tests" / "helpers" / "spaces" / "cheap.yaml"
    cfg = build_config([*TINY, f"output_dir={out}", f"space={space}", f"search.trials={n}",
                        f"search.concurrency={concurrency}", *extra])
    real = orchestrate.trainable
    if trivial:
        orchestrate.trainable = _trivial_trainable  # same scheduling path, empty body
    try:
        outcome = launch(prepare(cfg), log=lambda _m: None)
    finally:
        orchestrate.trainable = real
    bodies = sum(r.get("trial_seconds", 0.0) for r in outcome.rows)
    return {"tune_seconds": outcome.tune_seconds, "body_seconds": bodies,
            "trials_ok": len(outcome.rows)}


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: 6 trials")
    parser.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS))
    parser.add_argument("--json", default="benchmarks/results/orchestration.json")
    args = parser.parse_args()
    quiet_third_party()
    n = 6 if args.quick else args.trials
    c = args.concurrency
    rows = []
    # one instance for every sweep: sweeper uses a Ray it finds running and leaves it so
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sweeps:
            out = Path(tmp) / name
            if name == "ray-defaults":
                m = ray_defaults(n, c)
            elif name == "trivial-sqlite":
                out.mkdir()
                m = sweeper_run(n, c, out, True, f"search.storage=sqlite:///{out}/optuna.db")
            else:
                m = sweeper_run(n, c, out, trivial=name == "trivial")
            overhead = (m["tune_seconds"] - m["body_seconds"] / c) / n
            rows.append({"sweep": name, "trials": n, "concurrency": c, **m,
                         "overhead_per_trial_s": overhead})
            print(f"{name:15s} N={n:4d} C={c}  tune {m['tune_seconds']:7.1f}s  "
                  f"bodies {m['body_seconds']:7.1f}s  overhead/trial "
                  f"{overhead:.3f}s", flush=True)
    ray.shutdown()
    for row in rows:
        if row["sweep"] == "ray-defaults":
            continue
        ok = row["overhead_per_trial_s"] <= TARGET_S
        print(f"target <= {TARGET_S} s/trial, {row['sweep']}: {'met' if ok else 'NOT met'}")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "rows": rows}
    write_json(Path(args.json), result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
