"""Shared fixtures: the real config with speed overrides (small model, few epochs)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from sweeper.cluster.resources import driver_threads
from sweeper.core.config import Config, build_config, layered
from sweeper.data.loading import Splits, load_splits
from sweeper.models.baseline import Baseline, load_or_train_baseline

# pytest-xdist workers share the cores: give each its share of torch threads, here and in every
# process it starts (sweep drivers, Ray heads and their workers inherit OMP_NUM_THREADS). With
# torch's default of a thread per core in each, their OpenMP threads spin against each other:
# two tiny-ViT trainings side by side on 2 cores took 40-58 s each at 2 threads, 8 s at 1.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    _SHARE = max(1, driver_threads() // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_SHARE)
    torch.set_num_threads(_SHARE)

# A 2-block ViT on 600 digits: trains in ~8 s and learns (val ~40%, chance is 10%).
TINY = [
    "model.embed_dim=64",
    "model.depth=2",
    "model.num_heads=2",
    "train.epochs=25",
    "train.lr=3e-3",
    "data.limit=600",
    "measure.batch_sizes=1,8",
    "measure.warmup=2",
    "measure.repeats=5",
    "measure.max_seconds=0",  # the minimum rounds of pairs, no more: about 1.2 s less per trial
    "registry=false",  # an ONNX export per front member; tests/test_menu.py turns it on
    # spaces whose every trial trains would stop some at rungs; test_early_stop_e2e turns it on
    "search.early_stop=off",
]


# One baseline cache for the whole session: each tiny config trains once, then every test
# (and every subprocess sweep) loads it. The cache is keyed by content, so sharing is safe.
SHARED_CACHE = Path(tempfile.gettempdir()) / f"sweeper-test-cache-{os.getuid()}"


def tiny_overrides(tmp: Path, *extra: str) -> list[str]:
    """The tiny settings with `extra` on top; a key in `extra` replaces the tiny one (the CLI
    refuses a key given twice)."""
    return layered(*TINY, f"output_dir={tmp}", f"cache_dir={SHARED_CACHE}", *extra)


@dataclass(frozen=True)
class Shared:
    """What plain sweep tests share, measured on the 2-core EPYC: a Ray head they attach to
    (a sweep starting its own Ray spends ~7 s starting and stopping it) and a migrated, empty
    MLflow store copied into each output folder (a fresh SQLite store costs ~3 s of
    migrations). A 2-trial sweep of no-op trials: 35 s alone, 20 s with both. Fault, outage
    and stack tests keep their own Ray, which they kill."""

    ray_address: str
    mlflow_db: Path

    def overrides(self, tmp: Path, *extra: str) -> list[str]:
        tmp.mkdir(parents=True, exist_ok=True)
        if not (tmp / "mlflow.db").exists():
            shutil.copyfile(self.mlflow_db, tmp / "mlflow.db")
        return tiny_overrides(tmp, f"ray.address={self.ray_address}", *extra)

    @property
    def env(self) -> dict[str, str]:
        from tests.helpers.cluster import ray_env

        return ray_env()


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    from mlflow.tracking import MlflowClient

    from tests.helpers.cluster import LoopbackCluster

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # creates and migrates the store
    head = LoopbackCluster(with_worker=False, head_cpus=2)
    try:
        head.start()
        yield Shared(head.address, db)
    finally:
        head.stop()


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Config:
    return build_config(tiny_overrides(tmp_path))


def sweep_study_storage(sweep_folder: Path) -> Any:
    """The Optuna storage a sweep folder's study lives in, as the driver opens it."""
    from sweeper.search import optuna_storage

    return optuna_storage(build_config([]), sweep_folder)


CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass(frozen=True)
class DefaultBaseline:
    cfg: Config
    splits: Splits
    baseline: Baseline  # deep-copy baseline.model before changing it


@pytest.fixture(scope="session")
def default_baseline() -> DefaultBaseline:
    """The embedded default (digits, 4-block ViT, ~97% val) trained once, ~75 s on 2 cores;
    cached under tests/.cache by content hash, so later sessions only load it."""
    cfg = build_config([f"output_dir={CACHE}"])
    splits = load_splits(cfg.data, cfg.output_dir)
    base = load_or_train_baseline(cfg, splits, torch.device("cpu"), log=lambda _msg: None)
    return DefaultBaseline(cfg, splits, base)
