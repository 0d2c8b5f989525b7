"""timm ViT creation and the baseline: trained once, cached by a hash of what determines it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sweeper import checkpoint
from sweeper.config import Config, ModelConfig
from sweeper.data import Splits
from sweeper.errors import UserError
from sweeper.files import atomic_write, exclusive
from sweeper.train import FitSettings, accuracy, fit

CACHE_FORMAT = 2  # bump when the cache layout or training code changes meaningfully


def create_model(cfg: ModelConfig, num_classes: int) -> VisionTransformer:
    """Build the ViT. `vit_digits` needs no download; other names go through timm."""
    if cfg.name == "vit_digits":
        return VisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            num_classes=num_classes,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
        )
    _check_is_vit(cfg, num_classes)
    try:
        with _hub_retries_quiet():
            model = timm.create_model(
                cfg.name, pretrained=cfg.pretrained, num_classes=num_classes,
                img_size=cfg.img_size)
    except OSError as exc:  # weights not downloadable (offline) or not cached
        raise UserError(f"cannot load pretrained weights for {cfg.name!r}: {exc} (offline: "
                        f"put them in the Hugging Face cache and set HF_HUB_OFFLINE=1, or "
                        f"give model.checkpoint=FILE)") from None
    assert isinstance(model, VisionTransformer)  # _check_is_vit built the same class
    return model


def _check_is_vit(cfg: ModelConfig, num_classes: int) -> None:
    """Refuse a name that is not a timm VisionTransformer before any weights are fetched: the
    architecture is built on the meta device (no memory, a fraction of a second)."""
    try:
        with torch.device("meta"):
            arch = timm.create_model(cfg.name, pretrained=False, num_classes=num_classes,
                                     img_size=cfg.img_size)
    except RuntimeError as exc:  # timm's "Unknown model"
        raise UserError(f"cannot create timm model {cfg.name!r}: {exc}") from None
    except TypeError:  # its constructor has no img_size: a CNN, say
        with torch.device("meta"):
            arch = timm.create_model(cfg.name, pretrained=False, num_classes=num_classes)
    if not isinstance(arch, VisionTransformer):
        raise UserError(f"model.name={cfg.name!r} is a {type(arch).__name__}, not a timm "
                        f"VisionTransformer (vit_*, deit_* and the like)")


@contextlib.contextmanager
def _hub_retries_quiet() -> Iterator[None]:
    """Offline, huggingface_hub logs each of its ~10 retries before the error we report."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


def token_count(model: VisionTransformer) -> int:
    """Tokens each attention block sees: patches plus prefix (class/register) tokens."""
    return model.patch_embed.num_patches + model.num_prefix_tokens


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
