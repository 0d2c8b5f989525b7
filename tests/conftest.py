"""Shared fixtures: the real config with speed overrides (small model, few epochs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.config import Config, build_config

# A 2-block ViT on 400 digits: trains in seconds on one core and still learns (val > 60%).
TINY = [
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "train.epochs=4",
    "data.limit=400",
    "measure.batch_sizes=1,8",
    "measure.warmup=2",
    "measure.repeats=5",
]


def tiny_overrides(tmp: Path, *extra: str) -> list[str]:
    return [*TINY, f"output_dir={tmp}", *extra]


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Config:
    return build_config(tiny_overrides(tmp_path))
