"""timm ViT creation: a Vision Transformer by name (pretrained weights or a user
checkpoint), its token count and parameter count."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sweeper.core.config import ModelConfig
from sweeper.core.errors import UserError


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
