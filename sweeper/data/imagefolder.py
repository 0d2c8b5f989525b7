"""`data.name=imagefolder data.root=DIR`: a user's images, streamed from disk.

DIR/train/<class>/* is required; DIR/val/<class>/* and DIR/test/<class>/* are used where
present, and what is missing is carved from train by `data.seed` (`data.val_fraction`,
`data.test_fraction`), class by class, disjoint. Classes are train/'s sub-folders in sorted
order (torchvision's ImageFolder convention), one mapping for every split. JPEG, PNG and WebP
files are read (by extension, any case); other files, and dot-named files and folders, are
ignored.

Everything is checked before a sweep writes anything: the layout, and every image decoded
once by DataLoader workers (a corrupt file fails here, not in trial 37). Only the file list
and labels stay in memory; `split.StreamedSplit` decodes batches on demand.

The content fingerprint (part of the baseline cache key) hashes each file's relative path,
size and modification time with its label and the preprocessing: cheap for any folder size.
Rewriting an image in place within the same nanosecond-resolution mtime and size is not
detected; touch the file or clear the cache after such an edit.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

from sweeper.core.config import DataConfig
from sweeper.core.errors import UserError
from sweeper.data.preprocess import Preprocessing
from sweeper.data.split import PIL_ONLY, StreamedSplit, decode_file

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", *PIL_ONLY)  # torchvision ImageFolder's list
SPLITS = ("train", "val", "test")
Files = list[tuple[str, int]]  # (path, class index)


def images_under(folder: Path) -> list[Path]:
    """The image files below `folder`, sorted. Symlinked folders are followed, as
    torchvision's ImageFolder follows them (`os.walk(followlinks=True)`), each real folder
    once, so a link loop ends. Dot-named files and folders are skipped: macOS's `._x.jpg`
    AppleDouble twin of `x.jpg` on a non-Mac disk is no image, `.ipynb_checkpoints/` a copy."""
    seen: set[tuple[int, int]] = set()
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(top) / name
            if not name.startswith(".") and path.suffix.lower() in EXTENSIONS and path.is_file():
                found.append(path)
    return sorted(found)


def class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """class name -> its image files, sorted; a class folder without images is an error."""
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = {}
    for folder in classes:
        images = images_under(folder)
        if not images:
            raise UserError(f"class folder {folder} holds no images "
                            f"({', '.join(EXTENSIONS)})")
        out[folder.name] = images
    return out


def read_layout(root: Path) -> tuple[list[str], dict[str, Files]]:
    """Class names and the files of each split present on disk."""
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a folder (expected {root}/train/<class>/*)")
    if not (root / "train").is_dir():
        raise UserError(f"data.root={root} has no train/ folder (expected "
                        f"{root}/train/<class>/*)")
    found = {name: class_folders(root / name) for name in SPLITS if (root / name).is_dir()}
    classes = sorted(found["train"])
    if not classes:
        raise UserError(f"{root / 'train'} has no class folders (expected "
                        f"{root}/train/<class>/*)")
    if len(classes) < 2:
        raise UserError(f"{root / 'train'} has one class folder ({classes[0]!r}): a classifier "
                        f"needs at least 2 (is data.root one level too deep?)")
    index = {name: i for i, name in enumerate(classes)}
    files: dict[str, Files] = {}
    for split, by_class in found.items():
        if not by_class:
            raise UserError(f"{root / split} has no class folders")
        for name in by_class:
            if name not in index:
                raise UserError(f"class {name!r} is in {root / split} but not in "
                                f"{root / 'train'}: every class needs training images")
        files[split] = [(str(p), index[c]) for c, paths in sorted(by_class.items())
                        for p in paths]
    return classes, files


def carve(files: Files, fractions: dict[str, float], seed: int) -> dict[str, Files]:
    """Split `files` class by class (seeded), each part keeping its share of every class;
    a class too small to leave a training image is an error."""
    rng = np.random.default_rng(seed)
    labels = np.array([label for _p, label in files])
    parts: dict[str, list[int]] = {name: [] for name in (*fractions, "train")}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)[rng.permutation(int((labels == label).sum()))]
        start = 0
        for name, frac in fractions.items():
            size = int(round(frac * len(members)))
            parts[name] += members[start : start + size].tolist()
            start += size
        if start >= len(members):
            raise UserError(f"class {Path(files[members[0]][0]).parent.name!r} has "
                            f"{len(members)} image(s): too few to carve "
                            f"{' and '.join(fractions)} from train; add images or a "
                            f"{'/'.join(fractions)} folder")
        parts["train"] += members[start:].tolist()
    return {name: [files[i] for i in sorted(idx)] for name, idx in parts.items()}


def limit(files: Files, n: int, seed: int) -> Files:
    """At most n files, a seeded sample (not the first classes only)."""
    if n <= 0 or n >= len(files):
        return files
    keep = np.sort(np.random.default_rng(seed).permutation(len(files))[:n])
    return [files[i] for i in keep]


def identity(root: Path, files: Files, prep: Preprocessing) -> str:
    """What the content fingerprint hashes (see the module docstring)."""
    h = hashlib.sha256(repr(prep).encode())
    for path, label in files:
        st = Path(path).stat()
        h.update(f"{Path(path).relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n"
                 .encode())
    return h.hexdigest()


class _Check(torch.utils.data.Dataset):
    """Decode file i; the error text instead of raising (a clean message, not a worker's
    traceback)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str:
        try:
            image = decode_file(self.paths[i])
        except Exception as exc:  # noqa: BLE001 - whatever a decoder says of a user's file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            first = re.sub(r"^\w+\(\), \S+:\d+, ", "", first)[:160]  # C++ location
            return f"cannot read image {self.paths[i]} ({first})"
        return "" if image.shape[-1] and image.shape[-2] else f"empty image {self.paths[i]}"


