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
      model = sweeper.export.load_torch("trial.pt")

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
from sweeper.checkpoint import safe_load
from sweeper.config import Config, ModelConfig, config_from_dict
from sweeper.data import CIFAR_MEAN, CIFAR_STD, DIGITS_STATS
from sweeper.errors import UserError
from sweeper.files import MODEL_FILE, atomic_write, write_text
from sweeper.models import create_model
from sweeper.preflight import read_sweep_meta, writable_folder
from sweeper.preprocess import Preprocessing

FORMATS = ("onnx", "torch")
# techniques whose compressed model cannot be written as ONNX, and why
NO_ONNX = {"tome": "token merging (tome) has no ONNX lowering for its merge step"}
TORCH_FORMAT = "sweeper-torch-1"
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
        path = self.checkpoint / MODEL_FILE
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
    from sweeper.sweep import find_sweep

    if not re.fullmatch(r"[\w-]+", trial):
        raise UserError(f"trial {trial!r} is not a Ray trial id (letters, digits, _ and -)")
    sweep_dir = find_sweep(run, output_dir)
    meta = read_sweep_meta(sweep_dir)
    tune_dir = sweep_dir / "ray" / "tune"
    # Tune names a trial's folder <trainable>_<trial id>_<index>_<params>_<time>
    checkpoints = sorted(c for c in tune_dir.glob(f"*_{trial}_*/checkpoint_*")
                         if (c / MODEL_FILE).is_file())
    if not checkpoints:
        raise UserError(f"no finished trial {trial!r} in sweep {meta['name']} "
                        f"(trial folders are under {tune_dir})")
    ckpt = checkpoints[-1]
    try:
        pipeline = json.loads((ckpt / "pipeline.json").read_text())
        compress.pipeline_from_dict(pipeline)  # a UserError names a bad technique or value
    except (OSError, ValueError, TypeError, AttributeError) as exc:
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
    from sweeper.runtime import onnx_bytes

    graph, _report = onnx_bytes(model if model is not None else art.model(), art.prep.img_size)
    info = {**art.preprocessing(), "trial": art.trial, "pipeline": art.pipeline}
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
    if not isinstance(payload, dict) or payload.get("format") != TORCH_FORMAT:
        raise UserError(f"{path} is not a sweeper torch export")
    structure = ModelConfig(**{**payload["model"], "pretrained": False})
    baseline = create_model(structure, payload["num_classes"])
    pipeline = compress.pipeline_from_dict(payload["pipeline"])
    return compress.rebuild(baseline, pipeline, payload["state_dict"])


def parse(overrides: list[str]) -> dict[str, str]:
    valid = {"format": "onnx", "output_dir": "outputs", "out": ""}
    opts = dict(valid)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in valid:
            raise UserError(f"export takes {', '.join(f'{k}=...' for k in valid)}; got {item!r}")
        opts[key] = value
    if opts["format"] not in FORMATS:
        raise UserError(f"format={opts['format']!r} is not valid; choose one of: onnx, torch")
    return opts


def run_export(run: str, trial: str, overrides: list[str]) -> tuple[Path, int, TrialArtifact]:
    opts = parse(overrides)
    art = find_trial(run, trial, opts["output_dir"])
    if opts["format"] == "onnx":
        check_onnx(art)
    suffix = ".onnx" if opts["format"] == "onnx" else ".pt"
    path = Path(opts["out"]) if opts["out"] else art.checkpoint.parents[3] / "export" / (
        trial + suffix)
    for target in (path, Path(f"{path}.json")) if opts["format"] == "onnx" else (path,):
        if target.is_dir():
            raise UserError(f"{target} is a folder; give out= a file name")
    writable_folder("out" if opts["out"] else "the export folder", path.parent)
    model = art.model()  # reads and checks the checkpoint before anything is written
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if opts["format"] == "onnx":
            size = export_onnx(art, path, model)
        else:
            size = export_torch(art, path)
    except OSError as exc:  # a full disk, a folder where the .json goes: nothing torn is left
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path, size, art


def cmd_export(run: str, trial: str, overrides: list[str]) -> int:
    print_written(*run_export(run, trial, overrides))
    return 0


def print_written(path: Path, size: int, art: TrialArtifact) -> None:
    onnx = path.suffix == ".onnx"
    # the reported size in the same format (size_bytes is the runtime's, torch_size_bytes the
    # state_dict's; sweeps before both existed reported the state_dict as size_bytes)
    key = "onnx_size_bytes" if onnx else "torch_size_bytes"
    key = key if key in art.reported else "size_bytes"
    reported = art.reported.get(key)
    print(f"wrote {path} ({size:,} bytes)")
    if reported:
        what = "ONNX graph" if key == "onnx_size_bytes" else "saved state_dict"
        print(f"the sweep reported {int(reported):,} bytes for this trial's {what} "
              f"(ratio {size / reported:.4f})")
    if onnx:
        print(f"preprocessing: {path}.json; run it with onnxruntime.InferenceSession('{path}')")
    else:
        print(f"load it with: model = sweeper.export.load_torch('{path}')")
