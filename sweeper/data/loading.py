"""Datasets with fixed train/val/test splits (sweeper.split): built-in ones held as uint8
tensors, image folders streamed from disk.

- digits (default, embedded): scikit-learn's 8x8 handwritten digits, upsampled to 32x32 RGB.
  Needs no download.
- cifar10 / cifar100: the python-format folders torchvision downloads, read from `data.root`
  (downloaded through torchvision, which checks the archive, only when `data.download=true`).
- imagefolder: the user's images under `data.root` (sweeper.imagefolder), never held whole.

Images stay uint8 [N, 3, H, W] (CIFAR-10 as float32 would be 600 MB); the sweep's
`Preprocessing` (sweeper.preprocess) resizes and normalises one batch at a time, on the device
that consumes it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sweeper.core.config import DataConfig, ModelConfig
from sweeper.core.errors import UserError
from sweeper.data.preprocess import Preprocessing, resolve
from sweeper.data.split import Pair, Split, TensorSplit, batches  # noqa: F401 (re-exported)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
DIGITS_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    num_classes: int
    preprocessing: Preprocessing
    classes: tuple[str, ...] = ()  # class names where the data has them (image folders)

    def fingerprint(self) -> str:
        """Content hash of every split and of the preprocessing: part of the baseline cache
        key. Built-in data with its own preprocessing hashes as before the preprocessing
        was part of it, so existing cached baselines stay valid."""
        h = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            split.feed(h)
        if not _builtin(self.preprocessing):
            h.update(repr(self.preprocessing).encode())
        return h.hexdigest()[:16]


def _builtin(prep: Preprocessing) -> bool:
    return ((prep.mean, prep.std) in (DIGITS_STATS, (CIFAR_MEAN, CIFAR_STD))
            and prep.interpolation == "bilinear" and prep.crop_pct == 1.0)


def _split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cuts, start = [], 0
    for frac in fractions:
        size = int(round(frac * n))
        cuts.append(order[start : start + size])
        start += size
    cuts.append(order[start:])
    return cuts


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (1,797 images of 8x8, values 0..16, and their labels), read from
    the CSV file its package ships. `sklearn.datasets.load_digits` reads the same file but
    importing scikit-learn costs about 2.5 s of every sweep's start-up; finding the package
    does not import it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("data.name=digits needs scikit-learn installed (it ships the images)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise UserError(f"data.name=digits: {path} is missing from the scikit-learn install")
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits(cfg: DataConfig, model: ModelConfig) -> Splits:
    pixels, targets = digits_arrays()
    images = torch.from_numpy(pixels).float().unsqueeze(1) / 16.0  # [N,1,8,8] in 0..1
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    labels = torch.from_numpy(targets)
    test_idx, val_idx, train_idx = _split_indices(
        len(labels), (cfg.test_fraction, cfg.val_fraction), cfg.seed
    )

    def take(idx: np.ndarray) -> TensorSplit:
        t = torch.from_numpy(np.sort(idx))
        return TensorSplit(images[t].contiguous(), labels[t].contiguous())

    return Splits(
        train=take(train_idx).limit(cfg.limit),
        val=take(val_idx),
        test=take(test_idx),
        num_classes=10,
        preprocessing=resolve(cfg, model, DIGITS_STATS),
    )


CIFAR_LAYOUT = {  # folder, training files, test file, label key (torchvision's layout)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                b"labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels"),
}


def _read_cifar_batch(path: Path, label_key: bytes) -> Pair:
    """One file of the CIFAR python format: a pickled dict of N x 3072 uint8 rows + labels."""
    # The CIFAR distribution *is* pickles; read only files the user pointed us at.
    with path.open("rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return torch.from_numpy(data.copy()), torch.as_tensor(batch[label_key], dtype=torch.long)


def _download_cifar(name: str, root: Path) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        cls(str(root), train=True, download=True)  # torchvision verifies the archive's md5
    except Exception as exc:  # network errors come in many types
        raise UserError(f"cannot download {name} to {root}: {exc}") from None


def load_cifar(cfg: DataConfig, model: ModelConfig, default_root: Path) -> Splits:
    """CIFAR-10/100 from the python-format folder torchvision downloads and users keep."""
    root = Path(cfg.root) if cfg.root else default_root
    folder, train_files, test_file, label_key = CIFAR_LAYOUT[cfg.name]
    if cfg.download and not (root / folder).is_dir():
        _download_cifar(cfg.name, root)
    try:
        parts = [_read_cifar_batch(root / folder / f, label_key) for f in train_files]
        test = _read_cifar_batch(root / folder / test_file, label_key)
    except FileNotFoundError as exc:
        hint = "" if cfg.download else " (set data.download=true to fetch it)"
        raise UserError(f"cannot read {cfg.name}: missing {exc.filename}{hint}") from None
    except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise UserError(f"cannot read {cfg.name} under {root / folder}: {exc!r}") from None
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    val_idx, train_idx = _split_indices(len(y), (cfg.val_fraction,), cfg.seed)
    train = TensorSplit(x[np.sort(train_idx)], y[np.sort(train_idx)])
    val = TensorSplit(x[np.sort(val_idx)], y[np.sort(val_idx)])
    return Splits(
        train=train.limit(cfg.limit),
        val=val,
        test=TensorSplit(*test),
        num_classes=10 if cfg.name == "cifar10" else 100,
        preprocessing=resolve(cfg, model, (CIFAR_MEAN, CIFAR_STD)),
    )


def load_splits(
    cfg: DataConfig, output_dir: str | Path = "outputs", model: ModelConfig | None = None
) -> Splits:
    """The splits and their preprocessing (`model`: whose input size and pretrained config
    it follows; the default model when None)."""
    model = model or ModelConfig()
    if cfg.name == "digits":
        return load_digits(cfg, model)
    if cfg.name == "imagefolder":
        return load_imagefolder(cfg, model)
    return load_cifar(cfg, model, Path(output_dir) / "data")


def load_imagefolder(cfg: DataConfig, model: ModelConfig) -> Splits:
    from sweeper.data import imagefolder  # Pillow and DataLoader workers: image folders only

    prep = resolve(cfg, model)
    parts, classes = imagefolder.load(cfg, prep)
    return Splits(parts["train"], parts["val"], parts["test"], len(classes), prep,
                  tuple(classes))


def to_input(
    x: torch.Tensor,
    img_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """uint8 [B,3,H,W] -> normalised float on `device`, resized (bilinear) to img_size if
    needed: `Preprocessing.to_input` with loose arguments, for tests and benchmarks."""
    return Preprocessing(img_size, _rgb(mean), _rgb(std)).to_input(x, device)


def _rgb(values: tuple[float, ...]) -> tuple[float, float, float]:
    a, b, c = values
    return (a, b, c)

