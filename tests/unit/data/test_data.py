from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sweeper.core.config import DataConfig
from sweeper.core.errors import UserError
from sweeper.data.loading import batches, digits_arrays, load_splits, to_input
from tests.helpers.paths import ROOT


def test_digits_splits_are_fixed_disjoint_and_rgb() -> None:
    a = load_splits(DataConfig())
    b = load_splits(DataConfig())
    assert a.fingerprint() == b.fingerprint()
    x, y = a.train.images, a.train.labels
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
    total = sum(len(p) for p in (a.train, a.val, a.test))
    assert total == 1797
    rows = {tuple(r.tolist()) for r in a.train.images.flatten(1)[:, ::7]}
    assert not rows & {tuple(r.tolist()) for r in a.test.images.flatten(1)[:, ::7]}
    assert set(y.tolist()) == set(range(10))
    assert load_splits(DataConfig(seed=1)).fingerprint() != a.fingerprint()


def test_digits_are_scikit_learns_without_importing_it() -> None:
    from sklearn.datasets import load_digits

    pixels, targets = digits_arrays()
    reference = load_digits()
    assert np.array_equal(pixels, reference.images)
    assert np.array_equal(targets, reference.target)
    probe = ("import sys; from sweeper.core.config import DataConfig; "
             "from sweeper.data.loading import load_splits; load_splits(DataConfig()); "
             "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"  # the start-up cost it avoids (about 2.5 s)


def test_limit_only_shrinks_training_split() -> None:
    full = load_splits(DataConfig())
    small = load_splits(DataConfig(limit=100))
    assert len(small.train) == 100
    assert torch.equal(small.val.images, full.val.images)
    assert torch.equal(small.test.images, full.test.images)


def test_to_input_normalises_and_resizes() -> None:
    x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = to_input(x, 48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert out.shape == (2, 3, 48, 48)
    assert torch.allclose(out, torch.ones_like(out))
    pairs = list(batches((x, torch.tensor([0, 1])), 1))
    assert len(pairs) == 2


def _write_cifar10(root: Path, n_per_batch: int) -> None:
    """A tiny CIFAR-10 in the real python on-disk format (pickled dict batches)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n_per_batch).tolist(),
            b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n_per_batch)],
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh)
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": [str(i).encode() for i in range(10)]}, fh)


def _write_cifar100(root: Path, n: int) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        batch = {
            b"fine_labels": rng.integers(0, 100, n).tolist(),
            b"coarse_labels": rng.integers(0, 20, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh)


def test_cifar10_real_format(tmp_path: Path) -> None:
    _write_cifar10(tmp_path, 20)
    splits = load_splits(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert splits.num_classes == 10
    assert len(splits.train) == 80 and len(splits.val) == 20
    assert len(splits.test) == 20
    assert splits.train.images.shape[1:] == (3, 32, 32)
    # pixel layout: row-major channel planes, as in the CIFAR format
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    assert torch.equal(splits.test.images[0, 1].flatten(),
                       torch.from_numpy(raw[b"data"][0, 1024:2048]))


def test_cifar100_real_format(tmp_path: Path) -> None:
    _write_cifar100(tmp_path, 30)
    splits = load_splits(DataConfig(name="cifar100", root=str(tmp_path)))
    assert splits.num_classes == 100
    assert len(splits.test) == 30


def test_missing_or_corrupt_cifar_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data.download=true"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path)))
    _write_cifar10(tmp_path, 5)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read cifar10"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path)))
