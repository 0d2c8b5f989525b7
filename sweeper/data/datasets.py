"""`splits_from_datasets`: a user's torch Datasets as the sweep's splits (the Python API).

Each dataset yields (image, label): image a PIL image, a uint8 [C,H,W] tensor or a float one
in 0..1 (before normalising: the sweep normalises with its preprocessing), label a class
index (an int, a numpy integer or a one-element tensor).
They are streamed like an image folder: a DataLoader with workers reads batches on demand.

One pass over every dataset at the start reads the labels, checks each image and hashes the
fitted pixels (the content fingerprint of the baseline cache key: a Python object has no
cheaper identity that survives a restart). The datasets must be picklable (they travel to
Ray's workers) and deterministic (the same index, the same image).
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import Any

import torch

from sweeper.core.errors import UserError
from sweeper.data.loading import Splits
from sweeper.data.preprocess import Preprocessing
from sweeper.data.split import StreamedSplit, to_uint8

NAMES = ("train", "val", "test")


class DatasetSource:
    """Index -> the image of the dataset's i-th item (picklable: runs in workers)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, i: int) -> Any:
        return self.dataset[i][0]


class _Scan(torch.utils.data.Dataset):
    """Item i as (fitted uint8 image, label), or the error text for it."""

    def __init__(self, dataset: Any, prep: Preprocessing) -> None:
        self.dataset, self.prep = dataset, prep

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            item = self.dataset[i]
        except Exception as exc:  # the user's code: any failure is theirs to see, by item
            return None, -1, f"item {i} could not be read ({type(exc).__name__}: {exc})"
        try:
            image, label = pair(item)
            return self.prep.fit_image(to_uint8(image)), label_of(label), ""
        except (ValueError, TypeError, RuntimeError, OSError) as exc:
            return None, -1, f"item {i}: {exc}"


def pair(item: Any) -> tuple[Any, Any]:
    """(image, label) of one item; anything else (a dict, a triple) is named."""
    if not isinstance(item, tuple | list) or len(item) != 2:
        shape = f"{len(item)} values" if isinstance(item, tuple | list) else type(item).__name__
        raise ValueError(f"an item must be an (image, label) pair, got {shape}")
    return item[0], item[1]


def label_of(label: Any) -> int:
    """A class index: an int, a numpy integer or a one-element tensor holding a whole number
    (not a class name, a one-hot vector or a fraction, which int() would silently floor)."""
    value = label
    if hasattr(label, "item") and hasattr(label, "shape"):  # a tensor, a numpy value
        if math.prod(label.shape) != 1:
            raise ValueError(f"a label must be a class index (0, 1, ...), got a tensor of "
                             f"shape {tuple(label.shape)}")
        value = label.item()
    if not isinstance(value, int | float) or not float(value).is_integer():
        raise ValueError(f"a label must be a class index (0, 1, ...), got {label!r}")
    return int(value)


def _collate(items: list[tuple[torch.Tensor | None, int, str]]) -> list:
    return items


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


def travels(name: str, dataset: Any) -> None:
    """Ray sends the datasets to its workers with cloudpickle. One that cannot be pickled (an
    open file, a lock, a database connection held from __init__) is named here, before
    anything is written, not by Ray once the sweep has begun. The bytes are discarded as they
    are made: a dataset held in memory costs a pass, not a copy."""
    from ray import cloudpickle

    try:
        cloudpickle.CloudPickler(_Discard(), protocol=5).dump(dataset)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(f"the {name} dataset cannot be sent to Ray's workers "
                        f"({type(exc).__name__}: {first}): a Dataset must pickle; open files, "
                        "locks and connections in __getitem__, not __init__") from None


def scan(name: str, dataset: Any, prep: Preprocessing, workers: int) -> tuple[torch.Tensor, str]:
    """Labels and content hash of one dataset, every item read once."""
    try:
        n = len(dataset)
    except TypeError:
        raise UserError(f"{name}: a dataset needs a length (a map-style torch Dataset)") from None
    if n == 0:
        raise UserError(f"{name}: the dataset is empty")
    travels(name, dataset)
    h = hashlib.sha256(repr(prep).encode())
    labels: list[int] = []
    loader = torch.utils.data.DataLoader(_Scan(dataset, prep), batch_size=64,
                                         num_workers=workers, collate_fn=_collate)
    for batch in loader:
        for image, label, problem in batch:
            if problem:
                raise UserError(f"{name} dataset, {problem}")
            h.update(image.numpy().tobytes())
            labels.append(label)
    return torch.tensor(labels, dtype=torch.long), h.hexdigest()


def splits_from_datasets(
    train: Any, val: Any, test: Any, preprocessing: Preprocessing, workers: int = 2,
    classes: list[str] | None = None,
) -> Splits:
    """The sweep's splits over three torch Datasets (see the module docstring). The class
    count is `len(classes)` when given, else one more than the largest label."""
    parts, labels = {}, []
    for name, dataset in zip(NAMES, (train, val, test), strict=True):
        y, ident = scan(name, dataset, preprocessing, workers)
        labels.append(y)
        parts[name] = StreamedSplit(DatasetSource(dataset), y, preprocessing, workers, ident)
    low = min(int(y.min()) for y in labels)
    num_classes = len(classes) if classes else max(int(y.max()) for y in labels) + 1
    if low < 0 or max(int(y.max()) for y in labels) >= num_classes:
        raise UserError(f"labels must lie in 0..{num_classes - 1}")
    if num_classes < 2:
        raise UserError(f"the data has {num_classes} class: a classifier needs at least 2")
    missing = sorted(set(torch.cat(labels[1:]).tolist()) - set(labels[0].tolist()))
    if missing:
        raise UserError(f"label(s) {missing[:5]} appear in val/test but not in train: every "
                        f"class needs training images")
    return Splits(parts["train"], parts["val"], parts["test"], num_classes, preprocessing,
                  tuple(classes or ()))
