"""python -m sweeper export RUN TRIAL [format=onnx|torch] [output_dir=DIR] [out=PATH]

Writes one trial's compressed model to a single file:

- format=onnx (default): the deployable ONNX graph (opset 18, input `input` float32 NCHW,
  output `logits`, dynamic batch), with quantized layers lowered to ONNX Runtime's int8 and
  MatMulNBits kernels, exactly as a `measure.runtime=onnxruntime` trial measures it. It needs
  only onnxruntime to run:
      sess = onnxruntime.InferenceSession("trial.onnx")
      logits = sess.run(None, {"input": x})[0]     # x = (images/255 - mean) / std
  Preprocessing (image size, mean, std, interpolation, crop_pct: the sweep's own, read from
  its sweep.json) is written next to it as trial.onnx.json.
- format=torch: the saved state_dict plus what rebuilds the module around it; loading is
      model = sweeper.load_torch("trial.pt")

RUN is the MLflow parent run id, the sweep name under <output_dir>/sweeps/, or its folder;
TRIAL is the Ray trial id (the MLflow child run's name).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweeper import compress
from sweeper.core.config import Config, ModelConfig, config_from_dict
from sweeper.core.errors import UserError
from sweeper.core.files import TRIAL_STATE_FILE, atomic_write, write_text
from sweeper.core.sweep_folder import check_version, find_sweep, read_pipeline, read_sweep_meta
from sweeper.data.loading import CIFAR_MEAN, CIFAR_STD, DIGITS_STATS
from sweeper.data.preprocess import Preprocessing
from sweeper.models.checkpoint import safe_load
from sweeper.models.vit import create_model

FORMATS = ("onnx", "torch")
# techniques whose compressed model cannot be written as ONNX, and why
NO_ONNX = {"tome": "token merging (tome) has no ONNX lowering for its merge step"}
# the torch export's version is in its format tag, sweeper-torch-<version>, which every torch
# export has carried (there is no version 0)
TORCH_VERSION = 1
TORCH_FORMAT = f"sweeper-torch-{TORCH_VERSION}"
# the preprocessing JSON written next to an ONNX export (<file>.onnx.json), as schema_version
ONNX_INFO_VERSION = 1
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class TrialArtifact:
    """A finished trial as saved by the sweep: its checkpoint and what it reported."""

    config: Config
    trial: str
    checkpoint: Path
    pipeline: dict[str, dict[str, Any]]
    reported: dict[str, float]
    num_classes: int
    prep: Preprocessing  # the sweep's, as its driver recorded it
    classes: tuple[str, ...] = ()  # class names by index, where the data has them

    def state(self) -> dict[str, Any]:
        path = self.checkpoint / TRIAL_STATE_FILE
        state = safe_load(path, f"checkpoint {path}", "is unreadable")
        if not isinstance(state, dict):
            raise UserError(f"checkpoint {path} is unreadable (not a state_dict)")
        return state

    def model(self) -> nn.Module:
        num_classes = self.num_classes
        # structure only: the saved state replaces every weight, so nothing is downloaded
        structure = dataclasses.replace(self.config.model, pretrained=False)
        baseline = create_model(structure, num_classes)
        pipeline, state = compress.pipeline_from_dict(self.pipeline), self.state()
        try:
            return compress.rebuild(baseline, pipeline, state)
        except RuntimeError as exc:  # load_state_dict: missing, unexpected or resized weights
            first = str(exc).strip().splitlines()[0][:200]
            raise UserError(f"checkpoint {self.checkpoint} does not match its sweep's model "
                            f"and pipeline ({first})") from None

    def preprocessing(self) -> dict[str, Any]:
        return {
            **self.prep.to_dict(),
            "num_classes": self.num_classes,
            **({"classes": list(self.classes)} if self.classes else {}),
            "input": "float32 [batch, 3, img_size, img_size] = (uint8 RGB / 255 - mean) / std",
        }


def recorded_preprocessing(meta: dict[str, Any], cfg: Config) -> tuple[int, Preprocessing]:
    """Class count and preprocessing as the sweep recorded them in sweep.json; sweeps from
    before that record are digits or CIFAR, whose values are known."""
    if "preprocessing" in meta and "num_classes" in meta:
        try:
            return int(meta["num_classes"]), Preprocessing.from_dict(meta["preprocessing"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"sweep {meta.get('name')}: unreadable preprocessing record "
                            f"({exc})") from None
    if cfg.data.name not in NUM_CLASSES:
        raise UserError(f"sweep {meta.get('name')} records no preprocessing")
    mean, std = DIGITS_STATS if cfg.data.name == "digits" else (CIFAR_MEAN, CIFAR_STD)
    return NUM_CLASSES[cfg.data.name], Preprocessing(cfg.model.img_size, mean, std)


def _reported(checkpoint: Path) -> dict[str, float]:
    """The metrics the trial reported, saved with its checkpoint (or, from sweeps before
    that, in Tune's result.json log of the trial folder)."""
    for path in (checkpoint / "result.json", checkpoint.parent / "result.json"):
        if path.is_file():
            lines = path.read_text().strip().splitlines()
            try:
                result = json.loads(lines[-1]) if lines else {}
            except ValueError:
                result = None
            if not isinstance(result, dict):
                raise UserError(f"{path} is not a trial's result log (its last line is not "
                                f"a JSON object)")
            return {k: v for k, v in result.items() if isinstance(v, int | float)}
    return {}


def find_trial(run: str, trial: str, output_dir: str) -> TrialArtifact:
    if not re.fullmatch(r"[\w-]+", trial):
        raise UserError(f"trial {trial!r} is not a Ray trial id (letters, digits, _ and -)")
    sweep_dir = find_sweep(run, output_dir)
    meta = read_sweep_meta(sweep_dir)
    tune_dir = sweep_dir / "ray" / "tune"
    # Tune names a trial's folder <trainable>_<trial id>_<index>_<params>_<time>
    checkpoints = sorted(c for c in tune_dir.glob(f"*_{trial}_*/checkpoint_*")
                         if (c / TRIAL_STATE_FILE).is_file())
    if not checkpoints:
        raise UserError(f"no finished trial {trial!r} in sweep {meta['name']} "
                        f"(trial folders are under {tune_dir})")
    ckpt = checkpoints[-1]
    pipeline = read_pipeline(ckpt / "pipeline.json")  # of a version this sweeper reads
    try:
        compress.pipeline_from_dict(pipeline)  # a UserError names a bad technique or value
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{ckpt / 'pipeline.json'} is not a trial's pipeline ({exc})") from None
    cfg = config_from_dict(meta["config"])
    return TrialArtifact(cfg, trial, ckpt, pipeline, _reported(ckpt),
                         *recorded_preprocessing(meta, cfg),
                         tuple(str(c) for c in meta.get("classes") or ()))


def check_onnx(art: TrialArtifact) -> None:
    """Refuse up front what the ONNX exporter would fail on after minutes of tracing."""
    for name, params in art.pipeline.items():
        if name in NO_ONNX and params.get("enabled", True) is not False:
            raise UserError(f"trial {art.trial}: {NO_ONNX[name]}; export it with format=torch")


def export_onnx(art: TrialArtifact, path: Path, model: nn.Module | None = None) -> int:
    from sweeper.measure.runtime import onnx_bytes  # onnx, onnxruntime: ONNX exports only

    graph, _report = onnx_bytes(model if model is not None else art.model(), art.prep.img_size)
    info = {"schema_version": ONNX_INFO_VERSION, **art.preprocessing(), "trial": art.trial,
            "pipeline": art.pipeline}
    # each file whole or not at all: an export stopped midway keeps no torn model (nor
    # spoils the one it was replacing)
    atomic_write(path, lambda fh: fh.write(graph))
    write_text(f"{path}.json", json.dumps(info, indent=2) + "\n")
    return len(graph)


def export_torch(art: TrialArtifact, path: Path) -> int:
    payload = {
        "format": TORCH_FORMAT,
        "model": dataclasses.asdict(art.config.model),
        "num_classes": art.num_classes,
        "pipeline": art.pipeline,
        "preprocessing": art.preprocessing(),
        "state_dict": art.state(),
    }
    atomic_write(path, lambda fh: torch.save(payload, fh))
    return path.stat().st_size


def load_torch(path: str | Path) -> nn.Module:
    """The compressed model of a `format=torch` export, in eval mode."""
    payload = safe_load(Path(path), str(path), "is not a sweeper torch export")
    tag = payload.get("format") if isinstance(payload, dict) else None
    version = re.fullmatch(r"sweeper-torch-(\d+)", tag) if isinstance(tag, str) else None
    if version is None:
        raise UserError(f"{path} is not a sweeper torch export")
    check_version(f"{path} ({tag})", {"schema_version": int(version[1])}, (TORCH_VERSION,))
    structure = ModelConfig(**{**payload["model"], "pretrained": False})
    baseline = create_model(structure, payload["num_classes"])
    pipeline = compress.pipeline_from_dict(payload["pipeline"])
    return compress.rebuild(baseline, pipeline, payload["state_dict"])


