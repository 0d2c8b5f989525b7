"""Your own ViT and your own images, end to end:

1. an image folder, DIR/train/<class>/*.png, DIR/val/..., DIR/test/... (generated here:
   coloured shapes; or give yours with --data DIR);
2. fine-tune a small timm ViT on it with a plain PyTorch loop and save the checkpoint;
3. sweep compressions of that checkpoint as it is (train.epochs=0) with `sweeper.launch`;
4. export the chosen trial of the front to ONNX;
5. classify the test images with ONNX Runtime, using the preprocessing the export wrote.

    python examples/own_model.py                 # a few minutes on a laptop CPU
    python examples/own_model.py --tiny          # seconds of training: the test suite's run
    python examples/own_model.py --data DIR --model vit_small_patch16_224 --img-size 224

The same sweep from a shell:
    python -m sweeper launch space=quant_bits model.name=NAME model.img_size=SIZE \
        model.checkpoint=OUT/finetuned.pt data.name=imagefolder data.root=DIR train.epochs=0
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from timm.data import resolve_data_config
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import sweeper
from sweeper.cli.export import run_export
from sweeper.results.report import describe_config

SHAPES = ("circle", "square", "triangle")
TINY_SPACE = """description: two quick int8 schemes (the example's --tiny run)
techniques:
  quantize:
    scheme: {choices: [dynamic8, weight_only8]}
"""
TINY_MEASURE = ["measure.batch_sizes=1,8", "measure.warmup=2", "measure.repeats=5",
                "measure.max_seconds=1"]


def make_folder(root: Path, per_class: dict[str, int], size: int, seed: int = 0) -> None:
    """PNG images of filled shapes, random colour, position and scale, on a noisy background."""
    rng = random.Random(seed)
    for split, count in per_class.items():
        for label in SHAPES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = np.random.default_rng(rng.randrange(2**32)).integers(0, 60, (size, size, 3))
                img = Image.fromarray(noise.astype(np.uint8))
                draw = ImageDraw.Draw(img)
                r = rng.uniform(0.2, 0.4) * size
                cx, cy = (rng.uniform(r, size - r) for _ in range(2))
                colour = tuple(rng.randrange(120, 256) for _ in range(3))
                box = (cx - r, cy - r, cx + r, cy + r)
                if label == "circle":
                    draw.ellipse(box, fill=colour)
                elif label == "square":
                    draw.rectangle(box, fill=colour)
                else:
                    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
                img.save(folder / f"{i:04d}.png")


def fine_tune(root: Path, name: str, size: int, epochs: int, pretrained: bool) -> tuple:
    """A user's own training loop: torchvision ImageFolder + DataLoader, AdamW."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=pretrained, num_classes=len(classes),
                              img_size=size)
    # the normalisation the sweep uses for this model name (timm's pretrained config)
    data_cfg = resolve_data_config({}, model=model)
    tf = transforms.Compose([
        transforms.Resize(math.floor(size / data_cfg.get("crop_pct", 1.0))),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(data_cfg["mean"], data_cfg["std"]),
    ])
    train = datasets.ImageFolder(str(root / "train"), transform=tf)
    loader = DataLoader(train, batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
        print(f"fine-tune epoch {epoch + 1}/{epochs}: loss {total / len(train):.3f}")
    return model.eval(), classes


def choose(outcome: sweeper.sweep.state.SweepOutcome, max_drop: float) -> dict:
    """The smallest front member within `max_drop` of the baseline's validation accuracy,
    else the most accurate one (any finished trial when the baseline dominates them all)."""
    candidates = list(outcome.front) or outcome.rows
    close = [r for r in candidates if r["val_acc"] >= outcome.baseline["val_acc"] - max_drop]
    if close:
        return min(close, key=lambda r: r["size_mb"])
    return max(candidates, key=lambda r: r["val_acc"])


def onnx_accuracy(onnx_path: Path, root: Path, classes: list[str]) -> float:
    """Classify DIR/test with ONNX Runtime alone, preprocessing as the export's JSON says."""
    import onnxruntime as ort

    info = json.loads(Path(f"{onnx_path}.json").read_text())
    size = int(info["img_size"])
    mean = np.array(info["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(info["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                "nearest": Image.NEAREST}[info.get("interpolation", "bilinear")]
    short = math.floor(size / float(info.get("crop_pct", 1.0)))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for index, label in enumerate(classes):
        for path in sorted((root / "test" / label).iterdir()):
            img = Image.open(path).convert("RGB")
            if img.size != (size, size):  # short side to size / crop_pct, then the centre
                w, h = img.size
                img = img.resize((round(w * short / min(w, h)), round(h * short / min(w, h))),
                                 resample)
                left, top = (img.width - size) // 2, (img.height - size) // 2
                img = img.crop((left, top, left + size, top + size))
            x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
            logits = sess.run(None, {"input": ((x - mean) / std).astype(np.float32)})[0]
            correct += int(logits.argmax(-1)[0] == index)
            total += 1
    return correct / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="smallest setting (the test suite's)")
    ap.add_argument("--data", type=Path, help="your image folder (default: generate one)")
    ap.add_argument("--out", type=Path, default=Path("outputs/own_model"))
    ap.add_argument("--model", default=None,
                    help="a timm ViT name (default vit_tiny_patch16_224; --tiny: test_vit)")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--pretrained", action="store_true",
                    help="start from timm's published weights (downloads them)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--space", default=None, help="search space (default quant_bits)")
    ap.add_argument("--trials", type=int, default=None)
    args = ap.parse_args()

    size = args.img_size or (32 if args.tiny else 64)
    epochs = args.epochs if args.epochs is not None else (3 if args.tiny else 15)
    trials = args.trials or (1 if args.tiny else 8)
    args.model = args.model or ("test_vit" if args.tiny else "vit_tiny_patch16_224")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = args.data
    if root is None:
        root = out / "images"
        counts = {"train": 8, "val": 4, "test": 4} if args.tiny else \
            {"train": 120, "val": 30, "test": 30}
        make_folder(root, counts, size)
        print(f"image folder: {root} ({len(SHAPES)} classes, PNG, {size} px)")

    model, classes = fine_tune(root, args.model, size, epochs, args.pretrained)
    ck = out / "finetuned.pt"
    torch.save({"state_dict": model.state_dict(), "arch": args.model, "epoch": epochs}, ck)
    print(f"checkpoint: {ck}")

    space = args.space
    if space is None and args.tiny:
        space = str(out / "tiny_space.yaml")
        Path(space).write_text(TINY_SPACE)
    outcome = sweeper.launch(
        space or "quant_bits",
        overrides=[f"model.name={args.model}", f"model.img_size={size}",
                   f"model.checkpoint={ck}", "data.name=imagefolder", f"data.root={root}",
                   "train.epochs=0", f"search.trials={trials}", f"output_dir={out}",
                   *(TINY_MEASURE if args.tiny else [])],
        log=None)
    print(outcome.front)  # the table the CLI prints

    chosen = choose(outcome, max_drop=0.02)
    onnx_path = out / "chosen.onnx"
    _, size_bytes, _ = run_export(str(outcome.sweep_dir), chosen["trial"],
                                  ["format=onnx", f"out={onnx_path}"])
    print(f"exported trial {chosen['trial']} ({describe_config(chosen['config'])}) to "
          f"{onnx_path} ({size_bytes:,} bytes)")
    acc = onnx_accuracy(onnx_path, root, classes)
    swept = chosen.get("test_acc")
    print(f"ONNX Runtime test accuracy: {acc:.2%} (the sweep's, in PyTorch: "
          f"{'-' if swept is None else format(swept, '.2%')}; baseline "
          f"{outcome.baseline['test_acc']:.2%})")


if __name__ == "__main__":
    main()
