"""Your own images at 224 px: sweeper's streamed image folder against a plain torchvision loop.

    python benchmarks/own_data.py [--sizes 2000,6000] [--output-dir outputs/bench-own-data]

For each size, generates an image folder of that many JPEGs at 224x224 (10 classes; val/ and
test/ hold 150 each, the rest is train/), then:

1. sweeps it with `vit_small_patch16_224` (random weights: model.pretrained=false;
   train.epochs=0, so the baseline is the model as built) over two cheap trials
   (dynamic8 / weight_only8 quantization), as `python -m sweeper launch` in a child process,
   and reports that driver's peak resident memory: it must not grow with the folder;
2. times evaluation over val/ (same model, batch size and worker count) both ways, in this
   process: sweeper's `train.accuracy` over the folder split (a DataLoader with workers,
   torchvision's decoders) and a plain `torchvision.datasets.ImageFolder` + `DataLoader`
   loop with timm's eval transform. Target: sweeper at least 0.8x the plain loop's images/s.
   Loading alone (no model) is timed too, since the model dominates on few cores;
3. the data path's own resident memory: a fresh process loads the folder's splits and
   streams all of train/ (no Ray, no model), before and after.

Figures depend on the machine and on what else runs on it: name the CPU and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.core.config import build_config  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.data.loading import load_splits  # noqa: E402
from sweeper.measure.hardware import cpu_model, isa_summary  # noqa: E402
from sweeper.models.train import accuracy  # noqa: E402
from sweeper.models.vit import create_model  # noqa: E402

CLASSES = 10
HELD_OUT = 150  # images in val/ and in test/, whatever the size
SPACE = """description: two cheap trials for benchmarks/own_data.py
techniques:
  quantize:
    scheme: {choices: [dynamic8, weight_only8]}
