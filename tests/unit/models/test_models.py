from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sweeper.core.config import Config, ModelConfig, build_config
from sweeper.core.errors import UserError
from sweeper.data.loading import load_splits
from sweeper.models.baseline import _untrained_part, baseline_key, load_or_train_baseline
from sweeper.models.vit import _hub_retries_quiet, create_model, token_count
from tests.conftest import tiny_overrides
from tests.helpers.cluster import ROOT

CPU = torch.device("cpu")


def test_default_model_is_a_small_vit_with_65_tokens() -> None:
    model = create_model(Config().model, 10)
    assert token_count(model) == 65
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def own_cache(tmp: Path, *extra: str) -> list[str]:
    """These tests train and damage caches: keep them away from the shared one."""
    return tiny_overrides(tmp, *extra, f"cache_dir={tmp / 'cache'}")


def test_baseline_is_trained_once_then_loaded(tmp_path: Path) -> None:
    cfg = build_config(own_cache(tmp_path))
    splits = load_splits(cfg.data)
    logs: list[str] = []
    first = load_or_train_baseline(cfg, splits, CPU, logs.append)
    assert not first.from_cache and first.path.exists()
    assert first.val_acc > 0.2  # 25 epochs on 600 images: twice chance (0.1) at least
    second = load_or_train_baseline(cfg, splits, CPU, logs.append)
    assert second.from_cache and second.val_acc == first.val_acc
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert any("loaded from cache" in line for line in logs)


TRAIN_OR_LOAD = """
import sys, torch
from sweeper.core.config import build_config
from sweeper.data.loading import load_splits
from sweeper.models.baseline import load_or_train_baseline
cfg = build_config(sys.argv[1:])
load_or_train_baseline(cfg, load_splits(cfg.data), torch.device("cpu"))
"""


def test_sweeps_started_together_train_the_baseline_once(tmp_path: Path) -> None:
    """Two drivers on one fresh cache: one trains while the other waits, then loads."""
    args = [sys.executable, "-c", TRAIN_OR_LOAD, *own_cache(tmp_path, "train.epochs=4")]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    trained = [log for log in logs if "cached at" in log]
    loaded = [log for log in logs if "loaded from cache" in log]
    assert len(trained) == 1 and len(loaded) == 1, logs
    assert len(list((tmp_path / "cache").glob("baseline-*.pt"))) == 1


def test_cache_key_covers_what_determines_the_baseline(tmp_path: Path) -> None:
    cfg = build_config(tiny_overrides(tmp_path))
    splits = load_splits(cfg.data)
    key = baseline_key(cfg, splits)
    assert key == baseline_key(cfg, splits)
    assert key != baseline_key(dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, epochs=5)), splits)
    assert key != baseline_key(cfg, load_splits(dataclasses.replace(cfg.data, seed=3)))
    # where results and the cache go is not part of what the baseline is
    moved = dataclasses.replace(cfg, output_dir="/elsewhere", cache_dir="/shared")
    assert key == baseline_key(moved, splits)
    assert moved.resolved_cache_dir() == Path("/shared")


@pytest.mark.parametrize("damage", [b"", b"garbage" * 10, "truncate"])
def test_corrupt_cache_is_rebuilt_not_loaded(tmp_path: Path, damage: bytes | str) -> None:
    cfg = build_config(own_cache(tmp_path, "train.epochs=1"))
    splits = load_splits(cfg.data)
    first = load_or_train_baseline(cfg, splits, CPU, lambda _m: None)
    raw = first.path.read_bytes()
    first.path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else damage)
    logs: list[str] = []
    again = load_or_train_baseline(cfg, splits, CPU, logs.append)
    assert not again.from_cache
    assert any("unreadable; retraining" in line for line in logs)
    assert torch.load(again.path, weights_only=True)["key"] == again.key


@pytest.mark.parametrize("name, message", [
    ("resnet18", "'resnet18' is a ResNet, not a timm VisionTransformer"),
    ("swin_tiny_patch4_window7_224", "is a SwinTransformer, not a timm VisionTransformer"),
    ("no_such_vit", r"cannot create timm model 'no_such_vit': Unknown model"),
])
def test_a_model_that_is_not_a_vit_is_refused_before_weights_are_fetched(
        name: str, message: str) -> None:
    # pretrained: a download would be tried (and fail here, slowly) if the check came later
    cfg = dataclasses.replace(ModelConfig(), name=name, img_size=224, pretrained=True)
    with pytest.raises(UserError, match=message):
        create_model(cfg, 3)


def test_pretrained_weights_that_cannot_be_fetched_are_one_error_with_a_way_out(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    cfg = dataclasses.replace(ModelConfig(), name="vit_tiny_patch16_224", img_size=32,
                              pretrained=True)
    with pytest.raises(UserError, match="cannot load pretrained weights .*HF_HUB_OFFLINE=1"):
        create_model(cfg, 3)
    http, level = logging.getLogger("huggingface_hub.utils._http"), logging.getLogger(
        "huggingface_hub").level
    with caplog.at_level(logging.WARNING):
        with _hub_retries_quiet():
            http.warning("Retrying in 1s [Retry 1/5].")
        http.warning("after the download")
    assert "Retrying" not in caplog.text and "after the download" in caplog.text
    assert logging.getLogger("huggingface_hub").level == level  # restored
    vit = create_model(dataclasses.replace(cfg, pretrained=False), 3)
    assert type(vit).__name__ == "VisionTransformer" and vit.head.out_features == 3


def test_a_baseline_used_as_is_with_untrained_weights_is_warned_about(tmp_path: Path) -> None:
    """train.epochs=0 without model.checkpoint sweeps initial weights: the whole network, or
    a pretrained one's new head (not when the data has the pretrained head's classes)."""
    cfg = build_config(tiny_overrides(tmp_path, "train.epochs=0", f"cache_dir={tmp_path}"))
    logs: list[str] = []
    load_or_train_baseline(cfg, load_splits(cfg.data), torch.device("cpu"), logs.append)
    (warning,) = [m for m in logs if m.startswith("warning:")]
    assert "the baseline's whole network was never trained" in warning
    assert "model.checkpoint=PATH" in warning

    def untrained(*overrides: str, classes: int = 10) -> str:
        return _untrained_part(build_config(["train.epochs=0", *overrides]), classes)

    vit = ("model.name=vit_small_patch16_224", "model.pretrained=true")
    assert untrained(*vit) == "classifier head (10 classes, new)"
    assert untrained(*vit, classes=1000) == ""  # ImageNet's own head, kept
    assert untrained("model.checkpoint=ft.pt") == ""
