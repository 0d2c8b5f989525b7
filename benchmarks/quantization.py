"""Quantization benchmark: accuracy drop, size ratio and speed-up per method and bit width.

    python benchmarks/quantization.py [--quick] [--json PATH] [--threads N] [--no-vits]

Two models:
- the embedded default (digits, 4-block ViT trained from scratch; cached under
  <output-dir>/cache): validation accuracy drop in points against the float baseline;
- ViT-S/16 shapes (timm vit_small_patch16_224, random weights, pretrained=False, 224x224):
  accuracy is meaningless with random weights, so fidelity is reported instead (relative L2
  error of the logits against float on random images); static int8 calibrates on random
  images; LSQ is not trained there (it ships the same packed format and kernels as
  weight_only at the same bits, so its size and latency are weight_only's).

Speed-ups are float-baseline time / quantized time measured in the same process, in eager
PyTorch (`torch`) and in ONNX Runtime (`ort`, the lowered graph against the float graph), at
batch 1 and a larger batch, on `--threads` threads (a trial's default is 1); each is the median
of `--rounds` alternating comparisons, so a neighbour's load burst spoils a round, not the
number. `ort_vs_eager`
is the float eager time over the ORT quantized time, the deployment view. `sim` marks
low precision that is only simulated (weights unpacked to float) in that runtime.
`--quick` is a smoke test: a tiny digits model and ViT-S layers at 32x32 input.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from sweeper.compress import TrialContext  # noqa: E402
from sweeper.compress.quantize import QuantizeConfig, apply  # noqa: E402
from sweeper.core.config import build_config  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.data.loading import load_splits  # noqa: E402
from sweeper.data.preprocess import Preprocessing  # noqa: E402
from sweeper.measure import runtime  # noqa: E402
from sweeper.measure.latency import Timing, compare_latency  # noqa: E402
from sweeper.measure.size import serialized_size  # noqa: E402
from sweeper.models.baseline import load_or_train_baseline  # noqa: E402
from sweeper.models.train import accuracy  # noqa: E402

SCHEMES = ["dynamic8", "static8", "weight_only8", "weight_only4", "weight_only3",
           "weight_only2", "lsq8", "lsq4", "lsq3", "lsq2"]
QUICK_SCHEMES = ["dynamic8", "static8", "weight_only4", "weight_only3", "lsq2"]
TINY = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "train.epochs=2",
        "data.limit=200"]
CPU = torch.device("cpu")


def latencies(model: torch.nn.Module, base: torch.nn.Module, graph: bytes, base_graph: bytes,
              img: int, batches: tuple[int, ...], threads: int, repeats: int,
              rounds: int) -> dict[str, Any]:
    """Speed-ups as the median over `rounds` alternating comparisons: a neighbour's burst of
    load then spoils one round, not the number."""
    warm = max(2, repeats // 5)
    sess = runtime.session(graph, CPU, threads)
    base_sess = runtime.session(base_graph, CPU, threads)
    timing = Timing(warm, repeats, 0.0)  # one round of pairs each: the rounds give the spread
    eager = [compare_latency(model, base, img, batches, CPU, timing)
             for _ in range(rounds)]
    ort = [runtime.compare_latency(sess, base_sess, img, batches, timing)
           for _ in range(rounds)]
    out: dict[str, Any] = {}
    for b in batches:
        out[f"torch_speedup_b{b}"] = statistics.median(p.speedup(b) for p in eager)
        out[f"ort_speedup_b{b}"] = statistics.median(p.speedup(b) for p in ort)
        out[f"torch_float_ms_b{b}"] = statistics.median(p.baseline_ms[b] for p in eager)
        out[f"ort_ms_b{b}"] = statistics.median(p.model_ms[b] for p in ort)
        out[f"ort_vs_eager_b{b}"] = out[f"torch_float_ms_b{b}"] / out[f"ort_ms_b{b}"]
    out["_session"] = sess
    return out


def measure(name: str, cfg: QuantizeConfig, base: torch.nn.Module, ctx: TrialContext,
            img: int, batches: tuple[int, ...], args: argparse.Namespace, repeats: int,
            base_graph: bytes, base_size: int, score: Any) -> dict[str, Any]:
    start = time.perf_counter()
    ctx = copy.copy(ctx)
    ctx.notes = {}
    model = apply(copy.deepcopy(base), cfg, ctx).eval()
    graph, report = runtime.onnx_bytes(model, img)
    row = {"model": name, "scheme": cfg.scheme, "method": cfg.method, "bits": cfg.bits,
           "size_bytes": serialized_size(model), "size_ratio": serialized_size(model) / base_size,
           "onnx_size_ratio": len(graph) / len(base_graph),
           "sim_torch": ctx.simulated, "sim_ort": report.simulated,
           "ort_kernels": report.describe()}
    row |= latencies(model, base, graph, base_graph, img, batches, args.threads, repeats,
                     args.rounds)
    row |= score(model, row.pop("_session"))
    row["seconds"] = time.perf_counter() - start
    return row


def digits_rows(args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    cfg = build_config([*(TINY if args.quick else []), f"output_dir={args.output_dir}"])
    splits = load_splits(cfg.data, cfg.output_dir, cfg.model)
    base = load_or_train_baseline(cfg, splits, CPU, log).model.eval()
    prep = splits.preprocessing
    img = prep.img_size
    base_acc = accuracy(base, splits.val, prep, CPU)
    ctx = TrialContext(train=splits.train, val=splits.val, preprocessing=prep,
                       batch_size=cfg.train.batch_size, seed=cfg.search.seed, teacher=base)
    lsq = {"lsq_epochs": 1} if args.quick else {}

    def score(model: torch.nn.Module, sess: Any) -> dict[str, float]:
        acc = accuracy(model, splits.val, prep, CPU)
        ort_acc = runtime.accuracy(sess, splits.val, prep)
        return {"val_acc": acc, "acc_drop_pts": 100 * (base_acc - acc),
                "ort_acc_drop_pts": 100 * (base_acc - ort_acc)}

    base_graph = runtime.float_onnx_bytes(base, img)
    rows = []
    for scheme in QUICK_SCHEMES if args.quick else SCHEMES:
        extra = lsq if scheme.startswith("lsq") else {}
        qcfg = QuantizeConfig.from_params(scheme=scheme, **extra)
        rows.append(measure("digits-vit", qcfg, base, ctx, img, (1, 64), args, args.repeats,
                            base_graph, serialized_size(base), score))
        log(f"digits-vit {scheme}: {rows[-1]['seconds']:.0f}s")
    return rows


def vits_rows(args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    import timm

    img = 32 if args.quick else 224
    torch.manual_seed(0)
    base = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=img).eval()
    gen = torch.Generator().manual_seed(0)
    calib = (torch.randint(0, 256, (64, 3, img, img), dtype=torch.uint8, generator=gen),
             torch.zeros(64, dtype=torch.long))
    ctx = TrialContext(train=calib, preprocessing=Preprocessing(img, (0.5,) * 3, (0.5,) * 3),
                       batch_size=16)
    x = ctx.preprocessing.to_input(
        torch.randint(0, 256, (8, 3, img, img), dtype=torch.uint8, generator=gen))
    with torch.no_grad():
        ref = base(x)

    def score(model: torch.nn.Module, sess: Any) -> dict[str, float]:
        with torch.no_grad():
            out = model(x)
        ort_out = torch.from_numpy(runtime.predict(sess, x.numpy()))
        return {"logit_rel_err": float((out - ref).norm() / ref.norm()),
                "ort_logit_rel_err": float((ort_out - ref).norm() / ref.norm())}

    base_graph = runtime.float_onnx_bytes(base, img)
    rows = []
    for scheme in (["weight_only4"] if args.quick else
                   [s for s in SCHEMES if not s.startswith("lsq")]):
        qcfg = QuantizeConfig.from_params(scheme=scheme)
        rows.append(measure("vit_small_patch16_224", qcfg, base, ctx,
                            img, (1, 8), args, max(3, args.repeats // 5), base_graph,
                            serialized_size(base), score))
        log(f"vit_small {scheme}: {rows[-1]['seconds']:.0f}s")
    return rows


COLUMNS = [("model", "{}"), ("scheme", "{}"), ("acc_drop_pts", "{:+.2f}"),
           ("ort_acc_drop_pts", "{:+.2f}"), ("logit_rel_err", "{:.4f}"),
           ("size_ratio", "{:.3f}"), ("onnx_size_ratio", "{:.3f}"),
           ("torch_speedup_b1", "{:.2f}"), ("ort_speedup_b1", "{:.2f}"),
           ("ort_vs_eager_b1", "{:.2f}"), ("torch_speedup_b64", "{:.2f}"),
           ("ort_speedup_b64", "{:.2f}"), ("torch_speedup_b8", "{:.2f}"),
           ("ort_speedup_b8", "{:.2f}"), ("sim_torch", "{}"), ("sim_ort", "{}")]


def table(rows: list[dict[str, Any]]) -> str:
    cols = [(c, f) for c, f in COLUMNS if any(c in r for r in rows)]
    def cell(value: Any, fmt: str) -> str:
        if isinstance(value, float) and abs(value) < 5e-7:
            value = 0.0  # no "-0.00"
        return fmt.format(value)

    cells = [[c for c, _ in cols]] + [
        [cell(r[c], f) if c in r else "-" for c, f in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny models")
    parser.add_argument("--json", type=Path, default=ROOT / "outputs" / "bench_quant.json")
    parser.add_argument("--output-dir", default=str(ROOT / "outputs"),
                        help="sweeper output_dir holding the baseline cache")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls (ViT-S: 1/5)")
    parser.add_argument("--rounds", type=int, default=3, help="comparisons, median kept")
    parser.add_argument("--no-vits", action="store_true", help="skip the ViT-S/16 rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.rounds = min(args.repeats, 3), 1
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = digits_rows(args, log)
    if not args.no_vits:
        rows += vits_rows(args, log)
    print(table(rows))
    meta = {"threads": args.threads, "repeats": args.repeats, "rounds": args.rounds,
            "quick": args.quick,
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    write_json(args.json, {"meta": meta, "rows": rows})
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
