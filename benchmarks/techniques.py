"""Per-technique and per-hybrid numbers on the embedded default: accuracy drop, size ratio,
latency speed-up.

Every row is one `sweeper.trial.run.run_trial`, so it is measured exactly as a sweep measures it:
validation accuracy against the baseline's, serialised bytes against the baseline's, and
latency against the baseline timed in the same process (batch 1 and the large batch), with
the trial's thread count (resources.cpus). Prints a table and writes JSON.

    python benchmarks/techniques.py                 # the embedded default (minutes)
    python benchmarks/techniques.py --quick         # smoke test: tiny model, 1-epoch training
    python benchmarks/techniques.py --only tome-r8 distill-soft
    python benchmarks/techniques.py --seeds 0 1 2   # baseline trained per train.seed; each
                                                    # accuracy cell as mean (min-max)
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sweeper import compress
from sweeper.cluster import resources
from sweeper.compress.distill import DistillConfig
from sweeper.compress.lowrank import LowRankConfig
from sweeper.compress.nystrom import NystromConfig
from sweeper.compress.prune import PruneConfig
from sweeper.compress.quantize import QuantizeConfig
from sweeper.compress.recover import RecoverConfig
from sweeper.compress.tome import ToMeConfig
from sweeper.core.config import Config, build_config
from sweeper.core.files import write_json
from sweeper.data.loading import load_splits
from sweeper.measure.hardware import cpu_model, isa_summary
from sweeper.measure.size import serialized_size
from sweeper.models.baseline import load_or_train_baseline
from sweeper.trial.run import TrialInputs, evaluate_artifact, run_trial

QUICK = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "train.epochs=3",
         "data.limit=300", "measure.batch_sizes=1,8", "measure.warmup=1", "measure.repeats=5",
         "measure.max_seconds=0"]


def pipelines(quick: bool) -> dict[str, list[Any]]:
    """name -> pipeline. Epochs shrink to 1 with --quick (a smoke test, not numbers)."""
    def ep(n: int) -> int:
        return 1 if quick else n

    # A student from scratch: 40 epochs with augmentation (4 views) reaches the teacher's
    # accuracy on its own; the 30-epoch, no-augmentation pair is the regime of the test where
    # the teacher helps (tests/unit/compress/test_distill.py).
    student = dict(student="vit", depth=2, embed_dim=32, num_heads=2, epochs=ep(40), lr=2e-3,
                   views=4)
    short = {**student, "epochs": ep(30), "lr": 1e-3, "views": 1}
    heal = dict(kind="soft", temperature=2.0, alpha=0.5, epochs=ep(3), lr=5e-4)
    soft = dict(student, kind="soft", alpha=0.5)
    rows: dict[str, list[Any]] = {
        "int8 dynamic": [QuantizeConfig.from_params(scheme="dynamic8")],
        "int8 static": [QuantizeConfig.from_params(scheme="static8")],
        "4-bit weights": [QuantizeConfig.from_params(scheme="weight_only4")],
        "2-bit weights": [QuantizeConfig.from_params(scheme="weight_only2")],
        "lsq 4-bit": [QuantizeConfig.from_params(scheme="lsq4", lsq_epochs=ep(3))],
    }
    for m in (8, 16, 32):
        rows[f"nystrom m={m}"] = [NystromConfig(landmarks=m)]
        rows[f"nystrom m={m}+recover"] = [NystromConfig(landmarks=m),
                                          RecoverConfig(epochs=ep(2))]
    for ratio, targets in ((0.25, "mlp"), (0.15, "all")):
        name = f"lowrank {targets} r={ratio}"
        rows[name] = [LowRankConfig(rank_ratio=ratio, targets=targets)]
        rows[f"{name}+recover"] = [LowRankConfig(rank_ratio=ratio, targets=targets),
                                   RecoverConfig(epochs=ep(2))]
    for kind in ("unstructured", "structured"):
        for pct in (10, 30, 50):
            rows[f"prune {kind} {pct}%"] = [PruneConfig(ratio=pct / 100, kind=kind)]
        rows[f"prune {kind} 50%+distill"] = [PruneConfig(ratio=0.5, kind=kind),
                                              DistillConfig(**heal)]
    rows |= {
        "tome r=8": [ToMeConfig(r=8)],
        "tome r=12+distill": [ToMeConfig(r=12), DistillConfig(**{**heal, "epochs": ep(1)})],
        "student, no teacher": [DistillConfig(**student, alpha=0.0)],
        "distill soft T=1": [DistillConfig(**soft, temperature=1.0)],
        "distill soft T=4": [DistillConfig(**soft, temperature=4.0)],
        "distill hard": [DistillConfig(**student, kind="hard", alpha=0.5)],
        "student (30ep), no teacher": [DistillConfig(**short, alpha=0.0)],
        "distill soft T=2 (30ep)": [DistillConfig(**short, kind="soft", temperature=2.0,
                                                  alpha=0.5)],
        "hybrid distill T=4+int8": [DistillConfig(**soft, temperature=4.0),
                                    QuantizeConfig.from_params(scheme="dynamic8")],
        "hybrid prune 30%+distill+int8": [PruneConfig(ratio=0.3), DistillConfig(**heal),
                                          QuantizeConfig.from_params(scheme="dynamic8")],
    }
    return rows


def trial_inputs(cfg: Config, log: Callable[[str], None]) -> TrialInputs:
    """As sweep.launch builds them: the cached (or freshly trained) baseline and the splits."""
    splits = load_splits(cfg.data, cfg.output_dir, cfg.model)
    torch.set_num_threads(resources.driver_threads())
    base = load_or_train_baseline(cfg, splits, torch.device("cpu"), log)
    model = base.model.cpu().eval()
    return TrialInputs(
        config=cfg, baseline_state=model.state_dict(), baseline_val_acc=base.val_acc,
        baseline_size_bytes=serialized_size(model), num_classes=splits.num_classes,
        train=splits.train, val=splits.val, preprocessing=splits.preprocessing,
    )


def run(cfg: Config, names: list[str] | None, quick: bool,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    inputs = trial_inputs(cfg, log)
    test = load_splits(cfg.data, cfg.output_dir, cfg.model).test  # reported only, never chosen on
    table = pipelines(quick)
    unknown = sorted(set(names or []) - set(table))
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}; valid: {', '.join(table)}")
    rows = []
    for name, pipeline in table.items():
        if names and name not in names:
            continue
        compress.validate_pipeline(pipeline)
        start = time.perf_counter()
        result = run_trial(inputs, pipeline)
        state = torch.load(io.BytesIO(result.artifact), map_location="cpu", weights_only=True)
        test_acc = evaluate_artifact(inputs, pipeline, state, test)
        rows.append({"name": name, "pipeline": compress.pipeline_to_dict(pipeline),
                     "metrics": {**result.metrics, "test_acc": test_acc}, "tags": result.tags,
                     "seconds": time.perf_counter() - start})
        log(f"{name}: val acc {result.val_acc:.2%} in {rows[-1]['seconds']:.0f}s")
    base_test = evaluate_artifact(inputs, [], inputs.baseline_state, test)
    return {"config": cfg.to_dict(), "baseline_val_acc": inputs.baseline_val_acc,
            "baseline_test_acc": base_test,
            "baseline_size_bytes": inputs.baseline_size_bytes,
            "threads": max(1, round(cfg.resources.cpus)), "rows": rows}


def format_table(report: dict[str, Any]) -> str:
    large = report["config"]["measure"]["batch_sizes"][-1]
    rows = report["rows"]
    base_ms = {b: rows[0]["metrics"][k] for b, k in
               ((1, "baseline_latency_ms"), (large, f"baseline_latency_ms_b{large}"))} \
        if rows else {}
    lines = [f"baseline: val acc {report['baseline_val_acc']:.2%}, test acc "
             f"{report['baseline_test_acc']:.2%}, {report['baseline_size_bytes']:,} bytes, "
             + (f"{base_ms[1]:.2f} ms at batch 1, {base_ms[large]:.1f} ms at batch {large} "
                if base_ms else "")
             + f"({report['threads']} thread(s); each row's speed-up is against the baseline "
             "timed in that row's own run)"]
    head = (f"{'technique':<30} {'val acc':>7} {'test acc':>8} {'drop pts':>8} "
            f"{'bytes':>9} {'ratio':>6} {'ms b1':>7} {f'ms b{large}':>8} "
            f"{'speed-up b1':>11} {f'b{large}':>6}")
    lines += [head, "-" * len(head)]
    for row in rows:
        m = row["metrics"]
        lines.append(f"{row['name']:<30} {m['val_acc']:>7.2%} {m['test_acc']:>8.2%} "
                     f"{100 * m['val_acc_drop']:>8.2f} {int(m['size_bytes']):>9,} "
                     f"{m['size_ratio']:>6.3f} {m['latency_ms']:>7.2f} "
                     f"{m[f'latency_ms_b{large}']:>8.1f} {m['speedup']:>10.2f}x "
                     f"{m[f'speedup_b{large}']:>5.2f}x")
    return "\n".join(lines)


def _spread(values: list[float], pct: bool = True) -> str:
    scale = 100 if pct else 1
    lo, mid, hi = min(values) * scale, statistics.mean(values) * scale, max(values) * scale
    return f"{mid:.2f} ({lo:.2f}-{hi:.2f})"


def format_seeds_table(reports: dict[int, dict[str, Any]]) -> str:
    """One row per technique over the baselines of several train.seed: accuracy cells as
    mean (min-max) in percent, drop in points, speed-ups as the median of the runs."""
    runs = list(reports.values())
    large = runs[0]["config"]["measure"]["batch_sizes"][-1]
    lines = [f"{len(runs)} baselines (train.seed {', '.join(map(str, reports))}) on "
             f"{cpu_model()} [{isa_summary()}], {runs[0]['threads']} thread(s) per trial",
             "baseline: val acc " + _spread([r["baseline_val_acc"] for r in runs])
             + "%, test acc " + _spread([r["baseline_test_acc"] for r in runs]) + "%"]
    head = (f"{'technique':<30} {'val acc %':>20} {'test acc %':>20} {'drop pts':>20} "
            f"{'size ratio':>10} {'speed-up b1':>11} {f'b{large}':>6}")
    lines += [head, "-" * len(head)]
    for i, row in enumerate(runs[0]["rows"]):
        ms = [r["rows"][i]["metrics"] for r in runs]
        lines.append(
            f"{row['name']:<30} {_spread([m['val_acc'] for m in ms]):>20} "
            f"{_spread([m['test_acc'] for m in ms]):>20} "
            f"{_spread([m['val_acc_drop'] for m in ms]):>20} "
            f"{statistics.median(m['size_ratio'] for m in ms):>10.3f} "
            f"{statistics.median(m['speedup'] for m in ms):>10.2f}x "
            f"{statistics.median(m[f'speedup_b{large}'] for m in ms):>5.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 1-epoch training")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/techniques.json"))
    parser.add_argument("--output-dir", default="outputs", help="sweeper output_dir (cache)")
    parser.add_argument("--only", nargs="*", help="row names to run (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="train one baseline per train.seed and summarise over them")
    parser.add_argument("overrides", nargs="*", help="sweeper key=value overrides")
    args = parser.parse_args(argv)
    base = [*(QUICK if args.quick else []), f"output_dir={args.output_dir}", *args.overrides]
    hardware = {"cpu": cpu_model(), "isa": isa_summary()}
    if args.seeds:
        reports = {}
        for seed in args.seeds:
            reports[seed] = run(build_config([*base, f"train.seed={seed}"]), args.only,
                                args.quick)
            print(format_table(reports[seed]), flush=True)
        text = format_seeds_table(reports)
        print(text)
        write_json(args.out, {"hardware": hardware, "seeds": reports, "table": text})
    else:
        report = run(build_config(base), args.only, args.quick)
        text = format_table(report)
        print(text)
        write_json(args.out, {**report, "hardware": hardware, "table": text})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