"""
MODEL = ["model.name=vit_small_patch16_224", "model.pretrained=false", "model.img_size=224",
         "model.patch_size=16"]


def generate(root: Path, total: int, seed: int = 0) -> Path:
    """`total` JPEGs at 224x224: class-tinted noise (decoding cost is what matters here)."""
    if (root / "done").is_file():
        return root
    rng = np.random.default_rng(seed)
    counts = {"val": HELD_OUT, "test": HELD_OUT, "train": total - 2 * HELD_OUT}
    for split, n in counts.items():
        for i in range(n):
            cls = i % CLASSES
            tint = np.array([(cls * 25) % 256, (cls * 70) % 256, (cls * 130) % 256])
            pixels = np.clip(tint + rng.integers(-60, 60, (224, 224, 3)), 0, 255)
            path = root / split / f"c{cls}" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
    (root / "done").write_text("ok\n")
    return root


def sweep_peak_mb(folder: Path, out: Path, workers: int) -> tuple[float, float]:
    """The sweep's driver in a child process: (peak RSS in MB, wall seconds)."""
    space = out / "own_data.yaml"
    space.parent.mkdir(parents=True, exist_ok=True)
    space.write_text(SPACE)
    args = [f"space={space}", *MODEL, "data.name=imagefolder", f"data.root={folder}",
            f"data.workers={workers}", "train.epochs=0", "search.trials=2",
            "search.concurrency=1", "resources.cpus=1", "measure.batch_sizes=1,8",
            "measure.max_seconds=2", "measure.eval_batch_size=50", f"output_dir={out}",
            f"tracking_uri=sqlite:///{out / 'mlflow.db'}"]
    code = ("import resource, sys; from sweeper.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
            "sys.exit(rc)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "launch", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stderr[-3000:]}")
    peak = [ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK_KB")][-1]
    return int(peak.split()[1]) / 1024, time.perf_counter() - start


STREAM_RSS = """
import sys
from sweeper.core.config import build_config
from sweeper.data.loading import load_splits

def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024

cfg = build_config(sys.argv[1:])
before = rss()
splits = load_splits(cfg.data, cfg.output_dir, cfg.model)
for _batch in splits.train.batches(64):
    pass
print('RSS_MB', before, rss())
"""


def streaming_rss_mb(folder: Path, workers: int) -> tuple[float, float]:
    """Resident MB of a fresh process before loading the folder's splits and after streaming
    all of train/ through them: the data path's own footprint, without Ray or the model."""
    proc = subprocess.run([sys.executable, "-c", STREAM_RSS, *MODEL, "data.name=imagefolder",
                           f"data.root={folder}", f"data.workers={workers}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RSS_MB")][-1]
    before, after = (float(v) for v in line.split()[1:])
    return before, after


def plain_loader(folder: Path, prep: Any, workers: int, batch: int) -> Any:
    from torchvision import datasets, transforms

    size = prep.img_size
    tf = transforms.Compose([
        transforms.Resize(int(size / prep.crop_pct),
                          interpolation=transforms.InterpolationMode(prep.interpolation)),
        transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize(prep.mean, prep.std),
    ])
    return torch.utils.data.DataLoader(datasets.ImageFolder(str(folder / "val"), tf),
                                       batch_size=batch, num_workers=workers)


def rate(fn: Any, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


@torch.inference_mode()
def evaluation_rates(folder: Path, workers: int, batch: int) -> dict[str, float]:
    cfg = build_config([*MODEL, "data.name=imagefolder", f"data.root={folder}",
                        f"data.workers={workers}"])
    splits = load_splits(cfg.data, cfg.output_dir, cfg.model)
    prep, n = splits.preprocessing, len(splits.val)
    torch.manual_seed(0)
    model = create_model(cfg.model, splits.num_classes).eval()
    plain = plain_loader(folder, prep, workers, batch)
    cpu = torch.device("cpu")

    def plain_eval() -> None:
        for x, _y in plain:
            model(x)

    def plain_load() -> None:
        for _ in plain:
            pass

    def sweeper_load() -> None:
        for xb, _y in splits.val.batches(batch):
            prep.to_input(xb)

    out = {}
    for _round in range(2):  # the first round warms the page cache and the allocator
        out = {
            "sweeper_eval_img_s": rate(lambda: accuracy(model, splits.val, prep, cpu, batch), n),
            "plain_eval_img_s": rate(plain_eval, n),
            "sweeper_load_img_s": rate(sweeper_load, n),
            "plain_load_img_s": rate(plain_load, n),
        }
    out["eval_ratio"] = out["sweeper_eval_img_s"] / out["plain_eval_img_s"]
    out["load_ratio"] = out["sweeper_load_img_s"] / out["plain_load_img_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="2000,6000")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--output-dir", default=str(ROOT / "outputs" / "bench-own-data"))
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    out = Path(args.output_dir)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        folder = generate(out / f"images-{size}", size)
        before, after = streaming_rss_mb(folder, args.workers)
        peak_mb, seconds = sweep_peak_mb(folder, out / f"runs-{size}", args.workers)
        row = {"images": size, "driver_peak_mb": round(peak_mb, 1),
               "stream_rss_before_mb": round(before, 1), "stream_rss_after_mb": round(after, 1),
               "sweep_seconds": round(seconds, 1),
               **{k: round(v, 2) for k, v in
                  evaluation_rates(folder, args.workers, args.batch).items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\non {cpu_model()} [{isa_summary()}], {os.cpu_count()} cores")
    print(f"{'images':>7} {'driver peak MB':>14} {'stream MB':>9} {'sweeper eval img/s':>18} "
          f"{'plain eval img/s':>16} {'ratio':>6} {'load ratio':>10}")
    for r in rows:
        print(f"{r['images']:>7} {r['driver_peak_mb']:>14.0f} {r['stream_rss_after_mb']:>9.0f} "
              f"{r['sweeper_eval_img_s']:>18.1f} "
              f"{r['plain_eval_img_s']:>16.1f} {r['eval_ratio']:>6.2f} {r['load_ratio']:>10.2f}")
    if args.json:
        write_json(args.json, {"cpu": cpu_model(), "isa": isa_summary(), "cores": os.cpu_count(),
                               "rows": rows})
    print(f"(this process's peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
          " MB)")


if __name__ == "__main__":
    main()
