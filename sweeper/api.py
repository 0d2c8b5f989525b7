"""The Python API: `sweeper.launch(space, model=..., train=..., val=..., test=...)` and
`sweeper.resume(...)`, the same sweep as `python -m sweeper launch`, returning its outcome.

A model instance is not shipped to the workers as an object: every worker rebuilds the
baseline from `cfg.model` and a state_dict. So the instance becomes a config plus a
checkpoint: its architecture name (`pretrained_cfg["architecture"]`, set by
`timm.create_model`; a plain `VisionTransformer(...)` maps to `vit_digits` with its
dimensions), its input size, and its weights saved content-addressed in the baseline cache
(`<cache_dir>/model-<hash>.pt`, i.e. `model.checkpoint`). Before anything is written, the
rebuilt model must compute the same logits as the instance on a probe batch; a model built
with constructor options the name does not imply (global_pool, qk_norm, ...) is refused
instead of being swept as something else.

Errors are `sweeper.UserError` (the CLI's one-line errors), never SystemExit.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from timm.models.vision_transformer import VisionTransformer

from sweeper.core.config import Config, ModelConfig, build_config, config_from_dict
from sweeper.core.errors import UserError
from sweeper.core.files import atomic_write
from sweeper.core.quiet import quiet_third_party
from sweeper.core.sweep_folder import find_sweep, read_sweep_meta
from sweeper.data.datasets import splits_from_datasets
from sweeper.data.preprocess import resolve
from sweeper.models.vit import create_model
from sweeper.sweep import driver as sweep

if TYPE_CHECKING:
    from sweeper.data.loading import Splits
    from sweeper.sweep.state import SweepOutcome

Log = Callable[[str], None]
PROBE_SEED = 0
PROBE_BATCH = 2


def launch(
    space: str,
    model: VisionTransformer | None = None,
    train: Any = None,
    val: Any = None,
    test: Any = None,
    overrides: Sequence[str] = (),
    log: Log | None = print,
) -> SweepOutcome:
    """Run a sweep of `space` (a built-in name or a YAML path) and return its outcome:
    `.front` (print it for the CLI's table), `.rows`, `.baseline`, `.sweep_dir`,
    `.parent_run_id`. `model`: a timm VisionTransformer used as the baseline (with
    `train.epochs=0`, as is). `train`/`val`/`test`: torch Datasets of (image, label);
    default the config's data. `overrides`: the CLI's key=value strings."""
    if isinstance(overrides, str):  # else each character would be read as an override
        raise UserError(f"overrides= takes a list of key=value strings, e.g. [{overrides!r}]")
    cfg = build_config([f"space={space}", *overrides])
    say = _logger(cfg, log)
    if model is not None:  # its architecture first: the data's preprocessing depends on it
        cfg = dataclasses.replace(cfg, model=model_config(model, cfg.model))
    if train is None and (val is not None or test is not None):
        raise UserError("val= and test= need train= (or give none: the config's data)")
    splits = None if train is None else _from_datasets(cfg, model, train, val, test)
    # every check that needs no write: space, folders, services, data, and each technique
    # against a model of this architecture
    prep = sweep.prepare(cfg, splits=splits)
    if model is not None:
        prep = dataclasses.replace(prep, cfg=adopt_model(cfg, model, prep.splits))
        other = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()}
                       - {"float32"})
        if other:
            say(f"note: the model's weights are {', '.join(other)}; they are swept in float32 "
                "(the baseline every ratio is measured against), as the techniques and CPU "
                "kernels take them")
    return sweep.launch(prep, say)


def resume(
    ref: str,
    train: Any = None,
    val: Any = None,
    test: Any = None,
    output_dir: str = "outputs",
    log: Log | None = print,
) -> SweepOutcome | None:
    """Continue an interrupted sweep (parent run id, sweep name or folder). A sweep launched
    with its own datasets needs them again; its model is in its config already (the
    checkpoint `launch` saved). None when the sweep had finished (only MLflow is synced)."""
    cfg = build_config([f"output_dir={output_dir}"])
    splits = None
    if train is not None:
        folder = find_sweep(ref, output_dir)
        saved = config_from_dict(read_sweep_meta(folder)["config"])
        splits = _from_datasets(saved, None, train, val, test)
    return sweep.resume(ref, cfg.output_dir, _logger(cfg, log), splits=splits)


def _logger(cfg: Config, log: Log | None) -> Log:
    quiet_third_party()  # as the CLI: no deprecation or study-creation chatter
    return (lambda _m: None) if cfg.quiet or log is None else log


def _from_datasets(cfg: Config, model: VisionTransformer | None, train: Any, val: Any,
                   test: Any) -> Splits:
    """torch Datasets -> Splits (sweeper.datasets), with the sweep's one Preprocessing value
    (data.mean/std overrides, else the model's timm pretrained config)."""
    model_cfg = model_config(model, cfg.model) if model is not None else cfg.model
    return splits_from_datasets(train, val, test, resolve(cfg.data, model_cfg, instance=model),
                                workers=cfg.data.workers)


def adopt_model(cfg: Config, model: VisionTransformer, splits: Splits) -> Config:
    """`cfg` with `model` as its baseline: the model config that rebuilds it and its weights
    as `model.checkpoint`. Checked (class count, rebuild) before the one write, the
    content-addressed checkpoint in the cache folder (`sweep.prepare` has checked the rest)."""
    outputs = getattr(model.head, "out_features", None)
    if outputs != splits.num_classes:
        raise UserError(f"model has {outputs} outputs but the data has {splits.num_classes} "
                        "classes")
    model_cfg = model_config(model, cfg.model)
    # float16 / bfloat16 weights widen to float32 exactly: the baseline the workers rebuild
    state = {k: v.detach().cpu().clone().float() if v.is_floating_point()
             else v.detach().cpu().clone() for k, v in model.state_dict().items()}
    rebuilt = _rebuild(model_cfg, state, splits.num_classes)
    _same_function(model, rebuilt, model_cfg)
    path = _save(state, cfg.resolved_cache_dir())
    return dataclasses.replace(cfg, model=dataclasses.replace(model_cfg, checkpoint=str(path)))


def model_config(model: VisionTransformer, base: ModelConfig) -> ModelConfig:
    """The config that rebuilds `model`'s architecture (weights come from the checkpoint)."""
    if not isinstance(model, VisionTransformer):
        raise UserError(f"model is a {type(model).__name__}; sweeper compresses timm "
                        "VisionTransformer models")
    img = model.patch_embed.img_size
    patch = model.patch_embed.patch_size
    if img is None or img[0] != img[1] or patch[0] != patch[1]:
        raise UserError(f"model has image size {img} and patch size {patch}; sweeper "
                        "handles square images and patches")
    dims = {"img_size": int(img[0]), "patch_size": int(patch[0]),
            "embed_dim": int(model.embed_dim), "depth": len(model.blocks),
            "num_heads": int(model.blocks[0].attn.num_heads),
            "mlp_ratio": model.blocks[0].mlp.fc1.out_features / model.embed_dim}
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    name = arch or "vit_digits"  # a plain VisionTransformer(...): rebuilt from its dimensions
    try:
        return dataclasses.replace(base, name=name, pretrained=False, checkpoint=None, **dims)
    except UserError as exc:
        raise UserError(f"model cannot be described as model.name={name}: {exc}") from None


def _rebuild(model_cfg: ModelConfig, state: dict[str, torch.Tensor],
             num_classes: int) -> VisionTransformer:
    rebuilt = create_model(model_cfg, num_classes)
    missing, unexpected = _key_diff(rebuilt.state_dict(), state)
    if missing or unexpected:
        raise UserError(f"model is not what model.name={model_cfg.name} builds "
                        f"(missing {missing or 'none'}, unexpected {unexpected or 'none'}); "
                        "build it with timm.create_model(name, ...)")
    try:
        rebuilt.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or ["size mismatch"])[-1].strip()[:200]
        raise UserError(f"model is not what model.name={model_cfg.name} builds ({first})"
                        ) from None
    return rebuilt.eval()


def _key_diff(expected: dict[str, Any], given: dict[str, Any]) -> tuple[str, str]:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    return ", ".join(missing[:3]), ", ".join(unexpected[:3])


@torch.inference_mode()
def _same_function(model: VisionTransformer, rebuilt: VisionTransformer,
                   model_cfg: ModelConfig) -> None:
    """Same logits on a probe batch: the workers' rebuild is the model the user gave."""
    gen = torch.Generator().manual_seed(PROBE_SEED)
    size = model_cfg.img_size
    x = torch.randn(PROBE_BATCH, 3, size, size, generator=gen)
    was_training, first = model.training, next(model.parameters())
    if first.dtype != torch.float32:  # compared as swept: in float32 (`adopt_model`)
        model, was_training = copy.deepcopy(model).float(), False
    try:
        got = model.eval()(x.to(first.device)).float().cpu()
    finally:
        model.train(was_training)
    want = rebuilt(x)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise UserError(f"model computes other logits than model.name={model_cfg.name} with "
                        "its weights (built with options the name does not imply, e.g. "
                        "global_pool, class_token, qk_norm?); build it with "
                        "timm.create_model(name, ...) or save its state_dict and launch with "
                        "model.name=... model.checkpoint=...")


def _save(state: dict[str, torch.Tensor], cache_dir: Path) -> Path:
    """The weights as `<cache_dir>/model-<sha256>.pt` (written once: the name is the content).
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = cache_dir / f"model-{hashlib.sha256(data).hexdigest()[:16]}.pt"
    if not path.is_file() or path.stat().st_size != len(data):
        atomic_write(path, lambda fh: fh.write(data))
    return path.resolve()
