"""`model.checkpoint=PATH`: a user's weights become the baseline, read safely (weights_only),
unwrapped from training checkpoints, checked before anything is written."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import warnings
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from sweeper.cli.main import main
from sweeper.core.config import build_config
from sweeper.core.errors import UserError
from sweeper.data.loading import load_splits
from sweeper.models import checkpoint
from sweeper.models.baseline import baseline_key, load_or_train_baseline
from sweeper.models.train import accuracy
from sweeper.models.vit import create_model
from tests.conftest import tiny_overrides
from tests.helpers.launch import QUICK_SPACE  # tests/e2e/test_api.py imports it from here


def tiny_model(num_classes: int = 10, seed: int = 0, **changes: object) -> nn.Module:
    cfg = build_config(tiny_overrides(Path("unused"))).model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(dataclasses.replace(cfg, **changes), num_classes)


def wrapped(state: dict[str, torch.Tensor], form: str) -> object:
    """`state` as the checkpoint files training scripts write."""
    prefixed = {f"module.{k}": v for k, v in state.items()}
    return {
        "bare": state,
        "module_prefix": prefixed,  # saved from DataParallel / DDP
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},  # torch.compile
        # timm's train.py: arch, args (an argparse.Namespace), optimizer, EMA beside it
        "timm": {"epoch": 3, "arch": "vit_digits", "state_dict": state, "version": 2,
                 "args": argparse.Namespace(model="vit_digits", lr=1e-3),
                 "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
                 "state_dict_ema": {k: torch.zeros_like(v) for k, v in state.items()}},
        # torchvision's references: model + model_ema (AveragedModel: module. and n_averaged)
        "torchvision": {"model": state, "epoch": 3,
                        "model_ema": {**{k: v * 0 for k, v in prefixed.items()},
                                      "n_averaged": torch.tensor(3)}},
        "ema_only": {"model_ema": {**prefixed, "n_averaged": torch.tensor(3)}},
    }[form]


@pytest.mark.parametrize("form", ["bare", "module_prefix", "compiled", "timm", "torchvision",
                                  "ema_only"])
def test_training_checkpoints_load_the_same_weights(form: str, tmp_path: Path) -> None:
    source = tiny_model(seed=1)
    path = tmp_path / "ck.pt"
    torch.save(wrapped(source.state_dict(), form), path)
    target = checkpoint.load_into(tiny_model(seed=2), path, 10, "vit_digits")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_baseline_key_covers_the_checkpoint_content_not_its_path(tmp_path: Path) -> None:
    splits = load_splits(build_config([]).data)
    paths = [tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"]
    torch.save(tiny_model(seed=1).state_dict(), paths[0])
    paths[1].write_bytes(paths[0].read_bytes())
    torch.save(tiny_model(seed=2).state_dict(), paths[2])
    keys = [baseline_key(build_config(tiny_overrides(tmp_path, f"model.checkpoint={p}")), splits)
            for p in paths]
    plain = baseline_key(build_config(tiny_overrides(tmp_path)), splits)
    assert keys[0] == keys[1] != keys[2]
    assert plain not in keys


def test_epochs_0_keeps_the_checkpoint_and_more_epochs_fine_tune_it(tmp_path: Path) -> None:
    source = tiny_model(seed=3)
    path = tmp_path / "ck.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    logs: list[str] = []
    cfg = build_config(tiny_overrides(tmp_path, f"cache_dir={tmp_path / 'cache'}",
                                      f"model.checkpoint={path}", "train.epochs=0"))
    splits = load_splits(cfg.data)
    base = load_or_train_baseline(cfg, splits, torch.device("cpu"), logs.append)
    for key, value in source.state_dict().items():
        assert torch.equal(base.model.state_dict()[key], value), key
    assert any("used as is (train.epochs=0)" in m for m in logs)
    assert not any("epoch 1/" in m for m in logs)
    direct = accuracy(source.eval(), splits.val, splits.preprocessing, torch.device("cpu"))
    assert base.val_acc == direct

    tuned_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    tuned = load_or_train_baseline(tuned_cfg, splits, torch.device("cpu"), logs.append)
    assert tuned.key != base.key and not tuned.from_cache
    moved = [k for k, v in source.state_dict().items()
             if not torch.equal(tuned.model.state_dict()[k], v)]
    assert moved  # trained from the checkpoint, not from fresh weights:
    fresh = tiny_model(seed=0).state_dict()["blocks.0.attn.qkv.weight"]
    start = source.state_dict()["blocks.0.attn.qkv.weight"]
    now = tuned.model.state_dict()["blocks.0.attn.qkv.weight"]
    assert (now - start).norm() < (now - fresh).norm()


def test_a_safetensors_file_loads_the_same_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = tiny_model(seed=1)
    path = tmp_path / "model.safetensors"  # as Hugging Face and timm's hub save them
    save_file({f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}, path)
    target = checkpoint.load_into(tiny_model(seed=2), path, 10, "vit_digits")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


@pytest.mark.parametrize("head", [True, False])
def test_a_hugging_face_transformers_vit_loads_as_timms(tmp_path: Path, head: bool) -> None:
    """What `Trainer.save_model()` writes for a fine-tuned ViTForImageClassification: a real
    one, its model.safetensors read into the timm ViT of the same shape, the same logits."""
    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    # timm's LayerNorm epsilon: transformers' 1e-12 would differ here only because a fresh
    # model's activations are tiny (std 0.02 weights), not in the names this test checks
    config = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=128, image_size=32, patch_size=4, num_labels=10,
                       layer_norm_eps=1e-6)
    torch.manual_seed(3)
    hf = (ViTForImageClassification(config) if head else ViTModel(config)).eval()
    hf.save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    if not head:  # a backbone alone: every weight but the classifier's
        with pytest.raises(UserError, match="missing head.weight, head.bias$"):
            checkpoint.load_into(tiny_model(), path, 10, "vit_digits")
        return
    timm_vit = checkpoint.load_into(tiny_model(), path, 10, "vit_digits").eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = hf(pixel_values=x).logits, timm_vit(x)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()


def test_any_junk_file_is_a_user_error_without_warnings(tmp_path: Path) -> None:
    """Random bytes fail anywhere in torch's unpickler (IndexError for one file in ~15 here)
    and can make it warn; every one must be the one error line, nothing else on stderr."""
    rng = random.Random(1)
    path = tmp_path / "junk.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for size in [rng.randrange(1, 8192) for _ in range(300)]:
            path.write_bytes(rng.randbytes(size))
            with pytest.raises(UserError, match="is not a (PyTorch checkpoint|readable)"):
                checkpoint.read_state(path)


def test_pretrained_and_checkpoint_together_are_refused() -> None:
    with pytest.raises(UserError, match="set only one"):
        build_config(["model.pretrained=true", "model.checkpoint=ck.pt"])


# -- bad checkpoints: one error line, exit 2, nothing written ----------------------------------
def _write_bad(kind: str, path: Path) -> None:
    if kind == "another_architecture":  # a CNN's weights
        torch.save(timm.create_model("resnet10t", num_classes=10).state_dict(), path)
    elif kind == "another_vit_size":
        torch.save(tiny_model(embed_dim=32).state_dict(), path)
    elif kind == "another_class_count":
        torch.save({"state_dict": tiny_model(num_classes=5).state_dict()}, path)
    elif kind == "not_a_checkpoint":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind in ("text_file", "junk_named_safetensors"):
        path.write_text("weights: none\n")
    elif kind == "empty_file":
        path.touch()
    elif kind == "pickled_module":  # torch.save(model): needs code to unpickle
        torch.save(tiny_model(), path)
    elif kind == "no_state_dict":
        torch.save({"epoch": 3, "optimizer": {"lr": 1e-3}}, path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "truncated_safetensors":
        from safetensors.torch import save_file

        save_file(tiny_model().state_dict(), path)
        path.write_bytes(path.read_bytes()[:-1000])


BAD = {
    "another_architecture": "does not fit model.name=vit_digits: missing cls_token, pos_embed",
    "another_vit_size": "does not fit model.name=vit_digits: other shapes",
    "another_class_count": "has a 5-class head but the data has 10 classes",
    "not_a_checkpoint": "is not a PyTorch checkpoint",
    "text_file": "is not a PyTorch checkpoint (torch.load cannot read it)",
    "junk_named_safetensors": "is not a readable safetensors file",
    "empty_file": "is empty (0 bytes)",
    "pickled_module": "holds Python objects, not only tensors",
    "no_state_dict": "holds no state_dict (keys: epoch, optimizer",
    "folder": "is not a file",
    "truncated_safetensors": "is not a readable safetensors file",
    "missing": "does not exist",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_checkpoint_is_one_error_line_exit_2_and_writes_nothing(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / ("ck.safetensors" if "safetensors" in kind else "ck.pt")
    _write_bad(kind, path)
    before = {str(p) for p in tmp_path.rglob("*")}
    out = tmp_path / "out"
    code = main(["launch", *tiny_overrides(out, f"model.checkpoint={path}")])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: model.checkpoint="), err[-2000:]
    assert BAD[kind] in lines[0], lines[0]
    assert {str(p) for p in tmp_path.rglob("*")} == before
    assert not (out / "sweeps").exists()


# -- a real sweep ------------------------------------------------------------------------------
def _png_folder(root: Path, with_val_test: bool) -> list[str]:
    """PNG image folders (3 classes) and the overrides that read them."""
    from tests.helpers.imagefolders import make_folder

    counts = {"train": {"cat": 14, "dog": 14, "owl": 14}}
    if with_val_test:
        counts |= {"val": {"cat": 4, "dog": 4, "owl": 4}, "test": {"cat": 4, "dog": 4, "owl": 4}}
    make_folder(root, counts)
    return ["data.name=imagefolder", f"data.root={root}", "data.val_fraction=0.2",
            "data.test_fraction=0.2"]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["digits", "png_folders_with_val_test", "png_train_only"])
def test_launch_epochs_0_baseline_is_the_checkpoint_image_for_image(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`launch ... train.epochs=0 model.checkpoint=ck.pt` (a timm-style training checkpoint of
    a trained tiny ViT), on the digits and on PNG folders with and without val/ and test/
    (then carved from train/): the reported baseline accuracy is the checkpoint's own,
    evaluated directly, and nothing is trained."""
    data_args = [] if data == "digits" else _png_folder(tmp_path / "pngs",
                                                        data == "png_folders_with_val_test")
    # a short training on the folders, so their accuracy is not trivially 1.0
    epochs = [] if data == "digits" else ["train.epochs=2"]
    cfg = build_config(tiny_overrides(tmp_path, *data_args, *epochs))
    splits = load_splits(cfg.data, model=cfg.model)
    trained = load_or_train_baseline(cfg, splits, torch.device("cpu"), lambda _m: None).model
    ck = tmp_path / "ck.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()},
                "args": argparse.Namespace(model="vit_digits"), "epoch": 24}, ck)
    (tmp_path / "quick.yaml").write_text(QUICK_SPACE)
    cache = tmp_path / "fresh-cache"  # a cached baseline would hide whether anything trains
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    capsys.readouterr()
    code = main(["launch", *tiny_overrides(
        tmp_path / "out", *data_args, f"space={tmp_path / 'quick.yaml'}", f"model.checkpoint={ck}",
        "train.epochs=0", f"cache_dir={cache}", "search.trials=1", "search.concurrency=1")])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "used as is (train.epochs=0)" in out
    assert "baseline: epoch" not in out and "baseline: training" not in out

    (folder,) = (tmp_path / "out" / "sweeps").iterdir()
    rows = json.loads((folder / "front.json").read_text())
    base = next(r for r in rows if r["trial"] == "baseline")
    (cached,) = cache.glob("baseline-*.pt")
    state = torch.load(cached, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in trained.state_dict().items():  # the same weights, bit for bit
        assert torch.equal(state[key], value), key
    cpu = torch.device("cpu")
    val = accuracy(trained, splits.val, splits.preprocessing, cpu)
    test = accuracy(trained, splits.test, splits.preprocessing, cpu, cfg.measure.eval_batch_size)
    assert base["val_acc"] == val and base["test_acc"] == test
    meta = json.loads((folder / "sweep.json").read_text())
    assert meta["config"]["model"]["checkpoint"] == str(ck)
