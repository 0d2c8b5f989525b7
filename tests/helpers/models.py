"""The tiny ViT the technique tests compress, the images they run it on, and the training
data a technique that trains (or calibrates) is given. Seeded: the same call gives the same
model and tensors in every test."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from sweeper.compress import TrialContext


def tiny_vit(embed_dim: int = 64, num_heads: int = 4, depth: int = 2, *, img_size: int = 32,
             mlp_ratio: float = 4.0, qkv_std: float | None = None,
             dtype: torch.dtype = torch.float32, seed: int | None = 0) -> VisionTransformer:
    """A random ViT on 32x32 images, patch 4 (64 patches and a class token), 10 classes, in
    eval mode. `qkv_std` (e.g. 0.2) gives peaked attention, as in a trained model: timm's
    init (std 0.02) makes attention nearly uniform. `seed=None` draws the weights from
    torch's global generator as it stands."""
    if seed is not None:
        torch.manual_seed(seed)
    model = VisionTransformer(img_size=img_size, patch_size=4, embed_dim=embed_dim, depth=depth,
                              num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=10)
    if qkv_std is not None:
        for blk in model.blocks:
            torch.nn.init.normal_(blk.attn.qkv.weight, std=qkv_std)
    return model.to(dtype).eval()


def images(batch: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`batch` random normalised images (float, 3x32x32)."""
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(dtype)


def train_data(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random uint8 training images (3x32x32) and their labels (10 classes)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
            torch.randint(0, 10, (n,), generator=gen))


def context(teacher: torch.nn.Module | None = None,
            train: tuple[torch.Tensor, torch.Tensor] | None = None) -> TrialContext:
    """A trial's context with training data (32 images unless `train`), batches of 16, and
    the `teacher` a distilling technique learns from."""
    return TrialContext(train=train_data() if train is None else train, batch_size=16,
                        teacher=teacher)
