"""python -m sweeper export RUN TRIAL [format=onnx|torch] [output_dir=DIR] [out=PATH]: the
command's options, the write (nothing torn is left), and what it prints. What is written is
`sweeper.deploy.export`'s."""

from __future__ import annotations

from pathlib import Path

from sweeper.core.errors import UserError
from sweeper.core.files import writable_folder
from sweeper.deploy.export import (
    FORMATS,
    TrialArtifact,
    check_onnx,
    export_onnx,
    export_torch,
    find_trial,
)


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
        print(f"load it with: model = sweeper.load_torch('{path}')")
