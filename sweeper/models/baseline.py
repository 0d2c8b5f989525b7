"""The baseline: the user's model fine-tuned once (or used as is), cached by a hash of
everything that determines its weights, under an exclusive lock beside the cache file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sweeper.core.config import Config, ModelConfig
from sweeper.core.files import atomic_write, exclusive
from sweeper.data.loading import Splits
from sweeper.models import checkpoint
from sweeper.models.train import FitSettings, accuracy, fit
from sweeper.models.vit import create_model

CACHE_FORMAT = 2  # bump when the cache layout or training code changes meaningfully


def checkpoint_hash(cfg: ModelConfig) -> str | None:
    return checkpoint.content_hash(cfg.checkpoint) if cfg.checkpoint else None


def baseline_key(cfg: Config, splits: Splits) -> str:
    """Hash of everything that determines the baseline's weights."""
    payload = {
        "format": CACHE_FORMAT,
        # the checkpoint's bytes, not its path, determine the weights
        "model": dataclasses.asdict(cfg.model) | {"checkpoint": checkpoint_hash(cfg.model)},
        "train": dataclasses.asdict(cfg.train),
        "data": splits.fingerprint(),
        "torch": torch.__version__.split("+")[0],
        "timm": timm.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Baseline:
    model: VisionTransformer
    val_acc: float
    key: str
    path: Path
    from_cache: bool
    train_seconds: float


def _load_cached(path: Path, model: nn.Module) -> dict | None:
    """The cached payload, or None when missing or unreadable (then it is rebuilt)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(payload["state_dict"])
        return payload
    except Exception:  # corrupt, truncated or from another layout: rebuild, never trust it
        return None


def _untrained_part(cfg: Config, num_classes: int) -> str:
    """What of a baseline used as is (train.epochs=0) holds initial weights: '' when nothing."""
    if cfg.model.checkpoint:
        return ""
    if not cfg.model.pretrained:
        return "whole network"
    import timm

    pretrained = timm.models.get_pretrained_cfg(cfg.model.name)
    head = getattr(pretrained, "num_classes", None)
    return "" if head == num_classes else f"classifier head ({num_classes} classes, new)"


def _train(model: nn.Module, cfg: Config, splits: Splits, device: torch.device,
           log: Callable[[str], None]) -> None:
    """The baseline's training (train.epochs=0: the weights as they are), logging 8 times."""
    t = cfg.train
    settings = FitSettings(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                           weight_decay=t.weight_decay, label_smoothing=t.label_smoothing,
                           warmup_epochs=min(3.0, max(1.0, t.epochs / 10)), seed=t.seed)
    every = max(1, t.epochs // 8)

    def on_epoch(epoch: int, loss: float) -> None:
        if (epoch + 1) % every == 0 or epoch + 1 == t.epochs:
            log(f"baseline: epoch {epoch + 1}/{t.epochs} loss {loss:.3f}")

    if t.epochs == 0:
        log(f"baseline: {cfg.model.checkpoint or 'initial weights'} used as is (train.epochs=0)")
        untrained = _untrained_part(cfg, splits.num_classes)
        if untrained:
            log(f"warning: the baseline's {untrained} was never trained, so it and every trial "
                "score at chance: give your fine-tuned weights (model.checkpoint=PATH) or "
                "fine-tune first (train.epochs=N)")
    else:
        log(f"baseline: training {cfg.model.name} for {t.epochs} epochs on {device}")
    fit(model, splits.train, settings, splits.preprocessing, device, on_epoch=on_epoch)


def load_or_train_baseline(
    cfg: Config,
    splits: Splits,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> Baseline:
    key = baseline_key(cfg, splits)
    path = cfg.resolved_cache_dir() / f"baseline-{key}.pt"
    # The initial weights come from torch's global generator: seed it here, or whatever the
    # process drew before (Ray, data loading) changes the baseline from run to run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = create_model(cfg.model, splits.num_classes)
    if cfg.model.checkpoint:
        checkpoint.load_into(model, cfg.model.checkpoint, splits.num_classes, cfg.model.name)
    # Sweeps started together on one cache: the first trains, the others wait for it and
    # load, instead of each training the same baseline.
    with exclusive(path.with_name(f"{path.name}.lock")):
        payload = _load_cached(path, model)
        if payload is not None:
            log(f"baseline: loaded from cache {path} (val acc {payload['val_acc']:.2%})")
            return Baseline(model.eval(), float(payload["val_acc"]), key, path, True, 0.0)
        if path.exists():
            log(f"baseline: cache {path} is unreadable; retraining")

        start = time.perf_counter()
        _train(model, cfg, splits, device, log)
        model.cpu().eval()
        val_acc = accuracy(model, splits.val, splits.preprocessing, torch.device("cpu"))
        seconds = time.perf_counter() - start
        payload = {"state_dict": model.state_dict(), "val_acc": val_acc, "key": key}
        atomic_write(path, lambda fh: torch.save(payload, fh))
    log(f"baseline: val acc {val_acc:.2%} after {seconds:.0f}s, cached at {path}")
    return Baseline(model, val_acc, key, path, False, seconds)
