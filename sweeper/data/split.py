"""A split of labelled images: the one interface every loop (training, evaluation,
calibration, distillation, ONNX Runtime) reads data through.

- `TensorSplit`: uint8 images held in memory (digits, CIFAR), batches sliced from a tensor.
- `StreamedSplit`: images decoded from disk (an image folder) or read from a user's torch
  Dataset by a DataLoader with worker processes, batch by batch; only the labels are held.

Both hand out uint8 [B,3,S,S] batches at the preprocessing's size and the same index order for
the same generator, so every loop above them is written once. Each batch is computed under the
node lock's shared side (sweeper.node_lock): it waits while another trial on this node measures
latency. A streamed split's workers decode ahead of the lock, at most `prefetch` batches each.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from sweeper.core import node_lock
from sweeper.data.preprocess import Preprocessing

Pair = tuple[torch.Tensor, torch.Tensor]
Indexed = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (indices, images, labels)
PREFETCH = 2  # batches each worker decodes ahead


class Split(Protocol):
    labels: torch.Tensor  # int64 [N], always in memory

    def __len__(self) -> int: ...

    def indexed(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Indexed]: ...

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Pair]: ...

    def take(self, idx: torch.Tensor) -> torch.Tensor: ...

    def feed(self, h: Any) -> None: ...


def index_chunks(n: int, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None) -> list[torch.Tensor]:
    """The batches' indices: a permutation drawn from `generator` when shuffling."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return [order[start : start + batch_size] for start in range(0, n, batch_size)]


class _Batches:
    """`batches` in terms of `indexed`: the pairs without the indices."""

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Pair]:
        for _idx, x, y in self.indexed(batch_size, shuffle, generator):  # type: ignore[attr-defined]
            yield x, y


@dataclass(frozen=True)
class TensorSplit(_Batches):
    images: torch.Tensor  # uint8 [N,3,H,W]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def indexed(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Indexed]:
        # the permutation is drawn on the first next(), as the callers' other draws expect
        for idx in index_chunks(len(self.labels), batch_size, shuffle, generator):
            with node_lock.computing():  # held until the caller asks for the next batch
                yield idx, self.images[idx], self.labels[idx]

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]

    def feed(self, h: Any) -> None:
        h.update(self.images.numpy().tobytes())
        h.update(self.labels.numpy().tobytes())

    def limit(self, n: int) -> TensorSplit:
        return self if n <= 0 else TensorSplit(self.images[:n], self.labels[:n])


def as_split(data: Split | Pair) -> Split:
    """An (images, labels) pair as an in-memory split; a split as it is."""
    if isinstance(data, tuple):
        return TensorSplit(*data)
    return data


def batches(data: Split | Pair, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[Pair]:
    return as_split(data).batches(batch_size, shuffle, generator)


class _Fitted(torch.utils.data.Dataset):
    """Item i of `source` (a callable index -> image) as uint8 [3,S,S] (runs in a worker)."""

    def __init__(self, source: Callable[[int], Any], prep: Preprocessing, n: int) -> None:
        self.source, self.prep, self.n = source, prep, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.prep.fit_image(to_uint8(self.source(i)))


class StreamedSplit(_Batches):
    """Images read on demand by `source(i)` in DataLoader workers, fitted to the
    preprocessing's size; `identity`: what the content hash is made of (see `feed`)."""

    def __init__(self, source: Callable[[int], Any], labels: torch.Tensor,
                 preprocessing: Preprocessing, workers: int, identity: str) -> None:
        self.source, self.labels = source, labels
        self.preprocessing, self.workers, self.identity = preprocessing, workers, identity

    def __len__(self) -> int:
        return len(self.labels)

    def indexed(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Indexed]:
        chunks = index_chunks(len(self.labels), batch_size, shuffle, generator)
        if not chunks:
            return
        loader = torch.utils.data.DataLoader(
            _Fitted(self.source, self.preprocessing, len(self)),
            batch_sampler=[c.tolist() for c in chunks], num_workers=self.workers,
            collate_fn=torch.stack, prefetch_factor=PREFETCH if self.workers else None,
        )
        for idx, images in zip(chunks, loader, strict=True):
            with node_lock.computing():
                yield idx, images, self.labels[idx]

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        fitted = _Fitted(self.source, self.preprocessing, len(self))
        return torch.stack([fitted[int(i)] for i in idx])

    def feed(self, h: Any) -> None:
        h.update(self.identity.encode())


def to_uint8(image: Any) -> torch.Tensor:
    """A PIL image, a uint8 [C,H,W] tensor or a float one in 0..1 -> uint8 [3,H,W] RGB."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            hint = ": an [H,W,C] image needs .permute(2, 0, 1)" if (
                image.dim() == 3 and image.shape[-1] in (1, 3)) else ""
            raise ValueError(f"an image tensor must be [C,H,W] with C 1 or 3, got "
                             f"{tuple(image.shape)}{hint}")
        if image.dtype.is_floating_point:
            lo, hi = float(image.min()), float(image.max())
            if lo < 0 or hi > 1:
                raise ValueError(f"a float image tensor must hold 0..1 (ToTensor's range), got "
                                 f"{lo:.3g}..{hi:.3g}: give it before normalising")
            image = image.mul(255).round().to(torch.uint8)
        elif image.dtype != torch.uint8:
            raise ValueError(f"an image tensor must be uint8 or float, got {image.dtype}")
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image
    if hasattr(image, "convert"):  # PIL
        from torchvision.transforms.v2.functional import pil_to_tensor

        return pil_to_tensor(image.convert("RGB"))
    hint = (" (an [H,W,C] array: torch.from_numpy(a).permute(2, 0, 1))"
            if type(image).__module__ == "numpy" else "")
    raise ValueError(f"an image must be a PIL image or a [C,H,W] tensor, got "
                     f"{type(image).__name__}{hint}")


# what torchvision's ImageFolder reads besides these: Pillow decodes them (torchvision's own
# decoders read only JPEG, PNG, WebP, GIF and AVIF/HEIC)
PIL_ONLY = (".bmp", ".ppm", ".pgm", ".tif", ".tiff")


def decode_file(path: str) -> torch.Tensor:
    """An image file -> uint8 [3,H,W] RGB: JPEG, PNG and WebP with torchvision's decoders,
    BMP, PPM/PGM and TIFF with Pillow. A 16-bit image is scaled to 0..255, not clipped."""
    if path.lower().endswith(PIL_ONLY):
        return _decode_with_pillow(path)
    from torchvision.io import ImageReadMode, decode_image

    with warnings.catch_warnings():  # torchvision 0.29 flags its decoders for a later move
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_image(path, mode=ImageReadMode.RGB)
    if image.dtype != torch.uint8:  # a 16-bit PNG decodes to uint16: scaled, not clipped
        from torchvision.transforms.v2.functional import to_dtype

        image = to_dtype(image, torch.uint8, scale=True)
    return image


def _decode_with_pillow(path: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grey (TIFF, PGM)
            deep = np.asarray(img, dtype=np.int64).clip(0, 65535)
            grey = torch.from_numpy((deep >> 8).astype(np.uint8))  # as torchvision scales
            return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
        if img.mode == "F":
            raise ValueError("a floating-point image; save it as 8- or 16-bit")
        rgb = np.asarray(img.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()
