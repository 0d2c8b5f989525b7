"""`pip install .` (a wheel, not editable) works: the built-in search spaces (the top-level
search_spaces/) ship inside the package, every package of sweeper/ is in the wheel, and a
space given as a file path still loads."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from sweeper.spaces.space import SPACE_DIR, available
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow

TIMEOUT_S = 300


def run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def test_wheel_in_a_fresh_venv_lists_every_builtin_space(tmp_path: Path) -> None:
    # build from a copy of what the wheel is made of: the repository stays untouched
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("sweeper", "search_spaces"):
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "-q", "-w", tmp_path / "dist", src, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("sweeper-*.whl")
    shipped = {Path(n).stem for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("sweeper/search_spaces/") and n.endswith(".yaml")}
    assert shipped == set(available()) and shipped
    packaged = {str(Path(n).parent) for n in zipfile.ZipFile(wheel).namelist()
                if n.endswith("/__init__.py")}
    assert packaged == {str(p.parent.relative_to(ROOT)) for p in
                        (ROOT / "sweeper").rglob("__init__.py")} | {"sweeper/search_spaces"}

    # a fresh venv that reuses this one's installed dependencies (torch etc.) through a .pth
    # line, so only the wheel itself is installed; .pth files of that folder (this checkout's
    # editable install) are not run from there, so the wheel's sweeper is the one imported
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                       cwd=tmp_path).strip())
    deps = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    (purelib / "deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "-q", wheel, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(python, "-c", "import sweeper.spaces.space as s; print(s.SPACE_DIR)", cwd=elsewhere)
    assert Path(where.strip()).is_relative_to(venv), where  # not this checkout
    assert not Path(where.strip()).is_relative_to(ROOT)
    listed = run(python, "-m", "sweeper", "spaces", cwd=elsewhere)
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert names == set(available())

    # space=path/to/mine.yaml: a file of the user's, relative to where they run
    (elsewhere / "mine").mkdir()
    shutil.copy(SPACE_DIR / "quant_bits.yaml", elsewhere / "mine" / "my_space.yaml")
    loaded = run(python, "-c", "from sweeper.spaces.space import load_space; "
                 "print(load_space('mine/my_space.yaml').name)", cwd=elsewhere)
    assert loaded.strip() == "my_space"


def test_pyproject_lists_every_package_of_the_source_tree() -> None:
    """setuptools is given the packages by name (search_spaces/ is mapped into the wheel), so
    a new package folder must be named there too or the wheel would leave it out."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        setup = tomllib.load(f)["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "sweeper").rglob("__init__.py")}
    assert set(setup["packages"]) == on_disk | {"sweeper.search_spaces"}
    assert setup["package-dir"] == {"sweeper.search_spaces": "search_spaces"}
