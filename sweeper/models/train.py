"""Training, fine-tuning and evaluation loops (plain PyTorch)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sweeper.data.preprocess import Preprocessing
from sweeper.data.split import Pair, Split, as_split


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    augment: bool = True
    seed: int = 0
    kd_alpha: float = 0.0  # weight of the soft-target loss when a teacher is given
    kd_temperature: float = 4.0


def random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `pad` pixels (zero fill): cheap augmentation for uint8."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    # A per-image crop: the loop runs over one mini-batch, cheap next to the model step.
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton soft-target loss, scaled by T^2 so its gradient size does not depend on T."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
        reduction="batchmean", log_target=True,
    ) * (t * t)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """torch's deterministic algorithms for the block (warn where none exists): training
    runs are then bitwise repeatable for a seed on one machine."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def fit(
    model: nn.Module,
    train: Split | Pair,
    settings: FitSettings,
    preprocessing: Preprocessing,
    device: torch.device,
    teacher: nn.Module | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """AdamW with linear warm-up and cosine decay; optional distillation from `teacher`."""
    if settings.epochs <= 0:
        return model
    train = as_split(train)
    with deterministic_algorithms():
        gen = torch.Generator().manual_seed(settings.seed)
        torch.manual_seed(settings.seed)
        model.to(device).train()
        if teacher is not None:
            teacher.to(device).eval()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        sched = warmup_cosine(opt, settings.epochs, math.ceil(len(train) / settings.batch_size),
                              settings.warmup_epochs)
        for epoch in range(settings.epochs):
            running, seen = 0.0, 0
            for xb, yb in train.batches(settings.batch_size, shuffle=True, generator=gen):
                if settings.augment:
                    xb = random_shift(xb, 2, gen)
                loss = _loss(model, teacher, preprocessing.to_input(xb, device), yb.to(device),
                             settings)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                running += loss.item() * len(yb)
                seen += len(yb)
            if on_epoch is not None:
                on_epoch(epoch, running / max(1, seen))
        return model.eval()


def warmup_cosine(opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                  warmup_epochs: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_epochs`, then cosine decay to zero, stepped per batch."""
    total = epochs * steps_per_epoch
    warm = max(1, int(warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def _loss(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
          settings: FitSettings) -> torch.Tensor:
    """Label-smoothed cross-entropy, mixed with soft distillation from `teacher` if given."""
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
    if teacher is not None and settings.kd_alpha > 0:
        with torch.no_grad():
            t_logits = teacher(x)
        soft = kd_loss(logits, t_logits, settings.kd_temperature)
        loss = (1 - settings.kd_alpha) * loss + settings.kd_alpha * soft
    return loss


@torch.inference_mode()
def predict(
    model: nn.Module,
    data: Split | Pair,
    preprocessing: Preprocessing,
    device: torch.device,
    batch_size: int = 256,
) -> torch.Tensor:
    model.eval()
    out = []
    for xb, _ in as_split(data).batches(batch_size):
        out.append(model(preprocessing.to_input(xb, device)).argmax(-1).cpu())
    return torch.cat(out)


def accuracy(
    model: nn.Module,
    data: Split | Pair,
    preprocessing: Preprocessing,
    device: torch.device,
    batch_size: int = 256,
) -> float:
    data = as_split(data)
    pred = predict(model, data, preprocessing, device, batch_size)
    return float((pred == data.labels).float().mean())
