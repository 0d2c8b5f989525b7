from __future__ import annotations

import functools
from pathlib import Path

import optuna
import pytest
import torch

from sweeper import compress
from sweeper.core.errors import UserError
from sweeper.spaces.space import available, check_against_model, load_space
from tests.helpers.models import tiny_vit


def test_nystrom_m_space_loads_and_builds_pipelines() -> None:
    space = load_space("nystrom_m")
    assert {"nystrom.landmarks", "recover.epochs", "quantize.enabled"} <= set(space.param_names())
    pipeline = space.pipeline({"nystrom.landmarks": 8, "recover.epochs": 1,
                               "quantize.enabled": True})
    names = [compress.name_of(c) for c in pipeline]
    assert names == ["nystrom", "recover", "quantize"]
    assert pipeline[0].landmarks == 8
    without_int8 = space.pipeline({"nystrom.landmarks": 8, "recover.epochs": 0,
                                   "quantize.enabled": False})
    assert [compress.name_of(c) for c in without_int8] == ["nystrom", "recover"]


def test_define_by_run_is_conditional_and_seeded() -> None:
    space = load_space("nystrom_m")

    def sample(seed: int) -> list[dict]:
        study = optuna.create_study(
            directions=["maximize", "minimize", "minimize"],
            sampler=optuna.samplers.RandomSampler(seed=seed),
        )
        out = []
        for _ in range(12):
            trial = study.ask()
            space.define(trial)
            out.append(dict(trial.params))
            study.tell(trial, [0.5, 1.0, 1.0])
        return out

    first = sample(3)
    assert first == sample(3)
    assert {p["quantize.enabled"] for p in first} == {True, False}
    assert all(p["nystrom.landmarks"] in (4, 8, 16, 32, 65) for p in first)


def _space(tmp: Path, body: str) -> str:
    path = tmp / "custom.yaml"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("techniques:\n  quantize:\n    bits: {choices: [0, 8]}\n", "quantize.bits=0"),
        ("techniques:\n  quantize:\n    bits: {choices: [8, 9]}\n", "quantize.bits=9"),
        ("techniques:\n  nystrom:\n    landmarks: {int: [0, 8]}\n", "landmarks=0"),
        ("techniques:\n  recover:\n    lr: {float: [0.1, 0.01]}\n", "low 0.1 > high 0.01"),
        ("techniques:\n  teleport:\n    speed: 3\n", "unknown technique 'teleport'"),
        ("techniques:\n  nystrom:\n    landmrks: {choices: [4]}\n", "unknown key"),
        ("techniques:\n  nystrom:\n    landmrks: 4\n", "unknown key"),
        ("techniques:\n  nystrom:\n    landmarks: {between: [1, 2]}\n", "must be a value or"),
        ("techniques: [1, 2]\n", "must contain a 'techniques:' mapping"),
        ("techniques: {}\nextra: 1\n", "unknown top-level key"),
        ("techniques: {nystrom: {landmarks: [\n", "cannot parse"),
    ],
)
def test_bad_space_files_fail_at_load(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_space(_space(tmp_path, body))


def test_unknown_space_lists_valid_ones() -> None:
    with pytest.raises(UserError, match="valid spaces: .*nystrom_m"):
        load_space("no_such_space")
    assert "nystrom_m" in available()


def test_a_space_path_that_is_no_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="absent.yaml does not exist"):
        load_space(str(tmp_path / "absent.yaml"))
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(UserError, match="folder.yaml is not a file"):
        load_space(str(tmp_path / "folder.yaml"))


# a narrower tiny ViT, its weights unseeded: only its structure is checked
vit = functools.partial(tiny_vit, embed_dim=32, num_heads=2, seed=None)


def test_landmarks_beyond_token_count_rejected() -> None:
    space = load_space("nystrom_m")
    check_against_model(space, vit(depth=2))  # 65 tokens
    with pytest.raises(UserError, match="nystrom: landmarks=32 exceeds the model's 17 tokens"):
        check_against_model(space, vit(depth=2, img_size=16))


def test_token_merge_beyond_the_token_count_rejected() -> None:
    space = load_space("token_merge")
    check_against_model(space, vit(depth=2))
    with pytest.raises(UserError, match=r"tome: r=\d+ merges .* patch tokens over 4 blocks"):
        check_against_model(space, vit(depth=4, img_size=16))


def test_technique_that_cannot_apply_to_the_model_is_named() -> None:
    model = vit(depth=2)
    model.blocks[1].mlp.fc2 = torch.nn.Identity()  # not a Linear any more
    with pytest.raises(UserError, match=r"lowrank\.yaml: lowrank: blocks\.1\.mlp\.fc2 is "
                                        "Identity"):
        check_against_model(load_space("lowrank"), model)


def test_space_whose_techniques_cannot_combine_is_rejected(tmp_path: Path) -> None:
    body = ("techniques:\n  nystrom:\n    landmarks: 8\n  recover:\n    epochs: 1\n"
            "  quantize:\n    enabled: {choices: [false, true]}\n")
    load_space(_space(tmp_path, body))  # valid: runs
    assert "distill" in compress.NAMES  # registered by the explicit import list
    bad = body + "  distill:\n    epochs: 1\n"
    with pytest.raises(UserError, match="custom.yaml: .*recover"):
        load_space(_space(tmp_path, bad))
