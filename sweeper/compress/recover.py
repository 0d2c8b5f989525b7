"""Recovery: fine-tune the compressed model on the training split, optionally distilling
from the uncompressed baseline (soft targets at temperature T, weight alpha)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sweeper.compress import TechniqueConfig, TrialContext, param, register
from sweeper.core.checks import check_float, check_int
from sweeper.models.train import FitSettings, fit


@dataclass(frozen=True)
class RecoverConfig(TechniqueConfig):
    epochs: int = param(0, short="ep", no_op=0)
    lr: float = param(5e-4, quiet=True)
    # 0: plain fine-tuning; >0: distil from the baseline teacher
    kd_alpha: float = param(0.0, short="kd", quiet=True)
    kd_temperature: float = param(4.0, short="T", quiet=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("epochs", self.epochs, 0, 1000)
        check_float("lr", self.lr, 0, 1, low_open=True)
        check_float("kd_alpha", self.kd_alpha, 0, 1)
        check_float("kd_temperature", self.kd_temperature, 0, 1000, low_open=True)


@register("recover", "recover", RecoverConfig, example=RecoverConfig(epochs=1))
def apply(model: nn.Module, cfg: RecoverConfig, ctx: TrialContext) -> nn.Module:
    if cfg.epochs == 0 or ctx.structure_only:
        return model
    if ctx.train is None:
        raise ValueError("recover needs training data in the trial context")
    teacher = ctx.teacher if cfg.kd_alpha > 0 else None
    if cfg.kd_alpha > 0 and teacher is None:
        raise ValueError("recover.kd_alpha > 0 needs the baseline as teacher")
    settings = FitSettings(
        epochs=cfg.epochs,
        batch_size=ctx.batch_size,
        lr=cfg.lr,
        weight_decay=ctx.weight_decay,
        warmup_epochs=min(1.0, cfg.epochs / 4),
        seed=ctx.seed,
        kd_alpha=cfg.kd_alpha,
        kd_temperature=cfg.kd_temperature,
    )
    ctx.notes["recover_epochs"] = cfg.epochs
    return fit(model, ctx.train, settings, ctx.preprocessing, ctx.device, teacher=teacher,
               on_epoch=ctx.epoch_hook(model, cfg.epochs))
