"""`python -m sweeper stack`: bad input is one error line and exit 2, with nothing started;
PostgreSQL's programs are found where a user's system keeps them. (The stack itself runs in
tests/test_stack.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.cluster import stack
from sweeper.core.errors import UserError
from tests.helpers.cluster import ROOT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeper", "stack", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["up", "bogus=1"], "stack: unknown option 'bogus=1'"),
    (["up", "pg_port=x"], "stack: pg_port='x' is not a port"),
    (["up", "mlflow_port=70000"], "stack: mlflow_port='70000' is not a port"),
    (["sideways"], "argument action: invalid choice"),
])
def test_bad_options_are_one_error_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run(*args, f"dir={tmp_path / 's'}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "s").exists()  # nothing written


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run("up", f"dir={tmp_path / 's'}", f"mlflow_port={port}")
    assert proc.returncode == 2 and f"mlflow_port={port}" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_down_without_a_stack(tmp_path: Path) -> None:
    proc = run("down", f"dir={tmp_path}")
    assert proc.returncode == 2 and proc.stderr.startswith("error: no stack is up in")


def test_postgres_programs_are_found_off_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian keeps initdb in /usr/lib/postgresql/<major>/bin, which is not on PATH."""
    monkeypatch.setenv("PATH", "/nonexistent")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        with pytest.raises(UserError, match="apt-get install postgresql"):
            stack.pg_binary("initdb")
        return
    found = stack.pg_binary("initdb")
    assert found.parent.parent.parent == Path("/usr/lib/postgresql") and os.access(found, os.X_OK)
