"""Versioned records: sweep.json and each trial checkpoint's pipeline.json carry their
format's schema_version. A record from a newer sweeper is one error line (upgrade sweeper)
and nothing is written; one without a version (every sweep from before versions) is read as
before; any other version is refused by name."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sweeper import compress
from sweeper.cli.main import main
from sweeper.compress.quantize import QuantizeConfig
from sweeper.core.config import build_config
from sweeper.core.errors import UserError
from sweeper.core.files import TRIAL_STATE_FILE
from sweeper.core.sweep_folder import (
    PIPELINE_VERSION,
    SWEEP_VERSION,
    check_version,
    pipeline_record,
    read_pipeline,
    read_sweep_meta,
)
from sweeper.deploy.export import TORCH_FORMAT, find_trial, load_torch
from sweeper.measure.size import state_bytes
from sweeper.models.vit import create_model
from sweeper.sweep.state import Sweep
from tests.conftest import Shared, tiny_overrides
from tests.helpers.launch import QUICK_SPACE, launch, sweep_dir

NAME, TRIAL = "nystrom_m-20260101-000000", "a1b2c3d4_00000"
PIPELINE = [QuantizeConfig()]  # dynamic int8: rebuilt from its state without data


def sweep_record(out: Path, **changes: Any) -> dict[str, Any]:
    """sweep.json as a driver writes it (as JSON reads it back), less what export and
    resume do not read."""
    cfg = json.loads(json.dumps(build_config(tiny_overrides(out)).to_dict()))
    return {"name": NAME, "space": cfg["space"], "parent_run_id": "0" * 32,
            "tracking_uri": f"sqlite:///{out / 'mlflow.db'}", "config": cfg,
            "status": "RUNNING", **changes}


def make_sweep(out: Path, meta: dict[str, Any], pipeline: dict[str, Any]) -> Path:
    """A sweep folder under output_dir `out` with one finished trial: its checkpoint holds
    the compressed tiny model's state and `pipeline` as pipeline.json."""
    folder = out / "sweeps" / NAME
    ckpt = folder / "ray" / "tune" / f"trainable_{TRIAL}_0_x" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps(meta))
    structure = dataclasses.replace(build_config(tiny_overrides(out)).model, pretrained=False)
    model = compress.apply_pipeline(create_model(structure, 10), copy.deepcopy(PIPELINE),
                                    compress.TrialContext())
    (ckpt / TRIAL_STATE_FILE).write_bytes(state_bytes(model))
    (ckpt / "pipeline.json").write_text(json.dumps(pipeline))
    return folder


def files(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for a folder)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def bare() -> dict[str, Any]:
    """The pipeline as version 0 of pipeline.json held it: {technique: params}."""
    return compress.pipeline_to_dict(PIPELINE)


NEWER = SWEEP_VERSION + 1


@pytest.mark.parametrize("command", [["resume", NAME], ["select", NAME],
                                     ["export", NAME, TRIAL], ["export", NAME, TRIAL,
                                                               "format=torch"]])
def test_a_newer_sweep_record_is_one_error_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture, command: list[str]) -> None:
    out = tmp_path / "out"
    folder = make_sweep(out, sweep_record(out, schema_version=NEWER), pipeline_record(bare()))
    before = files(tmp_path)
    capsys.readouterr()
    code = main([*command, f"output_dir={out}"])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert stderr == (f"error: {folder / 'sweep.json'} is version {NEWER}, written by a newer "
                      f"sweeper; this sweeper reads up to version {SWEEP_VERSION}: upgrade "
                      "sweeper to read it\n")
    assert files(tmp_path) == before


def test_a_newer_pipeline_record_is_one_error_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    folder = make_sweep(out, sweep_record(out),
                        {"schema_version": PIPELINE_VERSION + 1, "pipeline": bare()})
    before = files(tmp_path)
    capsys.readouterr()
    code = main(["export", NAME, TRIAL, f"output_dir={out}"])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    lines = stderr.splitlines()
    (ckpt,) = folder.glob(f"ray/tune/*_{TRIAL}_*/checkpoint_*")
    assert lines == [f"error: {ckpt / 'pipeline.json'} is version {PIPELINE_VERSION + 1}, "
                     f"written by a newer sweeper; this sweeper reads up to version "
                     f"{PIPELINE_VERSION}: upgrade sweeper to read it"]
    assert files(tmp_path) == before


def test_versionless_records_are_read_as_before_and_exported(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Today's sweeps: sweep.json and pipeline.json without a version (version 0)."""
    out = tmp_path / "out"
    meta = sweep_record(out)
    folder = make_sweep(out, meta, bare())
    assert read_sweep_meta(folder) == meta
    assert read_pipeline(next(folder.rglob("pipeline.json"))) == bare()
    art = find_trial(NAME, TRIAL, str(out))
    assert art.pipeline == bare() and compress.pipeline_from_dict(art.pipeline) == PIPELINE
    target = tmp_path / "trial.pt"
    capsys.readouterr()
    assert main(["export", NAME, TRIAL, "format=torch", f"out={target}",
                 f"output_dir={out}"]) == 0, capsys.readouterr().err
    assert torch.load(target, weights_only=True)["format"] == TORCH_FORMAT
    assert load_torch(target)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_pipeline_json_of_each_version_reads_the_same(tmp_path: Path) -> None:
    for version, body in ((0, bare()), (PIPELINE_VERSION, pipeline_record(bare()))):
        path = tmp_path / f"v{version}.json"
        path.write_text(json.dumps(body))
        assert read_pipeline(path) == bare()
        assert compress.pipeline_from_dict(read_pipeline(path)) == PIPELINE


@pytest.mark.parametrize(("body", "message"), [
    ({"schema_version": 1}, "no pipeline object"),
    ([1, 2], "a JSON list"),
    ({"schema_version": "1", "pipeline": {}}, "has schema_version '1', not a version number"),
])
def test_malformed_pipeline_records_are_refused(tmp_path: Path, body: Any, message: str) -> None:
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(body))
    with pytest.raises(UserError, match=message):
        read_pipeline(path)


