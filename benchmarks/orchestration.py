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
    python benchmarks/orchestration.py --sweeps trivial --trials 100 2000
    python benchmarks/orchestration.py --quick        # smoke test, N=6

With several --trials, each sweep runs at each N and the script prints how the overhead per
trial at the largest N compares with the smallest (target: within 1.3x), and, inside the
largest run, the time between trial completions late in the run against early in it (read
from the sweep's trials.jsonl): a driver whose cost per trial grows with the sweep shows it
there, whatever the fixed start-up costs. Each sweeper row also reports the driver's CPU time
and memory, Optuna's time per ask (ConstrainedOptunaSearch.suggest, on Tune's event loop) and
the MLflow writer's peak backlog (writes queued, not yet in the store).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.cluster import orchestrate  # noqa: E402
from sweeper.core import journal  # noqa: E402
from sweeper.core.config import build_config  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.core.quiet import quiet_third_party  # noqa: E402
from sweeper.measure.hardware import cpu_model, isa_summary  # noqa: E402
from sweeper.search import ConstrainedOptunaSearch  # noqa: E402
from sweeper.sweep.driver import launch, prepare  # noqa: E402
from sweeper.tracking.client import Mirror  # noqa: E402

TINY = ["model.embed_dim=64", "model.depth=2", "model.num_heads=2", "train.epochs=2",
        "data.limit=200", "measure.batch_sizes=1", "measure.warmup=1", "measure.repeats=5",
        "measure.max_seconds=0",
        "quiet=true", "registry=false"]  # no ONNX export per front member: not orchestration
SWEEPS = ("ray-defaults", "trivial", "trivial-sqlite", "cheap")
TARGET_S = 0.15  # overhead per trial at concurrency 2, MLflow tracking on
TARGET_GROWTH = 1.3  # overhead per trial at the largest N over that at the smallest
TRIVIAL_METRICS = {"val_acc": 0.5, "val_acc_drop": 0.0, "size_mb": 1.0, "latency_ms": 1.0,
                   "latency_ratio": 1.0, "speedup": 1.0, "size_ratio": 1.0,
                   "baseline_latency_ms": 1.0, "trial_seconds": 0.0}


def _trivial_trainable(config: dict[str, Any], **_: Any) -> None:
    from ray import tune

    tune.report(dict(TRIVIAL_METRICS, tags={}))


