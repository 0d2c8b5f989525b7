"""`python -m sweeper stack up|down [dir=DIR] [...]`: the docker stack's servers on one
workstation without Docker, all on 127.0.0.1: a PostgreSQL cluster made with initdb (databases
`mlflow` and `optuna`), `mlflow server` on it with artifacts served, and a Ray head with token
authentication. `up` prints the URIs to launch with; `down` stops what `up` started, by pid.

The tests start the same servers through `Postgres` and `start_mlflow` (tests/e2e/test_stack.py).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sweeper.core.errors import UserError

USER = "sweeper"  # the PostgreSQL role the stack creates; its password is PGPASSWORD's
DATABASES = ("mlflow", "optuna")
STATE = "stack.json"
PASSWORD_FILE = "pgpassword"
DEFAULT_PORTS = {"pg_port": 5432, "mlflow_port": 5000, "ray_port": 6379, "dashboard_port": 8265}
BIN = Path(sys.executable).parent  # mlflow and ray of this environment


def pg_binary(name: str) -> Path:
    """A PostgreSQL program as a user's shell finds it: PATH, then Debian's versioned folders
    (/usr/lib/postgresql/<major>/bin, newest first), which are not on PATH by default."""
    found = shutil.which(name)
    if found:
        return Path(found)
    folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                     key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                     reverse=True)
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"PostgreSQL's `{name}` was not found on PATH or in /usr/lib/postgresql/*/bin; "
                    "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql)")


def pg_version() -> str:
    out = subprocess.run([pg_binary("postgres"), "--version"], capture_output=True, text=True)
    match = re.search(r"\(PostgreSQL\) (\S+)", out.stdout)  # postgres (PostgreSQL) 15.18 (...)
    return match[1] if match else "?"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text()[-1500:] if log and log.exists() else ""
    raise UserError(f"{what} did not come up within {timeout:.0f}s" + (f"; log:\n{tail}" if tail
                                                                        else ""))


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster in `folder`, listening on 127.0.0.1:`port` only (no Unix
    socket), password authentication for role `sweeper`. PostgreSQL refuses to run as root, so
    as root the cluster belongs to, and runs as, Debian's `postgres` user."""

    folder: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL, without the password (libpq reads PGPASSWORD)."""
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str | Path) -> None:
        owner = _pg_owner()
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              timeout=120, **({"user": owner, "group": pwd.getpwnam(owner).pw_gid}
                                              if owner else {}))
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout)[-800:]
            raise UserError(f"{Path(str(args[0])).name} failed: {said}")

    def init(self) -> Postgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        pwfile = self.folder / ".initdb-password"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        owner = _pg_owner()
        if owner:
            _reachable_by(self.folder, owner)
            shutil.chown(self.folder, owner, owner)
            shutil.chown(pwfile, owner, owner)
        try:
            self._run(pg_binary("initdb"), "-D", self.data, "-U", USER, "--pwfile", pwfile,
                      "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync")
        finally:
            pwfile.unlink(missing_ok=True)
        return self

    def start(self) -> Postgres:
        if self.log.exists() and _pg_owner():
            shutil.chown(self.log, _pg_owner(), _pg_owner())
        self._run(pg_binary("pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
                  "start")
        return self

    def create_databases(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER,
                                password=self.password, dbname="postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                for name in DATABASES:
                    cur.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(pg_binary("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()


def _pg_owner() -> str | None:
    """Who runs PostgreSQL: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise UserError("PostgreSQL refuses to run as root and there is no `postgres` user; "
                        "run the stack as a normal user") from None
    return "postgres"


def _reachable_by(folder: Path, owner: str) -> None:
    """Every folder above the cluster must let `owner` through (o+x), or initdb fails late."""
    for parent in folder.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise UserError(f"{folder}: user {owner} (who runs PostgreSQL, since it refuses "
                            f"root) cannot enter {parent}; choose dir= elsewhere, e.g. under /tmp")