@pytest.mark.parametrize("version", [-1, 1.5, "1", True, None])
def test_an_unknown_older_or_malformed_sweep_version_is_refused_by_name(
        tmp_path: Path, version: object) -> None:
    out = tmp_path / "out"
    folder = make_sweep(out, sweep_record(out, schema_version=version), bare())
    with pytest.raises(UserError) as err:
        read_sweep_meta(folder)
    assert str(err.value).startswith(f"{folder / 'sweep.json'} ")
    assert repr(version) in str(err.value) and "reads" in str(err.value)


def test_the_version_rule() -> None:
    assert check_version("r", {}, (0, 1)) == 0
    assert check_version("r", {"schema_version": 1}, (0, 1)) == 1
    with pytest.raises(UserError, match=r"^r is version 0, which this sweeper does not read "
                                        r"\(it reads version 1\)$"):
        check_version("r", {}, (1,))
    with pytest.raises(UserError, match="r is version 3, written by a newer sweeper; this "
                                        "sweeper reads up to version 2: upgrade sweeper"):
        check_version("r", {"schema_version": 3}, (1, 2))


def test_save_meta_writes_the_current_version_over_a_versionless_record(tmp_path: Path) -> None:
    """A resumed sweep from before versions is written back as this version (its fields
    unchanged)."""
    old = sweep_record(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps(old))
    meta = read_sweep_meta(tmp_path)
    sweep = Sweep(None, None, None, None, tmp_path, meta, None)  # type: ignore[arg-type]
    sweep.save_meta(status="RUNNING", resumed=1)
    written = json.loads((tmp_path / "sweep.json").read_text())
    assert written == {**old, "resumed": 1, "schema_version": SWEEP_VERSION}
    assert read_sweep_meta(tmp_path) == written


@pytest.mark.slow
def test_a_real_sweep_writes_versioned_records(tmp_path: Path, shared: Shared,
                                              capsys: pytest.CaptureFixture) -> None:
    """A launched sweep's sweep.json and pipeline.json carry their versions; with them
    stripped (the sweep as sweeper wrote it before versions) it exports the same; with a
    newer sweep.json, resume refuses it."""
    (tmp_path / "quick.yaml").write_text(QUICK_SPACE)
    proc = launch(tmp_path, f"space={tmp_path / 'quick.yaml'}", "search.trials=1",
                  "search.concurrency=1", shared=shared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = sweep_dir(tmp_path)
    meta = json.loads((folder / "sweep.json").read_text())
    assert meta["schema_version"] == SWEEP_VERSION and meta["status"] == "FINISHED"
    (pipeline_json,) = folder.glob("ray/tune/*/checkpoint_*/pipeline.json")
    record = json.loads(pipeline_json.read_text())
    assert record == {"schema_version": PIPELINE_VERSION, "pipeline": record["pipeline"]}
    assert list(record["pipeline"]) == ["quantize"]
    (trial,) = [r["trial"] for r in json.loads((folder / "front.json").read_text())
                if r["trial"] != "baseline"]
    assert f"_{trial}_" in pipeline_json.parent.parent.name

    def export(name: str) -> dict[str, Any]:
        capsys.readouterr()
        target = tmp_path / name
        code = main(["export", meta["name"], trial, f"out={target}",
                     f"output_dir={tmp_path}"])
        assert code == 0, capsys.readouterr().err
        return json.loads(Path(f"{target}.json").read_text())

    versioned = export("versioned.onnx")
    (folder / "sweep.json").write_text(json.dumps(
        {k: v for k, v in meta.items() if k != "schema_version"}))
    pipeline_json.write_text(json.dumps(record["pipeline"]))
    assert export("versionless.onnx") == versioned

    (folder / "sweep.json").write_text(json.dumps({**meta, "schema_version": NEWER}))
    capsys.readouterr()
    assert main(["resume", meta["name"], f"output_dir={tmp_path}"]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and len(stderr.splitlines()) == 1
    assert f"is version {NEWER}, written by a newer sweeper" in stderr


def test_an_unfinished_sweep_from_before_versions_is_refused_by_resume_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its Tune state (tuner.pkl) pickled the flat modules of 0.1 (sweeper.worker, ...):
    resume says so instead of a traceback from deep inside Tune's restore."""
    folder = make_sweep(tmp_path, sweep_record(tmp_path), bare())
    (folder / "ray" / "tune" / "tuner.pkl").write_bytes(b"\x80\x04N.")
    before = files(tmp_path)
    assert main(["resume", NAME, f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "before sweep records had " \
        "versions" in err[0], err
    assert files(tmp_path) == before
