"""Nyström attention: exact at m == N, error grows as m shrinks, weights and shapes kept."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from sweeper.compress import TrialContext, make_config, technique
from sweeper.compress.nystrom import (
    NystromAttention,
    NystromConfig,
    apply,
    iterative_pinv,
    segment_means,
)
from sweeper.core.errors import UserError
from tests.helpers.models import images, tiny_vit

N_TOKENS = 65  # 8x8 patches + class token
DIM = 64


# a tiny ViT whose attention is peaked, as in a trained model: timm's init (std 0.02) makes
# attention nearly uniform, hence rank one, which any m approximates well; a larger qkv std
# gives realistic, ill-conditioned attention maps
vit = functools.partial(tiny_vit, qkv_std=0.2)


def smooth_tokens(batch: int, noise: float = 0.1) -> torch.Tensor:
    """Tokens that vary smoothly along the sequence (like neighbouring image patches), normed."""
    gen = torch.Generator().manual_seed(1)
    pos = torch.linspace(0, math.pi, N_TOKENS)[:, None]
    freqs = torch.arange(1, 5)[None, :]
    basis = torch.cat([torch.sin(freqs * pos), torch.cos(freqs * pos)], dim=1)  # (N, 8)
    tokens = basis @ torch.randn(batch, 8, DIM, generator=gen)
    tokens = tokens + noise * torch.randn(batch, N_TOKENS, DIM, generator=gen)
    return F.layer_norm(tokens, (DIM,))


def rel_err(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx - exact).norm() / exact.norm()).item()


@pytest.mark.parametrize(("n", "m"), [(65, 65), (65, 16), (65, 8), (65, 1), (10, 3), (7, 7)])
def test_segment_means_follow_tensor_split(n: int, m: int) -> None:
    x = torch.randn(2, 3, n, 5)
    expected = torch.stack([s.mean(-2) for s in torch.tensor_split(x, m, dim=-2)], dim=-2)
    torch.testing.assert_close(segment_means(x, m), expected)


def test_iterative_pinv_inverts_softmax_matrices() -> None:
    a = torch.randn(3, 16, 16, dtype=torch.float64).mul(2).softmax(-1)
    torch.testing.assert_close(iterative_pinv(a, 30), torch.linalg.inv(a))


# float32: the N x N softmax kernel has condition number ~1e5 here and rounding noise grows
# once the small singular values converge, so the float32 error is smallest near 15 iterations
# (observed 3.5e-5 at 15, 1.8e-4 at 20, 2e-2 at 30); float64 converges to round-off.
EXACT_CASES = [(torch.float32, 15, 2e-4, 1e-4), (torch.float64, 35, 1e-9, 1e-11)]


@torch.no_grad()
@pytest.mark.parametrize(("dtype", "iters", "attn_tol", "model_tol"), EXACT_CASES)
def test_all_landmarks_reproduce_exact_attention(
    dtype: torch.dtype, iters: int, attn_tol: float, model_tol: float
) -> None:
    attn = vit(dtype=dtype).blocks[0].attn  # timm's exact softmax attention
    x = smooth_tokens(4).to(dtype)
    # observed relative error: 3.5e-5 (float32), 2.4e-11 (float64)
    assert rel_err(NystromAttention(attn, N_TOKENS, pinv_iters=iters)(x), attn(x)) < attn_tol


@torch.no_grad()
@pytest.mark.parametrize(("dtype", "iters", "attn_tol", "model_tol"), EXACT_CASES)
def test_whole_model_exact_when_landmarks_equal_tokens(
    dtype: torch.dtype, iters: int, attn_tol: float, model_tol: float
) -> None:
    exact = vit(dtype=dtype)
    ctx = TrialContext()
    model = apply(copy.deepcopy(exact), NystromConfig(landmarks=N_TOKENS, pinv_iters=iters), ctx)
    x = images(4, seed=2, dtype=dtype)
    # observed max abs diff: 1.4e-5 (float32), 1.7e-14 (float64); logits are ~0.35 at most
    assert (model(x) - exact(x)).abs().max().item() < model_tol
    assert ctx.notes["nystrom_landmarks"] == N_TOKENS


@torch.no_grad()
def test_error_grows_as_landmarks_shrink() -> None:
    attn = vit().blocks[0].attn
    x = smooth_tokens(4)
    exact = attn(x)
    errs = {
        m: rel_err(NystromAttention(attn, m, pinv_iters=6)(x), exact) for m in (65, 32, 16, 8, 4)
    }
    # observed: 0.0094, 0.012, 0.022, 0.10, 0.81
    ms = sorted(errs, reverse=True)
    assert all(errs[a] <= errs[b] for a, b in zip(ms, ms[1:], strict=False)), errs
    assert errs[65] < errs[16] < errs[4]
    assert errs[4] > 0.3


@torch.no_grad()
def test_landmarks_clamped_to_token_count() -> None:
    attn = vit().blocks[0].attn
    x = smooth_tokens(2)
    torch.testing.assert_close(NystromAttention(attn, 500, 6)(x), NystromAttention(attn, 65, 6)(x))
    ctx = TrialContext()
    apply(vit(), NystromConfig(landmarks=500), ctx)
    assert ctx.notes["nystrom_landmarks"] == N_TOKENS


def test_state_dict_keys_and_shapes_unchanged() -> None:
    base = vit()
    before = {k: v.shape for k, v in base.state_dict().items()}
    model = apply(copy.deepcopy(base), NystromConfig(landmarks=8), TrialContext())
    assert all(isinstance(blk.attn, NystromAttention) for blk in model.blocks)
    assert {k: v.shape for k, v in model.state_dict().items()} == before
    model.load_state_dict(base.state_dict())  # a baseline checkpoint loads strictly


@torch.no_grad()
def test_batch_sizes_and_batch_independence() -> None:
    model = apply(vit(), NystromConfig(landmarks=8), TrialContext())
    x = images(7, seed=2)
    out7 = model(x)
    assert out7.shape == (7, 10)
    out1 = model(x[3:4])
    assert out1.shape == (1, 10)
    # per-matrix pinv scaling: a sample's output does not depend on its batch mates
    torch.testing.assert_close(out1, out7[3:4], rtol=1e-5, atol=1e-6)


def test_disabled_returns_model_unchanged() -> None:
    model = vit()
    assert technique("nystrom").apply(model, NystromConfig(enabled=False), TrialContext()) is model
    assert not any(isinstance(m, NystromAttention) for m in model.modules())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"landmarks": 0}, r"landmarks=0 is out of range \[1, inf\]"),
        ({"pinv_iters": 0}, r"pinv_iters=0 is out of range \[1, inf\]"),
        ({"landmarks": 2.5}, "landmarks must be an integer"),
        ({"enabled": "yes"}, "enabled must be true or false"),
    ],
)
def test_config_validation(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NystromConfig(**params)
    with pytest.raises(UserError, match=message):
        make_config("nystrom", params)
