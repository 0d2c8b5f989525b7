"""Size: the bytes of a model's saved state_dict, the artifact a user would ship under
`measure.runtime=torch` (the ONNX graph's bytes are `measure.runtime`'s)."""

from __future__ import annotations

import io

import torch
from torch import nn


def state_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def serialized_size(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: what a user would ship."""
    return len(state_bytes(model))
