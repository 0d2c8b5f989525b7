from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.cli.main import main
from sweeper.core.config import layered
from tests.helpers.paths import ROOT


def test_unknown_space_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["launch", "space=nope", f"output_dir={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown space 'nope'; valid spaces: " + err[0].split(": ", 2)[2]]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("arg", ["trials=3", "search.trials=-1", "search.sampler=bogus"])
def test_bad_overrides_exit_2(arg: str, capsys) -> None:
    assert main(["launch", arg]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_spaces_lists_every_space(capsys) -> None:
    assert main(["spaces"]) == 0
    assert "nystrom_m" in capsys.readouterr().out


def test_importing_sweeper_stays_light() -> None:
    code = ("import sys, sweeper, sweeper.cli.main, sweeper.core.config, sweeper.trial.run, "
            "sweeper.spaces.space, sweeper.results.pareto, sweeper.results.report; "
            "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]"


def test_no_user_string_reaches_a_shell_and_checkpoints_load_weights_only() -> None:
    """Static guard for the safety rules: no shell=True / os.system anywhere in the package,
    and every torch.load passes weights_only=True."""
    for path in (ROOT / "sweeper").rglob("*.py"):
        text = path.read_text()
        assert "shell=True" not in text and "os.system(" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line and not line.strip().startswith("#"):
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


def test_a_key_given_twice_is_refused_but_scripts_can_layer_defaults() -> None:
    assert main(["launch", "space=nystrom_m", " space =hybrid"]) == 2
    assert layered("search.trials=8", "space=hybrid", "search.trials=3") == [
        "space=hybrid", "search.trials=3"]