class DriverProbe:
    """What the driver spends while Tune runs the trials: its CPU time (all its threads) and
    memory at the end of the fit, Optuna's time per ask, the MLflow writer's peak backlog.
    Wraps three functions for the duration; nothing else about the sweep changes."""

    def __init__(self) -> None:
        self.asks: list[float] = []
        self.peak_backlog = 0
        self.cpu_seconds = 0.0
        self.rss_mb = 0.0

    @contextmanager
    def watching(self) -> Iterator[DriverProbe]:
        suggest, submit = ConstrainedOptunaSearch.suggest, Mirror.submit
        own_suggest = "suggest" in vars(ConstrainedOptunaSearch)  # else OptunaSearch's
        run_tune = orchestrate.run_tune
        probe = self

        def measured_tune(*args: Any, **kwargs: Any) -> Any:
            cpu = time.process_time()
            try:
                return run_tune(*args, **kwargs)
            finally:
                probe.cpu_seconds += time.process_time() - cpu
                probe.rss_mb = _rss_mb()

        def timed_suggest(searcher: Any, trial_id: str) -> Any:
            start = time.perf_counter()
            try:
                return suggest(searcher, trial_id)
            finally:
                probe.asks.append(time.perf_counter() - start)

        def counted_submit(mirror: Mirror, name: str, *args: Any) -> None:
            submit(mirror, name, *args)
            probe.peak_backlog = max(probe.peak_backlog, mirror.backlog)

        ConstrainedOptunaSearch.suggest = timed_suggest  # type: ignore[method-assign]
        Mirror.submit = counted_submit  # type: ignore[method-assign]
        orchestrate.run_tune = measured_tune
        try:
            yield self
        finally:
            orchestrate.run_tune = run_tune
            if own_suggest:
                ConstrainedOptunaSearch.suggest = suggest  # type: ignore[method-assign]
            else:
                del ConstrainedOptunaSearch.suggest
            Mirror.submit = submit  # type: ignore[method-assign]

    def summary(self) -> dict[str, float]:
        asks = sorted(self.asks) or [0.0]
        return {"driver_cpu_seconds": self.cpu_seconds,
                "driver_rss_mb": self.rss_mb, "driver_peak_rss_mb": _peak_rss_mb(),
                "ask_ms_median": 1000 * asks[len(asks) // 2],
                "ask_ms_p95": 1000 * asks[min(len(asks) - 1, int(0.95 * len(asks)))],
                "writer_peak_backlog": self.peak_backlog}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def completion_gaps(trials_jsonl: Path) -> dict[str, float]:
    """Mean seconds between trial completions early in a sweep (after the first tenth, so
    worker start-up is out) and at its end, over the same window: equal when the driver's
    cost per trial does not grow with the sweep."""
    times = sorted(r["time"] for r in journal.read(trials_jsonl) if r.get("event") == "complete")
    n = len(times)
    window = min(100, n // 4)
    if window < 2:
        return {}
    skip = n // 10
    early = (times[skip + window] - times[skip]) / window
    late = (times[-1] - times[-1 - window]) / window
    return {"gap_early_s": early, "gap_late_s": late, "gap_window": window,
            "gap_growth": late / early if early > 0 else float("nan")}


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


def sweeper_run(n: int, concurrency: int, out: Path, body: Any | None,
                *extra: str) -> dict[str, float]:
    """One sweep of n trials through sweeper's own path; `body` replaces the trial (None:
    real cheap trials)."""
    space = ROOT / "tests" / "helpers" / "spaces" / "cheap.yaml"
    cfg = build_config([*TINY, f"output_dir={out}", f"space={space}", f"search.trials={n}",
                        f"search.concurrency={concurrency}", *extra])
    real = orchestrate.trainable
    if body is not None:
        orchestrate.trainable = body  # same scheduling path, another body
    try:
        with DriverProbe().watching() as probe:
            outcome = launch(prepare(cfg), log=lambda _m: None)
    finally:
        orchestrate.trainable = real
    bodies = sum(r.get("trial_seconds", 0.0) for r in outcome.rows)
    return {"tune_seconds": outcome.tune_seconds, "body_seconds": bodies,
            "trials_ok": len(outcome.rows), "sweep_dir": str(outcome.sweep_dir),
            **probe.summary(),
            **completion_gaps(outcome.sweep_dir / journal.TRIALS)}


def _row_text(name: str, n: int, c: int, m: dict[str, Any], overhead: float) -> str:
    text = (f"{name:15s} N={n:5d} C={c:2d}  tune {m['tune_seconds']:7.1f}s  "
            f"bodies {m['body_seconds']:7.1f}s  overhead/trial {overhead:.3f}s")
    if "ask_ms_median" in m:
        text += (f"  ask {m['ask_ms_median']:.1f} ms (p95 {m['ask_ms_p95']:.1f})  "
                 f"driver CPU {m['driver_cpu_seconds']:.0f}s, RSS {m['driver_rss_mb']:.0f} MB"
                 f"  writer backlog <= {m['writer_peak_backlog']}")
    if "gap_growth" in m:
        text += (f"  gap early {m['gap_early_s']:.3f}s late {m['gap_late_s']:.3f}s "
                 f"({m['gap_growth']:.2f}x)")
    return text


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: 6 trials")
    parser.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS))
    parser.add_argument("--json", default="benchmarks/results/orchestration.json")
    args = parser.parse_args()
    quiet_third_party()
    sizes = [6] if args.quick else sorted(set(args.trials))
    c = args.concurrency
    print(f"CPU: {cpu_model()} ({isa_summary()}), {os.cpu_count()} cores", flush=True)
    rows = []
    # one instance for every sweep: sweeper uses a Ray it finds running and leaves it so
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sweeps:
            for n in sizes:
                out = Path(tmp) / name  # shared by its sizes: the baseline trains once
                if name == "ray-defaults":
                    m = ray_defaults(n, c)
                elif name == "trivial-sqlite":
                    out.mkdir(exist_ok=True)
                    m = sweeper_run(n, c, out, _trivial_trainable,
                                    f"search.storage=sqlite:///{out}/optuna-{n}.db")
                else:
                    m = sweeper_run(n, c, out, _trivial_trainable if name == "trivial" else None)
                overhead = (m["tune_seconds"] - m["body_seconds"] / c) / n
                rows.append({"sweep": name, "trials": n, "concurrency": c, **m,
                             "overhead_per_trial_s": overhead})
                print(_row_text(name, n, c, m, overhead), flush=True)
    ray.shutdown()
    for row in rows:
        if row["sweep"] != "ray-defaults" and row["trials"] == sizes[0]:
            ok = row["overhead_per_trial_s"] <= TARGET_S
            print(f"target <= {TARGET_S} s/trial at N={sizes[0]}, {row['sweep']}: "
                  f"{'met' if ok else 'NOT met'}")
    growth = growth_rows(rows, sizes)
    for g in growth:
        print(f"{g['sweep']}: overhead per trial at N={sizes[-1]} is {g['ratio']:.2f}x that at "
              f"N={sizes[0]} (target <= {TARGET_GROWTH}x: "
              f"{'met' if g['ratio'] <= TARGET_GROWTH else 'NOT met'})")
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "isa": isa_summary(),
              "cpus": os.cpu_count(), "rows": rows, "growth": growth}
    write_json(Path(args.json), result)
    print(f"wrote {args.json}")


def growth_rows(rows: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """Per sweep: overhead per trial at the largest N over that at the smallest."""
    if len(sizes) < 2:
        return []
    by = {(r["sweep"], r["trials"]): r["overhead_per_trial_s"] for r in rows}
    return [{"sweep": s, "ratio": by[(s, sizes[-1])] / by[(s, sizes[0])]}
            for s in dict.fromkeys(r["sweep"] for r in rows)
            if by.get((s, sizes[0])) and (s, sizes[-1]) in by]


if __name__ == "__main__":
    main()
