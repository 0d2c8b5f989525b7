"""Every bad input to `python -m sweeper` is one `error:` line, exit status 2, no traceback,
and nothing written: CLI values, space files, folders and data, services, commands.

Cases that fail before torch loads run in-process (fast); those involving services, Ray or
export run as real subprocesses, each well within its timeout (none may hang).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sweeper.cli.main import main
from sweeper.core.config import build_config, no_password, redact
from sweeper.core.errors import UserError
from sweeper.core.sweep_folder import SWEEP_VERSION
from sweeper.sweep.driver import new_sweep_dir
from tests.conftest import tiny_overrides
from tests.helpers.imagefolders import make_folder
from tests.helpers.paths import ROOT

SECRET = "s3cret"  # must never be echoed
TIMEOUT_S = 60


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # after `python -m sweeper`; {tmp}, {port} filled in per test
    subprocess: bool = False
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables


def launch(*extra: str, sub: bool = False) -> Case:
    return Case(("launch", "{tiny}", *extra), sub)


def space(name: str) -> Case:
    return launch(f"space={{tmp}}/spaces/{name}.yaml")


def command(*args: str, sub: bool = False) -> Case:
    return Case((*args, "output_dir={tmp}/runs"), sub)


SPACES = {  # bad space files, each a different rule
    "yaml_syntax": "techniques: {nystrom: {landmarks: [\n",
    "not_utf8": b"techniques:\n  recover:\n    epochs: \xff\xfe\n",
    "bound_text": "techniques:\n  recover:\n    epochs: {int: [0, 'a']}\n",
    "float_bound_as_text": "techniques:\n  recover:\n    lr: {float: [1e-4, 1e-3]}\n",
    "low_above_high": "techniques:\n  recover:\n    lr: {float: [0.1, 0.01]}\n",
    "nan_bound": "techniques:\n  recover:\n    lr: {float: [.nan, 1.0e-3]}\n",
    "inf_bound": "techniques:\n  recover:\n    kd_temperature: {float: [1.0, .inf]}\n",
    "log_nonpositive": "techniques:\n  recover:\n    kd_alpha: {float: [0.0, 0.5], log: true}\n",
    "log_not_bool": "techniques:\n  recover:\n    lr: {float: [1.0e-4, 1.0e-3], log: maybe}\n",
    "step_zero": "techniques:\n  recover:\n    epochs: {int: [0, 3], step: 0}\n",
    "step_with_log": "techniques:\n  recover:\n    epochs: {int: [1, 3], step: 2, log: true}\n",
    "step_fraction_on_int": "techniques:\n  recover:\n    epochs: {int: [0, 3], step: 0.5}\n",
    "int_bound_fraction": "techniques:\n  recover:\n    epochs: {int: [0.5, 3]}\n",
    "unknown_technique": "techniques:\n  teleport:\n    speed: 3\n",
    "unknown_parameter": "techniques:\n  nystrom:\n    landmrks: {choices: [4]}\n",
    "value_rejected": "techniques:\n  quantize:\n    bits: {choices: [8, 9]}\n",
    "choice_mapping": "techniques:\n  recover:\n    epochs: {choices: [{a: 1}, 2]}\n",
    "enabled_not_bool": "techniques:\n  recover:\n    enabled: {choices: [true, 'x']}\n",
    "duplicate_key": "techniques:\n  recover:\n    epochs: 1\n    epochs: 2\n",
    "no_techniques": "techniques: {}\n",
    "parameter_not_text": "techniques:\n  recover:\n    1: 2\n",
    "beyond_model_tokens": "techniques:\n  nystrom:\n    landmarks: {choices: [8, 512]}\n",
}

CASES = {
    # -- command line and config values -------------------------------------------------------
    "cli-no-command": Case(()),
    "cli-unknown-command": Case(("frobnicate",)),
    "cli-override-without-equals": launch("search"),
    "cli-unknown-key": launch("search.trialz=2"),
    "cli-key-given-twice": launch("space=nystrom_m", "space=hybrid"),
    "select-key-given-twice": command("select", "tome-sweep", "prefer=size", "prefer=latency"),
    "cli-not-an-integer": launch("search.trials=x"),
    "cli-not-a-boolean": launch("dashboard=maybe"),
    "cli-unknown-space": launch("space=nope"),
    "cli-lr-nan": launch("train.lr=nan"),
    "cli-mlp-ratio-inf": launch("model.mlp_ratio=inf"),
    "cli-mlp-ratio-zero": launch("model.mlp_ratio=0"),
    "cli-embed-dim-zero": launch("model.embed_dim=0"),
    "cli-heads-indivisible": launch("model.num_heads=3"),
    "cli-data-seed-negative": launch("data.seed=-1"),
    "cli-train-seed-negative": launch("train.seed=-3"),
    "cli-search-seed-beyond-numpy": launch("search.seed=4294967296"),
    "cli-batch-size-zero": launch("measure.batch_sizes=1,0"),
    "cli-no-training-images": launch("data.val_fraction=0.5", "data.test_fraction=0.5"),
    "cli-population-one": launch("search.population=1"),
    "cli-empty-experiment": launch("experiment="),
    "cli-ray-address-garbage": launch("ray.address=nohost"),
    "cli-tracking-uri-not-uri": launch("tracking_uri=foo"),
    "cli-tracking-uri-file-store": launch("tracking_uri=file://{tmp}/mlruns"),  # MLflow 3 refuses
    "cli-tracking-uri-password": launch(f"tracking_uri=http://me:{SECRET}@127.0.0.1:5000"),
    "cli-storage-password": launch(
        f"search.storage=postgresql+psycopg2://me:{SECRET}@127.0.0.1/optuna"),
    "cli-storage-not-url": launch(f"search.storage=me:{SECRET}@db"),
    "cli-env-tracking-uri-password": Case(
        launch().args, env=(("MLFLOW_TRACKING_URI", f"http://me:{SECRET}@127.0.0.1:5000"),)),
    # -- space files --------------------------------------------------------------------------
    "space-missing-file": launch("space={tmp}/spaces/absent.yaml"),
    "space-a-folder": launch("space={tmp}/spaces/folder.yaml"),
    "space-a-fifo": launch("space={tmp}/spaces/fifo.yaml"),  # reading one would block
    **{f"space-{name.replace('_', '-')}": space(name) for name in SPACES},
    # -- folders, data and checkpoints --------------------------------------------------------
    "dir-output-is-a-file": launch("output_dir={tmp}/afile"),
    "dir-output-under-a-file": launch("output_dir={tmp}/afile/sub"),
    "dir-output-not-creatable": launch("output_dir=/proc/sweeper-test/out"),
    "dir-cache-is-a-file": launch("cache_dir={tmp}/afile"),
    "data-cifar-missing": launch("data.name=cifar10", "data.root={tmp}/nodata"),
    "data-root-is-a-file": launch("data.name=cifar10", "data.root={tmp}/afile"),
    "data-cifar-corrupt": launch("data.name=cifar10", "data.root={tmp}/cifar"),
    "data-folder-no-root-given": launch("data.name=imagefolder"),
    "data-folder-missing-root": launch("data.name=imagefolder", "data.root={tmp}/nofolder"),
    "data-folder-no-train": launch("data.name=imagefolder", "data.root={tmp}/folders/no_train"),
    "data-folder-no-classes": launch("data.name=imagefolder",
                                     "data.root={tmp}/folders/no_classes"),
    "data-folder-empty-class": launch("data.name=imagefolder",
                                      "data.root={tmp}/folders/empty_class"),
    "data-folder-class-only-in-test": launch("data.name=imagefolder",
                                             "data.root={tmp}/folders/only_in_test"),
    "data-folder-corrupt-image": launch("data.name=imagefolder",
                                        "data.root={tmp}/folders/corrupt"),
    "data-folder-one-class": launch("data.name=imagefolder", "data.root={tmp}/folders/one_class"),
    "model-not-a-vit": launch("model.name=resnet18"),
    "data-folder-mean-not-rgb": launch("data.name=imagefolder", "data.root={tmp}/folders/ok",
                                       "data.mean=0.5,0.5"),
    "data-crop-pct-above-1": launch("data.crop_pct=1.5"),
    "data-interpolation-unknown": launch("data.interpolation=lanczos"),
    "data-folder-std-zero": launch("data.name=imagefolder", "data.root={tmp}/folders/ok",
                                   "data.std=0.2,0,0.2"),
    # -- services and cluster (subprocesses: these used to hang or retry for minutes) ---------
    "svc-mlflow-closed-port": launch("tracking_uri=http://127.0.0.1:{port}", sub=True),
    "svc-mlflow-sqlite-not-creatable": launch(
        "tracking_uri=sqlite:////proc/sweeper-test/mlflow.db", sub=True),
    "svc-storage-closed-port": launch(
        "search.storage=postgresql+psycopg2://me@127.0.0.1:{port}/optuna", sub=True),
    "svc-ray-closed-port": launch("ray.address=127.0.0.1:{port}", sub=True),
    "svc-ray-client-closed-port": launch("ray.address=ray://127.0.0.1:{port}", sub=True),
    "svc-more-gpus-than-machine": launch("resources.gpus=64", sub=True),
    "svc-more-cpus-than-machine": launch("resources.cpus=1024", sub=True),
    # -- commands on existing sweep folders ---------------------------------------------------
    "export-tome-has-no-onnx": command("export", "tome-sweep", "t0me01", sub=True),
    "export-corrupt-checkpoint": command("export", "tome-sweep", "t0me01", "format=torch",
                                         sub=True),
    "export-junk-checkpoint": command("export", "tome-sweep", "t0me03", "format=torch",
                                      sub=True),
    "export-junk-result-log": command("export", "tome-sweep", "t0me02", sub=True),
    "export-out-is-a-folder": command("export", "tome-sweep", "t0me01", "format=torch",
                                      "out={tmp}", sub=True),
    "export-unknown-trial": command("export", "tome-sweep", "nosuch", sub=True),
    "export-bad-trial-id": command("export", "tome-sweep", "../x"),
    "export-bad-format": command("export", "tome-sweep", "t0me01", "format=xml"),
    "export-unknown-run": command("export", "nosuch", "t0me01"),
    "resume-unknown-run": command("resume", "nosuch"),
    "resume-foreign-folder": command("resume", "{tmp}/foreign"),
    "resume-not-json": command("resume", "not-json"),
    "resume-json-list": command("resume", "json-list"),
    "resume-missing-keys": command("resume", "missing-keys"),
    "resume-unknown-config-key": command("resume", "unknown-config-key"),
    "resume-not-utf8": command("resume", "not-utf8"),
    "resume-no-tune-state": command("resume", "no-tune-state"),
    "resume-finished": command("resume", "finished"),
    "resume-extra-override": command("resume", "no-tune-state", "search.trials=3"),
    "resume-mlflow-down": command("resume", "mlflow-down", sub=True),
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the socket is: nothing listens there


def record(tmp: Path, name: str, **extra: object) -> dict:
    cfg = build_config(tiny_overrides(tmp / "runs", "space=nystrom_m"))
    return {"schema_version": SWEEP_VERSION, "name": name, "space": "nystrom_m",
            "parent_run_id": "0" * 32,
            "tracking_uri": f"sqlite:///{tmp / 'runs' / 'mlflow.db'}",
            "config": cfg.to_dict(), "status": "RUNNING", **extra}


def make_sweeps(tmp: Path, port: int) -> None:
    """Minimal sweep folders as a driver leaves them: sweep.json, Tune state, a checkpoint."""
    sweeps = tmp / "runs" / "sweeps"
    bodies: dict[str, bytes | str | dict] = {
        "tome-sweep": record(tmp, "tome-sweep", status="FINISHED"),
        "not-json": "{oops",
        "json-list": "[1, 2]",
        "missing-keys": {"name": "missing-keys"},
        "unknown-config-key": record(tmp, "unknown-config-key")
        | {"config": {**record(tmp, "x")["config"], "colour": 1}},
        "not-utf8": b"\xff\xfe{}",
        "no-tune-state": record(tmp, "no-tune-state"),
        "finished": record(tmp, "finished", status="FINISHED"),
        "mlflow-down": record(tmp, "mlflow-down", tracking_uri=f"http://127.0.0.1:{port}"),
    }
    for name, body in bodies.items():
        (sweeps / name).mkdir(parents=True)
        path = sweeps / name / "sweep.json"
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body if isinstance(body, str) else json.dumps(body))
    (sweeps / "mlflow-down" / "ray" / "tune").mkdir(parents=True)
    (sweeps / "mlflow-down" / "ray" / "tune" / "tuner.pkl").write_bytes(b"state")
    ckpt = sweeps / "tome-sweep" / "ray" / "tune" / "trainable_t0me01_0_r=2_x" / "checkpoint_0"
    ckpt.mkdir(parents=True)
    (ckpt / "model.pt").write_bytes(b"not a checkpoint")
    (ckpt / "pipeline.json").write_text(json.dumps({"tome": {"r": 2}}))
    for trial, model, log in (("t0me02", b"", "{oops"),
                              # junk torch's unpickler fails on with an IndexError
                              ("t0me03", random.Random(2).randbytes(64), "")):
        other = ckpt.parents[1] / f"trainable_{trial}_1_r=2_x" / "checkpoint_0"
        other.mkdir(parents=True)
        (other / "model.pt").write_bytes(model)
        (other / "pipeline.json").write_text(json.dumps({"quantize": {"bits": 8}}))
        (other / "result.json").write_text(log)


def make_inputs(tmp: Path, port: int) -> None:
    (tmp / "spaces").mkdir()
    for name, body in SPACES.items():
        path = tmp / "spaces" / f"{name}.yaml"
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    (tmp / "spaces" / "folder.yaml").mkdir()
    os.mkfifo(tmp / "spaces" / "fifo.yaml")
    (tmp / "afile").write_text("a regular file\n")
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "notes.txt").write_text("not a sweep\n")
    cifar = tmp / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / name).write_bytes(b"\x80\x04garbage")
    make_sweeps(tmp, port)
    make_folders(tmp / "folders")


def make_folders(root: Path) -> None:
    """Image folders, each wrong in one way (and one right: for bad values of data.*)."""
    good = {"train": {"cat": 3, "dog": 3}, "val": {"cat": 1, "dog": 1},
            "test": {"cat": 1, "dog": 1}}
    make_folder(root / "ok", good)
    make_folder(root / "no_train", {"training": good["train"], "val": good["val"]})
    (root / "no_classes" / "train").mkdir(parents=True)
    make_folder(root / "empty_class", good)
    (root / "empty_class" / "train" / "owl").mkdir()
    make_folder(root / "only_in_test", {**good, "test": {"cat": 1, "owl": 1}})
    make_folder(root / "one_class", {"train": {"cat": 6}})
    make_folder(root / "corrupt", good)
    png = (root / "corrupt" / "train" / "dog" / "000.png").read_bytes()
    (root / "corrupt" / "train" / "dog" / "001.png").write_bytes(png[: len(png) // 2])


def tree(tmp: Path) -> set[str]:
    return {str(p.relative_to(tmp)) for p in tmp.rglob("*")}


def run(case: Case, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    if not case.subprocess:  # the test has set the environment already
        code = main(args)
        out, err = capsys.readouterr()
        return code, out, err
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | dict(case.env)
    proc = subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "/proc/" in " ".join(case.args) and not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc as a folder nothing can be created in")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    port = closed_port()
    make_inputs(tmp_path, port)
    out_dir = tmp_path / "out"
    args: list[str] = []
    for arg in case.args:
        if arg == "{tiny}":
            args += tiny_overrides(out_dir)
        else:
            args.append(arg.format(tmp=tmp_path, port=port))
    before = tree(tmp_path)

    code, out, err = run(case, args, capsys)

    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "Traceback" not in out + err
    assert SECRET not in out + err
    assert tree(tmp_path) == before  # no sweep folder, no mlflow.db, no export, no probe
    assert not (out_dir / "sweeps").exists() and not (out_dir / "mlflow.db").exists()


def test_launches_in_the_same_second_get_distinct_folders(tmp_path: Path) -> None:
    sweeps = tmp_path / "sweeps"
    first = new_sweep_dir(sweeps, "nystrom_m", "20260101-000000")
    second = new_sweep_dir(sweeps, "nystrom_m", "20260101-000000")
    third = new_sweep_dir(sweeps, "nystrom_m", "20260101-000000")
    assert first.name == "nystrom_m-20260101-000000"
    assert second.name == "nystrom_m-20260101-000000-2"
    assert third.name == "nystrom_m-20260101-000000-3"
    assert all(p.is_dir() for p in (first, second, third))


def test_passwords_in_urls_are_refused_without_echo_and_redacted() -> None:
    for key, url in (("tracking_uri", f"http://me:{SECRET}@host:5000"),
                     ("search.storage", f"postgresql+psycopg2://me:{SECRET}@host/optuna")):
        with pytest.raises(UserError) as err:
            build_config([f"{key}={url}"])
        assert SECRET not in str(err.value)
        assert ("PGPASSWORD" if key == "search.storage" else "MLFLOW_TRACKING_PASSWORD") in str(
            err.value)
    no_password("search.storage", "postgresql+psycopg2://me@host:5432/optuna", "PGPASSWORD")
    assert redact(f"at http://me:{SECRET}@host:5000 and sqlite:///x.db") == (
        "at http://me:***@host:5000 and sqlite:///x.db")
    # what launch logs to MLflow and sweep.json: a config holds no password to leak
    cfg = build_config(["search.storage=postgresql+psycopg2://me@host/optuna",
                        "tracking_uri=http://me@host:5000"])
    assert ":***@" not in json.dumps(cfg.to_dict()) and SECRET not in json.dumps(cfg.to_dict())


def test_an_experiment_deleted_in_mlflow_is_one_line_with_the_command_that_restores_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted in the MLflow UI, the experiment sits in its trash and takes no runs: said
    before the baseline trains (its own cache stays empty), and the command it gives works."""
    import shlex

    from mlflow.tracking import MlflowClient

    from sweeper.sweep.preflight import check_experiment

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("sweeper"))
    capsys.readouterr()  # MLflow's notes on creating the store
    code = main(["launch", *tiny_overrides(out, "space=nystrom_m",
                                           f"cache_dir={tmp_path / 'cache'}")])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: experiment=sweeper is deleted in MLflow at"), lines
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    assert not (out / "sweeps").exists()
    env_var, *restore = shlex.split(lines[0].split("`")[1])
    restore[0] = str(Path(sys.executable).with_name(restore[0]))  # the venv's mlflow
    key, value = env_var.split("=", 1)
    subprocess.run(restore, env={**os.environ, key: value}, check=True, capture_output=True,
                   timeout=120)
    check_experiment(uri, "sweeper")  # restored: the launch would go ahead


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 for the block; its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def launch_tracked_at(uri: str, tmp: Path, capsys: pytest.CaptureFixture[str]
                      ) -> tuple[int, list[str]]:
    """`launch` with tracking_uri=uri and a cache of its own (tmp/cache: a baseline trained
    would be there); its exit status and stderr lines."""
    code = main(["launch", *tiny_overrides(tmp / "out", "space=nystrom_m",
                                           f"tracking_uri={uri}", f"cache_dir={tmp / 'cache'}")])
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_a_web_server_that_is_not_mlflow_is_refused_before_the_baseline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracking_uri at some other web server (another app on the port, a wrong path) used to
    pass the reachability check and fail after the baseline had trained."""
    class NotFound(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_error(404)

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with http_server(NotFound) as port:
        code, lines = launch_tracked_at(f"http://127.0.0.1:{port}/mlflow", tmp_path, capsys)
    assert code == 2 and lines == [
        f"error: tracking_uri http://127.0.0.1:{port}/mlflow is not an MLflow tracking server "
        f"(http://127.0.0.1:{port}/mlflow/health answers 404); check its host, port and path"]
    assert not (tmp_path / "cache").exists()


def test_an_mlflow_server_that_refuses_the_user_is_one_line_before_the_baseline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server with authentication (`mlflow server --app-name basic-auth`) answers /health to
    anyone and 401 to the API without credentials: one line before the baseline trains, not a
    traceback after it."""
    class NeedsLogin(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.endswith("/health"):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
            else:
                self.send_error(401, "You are not authenticated.")

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with http_server(NeedsLogin) as port:
        code, lines = launch_tracked_at(f"http://127.0.0.1:{port}", tmp_path, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: MLflow at http://127.0.0.1:{port} refused to look up "
                               "experiment=sweeper:"), lines
    assert "401" in lines[0], lines
    assert not (tmp_path / "cache").exists()
