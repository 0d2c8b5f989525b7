"""Shared fixtures: the real config with speed overrides (small model, few epochs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.config import Config, build_config

# A 2-block ViT on 600 digits: trains in ~5 s and learns (val ~45%, chance is 10%).
TINY = [
    "model.embed_dim=64",
    "model.depth=2",
    "model.num_heads=2",
    "train.epochs=15",
    "train.lr=3e-3",
    "data.limit=600",
    "measure.batch_sizes=1,8",
    "measure.warmup=2",
    "measure.repeats=5",
]


def tiny_overrides(tmp: Path, *extra: str) -> list[str]:
    return [*TINY, f"output_dir={tmp}", *extra]


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Config:
    return build_config(tiny_overrides(tmp_path))
