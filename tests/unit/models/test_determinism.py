"""The same seed on the same machine trains bitwise-identical baseline weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from sweeper.core.config import build_config
from sweeper.data.loading import load_splits
from sweeper.models.baseline import load_or_train_baseline
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # trains the tiny baseline three times (~10 s each)


def _state_hash(tmp: Path, seed: int) -> str:
    cfg = build_config([*TINY, "train.epochs=4", f"train.seed={seed}", f"output_dir={tmp}",
                        f"cache_dir={tmp / 'cache'}"])
    splits = load_splits(cfg.data, cfg.output_dir)
    base = load_or_train_baseline(cfg, splits, torch.device("cpu"), log=lambda _m: None)
    assert not base.from_cache
    digest = hashlib.sha256()
    for name, tensor in sorted(base.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_same_seed_trains_identical_weights_whatever_ran_before(tmp_path: Path) -> None:
    first = _state_hash(tmp_path / "a", seed=0)
    torch.rand(1000)  # the process drew random numbers in between (as Ray or data code do)
    assert _state_hash(tmp_path / "b", seed=0) == first
    assert _state_hash(tmp_path / "c", seed=1) != first
