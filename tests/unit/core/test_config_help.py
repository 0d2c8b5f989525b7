"""Every setting is declared once (sweeper.core.checks.setting) and explained from there: its
declaration is what validation enforces, what `launch --help` lists and what
docs/configuration.md says."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

import pytest

from sweeper.cli import config_help
from sweeper.cli.main import main
from sweeper.core.checks import Declared, declared, value_type
from sweeper.core.config import Config, build_config, valid_keys
from sweeper.core.errors import UserError
from tests.helpers.paths import ROOT

DOCS = ROOT / "docs" / "configuration.md"
# overrides a bound value needs to pass the cross-field checks (heads divide the width, the
# embedded ViT stays under 2e9 weights), given before the key under test
CONTEXT = {"model.embed_dim": ["model.num_heads=1", "model.depth=1", "model.mlp_ratio=0.5"]}


def field_of(key: str) -> tuple[dataclasses.Field[Any], Any, Any]:
    """(the dataclass field, its type hint, the default config's section holding it)."""
    *path, name = key.split(".")
    owner: Any = Config()
    for part in path:
        owner = getattr(owner, part)
    fields = {f.name: f for f in dataclasses.fields(owner)}
    return fields[name], typing.get_type_hints(type(owner))[name], owner


def declarations(strict: bool = True) -> list[tuple[str, Declared, Any, Any]]:
    """(key, declaration, type hint, section) of every key (strict: each key has one)."""
    out = []
    for key in valid_keys():
        f, hint, owner = field_of(key)
        spec = declared(f)
        assert spec is not None or not strict, f"{key} is not declared with setting()"
        if spec is not None:
            out.append((key, spec, hint, owner))
    return out


def _scalar(hint: Any) -> Any:
    """int or float of a number field (of its items for a list), else None."""
    kind = value_type(hint)[0]
    if typing.get_origin(kind) is tuple:
        kind = typing.get_args(kind)[0]
    return kind if kind in (int, float) else None


def range_cases() -> list[tuple[str, str, Any]]:
    """(key, 'lo' or 'hi', declared bound) of every declared numeric bound."""
    cases = []
    for key, spec, _hint, owner in declarations(strict=False):  # collected: never fails
        for side, bound in zip(("lo", "hi"), spec.bounds(owner), strict=True):
            if bound is not None:
                cases.append((key, side, bound))
    return cases


def test_every_key_has_a_meaning_a_type_and_a_default() -> None:
    found = declarations()
    assert [key for key, *_ in found] == valid_keys()
    assert len(found) >= 60
    for key, spec, hint, owner in found:
        f, _, _ = field_of(key)
        assert spec.meaning.strip() and "\n" not in spec.meaning, key
        assert value_type(hint)[0] in (int, float, str, bool) or typing.get_origin(
            value_type(hint)[0]) is tuple, (key, hint)
        assert f.default is not dataclasses.MISSING, f"{key} has no default"
        assert getattr(owner, f.name) == f.default, key
        if spec.choices is not None:
            assert f.default is None or f.default in spec.choices, key
    # every section says what it is (not the signature dataclasses would put there)
    for section in config_help.sections():
        assert section.about and "(" not in section.about.split()[0], section.name


def test_every_number_has_a_declared_range() -> None:
    """So the range test below covers every int and float key (and each list's items)."""
    numbers = [key for key, spec, hint, _ in declarations() if _scalar(hint)]
    assert len(numbers) >= 35
    ranged = {key for key, *_ in range_cases()}
    assert [key for key in numbers if key not in ranged] == []
    assert {"search.trials", "model.patch_size", "search.rungs", "data.mean",
            "max_accuracy_drop"} <= ranged


def _override(key: str, value: Any, hint: Any, spec: Declared) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    if typing.get_origin(value_type(hint)[0]) is tuple and spec.must is None:
        text = ",".join([text] * 3)  # data.mean, data.std: R,G,B, each item checked
    return f"{key}={text}"


@pytest.mark.parametrize(("key", "side", "bound"), range_cases(),
                         ids=[f"{k}-{s}" for k, s, _ in range_cases()])
def test_declared_bounds_are_what_is_enforced(key: str, side: str, bound: Any) -> None:
    f, hint, owner = field_of(key)
    spec = declared(f)
    assert spec is not None
    kind = _scalar(hint)
    lo, hi = spec.bounds(owner)
    context = CONTEXT.get(key, [])
    if kind is float:
        bound = float(bound)
        outside = math.nextafter(bound, -math.inf if side == "lo" else math.inf)
    else:
        outside = bound - 1 if side == "lo" else bound + 1

    cfg = build_config([*context, _override(key, bound, hint, spec)])  # the bound itself is valid
    value = getattr(getattr(cfg, key.split(".")[0]) if "." in key else cfg, f.name)
    assert (value[0] if isinstance(value, tuple) else value) == bound

    with pytest.raises(UserError) as err:
        build_config([*context, _override(key, outside, hint, spec)])
    if spec.must is not None:
        expected = f"{key} must be {spec.must.format(lo=lo, hi=hi)}"
    else:
        expected = f"{key}={outside} is out of range [{lo}, {hi}]"
    assert str(err.value) == expected


def test_declared_choices_are_what_is_enforced() -> None:
    choosy = [(key, spec) for key, spec, *_ in declarations() if spec.choices is not None]
    assert {"data.name", "search.sampler", "search.early_stop", "resources.device",
            "measure.runtime", "data.interpolation"} <= {key for key, _ in choosy}
    for key, spec in choosy:
        assert spec.choices
        for choice in spec.choices:
            build_config([f"{key}={choice}"])
        with pytest.raises(UserError, match=re.escape(
                f"{key}='bogus' is not valid; choose one of: "
                f"{', '.join(str(c) for c in spec.choices)}")):
            build_config([f"{key}=bogus"])


def test_docs_page_is_what_the_generator_writes() -> None:
    assert DOCS.exists(), f"docs/configuration.md is missing: run `{config_help.REGENERATE}`"
    assert DOCS.read_text() == config_help.markdown(), (
        f"docs/configuration.md is out of date with sweeper/core/config.py; regenerate it: "
        f"`{config_help.REGENERATE}`")
    page = DOCS.read_text()
    assert config_help.REGENERATE in page.split("\n## ")[0]  # said at the top
    for key in valid_keys():
        assert f"| `{key}` |" in page, key


def _cli_text(value: Any) -> str:
    """A default as an override writes it (independently of config_help's formatter)."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_launch_help_lists_every_key_under_its_section_with_its_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["launch", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    section = None
    seen: dict[str, str] = {}
    for line in lines:
        if match := re.match(r"\[([^\]]+)\] ", line):
            section = match.group(1)
        elif (match := re.match(r"  (\S+?)=(\S*)(\s|$)", line)) and section is not None:
            seen[match.group(1)] = section
            assert match.group(1) in valid_keys(), line
            _, _, owner = field_of(match.group(1))
            expected = _cli_text(getattr(owner, match.group(1).rsplit(".", 1)[-1]))
            assert match.group(2) == expected, (line, expected)
    assert list(seen) == valid_keys()
    for key, where in seen.items():
        assert where == (key.split(".")[0] if "." in key else config_help.TOP), key
    flat = " ".join(out.split())
    for key, spec, *_ in declarations():
        assert " ".join(spec.meaning.split()) in flat, key
