"""Every setting explained from its one declaration (sweeper.core.config's `setting` fields):
the key list of `python -m sweeper launch --help` and the page docs/configuration.md.

    python -m sweeper.cli.config_help > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
import sys
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

from sweeper.core.checks import Declared, declared, value_type
from sweeper.core.config import Config

REGENERATE = "python -m sweeper.cli.config_help > docs/configuration.md"
TOP = "top level"  # the section of the keys without a dot


@dataclass(frozen=True)
class Key:
    """One dotted key as the help and the docs show it."""

    key: str
    section: str  # TOP or the section's name (data, model, ...)
    type: str  # int, float, bool, str, list of int; "or none" where None is allowed
    default: str  # as it would be typed on the command line
    valid: str  # the range or the choices; "" for free text
    meaning: str


@dataclass(frozen=True)
class Section:
    name: str
    about: str  # the config class's docstring, first paragraph (the help)
    doc: str  # all of it (the docs)
    keys: tuple[Key, ...]


def sections(cls: type = Config) -> list[Section]:
    """The top-level keys, then one section per nested config, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = [Section(TOP, *_doc(cls), _keys(cls, "", TOP))]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            sub = hints[f.name]
            out.append(Section(f.name, *_doc(sub), _keys(sub, f"{f.name}.", f.name)))
    return out


def _keys(cls: type, prefix: str, section: str) -> tuple[Key, ...]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        spec = declared(f)
        if spec is None:
            raise TypeError(f"{prefix}{f.name} is not declared with sweeper.core.checks.setting")
        rows.append(Key(prefix + f.name, section, type_text(hints[f.name]),
                        value_text(f.default), valid_text(spec, hints[f.name], prefix),
                        spec.meaning))
    return tuple(rows)


def _doc(cls: type) -> tuple[str, str]:
    """(first paragraph, all) of a config class's docstring, each on one line."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    return " ".join(doc.split("\n\n")[0].split()), " ".join(doc.split())


def type_text(hint: Any) -> str:
    kind, optional = value_type(hint)
    if typing.get_origin(kind) is tuple:
        text = f"list of {typing.get_args(kind)[0].__name__}"
    else:
        text = getattr(kind, "__name__", str(kind))
    return f"{text} or none" if optional else text


def value_text(value: Any) -> str:
    """A value as an override spells it: none, true, 1,3,9."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value_text(v) for v in value)
    return str(value)


def valid_text(spec: Declared, hint: Any, prefix: str = "") -> str:
    """The declared range (`lo..hi`, `>= lo`) or choices; a bound naming a field, its key."""
    if spec.choices is not None:
        return ", ".join(value_text(c) for c in spec.choices)
    lo, hi = (prefix + b if isinstance(b, str) else b for b in spec.bounds())
    if lo is None and hi is None:
        return "true, false" if value_type(hint)[0] is bool else ""
    if hi is None:
        text = f">= {lo}"
    elif lo is None:
        text = f"<= {hi}"
    else:
        text = f"{lo}..{hi}"
    if typing.get_origin(value_type(hint)[0]) is tuple:
        text = f"each {text}" + (", increasing" if spec.increasing else "")
    return text


def launch_epilog(width: int | None = None) -> str:
    """The key list of `launch --help`: per section, `key=default  meaning [valid values]`."""
    if width is None:  # as argparse sizes its own text
        width = min(max(shutil.get_terminal_size().columns - 2, 72), 120)
    all_sections = sections()
    heads = {k.key: f"  {k.key}={k.default}" for s in all_sections for k in s.keys}
    column = min(max(len(h) for h in heads.values()), 32) + 2
    lines = textwrap.wrap("overrides: dotted key=value, e.g. search.trials=8 resources.cpus=1; "
                          "none unsets a key that allows it, a list is comma-separated "
                          "(1,16). The keys (also as tables in docs/configuration.md):", width)
    for section in all_sections:
        lines.append("")
        lines += textwrap.wrap(f"[{section.name}] {section.about}", width,
                               subsequent_indent="    ")
        for k in section.keys:
            text = k.meaning + (f" [{k.valid}]" if k.valid and k.type != "bool" else "")
            head = heads[k.key]
            if len(head) > column - 2:
                lines.append(head)
                head = ""
            lines += textwrap.wrap(text, width, initial_indent=head.ljust(column),
                                   subsequent_indent=" " * column, break_on_hyphens=False)
    return "\n".join(lines)


def markdown() -> str:
    """docs/configuration.md."""
    out = [
        "# Configuration",
        "",
        f"<!-- generated: `{REGENERATE}` writes this page from the declarations in "
        "sweeper/core/config.py; edit those, not this page -->",
        "",
        "Every setting of `python -m sweeper launch` (and of `sweeper.launch(overrides=...)`) "
        "is a dotted `key=value` override, e.g. "
        "`python -m sweeper launch space=nystrom_m search.trials=8 resources.cpus=2`. "
        "`none` unsets a key whose type allows it; a list is comma-separated "
        "(`measure.batch_sizes=1,16`). A value of the wrong type, out of its range (bounds "
        "included) or not among its choices is refused before anything runs, as one `error:` "
        "line; a few keys also depend on each other (e.g. `model.embed_dim` is divisible by "
        "`model.num_heads`). `python -m sweeper launch --help` prints the same list.",
        "",
        f"This page is generated from the settings' declarations in `sweeper/core/config.py`, "
        f"which are also what validation enforces; regenerate it with `{REGENERATE}`.",
    ]
    for section in sections():
        title = "Top-level keys" if section.name == TOP else f"`{section.name}`"
        out += ["", f"## {title}", ""]
        out += [_md(section.doc), ""]
        out += ["| key | type | default | range/choices | meaning |", "|---|---|---|---|---|"]
        for k in section.keys:
            out.append(f"| `{k.key}` | {k.type} | `{k.default}` | {_md(k.valid)} | "
                       f"{_md(k.meaning)} |")
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    """Markdown text: outside `code`, <, >, *, $ and | escaped (| inside code too)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        for c in "\\<>*$|":
            parts[i] = parts[i].replace(c, "\\" + c)
    return "`".join(p if i % 2 == 0 else p.replace("|", "\\|") for i, p in enumerate(parts))


if __name__ == "__main__":  # pragma: no cover - run by the docs' regeneration command
    sys.stdout.write(markdown())
