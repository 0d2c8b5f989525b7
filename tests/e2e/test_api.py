"""The Python API: `sweeper.launch(space, model=...)` / `sweeper.resume(...)` run the CLI's
sweep, raise `sweeper.UserError`, and take a timm VisionTransformer instance as the baseline."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import sweeper
from sweeper.api import adopt_model
from sweeper.core.config import build_config
from sweeper.core.sweep_folder import SWEEP_VERSION
from sweeper.data.loading import load_splits
from sweeper.models.baseline import load_or_train_baseline
from sweeper.models.train import accuracy
from sweeper.models.vit import create_model
from tests.conftest import tiny_overrides
from tests.unit.models.test_checkpoint import QUICK_SPACE

DIMS = {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 2,
        "mlp_ratio": 2.0}


def plain_vit(num_classes: int = 10, **options: object) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(num_classes=num_classes, **DIMS, **options)  # type: ignore[arg-type]


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def test_the_api_is_exported_lazily_with_its_error_type() -> None:
    assert sweeper.UserError is sweeper.core.errors.UserError
    assert callable(sweeper.launch) and callable(sweeper.resume)
    with pytest.raises(AttributeError):
        sweeper.no_such_thing  # noqa: B018


def test_a_timm_model_becomes_its_name_and_a_content_addressed_checkpoint(
    tmp_path: Path,
) -> None:
    model = timm.create_model("test_vit", num_classes=10, img_size=32)
    cfg = build_config(tiny_overrides(tmp_path, f"cache_dir={tmp_path / 'cache'}",
                                      "space=quant_bits"))
    splits = load_splits(cfg.data)
    adopted = adopt_model(cfg, model, splits)
    assert adopted.model.name == "test_vit" and adopted.model.img_size == 32
    path = Path(adopted.model.checkpoint or "")
    assert path.parent == (tmp_path / "cache").resolve() and path.name.startswith("model-")
    again = adopt_model(cfg, model, splits)  # same weights, same file
    assert again.model.checkpoint == adopted.model.checkpoint
    rebuilt = create_model(adopted.model, 10)
    rebuilt.load_state_dict(torch.load(path, weights_only=True))
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_a_plain_vision_transformer_is_rebuilt_from_its_dimensions(tmp_path: Path) -> None:
    model = plain_vit().train()
    cfg = build_config(tiny_overrides(tmp_path, f"cache_dir={tmp_path / 'cache'}",
                                      "space=quant_bits"))
    adopted = adopt_model(cfg, model, load_splits(cfg.data))
    assert adopted.model.name == "vit_digits"
    assert {k: getattr(adopted.model, k) for k in DIMS} == DIMS
    assert model.training  # the user's instance is left as it was given


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_swept_as_its_exact_float32_widening(
        tmp_path: Path, dtype: torch.dtype) -> None:
    model = plain_vit().to(dtype).train()
    cfg = build_config(tiny_overrides(tmp_path, f"cache_dir={tmp_path / 'cache'}",
                                      "space=quant_bits"))
    adopted = adopt_model(cfg, model, load_splits(cfg.data))  # before: a dtype RuntimeError
    saved = torch.load(adopted.model.checkpoint, weights_only=True)
    for key, value in model.state_dict().items():
        assert saved[key].dtype == torch.float32 and torch.equal(saved[key], value.float()), key
    assert model.training and next(model.parameters()).dtype == dtype  # the user's, untouched


REFUSED = {  # model -> what the one error says
    "other_class_count": (lambda: plain_vit(num_classes=5), "model has 5 outputs but the data "
                          "has 10 classes"),
    "not_a_vit": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)),
                  "model is a Sequential; sweeper compresses timm VisionTransformer"),
    # same weights, other computation: the workers' rebuild would be another model
    "other_activation": (lambda: plain_vit(act_layer="relu"), "computes other logits"),
    "other_pooling": (lambda: plain_vit(global_pool="avg", fc_norm=False), "computes other logits"),
    # a name whose defaults differ from the instance (patch 4, not 16)
    "patch_size_not_in_name": (
        lambda: timm.create_model("test_vit", num_classes=10, img_size=32,
                                  patch_size=4),
        "is not what model.name=test_vit builds"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_model_the_workers_cannot_rebuild_is_refused_before_any_write(
    case: str, tmp_path: Path
) -> None:
    make, message = REFUSED[case]
    out = tmp_path / "out"
    with pytest.raises(sweeper.UserError, match=message):
        sweeper.launch("quant_bits", model=make(), overrides=tiny_overrides(
            out, f"cache_dir={tmp_path / 'cache'}"), log=None)
    assert files(tmp_path) == set()


def test_a_technique_that_cannot_apply_to_the_model_is_named_at_launch(tmp_path: Path) -> None:
    """Patch 16 on 32 px: 5 tokens, and nystrom_m asks for up to 65 landmarks."""
    model = timm.create_model("test_vit", num_classes=10, img_size=32)
    with pytest.raises(sweeper.UserError, match=r"nystrom_m.yaml: .*nystrom.*landmarks"):
        sweeper.launch("nystrom_m", model=model, overrides=tiny_overrides(
            tmp_path / "out", f"cache_dir={tmp_path / 'cache'}"), log=None)
    assert files(tmp_path) == set()


def test_bad_overrides_raise_user_error_not_system_exit(tmp_path: Path) -> None:
    with pytest.raises(sweeper.UserError, match="search.trials"):
        sweeper.launch("quant_bits", overrides=[f"output_dir={tmp_path}", "search.trials=0"])
    with pytest.raises(sweeper.UserError, match="unknown space"):
        sweeper.launch("no_such_space", overrides=[f"output_dir={tmp_path}"])
    with pytest.raises(sweeper.UserError, match="no sweep"):
        sweeper.resume("nothing-here", output_dir=str(tmp_path))
    with pytest.raises(sweeper.UserError, match="need train="):
        sweeper.launch("quant_bits", val=[], overrides=[f"output_dir={tmp_path}"])
    with pytest.raises(sweeper.UserError, match=r"a list of key=value .*\['search.trials=4'\]"):
        sweeper.launch("quant_bits", overrides="search.trials=4")  # not 's', 'e', ... one each


def test_resume_of_a_sweep_given_its_own_datasets_asks_for_them_again(tmp_path: Path) -> None:
    cfg = build_config(tiny_overrides(tmp_path))
    folder = tmp_path / "sweeps" / "quant_bits-20260101-000000"
    (folder / "ray" / "tune").mkdir(parents=True)
    (folder / "ray" / "tune" / "tuner.pkl").write_bytes(b"state")
    (folder / "sweep.json").write_text(json.dumps({
        "schema_version": SWEEP_VERSION, "name": folder.name, "parent_run_id": "0" * 32,
        "status": "KILLED",
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "config": cfg.to_dict(),
        "data_source": "datasets"}))
    with pytest.raises(sweeper.UserError, match=r"resume it with sweeper.resume\(..., train="):
        sweeper.resume(folder.name, output_dir=str(tmp_path))


@pytest.mark.slow
def test_launch_with_a_model_instance_and_datasets_sweeps_them(tmp_path: Path) -> None:
    """A trained tiny ViT instance, used as is (train.epochs=0), on torch Datasets of the
    digits splits: the outcome's baseline is the instance's own accuracy on them, `.front`
    prints the CLI's table, and the sweep records that resume needs the datasets again. The
    caller's own Ray instance is used, and left running."""
    import ray

    cfg = build_config(tiny_overrides(tmp_path))
    splits = load_splits(cfg.data)
    trained = load_or_train_baseline(cfg, splits, torch.device("cpu"), lambda _m: None).model
    train, val, test = (torch.utils.data.TensorDataset(s.images, s.labels)
                        for s in (splits.train, splits.val, splits.test))
    (tmp_path / "quick.yaml").write_text(QUICK_SPACE)
    logs: list[str] = []
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)]
    try:
        outcome = sweeper.launch(
            str(tmp_path / "quick.yaml"), model=trained, train=train, val=val, test=test,
            overrides=tiny_overrides(tmp_path / "out", f"cache_dir={tmp_path / 'cache'}",
                                     "data.mean=0.5,0.5,0.5", "data.std=0.5,0.5,0.5",
                                     "train.epochs=0", "search.trials=1",
                                     "search.concurrency=1"),
            log=logs.append)
        assert ray.is_initialized()
        # Tune's fit leaves its own Ctrl-C handler set: the caller's would be swallowed
        assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)] == handlers
    finally:
        ray.shutdown()
    assert any("used as is (train.epochs=0)" in m for m in logs)
    cpu = torch.device("cpu")
    assert outcome.baseline["val_acc"] == accuracy(trained, splits.val, splits.preprocessing,
                                                   cpu)
    assert outcome.baseline["test_acc"] == accuracy(trained, splits.test,
                                                    splits.preprocessing, cpu)
    assert len(outcome.rows) == 1
    assert str(outcome.front) == outcome.table
    assert outcome.front.records[0]["trial"] == "baseline"
    assert [r["trial"] for r in outcome.front.records[1:]] == [r["trial"] for r in outcome.front]
    assert (outcome.sweep_dir / "front.json").is_file()
    meta = json.loads((outcome.sweep_dir / "sweep.json").read_text())
    assert meta["status"] == "FINISHED" and meta["data_source"] == "datasets"
    assert meta["config"]["model"]["checkpoint"].startswith(str((tmp_path / "cache").resolve()))