def verify(paths: list[str], workers: int) -> None:
    """Decode every image once (in `workers` processes); the first unreadable one is a
    UserError."""
    loader = torch.utils.data.DataLoader(_Check(paths), batch_size=64, num_workers=workers,
                                         collate_fn=list)
    for problems in loader:
        for problem in problems:
            if problem:
                raise UserError(problem)


class FileSource:
    """Index -> the decoded image of the i-th file (picklable: runs in workers)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, i: int) -> torch.Tensor:
        return decode_file(self.paths[i])


def streamed(root: Path, files: Files, prep: Preprocessing, workers: int) -> StreamedSplit:
    labels = torch.tensor([label for _p, label in files], dtype=torch.long)
    return StreamedSplit(FileSource([p for p, _l in files]), labels, prep, workers,
                         identity(root, files, prep))


def load(cfg: DataConfig, prep: Preprocessing) -> tuple[dict[str, StreamedSplit], list[str]]:
    """The three splits and the class names of the folder `cfg.root`."""
    if not cfg.root:  # not in DataConfig: overrides are applied one key at a time
        raise UserError("data.name=imagefolder needs data.root=DIR (DIR/train/<class>/*)")
    root = Path(cfg.root).expanduser().resolve()
    classes, files = read_layout(root)
    missing = {name: getattr(cfg, f"{name}_fraction") for name in ("val", "test")
               if name not in files}
    if missing:
        files |= carve(files["train"], missing, cfg.seed)
    files["train"] = limit(files["train"], cfg.limit, cfg.seed)
    for name in SPLITS:
        if not files[name]:
            fix = "add images" if name == "train" else f"add {name}/ or raise data.{name}_fraction"
            raise UserError(f"the {name} split of {root} is empty: {fix}")
    verify([p for split in SPLITS for p, _l in files[split]], cfg.workers)
    return {name: streamed(root, files[name], prep, cfg.workers) for name in SPLITS}, classes
