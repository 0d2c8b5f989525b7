"""Token merging: exact at r=0, r tokens fewer per block, fewer FLOPs, shapes and keys kept."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sweeper.compress import TrialContext, apply_pipeline, make_config
from sweeper.compress.layers._tome_attention import ToMeAttention, merge_tokens
from sweeper.compress.nystrom import NystromConfig
from sweeper.compress.prune import PruneConfig
from sweeper.compress.quantize import QuantizeConfig
from sweeper.compress.tome import ToMeBlock, ToMeConfig, apply, tokens_per_block
from sweeper.core.errors import UserError
from tests.helpers.models import images, tiny_vit

TOKENS = 65  # 8x8 patches + class token


# four blocks, a narrower MLP and peaked attention (a larger qkv std), as in a trained model
vit = functools.partial(tiny_vit, depth=4, mlp_ratio=2.0, qkv_std=0.2)


def flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("fused", [True, False])
def test_r0_is_the_exact_model(fused: bool) -> None:
    base = vit()
    for blk in base.blocks:
        blk.attn.fused_attn = fused
    model = apply(copy.deepcopy(base), ToMeConfig(r=0), TrialContext())
    assert all(isinstance(blk, ToMeBlock) for blk in model.blocks)
    with torch.no_grad():
        assert torch.equal(model(images(2)), base(images(2)))


def test_token_count_falls_per_block_and_output_shape_is_kept() -> None:
    base, r = vit(), 6
    ctx = TrialContext()
    model = apply(copy.deepcopy(base), ToMeConfig(r=r), ctx)
    seen: list[int] = []
    for blk in model.blocks:  # the MLP runs after the block's merge
        blk.mlp.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].shape[1]))
    with torch.no_grad():
        out = model(images(3))
    assert out.shape == base(images(3)).shape
    assert seen == [TOKENS - r * (i + 1) for i in range(4)] == tokens_per_block(TOKENS, 1, r, 4)
    assert ctx.notes["tome_final_tokens"] == TOKENS - 4 * r
    assert list(model.state_dict()) == list(base.state_dict())


def test_flops_fall_with_r() -> None:
    base, x = vit(), images(2)
    counts = [flops(apply(copy.deepcopy(base), ToMeConfig(r=r), TrialContext()), x)
              for r in (0, 4, 8, 15)]
    assert counts[0] == flops(base, x)
    assert counts[0] > counts[1] > counts[2] > counts[3]
    assert counts[3] < 0.7 * counts[0]


def test_r_that_merges_every_token_is_rejected_naming_the_token_count() -> None:
    with pytest.raises(ValueError, match="65 tokens"):
        apply(vit(), ToMeConfig(r=16), TrialContext())
    apply(vit(), ToMeConfig(r=15), TrialContext())
    with pytest.raises(UserError, match=r"r=-1 is out of range \[0, inf\]"):
        make_config("tome", {"r": -1})


def test_merge_keeps_the_class_token_and_conserves_size() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, TOKENS, 8, generator=gen)
    out, size = merge_tokens(x, None, x, r=10, prefix=1)
    assert out.shape == (2, TOKENS - 10, 8)
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(size[:, 0], torch.ones(2, 1))
    assert torch.equal(size.sum(dim=1), torch.full((2, 1), float(TOKENS)))
    # A second merge keeps counting patches: sizes add up, the mean is size-weighted.
    out2, size2 = merge_tokens(out, size, out, r=10, prefix=1)
    assert torch.equal(size2.sum(dim=1), torch.full((2, 1), float(TOKENS)))
    assert torch.allclose((out2 * size2)[:, 1:].sum(1), x[:, 1:].sum(1), atol=1e-4)


def test_the_most_similar_pair_is_merged() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 9, 8, generator=gen)  # class token + 8 tokens: A = 1,3,5,7; B = 2,4,6,8
    x[0, 5] = x[0, 8]  # A token 5 duplicates B token 8
    out, size = merge_tokens(x, None, x, r=1, prefix=1)
    assert out.shape[1] == 8
    assert size[0, -1, 0] == 2  # B token 8 (last) absorbed token 5
    assert torch.allclose(out[0, -1], x[0, 8])


@pytest.mark.parametrize("fused", [True, False])
def test_proportional_attention_equals_attention_over_the_duplicates(fused: bool) -> None:
    """Two identical tokens merged into one of size 2 must attend and be attended to exactly
    as the pair did: that is what adding log(size) to the logits is for."""
    attn = vit().blocks[0].attn
    attn.fused_attn = fused
    tome = ToMeAttention(attn)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 64, generator=gen)
    dup = torch.cat([x, x[:, -1:]], dim=1)  # last token twice
    size = torch.tensor([1.0, 1, 1, 1, 1, 2]).reshape(1, 6, 1)
    with torch.no_grad():
        merged, _ = tome(x, size)
        exact, _ = tome(dup)
    assert torch.allclose(merged, exact[:, :6], atol=1e-5)


def test_composes_with_pruning_nystrom_and_int8() -> None:
    x = images(2)
    for other in (PruneConfig(ratio=0.3), NystromConfig(landmarks=8), QuantizeConfig()):
        ctx = TrialContext()
        model = apply_pipeline(vit(), [ToMeConfig(r=8), other], ctx)
        with torch.no_grad():
            assert model(x).shape == (2, 10)
        assert ctx.notes["tome_final_tokens"] == TOKENS - 32


def test_trains_through_merges() -> None:
    model = apply(vit(depth=2), ToMeConfig(r=8), TrialContext()).train()
    model(images(2)).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.pos_embed.grad.abs().sum() > 0
