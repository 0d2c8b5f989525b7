"""Preprocessing as one value: how an image becomes the model's input.

Built once per sweep (`resolve`) and passed whole to training, evaluation, calibration,
distillation, ONNX Runtime and export (which writes it next to the graph and reads it back).
The fields are timm's `resolve_data_config` ones: input size, mean, std, interpolation and
crop_pct.

Where the numbers come from, first match wins:
1. `data.mean` / `data.std` / `data.interpolation` / `data.crop_pct` when given;
2. the dataset's own statistics (digits, CIFAR): the values baselines were always trained with;
3. the timm model's pretrained config (`timm.data.resolve_data_config`), for image folders;
4. timm's defaults (ImageNet mean/std) when the model has no pretrained config.
The input size is always `model.img_size`: the model is built at that size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sweeper.core.config import INTERPOLATIONS, DataConfig, ModelConfig
from sweeper.core.errors import UserError

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Preprocessing:
    img_size: int
    mean: RGB
    std: RGB
    interpolation: str = "bilinear"
    crop_pct: float = 1.0  # image files: resize the short side to img_size / crop_pct, crop

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r}; valid: "
                             f"{', '.join(INTERPOLATIONS)}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct={self.crop_pct} out of range (0, 1]")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean {self.mean} / std {self.std}: three values, std > 0")

    def to_input(self, x: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 [B,3,H,W] -> normalised float on `device`, resized to img_size if needed."""
        x = x.to(device, non_blocking=True).float().div_(255.0)
        size = self.img_size
        if x.shape[-1] != size or x.shape[-2] != size:
            align = None if self.interpolation == "nearest" else False
            x = F.interpolate(x, size=(size, size), mode=self.interpolation, align_corners=align)
        m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - m) / s

    def fit_image(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 [3,H,W] image of any size -> uint8 [3,img_size,img_size] as timm's eval
        transform: short side resized to img_size / crop_pct, then the centre cropped."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        size = self.img_size
        if image.shape[-2:] != (size, size):
            scale = math.floor(size / self.crop_pct)
            image = TF.resize(image, [scale], interpolation=InterpolationMode(self.interpolation),
                              antialias=True)
            image = TF.center_crop(image, [size, size])
        return image.contiguous()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(int(data["img_size"]), _rgb(data["mean"]), _rgb(data["std"]),
                   str(data.get("interpolation", "bilinear")),
                   float(data.get("crop_pct", 1.0)))


def _rgb(values: Any) -> RGB:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def model_config(model: Any = None, name: str | None = None) -> dict[str, Any]:
    """timm's data config of a model instance, or of a model name's pretrained config
    (no weights are loaded); {} when there is none (the embedded vit_digits)."""
    from timm.data import resolve_data_config

    if model is not None:
        if getattr(model, "pretrained_cfg", None) is None:
            return {}
        return resolve_data_config({}, model=model)
    if not name or name == "vit_digits":
        return {}
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        cfg = None
    return resolve_data_config({}, pretrained_cfg=cfg.to_dict()) if cfg is not None else {}


def resolve(
    data: DataConfig,
    model: ModelConfig,
    dataset_stats: tuple[RGB, RGB] | None = None,
    instance: Any = None,
) -> Preprocessing:
    """The sweep's preprocessing (order of precedence in the module docstring).
    `dataset_stats`: (mean, std) a built-in dataset defines; `instance`: a model object
    whose pretrained config to use instead of `model.name`'s."""
    if dataset_stats is not None:
        return Preprocessing(model.img_size, data.mean or dataset_stats[0],
                             data.std or dataset_stats[1], data.interpolation or "bilinear",
                             data.crop_pct or 1.0)
    timm_cfg = model_config(instance, model.name)
    if not timm_cfg:  # timm's defaults: ImageNet statistics, its default crop
        from timm.data import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        timm_cfg = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                    "interpolation": "bicubic", "crop_pct": DEFAULT_CROP_PCT}
    try:
        return Preprocessing(
            img_size=model.img_size,
            mean=data.mean or _rgb(timm_cfg["mean"]),
            std=data.std or _rgb(timm_cfg["std"]),
            interpolation=data.interpolation or str(timm_cfg.get("interpolation", "bicubic")),
            crop_pct=data.crop_pct or float(timm_cfg.get("crop_pct", 1.0)),
        )
    except ValueError as exc:
        raise UserError(f"model {model.name!r}: unusable preprocessing ({exc})") from None
