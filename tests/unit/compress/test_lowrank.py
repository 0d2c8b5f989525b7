"""SVD low-rank factorisation: exact maths, real savings, and a sweep that exports."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torch import nn

from sweeper.cli.main import main
from sweeper.compress.lowrank import LowRankConfig, LowRankLinear, apply, rank_for
from sweeper.compress.quantize import QuantizeConfig
from sweeper.compress.quantize import apply as quantize
from sweeper.measure import runtime
from sweeper.measure.size import serialized_size
from sweeper.models.vit import count_parameters
from sweeper.spaces.space import SPACE_DIR
from tests.conftest import Shared
from tests.helpers.launch import launch
from tests.helpers.models import context, images, tiny_vit


@torch.no_grad()
def test_factorisation_is_the_best_rank_r_approximation() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(48, 32)
    s = torch.linalg.svdvals(linear.weight.double())
    full = LowRankLinear.from_linear(linear, 32)
    x = torch.randn(5, 48)
    assert torch.allclose(full(x), linear(x), atol=1e-5)  # full rank: the same layer
    cut = LowRankLinear.from_linear(linear, 8)
    product = cut.up.weight.double() @ cut.down.weight.double()
    error = torch.linalg.matrix_norm(linear.weight.double() - product)
    assert error == pytest.approx(float(s[8:].square().sum().sqrt()), rel=1e-5)  # Eckart-Young
    assert torch.equal(cut.up.bias, linear.bias)


def test_rank_is_kept_only_where_it_saves_weights() -> None:
    layer = nn.Linear(64, 128)  # break-even rank 64 * 128 / 192 = 42.7
    assert rank_for(layer, 0.25) == 16
    assert rank_for(layer, 0.6) == 38
    assert rank_for(layer, 0.7) is None
    for bad in (0, -0.1, 1.5, True, "half"):
        with pytest.raises(ValueError, match="rank_ratio"):
            LowRankConfig(rank_ratio=bad)
    with pytest.raises(ValueError, match="targets"):
        LowRankConfig(targets="heads")


@pytest.mark.parametrize(("targets", "per_block"), [("mlp", 2), ("all", 4)])
def test_apply_saves_parameters_and_bytes(targets: str, per_block: int) -> None:
    base = tiny_vit()
    ctx = context()
    model = apply(copy.deepcopy(base), LowRankConfig(rank_ratio=0.25, targets=targets), ctx)
    assert ctx.notes["lowrank_layers"] == per_block * len(base.blocks)
    assert ctx.notes["lowrank_skipped"] == 0
    assert count_parameters(model) < 0.75 * count_parameters(base)
    assert serialized_size(model) < 0.8 * serialized_size(base)
    with torch.no_grad():
        assert model(images(2, seed=3)).shape == base(images(2, seed=3)).shape
    high = context()
    apply(copy.deepcopy(base), LowRankConfig(rank_ratio=0.9), high)
    assert high.notes["lowrank_layers"] == 0
    assert high.notes["lowrank_skipped"] == 2 * len(base.blocks)


@pytest.mark.slow
def test_onnx_export_of_factorised_and_int8_model_matches_torch() -> None:
    base = tiny_vit()
    model = apply(copy.deepcopy(base), LowRankConfig(rank_ratio=0.3, targets="all"), context())
    x = images(4, seed=3)
    for m in (model, quantize(copy.deepcopy(model), QuantizeConfig(), context())):
        graph, report = runtime.onnx_bytes(m, 32)
        with torch.no_grad():
            ref = m(x).numpy()
        out = runtime.predict(runtime.session(graph, torch.device("cpu"), 1), x.numpy())
        assert np.abs(out - ref).max() < 5e-3
    # every thin layer became its own int8 kernel: 2 per factorised Linear, plus the head
    assert report.kernels == {"dynamic_int8": 2 * 4 * len(base.blocks) + 1}


def _sweep(tmp: Path, space: Path, shared: Shared) -> dict:
    proc = launch(tmp, f"space={space}", "search.trials=2", "search.concurrency=2",
                  timeout=900, shared=shared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = list((tmp / "sweeps").iterdir())
    return json.loads((folder / "sweep.json").read_text())


@pytest.mark.slow
def test_lowrank_and_hybrid_sweeps_run_and_export(tmp_path: Path, shared: Shared) -> None:
    """The lowrank space as shipped, and the hybrid space with lowrank (and int8) switched
    on; a trial of each exports to an ONNX file that ONNX Runtime runs."""
    hybrid = yaml.safe_load((SPACE_DIR / "hybrid.yaml").read_text())
    hybrid["techniques"]["lowrank"]["enabled"] = True
    hybrid["techniques"]["quantize"]["enabled"] = True
    hybrid["techniques"]["tome"]["enabled"] = False  # token merging has no ONNX lowering
    (tmp_path / "hybrid_lowrank.yaml").write_text(yaml.safe_dump(hybrid))
    for space in (SPACE_DIR / "lowrank.yaml", tmp_path / "hybrid_lowrank.yaml"):
        out = tmp_path / space.stem
        meta = _sweep(out, space, shared)
        client = MlflowClient(f"sqlite:///{out}/mlflow.db")
        children = client.search_runs(
            [client.get_experiment_by_name("sweeper").experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{meta['parent_run_id']}'")
        assert len(children) == 2
        for child in children:
            assert child.info.status == "FINISHED"
            assert float(child.data.tags["lowrank_layers"]) > 0
            assert child.data.metrics["size_ratio"] < 1
        trial = children[0].info.run_name
        onnx_path = out / "model.onnx"
        assert main(["export", meta["name"], trial, f"output_dir={out}",
                     f"out={onnx_path}"]) == 0
        sess = runtime.session(onnx_path.read_bytes(), torch.device("cpu"), 1)
        logits = runtime.predict(sess, np.zeros((1, 3, 32, 32), dtype=np.float32))
        assert logits.shape == (1, 10)
