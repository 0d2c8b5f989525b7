"""Latency at real model shapes: ViT-S/16 and ViT-B/16 (random weights, synthetic input).

For each model and compression: the compressed model and the uncompressed one are timed in
the same process, alternating, after warm-up (median of repeated calls), at batch 1 and 8, in
eager PyTorch and in ONNX Runtime; the speed-up is the ratio. Nyström is also timed at 384 px,
where the token count (577) is large enough for low-rank attention to pay. No accuracy here
(random weights): `benchmarks/techniques.py` has the accuracy side.

    python benchmarks/real_shapes.py                  # ViT-S/16 and ViT-B/16 (tens of minutes)
    python benchmarks/real_shapes.py --models vit_small_patch16_224
    python benchmarks/real_shapes.py --quick          # smoke test: 2-block ViT-Ti at half the size
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper import compress  # noqa: E402
from sweeper.compress.nystrom import NystromConfig  # noqa: E402
from sweeper.compress.prune import PruneConfig  # noqa: E402
from sweeper.compress.quantize import QuantizeConfig  # noqa: E402
from sweeper.compress.tome import ToMeConfig  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.core.quiet import quiet_third_party  # noqa: E402
from sweeper.measure.hardware import cpu_model, isa_summary  # noqa: E402
from sweeper.measure.latency import LatencyPair, Timing, compare_latency  # noqa: E402

# (name, image size, pipeline)
CASES: list[tuple[str, int, list[Any]]] = [
    ("int8 dynamic", 224, [QuantizeConfig(method="dynamic")]),
    ("structured prune 30%", 224, [PruneConfig(ratio=0.3)]),
    ("structured prune 50%", 224, [PruneConfig(ratio=0.5)]),
    ("tome r=8", 224, [ToMeConfig(r=8)]),
    ("nystrom m=32 @224", 224, [NystromConfig(landmarks=32)]),
    ("nystrom m=32 @384", 384, [NystromConfig(landmarks=32)]),
    ("nystrom m=64 @384", 384, [NystromConfig(landmarks=64)]),
]

QUICK_CASES = [CASES[0], CASES[2], CASES[3], CASES[5]]


def build(name: str, img_size: int, quick: bool = False) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    depth = {"depth": 2} if quick else {}  # the smoke test: 2 blocks export 6x faster
    return timm.create_model(name, pretrained=False, img_size=img_size, **depth).eval()


def ort_times(model: torch.nn.Module, base_graph: bytes, img: int, batches: tuple,
              threads: int, warmup: int, repeats: int) -> LatencyPair | str:
    """The compressed model exported and timed in ONNX Runtime against the float graph."""
    from sweeper.measure import runtime

    try:
        graph, _ = runtime.onnx_bytes(model, img)
    except Exception as exc:  # an op without an ONNX lowering: reported, not hidden
        return f"export failed: {type(exc).__name__}"
    cpu = torch.device("cpu")
    return runtime.compare_latency(runtime.session(graph, cpu, threads),
                                   runtime.session(base_graph, cpu, threads),
                                   img, batches, Timing(warmup, repeats, 0.0))


def speedup_intervals(pair: LatencyPair) -> dict[int, list[float]]:
    """Each batch size's 95% interval of the speed-up (1 / the ratio's interval)."""
    return {b: [1 / r.hi, 1 / r.lo] for b, r in pair.by_batch.items()}


def cells(speedups: dict[int, float], intervals: dict[int, list[float]]) -> str:
    return " ".join(f"b{b} {v:5.2f}x [{intervals[b][0]:.2f}-{intervals[b][1]:.2f}]"
                    for b, v in speedups.items())


def run(models: list[str], batches: tuple[int, ...], warmup: int, repeats: int,
        threads: int, quick: bool, cases: list[str] | None = None,
        on_row: Callable[[list[dict[str, Any]]], None] = lambda _rows: None,
        ) -> list[dict[str, Any]]:
    """Times every case; `on_row` gets the rows so far after each one (a ViT-B run takes
    most of an hour: what was measured is kept if it is stopped)."""
    from sweeper.measure import runtime

    torch.set_num_threads(threads)
    rows = []
    for model_name in models:
        bases: dict[int, torch.nn.Module] = {}
        base_graphs: dict[int, bytes] = {}  # exporting takes longer than timing
        for case, img, pipeline in QUICK_CASES if quick else CASES:
            if cases and case not in cases:
                continue
            if quick:  # half the pixels, and few enough merges for the 50 tokens left
                img //= 2
                pipeline = [ToMeConfig(r=2) if isinstance(c, ToMeConfig) else c
                            for c in pipeline]
            if img not in bases:
                bases[img] = build(model_name, img, quick)
                base_graphs[img] = runtime.float_onnx_bytes(bases[img], img)
            base = bases[img]
            compressed = compress.apply_pipeline(copy.deepcopy(base), pipeline,
                                                 compress.TrialContext())
            eager = compare_latency(compressed, base, img, batches, torch.device("cpu"),
                                    Timing(warmup, repeats, 0.0))
            pair = ort_times(compressed, base_graphs[img], img, batches, threads, warmup, repeats)
            ort: dict[int, float] | str = pair  # the export's failure, in every ORT cell
            ort_ci: dict[int, list[float]] | str = pair
            # what a user who deploys through ONNX Runtime gets over eager float PyTorch
            ort_vs_eager: dict[int, float] | str = pair
            ort_text = str(pair)
            if not isinstance(pair, str):
                ort = {b: pair.speedup(b) for b in batches}
                ort_ci = speedup_intervals(pair)
                ort_vs_eager = {b: eager.baseline_ms[b] / pair.model_ms[b] for b in batches}
                ort_text = f"{cells(ort, ort_ci)} (b1 vs eager float {ort_vs_eager[1]:5.2f}x)"
            row = {"model": model_name, "case": case, "img_size": img,
                   "baseline_ms": eager.baseline_ms, "model_ms": eager.model_ms,
                   "speedup_torch": {b: eager.speedup(b) for b in batches},
                   "speedup_torch_ci": speedup_intervals(eager),
                   "speedup_ort": ort, "speedup_ort_ci": ort_ci,
                   "ort_vs_eager_float": ort_vs_eager}
            rows.append(row)
            on_row(rows)
            print(f"{model_name:24s} {case:22s} torch " +
                  cells(row["speedup_torch"], row["speedup_torch_ci"]) +
                  f" | onnxruntime {ort_text}   (baseline b1 {eager.baseline_ms[1]:.1f} ms)",
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cases", nargs="+", choices=[c[0] for c in CASES],
                        help="only these cases (default: all)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="benchmarks/results/real_shapes.json")
    args = parser.parse_args()
    quiet_third_party()
    models = ["vit_tiny_patch16_224"] if args.quick else args.models
    repeats, warmup = (2, 1) if args.quick else (args.repeats, args.warmup)
    out = Path(args.json)

    def save(rows: list[dict[str, Any]]) -> None:
        write_json(out, {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
                         "cpu": cpu_model(), "isa": isa_summary(),
                         "threads": args.threads, "repeats": repeats, "rows": rows})

    print(f"{cpu_model()} [{isa_summary()}], {args.threads} threads; speed-up over the same "
          "model uncompressed [95% interval]", flush=True)
    save(run(models, (1, 8), warmup, repeats, args.threads, args.quick, args.cases, save))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
