"""Small image folders written as real files (PNG, JPEG, WebP) for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "owl": (40, 40, 200)}


def write_image(path: Path, colour: tuple[int, int, int], seed: int,
                size: tuple[int, int] = (20, 24)) -> None:
    """A class-coloured image with noise, so classes differ and images are distinct."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-40, 40, (size[0], size[1], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def make_folder(root: Path, counts: dict[str, dict[str, int]], ext: str = "png") -> Path:
    """root/<split>/<class>/<i>.<ext> with counts[split][class] images each."""
    seed = 0
    for split, by_class in counts.items():
        for cls, n in by_class.items():
            for i in range(n):
                seed += 1
                write_image(root / split / cls / f"{i:03d}.{ext}", COLOURS[cls], seed)
    return root
