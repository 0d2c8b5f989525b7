"""What `export` writes carries its version: the preprocessing JSON beside an ONNX file its
schema_version, the torch payload its format tag sweeper-torch-<version>. A torch export from
a newer sweeper is refused with the version this one reads (upgrade sweeper); an unknown
older one by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sweeper.core.config import build_config
from sweeper.core.errors import UserError
from sweeper.core.files import TRIAL_STATE_FILE
from sweeper.data.loading import DIGITS_STATS
from sweeper.data.preprocess import Preprocessing
from sweeper.deploy.export import (
    ONNX_INFO_VERSION,
    TORCH_FORMAT,
    TORCH_VERSION,
    TrialArtifact,
    export_onnx,
    export_torch,
    load_torch,
)
from sweeper.measure.size import state_bytes
from sweeper.models.vit import create_model
from tests.conftest import tiny_overrides


@pytest.fixture
def art(tmp_path: Path) -> TrialArtifact:
    """An uncompressed trial of the tiny config, its checkpoint in tmp_path/ckpt."""
    cfg = build_config(tiny_overrides(tmp_path, "model.pretrained=false"))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / TRIAL_STATE_FILE).write_bytes(state_bytes(create_model(cfg.model, 10)))
    return TrialArtifact(cfg, "t1", ckpt, {}, {}, 10, Preprocessing(cfg.model.img_size,
                                                                    *DIGITS_STATS))


def test_onnx_preprocessing_carries_its_version(art: TrialArtifact, tmp_path: Path) -> None:
    export_onnx(art, tmp_path / "m.onnx")
    info = json.loads((tmp_path / "m.onnx.json").read_text())
    assert info["schema_version"] == ONNX_INFO_VERSION
    assert info == {"schema_version": ONNX_INFO_VERSION, **art.preprocessing(),
                    "trial": "t1", "pipeline": {}}


def test_torch_payload_carries_its_version_and_loads(art: TrialArtifact,
                                                     tmp_path: Path) -> None:
    export_torch(art, tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt", weights_only=True)["format"] == TORCH_FORMAT \
        == f"sweeper-torch-{TORCH_VERSION}"
    assert load_torch(tmp_path / "m.pt")(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(("tag", "message"), [
    (f"sweeper-torch-{TORCH_VERSION + 1}",
     f"is version {TORCH_VERSION + 1}, written by a newer sweeper; this sweeper reads up to "
     f"version {TORCH_VERSION}: upgrade sweeper to read it"),
    ("sweeper-torch-0", "is version 0, which this sweeper does not read"),
    ("sweeper-onnx-1", "is not a sweeper torch export"),
    (None, "is not a sweeper torch export"),
])
def test_a_torch_export_of_another_version_is_refused(
        art: TrialArtifact, tmp_path: Path, tag: str | None, message: str) -> None:
    export_torch(art, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**payload, "format": tag}, tmp_path / "other.pt")
    with pytest.raises(UserError) as err:
        load_torch(tmp_path / "other.pt")
    assert str(err.value).startswith(str(tmp_path / "other.pt"))
    assert message in str(err.value) and "\n" not in str(err.value)