def start_mlflow(folder: Path, port: int, backend: str, password: str,
                 wait: bool = True) -> subprocess.Popen:
    """`mlflow server` on `backend` (a PostgreSQL URL without password: PGPASSWORD carries it),
    artifacts uploaded through the server into `folder`/mlartifacts; its own process group.
    `wait=False` returns at once (then `wait_mlflow`)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "mlflow-server.log"
    env = {**os.environ, "PGPASSWORD": password}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", backend, "--serve-artifacts",
         "--artifacts-destination", str(folder / "mlartifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=folder, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
        start_new_session=True)
    if wait:
        wait_mlflow(proc, folder, port)
    return proc


def wait_mlflow(proc: subprocess.Popen, folder: Path, port: int) -> None:
    _wait(lambda: proc.poll() is None and mlflow_healthy(port), 240,
          f"MLflow server on port {port}", folder / "mlflow-server.log")


def mlflow_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def ray_env() -> dict[str, str]:
    """Token authentication on, explicitly: a node or driver sends the token only then."""
    return {**os.environ, "RAY_AUTH_MODE": "token"}


def start_ray_head(folder: Path, port: int, dashboard_port: int) -> subprocess.Popen:
    """`ray start --head --block` on 127.0.0.1 in its own process group, with token auth."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "ray-head.log"
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=ray_env(),
                   capture_output=True, timeout=60, check=True)
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         "--disable-usage-stats"],
        env=ray_env(), stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
    _wait(lambda: proc.poll() is None and listening(port) and listening(dashboard_port), 180,
          f"Ray head on port {port}", log)
    return proc


def cmdline(pid: int) -> str:
    """A process's command line, its words joined by spaces ("" once it has gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ray_pids(port: int) -> list[int]:
    """The processes of the Ray node(s) whose GCS is on `port`: the head's monitors, dashboard
    and raylet name the GCS by the machine's address, so the port is what identifies them."""
    gcs = re.compile(rf"(127\.0\.0\.1:|gcs_server_port=|gcs[-_]address=[\d.]+:){port}\b")
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and gcs.search(cmdline(int(p.name)))]


def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def stop_group(pid: int, timeout: float = 8) -> None:
    """SIGTERM the process group `pid` leads, SIGKILL it if still there after `timeout`.
    (A dead leader whose parent has not reaped it stays a zombie: it counts as stopped.)"""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + timeout
        while time.monotonic() < end and group_alive(pid):
            time.sleep(0.3)
        if not group_alive(pid):
            return


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- the command -------------------------------------------------------------------------------
def _options(args: list[str]) -> tuple[Path, dict[str, int]]:
    folder, ports = Path("outputs/stack"), dict(DEFAULT_PORTS)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in {"dir", *ports}:
            raise UserError(f"stack: unknown option {arg!r}; options: dir=DIR "
                            + " ".join(f"{k}=N" for k in ports))
        if key == "dir":
            folder = Path(value)
            continue
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise UserError(f"stack: {key}={value!r} is not a port (1-65535)")
        ports[key] = int(value)
    return folder.resolve(), ports


def up(args: list[str], say=print) -> int:  # noqa: ANN001
    folder, ports = _options(args)
    _check_free(folder, ports)
    pg_binary("initdb"), pg_binary("pg_ctl")  # a missing PostgreSQL fails before anything starts
    folder.mkdir(parents=True, exist_ok=True)
    password = os.environ.get("PGPASSWORD") or secrets.token_hex(16)
    pw = folder / PASSWORD_FILE
    pw.touch(mode=0o600)
    pw.write_text(password + "\n")
    pg = _start(folder, ports, password)
    _say_how(say, folder, ports, pg, pw)
    return 0


def _check_free(folder: Path, ports: dict[str, int]) -> None:
    if (folder / STATE).exists():
        raise UserError(f"a stack is already up in {folder} (stop it: python -m sweeper stack "
                        f"down dir={folder})")
    busy = [f"{k}={p}" for k, p in ports.items() if not port_free(p)]
    if len(set(ports.values())) < len(ports) or busy:
        raise UserError(f"stack: ports in use or repeated: {' '.join(busy) or ports}; "
                        "choose others, e.g. pg_port=15432")