def test_structured_pruning_of_blocks_it_cannot_handle_is_refused_at_launch() -> None:
    """A ViT whose attention carries a norm over its width (scale_attn_norm): removing heads
    would change that norm's statistics, so the prune space is refused, naming why."""
    from sweeper.spaces.space import check_against_model, load_space

    model = VisionTransformer(num_classes=10, scale_attn_norm=True, **DIMS)  # type: ignore[arg-type]
    with pytest.raises(sweeper.UserError,
                       match=r"prune_ratio.yaml: prune: blocks.0: structured pruning does not "
                             r"support scale_attn_norm"):
        check_against_model(load_space("prune_ratio"), model)
    check_against_model(load_space("prune_ratio"), plain_vit())  # the plain one passes


def test_datasets_become_the_splits_with_the_models_preprocessing() -> None:
    """train/val/test Datasets go through the data side's adapter, normalised as the model's
    timm pretrained config says."""
    from timm.data import resolve_data_config

    from sweeper.api import _from_datasets

    gen = torch.Generator().manual_seed(0)

    def dataset(n: int) -> torch.utils.data.TensorDataset:
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
        return torch.utils.data.TensorDataset(images, torch.arange(n) % 3)

    model = timm.create_model("test_vit", num_classes=3, img_size=32)
    cfg = build_config(["space=quant_bits"])
    splits = _from_datasets(cfg, model, dataset(12), dataset(6), dataset(6))
    assert splits.num_classes == 3
    assert splits.preprocessing.img_size == 32
    assert list(splits.preprocessing.mean) == list(resolve_data_config({}, model=model)["mean"])
