from __future__ import annotations

from tests.helpers.paths import ROOT


def _bash_blocks(text: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in text.splitlines():
        if line.startswith("```bash"):
            inside, current = True, []
        elif line.startswith("```") and inside:
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in _bash_blocks(readme)
    assert "pytest" in ci_command and 'install -q -e ".[test,cluster]"' in ci_command


def test_readme_main_command_launches_the_default_space() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert any("pip install" in b and "-m sweeper launch space=nystrom_m" in b for b in blocks)


def test_readme_cluster_commands_are_the_tested_ones_of_the_docs() -> None:
    # the README's docker quick start is a subset of docs/cluster-and-docker.md's commands,
    # which tests/project/test_docker.py checks against the compose file
    readme = (ROOT / "README.md").read_text()
    assert "\n## On a cluster\n" in readme
    section = readme.split("\n## On a cluster\n", 1)[1].split("\n## ", 1)[0]
    readme_lines = [line for b in _bash_blocks(section) for line in b.splitlines()]
    docs = (ROOT / "docs" / "cluster-and-docker.md").read_text()
    docs_lines = {line for b in _bash_blocks(docs) for line in b.splitlines()}
    assert any(" run --rm sweeper launch " in line for line in readme_lines)
    assert readme_lines and all(line in docs_lines for line in readme_lines)