def _start(folder: Path, ports: dict[str, int], password: str) -> Postgres:
    """PostgreSQL, then MLflow and the Ray head; the state file names each as it starts, so
    a failure part way stops what did start."""
    state: dict = {"folder": str(folder), **ports}
    try:
        pg = Postgres(folder / "postgres", ports["pg_port"], password).init().start()
        state["postgres"] = str(pg.folder)
        _save(folder, state)
        pg.create_databases()
        # MLflow's first start creates its tables (dozens of migrations): the Ray head
        # starts meanwhile
        ml = start_mlflow(folder / "mlflow", ports["mlflow_port"], pg.url("mlflow"), password,
                          wait=False)
        state["mlflow_pid"] = ml.pid
        _save(folder, state)
        head = start_ray_head(folder / "ray", ports["ray_port"], ports["dashboard_port"])
        state["ray_pid"] = head.pid
        _save(folder, state)
        wait_mlflow(ml, folder / "mlflow", ports["mlflow_port"])
    except BaseException:
        if (folder / STATE).exists():
            _stop(folder)
        raise
    return pg


def _say_how(say, folder: Path, ports: dict[str, int], pg: Postgres,  # noqa: ANN001
             pw: Path) -> None:
    from importlib.metadata import version

    say(f"PostgreSQL {pg_version()}  127.0.0.1:{pg.port}, user {USER}, databases "
        f"{' and '.join(DATABASES)} (data in {pg.folder})")
    say(f"MLflow {version('mlflow')}  http://127.0.0.1:{ports['mlflow_port']} (store: "
        f"database mlflow; artifacts served from {folder / 'mlflow' / 'mlartifacts'})")
    say(f"Ray {version('ray')} head  127.0.0.1:{ports['ray_port']}, dashboard "
        f"http://127.0.0.1:{ports['dashboard_port']} (token authentication)")
    say("")
    say(f"Ray token (paste it into the dashboard): RAY_AUTH_MODE=token {BIN / 'ray'} "
        "get-auth-token")
    say("Run a sweep on it:")
    say(f'  export PGPASSWORD="$(cat {pw})" RAY_AUTH_MODE=token')
    say(f"  python -m sweeper launch space=nystrom_m ray.address=127.0.0.1:{ports['ray_port']} "
        f"tracking_uri=http://127.0.0.1:{ports['mlflow_port']} "
        f"search.storage={pg.url('optuna')}")
    say(f"Stop it: python -m sweeper stack down dir={folder}")


def _save(folder: Path, state: dict) -> None:
    (folder / STATE).write_text(json.dumps(state, indent=1) + "\n")


def _stop(folder: Path) -> list[str]:
    state = json.loads((folder / STATE).read_text())
    stopped = []
    if "ray_pid" in state:
        stop_group(state["ray_pid"])
        kill_pids(ray_pids(state["ray_port"]))  # whatever `ray start` left outside its group
        stopped.append("Ray head")
    if "mlflow_pid" in state:
        stop_group(state["mlflow_pid"])
        stopped.append("MLflow server")
    if "postgres" in state:
        Postgres(Path(state["postgres"]), state["pg_port"], "").stop()
        stopped.append("PostgreSQL")
    (folder / STATE).unlink()
    return stopped


def down(args: list[str], say=print) -> int:  # noqa: ANN001
    folder, _ = _options(args)
    if not (folder / STATE).exists():
        raise UserError(f"no stack is up in {folder} (no {STATE}); give dir= as for `stack up`")
    stopped = _stop(folder)
    say(f"stopped: {', '.join(stopped) or 'nothing'} (data kept in {folder})")
    return 0


def cmd_stack(action: str, args: list[str]) -> int:
    return up(args) if action == "up" else down(args)
