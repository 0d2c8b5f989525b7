"""Accuracy of each quantization method on the embedded default (digits, ~97% val).

Validation split only (what Optuna sees); the baseline comes from conftest's cached fixture.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sweeper.compress import TrialContext
from sweeper.compress.quantize import QuantizeConfig, apply
from tests.conftest import DefaultBaseline

pytestmark = pytest.mark.slow


def quantized(d: DefaultBaseline, cfg: QuantizeConfig) -> nn.Module:
    model = d.baseline.model.eval()
    ctx = TrialContext(train=d.splits.train, val=d.splits.val,
                       preprocessing=d.splits.preprocessing, batch_size=d.cfg.train.batch_size,
                       seed=d.cfg.search.seed, teacher=model)
    return apply(copy.deepcopy(model), cfg, ctx)


@torch.no_grad()
def val_scores(d: DefaultBaseline, model: nn.Module) -> tuple[float, float]:
    """(accuracy, KL divergence of the model's softmax from the float baseline's)."""
    x = d.splits.preprocessing.to_input(d.splits.val.images)
    ref, out = d.baseline.model.eval()(x), model.eval()(x)
    acc = float((out.argmax(-1) == d.splits.val.labels).float().mean())
    kl = F.kl_div(F.log_softmax(out, -1), F.log_softmax(ref, -1), log_target=True,
                  reduction="batchmean")
    return acc, float(kl)


@pytest.mark.parametrize("scheme", ["static8", "dynamic8", "weight_only8"])
def test_int8_stays_within_one_point(default_baseline: DefaultBaseline, scheme: str) -> None:
    d = default_baseline
    acc, _ = val_scores(d, quantized(d, QuantizeConfig.from_params(scheme=scheme)))
    # observed: baseline 96.67%; static 96.30%, dynamic 96.67%, weight_only8 96.67%
    assert d.baseline.val_acc - acc <= 0.01, (scheme, acc, d.baseline.val_acc)


def test_lsq_beats_weight_only_at_4_and_2_bits(default_baseline: DefaultBaseline) -> None:
    """LSQ (distilled from the float model) stays closer to it than weight-only PTQ at the
    same bits. Measured as KL to the float softmax: accuracy on 270 validation images moves
    in steps of 0.37 points, and at 4 bits both methods sit within 1-3 images of the
    baseline, in either order, depending on how the baseline trained."""
    d = default_baseline
    scores = {s: val_scores(d, quantized(d, QuantizeConfig.from_params(scheme=s)))
              for s in ("weight_only4", "lsq4", "weight_only2", "lsq2")}
    # observed (acc drop in points, KL) over 4 baselines (train.seed 0-2 and CI's):
    # weight_only4 -0.4..+0.4, 0.0013-0.0016; lsq4 0..+0.7, 0.00048-0.0006;
    # weight_only2 -0.4..+1.9, 0.073-0.109; lsq2 -0.4..+0.7, 0.0035-0.0072
    for bits, margin in ((4, 1.5), (2, 5.0)):
        ptq, lsq = scores[f"weight_only{bits}"], scores[f"lsq{bits}"]
        assert lsq[1] * margin < ptq[1], (bits, scores)  # several times closer in KL
        # and no accuracy loss beyond the split's noise (5 of 270 images)
        assert d.baseline.val_acc - lsq[0] <= 0.02, (bits, scores, d.baseline.val_acc)
