"""`model.checkpoint=PATH`: the user's own weights, read without unpickling code and checked
against the model before anything is written.

Accepted: a safetensors file (Hugging Face's and timm's hub format), a bare `state_dict`, or a
training checkpoint holding one under `state_dict` /
`model` (timm's train.py, torchvision's references) or, when only that is there, `model_ema` /
`state_dict_ema`; `module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes are
stripped. A Hugging Face transformers ViT (`ViTForImageClassification`, as `Trainer` saves it)
is renamed to timm's layout (sweeper.models._hf_vit). timm's checkpoints also hold its
`argparse.Namespace` of arguments: that one class is allowed through `weights_only` loading
(it only carries attributes).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweeper.core.errors import UserError
from sweeper.models import _hf_vit as hf_vit

# where training scripts keep the weights, in order of preference (EMA only when alone)
WRAPPERS = ("state_dict", "model", "model_ema", "state_dict_ema")
PREFIXES = ("module.", "_orig_mod.")
EXTRA_KEYS = ("n_averaged",)  # torch.optim.swa_utils.AveragedModel's counter, not a weight
SHOWN = 3  # keys named in an error before "+N more"


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped and with prefixes stripped."""
    p = Path(path)
    where = f"model.checkpoint={path}"
    if not p.exists():
        raise UserError(f"{where} does not exist")
    if not p.is_file():
        raise UserError(f"{where} is not a file")
    if p.stat().st_size == 0:
        raise UserError(f"{where} is empty (0 bytes)")
    if _is_safetensors(p) or p.suffix == ".safetensors":
        state = _strip(_read_safetensors(p, where))
    else:
        state = _strip(_unwrap(safe_load(p, where), where))
    return hf_vit.to_timm(state) if hf_vit.is_transformers_vit(state) else state


def safe_load(path: Path, where: str, unreadable: str = "is not a PyTorch checkpoint") -> Any:
    """torch.load(weights_only=True) of a file a user or a crash may have damaged: any
    failure is one UserError "<where> <unreadable> (why)", and torch's warnings stay quiet."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 88" on junk
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses a class it may not import: a pickled model or other objects
        found = re.search(r"(?:GLOBAL |global )?([\w.]+) was not an allowed global", str(exc)) \
            or re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise UserError(f"{where} holds Python objects, not only tensors ({found[1]}); "
                            "save model.state_dict() instead") from None
        raise UserError(f"{where} {unreadable} (torch.load cannot read it)") from None
    except Exception as exc:  # noqa: BLE001 - junk bytes fail anywhere in the unpickler
        why = _first_line(exc)
        if isinstance(exc, LookupError) or len(why) < 12:  # e.g. KeyError: 101, from junk
            why = "torch.load cannot read it"
        raise UserError(f"{where} {unreadable} ({why})") from None


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its JSON header's length (u64, little-endian), then
    the header's "{"; a torch.save file is a zip (PK) or a pickle (0x80)."""
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and \
        0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_safetensors(path: Path, where: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{where} is not a readable safetensors file ({_first_line(exc)})"
                        ) from None
    if not state:
        raise UserError(f"{where} holds no tensors")
    return state


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def _is_state(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj: object, where: str) -> dict[str, torch.Tensor]:
    if _is_state(obj):
        return obj  # type: ignore[return-value]
    if isinstance(obj, dict):
        for key in WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, dict):  # AveragedModel's counter is a tensor too: filter it
                inner = {k: v for k, v in inner.items() if k not in EXTRA_KEYS}
            if _is_state(inner):
                return inner  # type: ignore[return-value]
        keys = ", ".join(sorted(map(str, obj))[:6]) or "none"
        raise UserError(f"{where} holds no state_dict (keys: {keys}; looked for "
                        f"{' / '.join(WRAPPERS)} or a mapping of tensors)")
    raise UserError(f"{where} holds a {type(obj).__name__}, not a state_dict")


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _some(keys: list[str]) -> str:
    more = f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def load_into(model: nn.Module, path: str | Path, num_classes: int, name: str) -> nn.Module:
    """Load the checkpoint at `path` into `model` (built for `num_classes` classes) strictly;
    any missing, unexpected or resized weight is one UserError naming the first few."""
    state = read_state(path)
    where = f"model.checkpoint={path}"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    head = getattr(model, "head", None)
    head_keys = {f"head.{k}" for k, _ in head.named_parameters()} if head is not None else set()
    if not missing and not unexpected and resized and set(resized) <= head_keys:
        classes = state[resized[0]].shape[0]
        raise UserError(f"{where} has a {classes}-class head but the data has {num_classes} "
                        "classes")
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if resized:
        shapes = [f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in resized]
        problems.append(f"other shapes {_some(shapes)}")
    if problems:
        raise UserError(f"{where} does not fit model.name={name}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model


def content_hash(path: str | Path) -> str:
    """sha256 of the file's bytes: the baseline cache key covers the weights, not the path."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
