"""The packages' one-way imports (pyproject.toml's import-linter contracts) hold, list every
package, are live (each adjacent pair of layers is ordered by real imports), and fail on an
upward import, an MLflow import outside sweeper.tracking, or a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

from tests.helpers.paths import ROOT

LINT = str(Path(sys.executable).with_name("lint-imports"))


def contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def layers() -> list[str]:
    (layered,) = [c for c in contracts() if c["type"] == "layers"]
    return layered["layers"]


def lint(root: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    """lint-imports on the `sweeper` package found first under `root`."""
    env = os.environ | {"PYTHONPATH": str(root)}
    args = [LINT, "--no-cache"] + (["--config", str(config)] if config else [])
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def copy_of_the_package(tmp: Path) -> Path:
    shutil.copytree(ROOT / "sweeper", tmp / "sweeper",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def test_the_contracts_hold_on_todays_code() -> None:
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") == len(contracts())


def test_every_package_and_top_module_is_a_layer() -> None:
    listed = {name.strip() for line in layers() for name in line.split("|")}
    pkg = ROOT / "sweeper"
    children = {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    children |= {p.stem for p in pkg.glob("*.py") if p.stem != "__init__"}
    assert listed == children


@pytest.mark.slow
def test_every_layer_order_is_forced_by_todays_imports(tmp_path: Path) -> None:
    """No dead order: swapping any two adjacent layers breaks the contract on today's code,
    so each line sits where real imports put it (packages that never import each other
    share a line, joined by `|`)."""
    order = layers()
    dead = []
    for i in range(len(order) - 1):
        swapped = list(order)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        config = tmp_path / f"swap{i}.toml"
        config.write_text(
            '[tool.importlinter]\nroot_package = "sweeper"\n'
            '[[tool.importlinter.contracts]]\nname = "swapped"\ntype = "layers"\n'
            'containers = ["sweeper"]\nexhaustive = true\n'
            f"layers = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in swapped)}]\n")
        if lint(ROOT, config).returncode == 0:
            dead.append(f"{order[i]} / {order[i + 1]}")
    assert not dead, f"layer pairs whose order no import forces: {dead}"


@pytest.mark.parametrize(("module", "line", "said"), [
    ("core/files.py", "from sweeper.sweep import driver",  # an upward import
     "sweeper.core.files -> sweeper.sweep.driver"),
    ("measure/size.py", "import mlflow",  # MLflow outside sweeper.tracking
     "sweeper.measure is not allowed to import mlflow"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str,
                                              said: str) -> None:
    root = copy_of_the_package(tmp_path)
    path = root / "sweeper" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402\n")
    proc = lint(root)
    assert proc.returncode != 0
    assert said in proc.stdout


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    work: list[tuple[str, Iterator[str]]] = []

    def enter(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        work.append((module, iter(sorted(graph.find_modules_directly_imported_by(module)))))

    for root in sorted(graph.modules):
        if root in index:
            continue
        enter(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    enter(child)
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = stack[stack.index(node):]
                del stack[stack.index(node):]
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_among_sweepers_modules() -> None:
    """Function-level and TYPE_CHECKING imports count: a cycle hidden in them is a cycle."""
    assert cycles(grimp.build_graph("sweeper")) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "b", "c"):
        graph.add_module(name)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    assert cycles(graph) == []
    graph.add_import(importer="c", imported="a")
    assert cycles(graph) == [["a", "b", "c"]]
