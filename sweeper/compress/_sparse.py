"""Unstructured magnitude pruning with real zeros, and sparse storage when it saves bytes.

Pruned Linear layers stay plain `nn.Linear` (any later technique, e.g. int8 quantization,
still recognises them) with exact zeros in `weight`; no mask is kept. Two hooks are attached:

- a gradient hook zeroes the gradient wherever the weight is zero, so a later fine-tune
  (recover / distill) keeps the pruned weights at exactly zero: with a zero gradient from the
  first step, AdamW's moments and update stay zero and decoupled weight decay keeps 0 at 0;
- a state_dict hook stores the weight as a bitmask (1 bit per weight) plus the non-zero
  values, but only for a tensor where that is smaller than dense, counting the extra tensor
  record of torch.save; a load hook restores the dense weight. The bitmask beats index lists
  (CSR) at the sparsities pruning uses: 1 bit per weight against >= 16 bits per kept weight.

Dense matmuls still run at inference, so unstructured pruning changes size, not latency.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
RECORD_BYTES = 512  # torch.save cost of one more tensor (zip entry, header, 64-byte alignment)
MASK, VALUES = "weight_bitmask", "weight_values"
KEEPS = "_sweeper_keeps_zeros"  # marks a Parameter whose gradient hook is attached


def magnitude_prune_(layer: nn.Linear, ratio: float) -> torch.Tensor:
    """Zero the round(ratio * n) smallest-magnitude weights of `layer` (per layer), in place.

    Returns the importance scores |w| (before pruning) for the histogram artifact.
    """
    w = layer.weight
    scores = w.detach().abs().reshape(-1).float().cpu()
    k = round(ratio * scores.numel())
    if k:
        # A stable sort breaks ties by position: the same weights go on every run.
        drop = torch.sort(scores, stable=True).indices[:k].to(w.device)
        with torch.no_grad():
            w.view(-1)[drop] = 0
    return scores


def packed_bytes(numel: int, nonzero: int, element_size: int) -> int:
    return (numel + 7) // 8 + nonzero * element_size + RECORD_BYTES


def saves_bytes(weight: torch.Tensor) -> bool:
    nonzero = int(torch.count_nonzero(weight))
    return packed_bytes(weight.numel(), nonzero, weight.element_size()) < (
        weight.numel() * weight.element_size()
    )


def pack(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = weight.detach().reshape(-1)
    mask = flat != 0
    pad = (-mask.numel()) % 8
    bits = torch.cat([mask, mask.new_zeros(pad)]).reshape(-1, 8).to(torch.uint8)
    packed = (bits * BITS.to(bits.device)).sum(dim=1, dtype=torch.uint8)
    return packed, flat[mask].clone()


def unpack(packed: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    numel = shape.numel()
    mask = (packed[:, None] & BITS.to(packed.device)).ne(0).reshape(-1)[:numel]
    dense = values.new_zeros(numel)
    dense[mask] = values
    return dense.reshape(shape)


def _save_sparse(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    key = prefix + "weight"
    weight = state.get(key)
    if isinstance(weight, torch.Tensor) and saves_bytes(weight):
        del state[key]
        state[prefix + MASK], state[prefix + VALUES] = pack(weight)


def _load_sparse(
    module: nn.Module, state: dict[str, Any], prefix: str, *_args: Any
) -> None:
    if prefix + MASK in state:
        packed, values = state.pop(prefix + MASK), state.pop(prefix + VALUES)
        state[prefix + "weight"] = unpack(packed, values, module.weight.shape)


def _keep_zeros(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad * (weight != 0)


def _hook_weight_grad(module: nn.Module, _args: Any) -> None:
    """Before a forward that may train, make sure the weight's gradient keeps its zeros.

    The gradient hook lives on the Parameter, and copy.deepcopy makes a new Parameter without
    hooks (or attributes); this module hook does survive a copy and re-attaches it. Quantizing
    swaps the layer for one whose packed int8 weight is no Parameter (torch.ao copies the
    forward hooks onto it): nothing trains there, so nothing to do.
    """
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        return
    if weight.requires_grad and torch.is_grad_enabled() and not getattr(weight, KEEPS, False):
        weight.register_hook(functools.partial(_keep_zeros, weight))
        setattr(weight, KEEPS, True)


def attach_sparse_hooks(layer: nn.Linear) -> None:
    """Store `layer.weight` sparse when that is smaller, and keep its zeros when trained."""
    layer.register_state_dict_post_hook(_save_sparse)
    layer.register_load_state_dict_pre_hook(_load_sparse)
    layer.register_forward_pre_hook(_hook_weight_grad)
