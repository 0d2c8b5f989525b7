"""A rank-r stand-in for a Linear layer (truncated SVD), as compress.lowrank builds it."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """`up(down(x))`: a rank-r stand-in for Linear(in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        w = linear.weight.detach()
        u, s, vh = torch.linalg.svd(w.double().cpu(), full_matrices=False)
        root = s[:rank].sqrt()
        layer = cls(linear.in_features, linear.out_features, rank, linear.bias is not None)
        layer.down.weight.copy_((root[:, None] * vh[:rank]).to(w.dtype))
        layer.up.weight.copy_((u[:, :rank] * root[None]).to(w.dtype))
        if linear.bias is not None:
            layer.up.bias.copy_(linear.bias.detach())
        return layer.to(w.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"rank={self.rank}"
