"""The Pareto front for people: a terminal table, CSV/JSON files and a two-panel plot.

Every file is written atomically (a temp file in the target directory, then os.replace), so
a reader never sees half a file, even when a sweep is interrupted mid-write.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any

from sweeper.core.files import atomic_write, write_text
from sweeper.results.pareto import relative_to_baseline

COLUMNS = (
    "trial",
    "config",
    "val_acc",
    "test_acc",
    "size_mb",
    "latency_ms",
    "speedup",
    "size_ratio",
    "simulated",
)
_HEADERS = (
    "trial",
    "configuration",
    "val acc (%)",
    "test acc (%)",
    "size MB",
    "latency ms",
    "speed-up (x)",
    "size ratio (x)",
    "simulated",
)


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "/".join(_fmt_value(v) for v in value)
    return str(value)


def _describe_params(name: str, params: dict[str, Any]) -> list[str]:
    """How each parameter reads, from the technique's config fields (compress.param)."""
    from sweeper.compress import display_fields  # torch: only when a front is described

    fields = display_fields(name)
    parts = []
    for key, value in params.items():
        if key == "enabled" or value is None or value is False:
            continue
        default, meta = fields.get(key, (None, {}))
        if meta.get("quiet") and value == default:
            continue
        if meta.get("headline"):
            parts.insert(0, meta["headline"].format(value))
        elif meta.get("bare"):
            parts.append(_fmt_value(value))
        elif value is True:
            parts.append(key)
        else:
            parts.append(f"{meta.get('short') or key}={_fmt_value(value)}")
    return parts


def _is_no_op(name: str, params: dict[str, Any]) -> bool:
    """A technique with a parameter at its `no_op` value does nothing (recover, 0 epochs)."""
    from sweeper.compress import display_fields  # torch: as in describe_config

    return any("no_op" in meta and params.get(key) == meta["no_op"]
               for key, (_default, meta) in display_fields(name).items())


def describe_config(config: dict[str, Any] | None) -> str:
    """Compact one-line summary, e.g. ``nystrom(m=16) + recover(ep=2) + quantize(int8)``.

    Techniques keep the config's order (the pipeline's stage order). Left out: techniques
    whose ``enabled`` is False or that do nothing (recover with 0 epochs), params that are
    None or False, and secondary params at their default (each config field says how it
    reads: ``sweeper.compress.param``). An empty config reads ``uncompressed``.
    """
    parts = []
    for name, params in (config or {}).items():
        if isinstance(params, dict):
            if params.get("enabled") is False or _is_no_op(name, params):
                continue
            inner = _describe_params(name, params)
            parts.append(f"{name}({', '.join(inner)})" if inner else name)
        elif params:  # a bare flag such as {"distill": True}
            parts.append(name)
    return " + ".join(parts) or "uncompressed"


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _row(r: dict[str, Any], speedup: Any, size_ratio: Any) -> dict[str, Any]:
    return {
        "trial": str(r.get("trial", "")),
        "config": r.get("config") or {},
        "val_acc": _number(r.get("val_acc")),
        "test_acc": _number(r.get("test_acc")),
        "size_mb": _number(r.get("size_mb")),
        "latency_ms": _number(r.get("latency_ms")),
        "speedup": _number(speedup),
        "size_ratio": _number(size_ratio),
        # low precision emulated in float: its latency is float's, not the precision's
        "simulated": bool(r.get("simulated")),
    }


def front_rows(
    front: list[dict[str, Any]], baseline: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One flat record (the COLUMNS fields) per front member, the baseline first when given.

    A member's missing speedup / size_ratio is derived from the baseline when there is one;
    the baseline's own are 1 by definition.
    """
    rows = []
    if baseline is not None:
        speedup, size_ratio = baseline.get("speedup"), baseline.get("size_ratio")
        rows.append(
            _row(
                {**baseline, "trial": "baseline"},
                1.0 if speedup is None else speedup,
                1.0 if size_ratio is None else size_ratio,
            )
        )
    for r in front:
        speedup, size_ratio = r.get("speedup"), r.get("size_ratio")
        if baseline is not None and (speedup is None or size_ratio is None):
            try:
                size_ratio, speedup = relative_to_baseline(r, baseline)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                pass  # leave them missing: shown as "-"
        rows.append(_row(r, speedup, size_ratio))
    return rows


def _cell(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def format_front_table(front: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    """Aligned plain-text table: the baseline row, then the front in the given order."""
    body = [
        (
            row["trial"],
            describe_config(row["config"]),
            _cell(row["val_acc"], ".2f", 100),
            _cell(row["test_acc"], ".2f", 100),
            _cell(row["size_mb"], ".3f"),
            _cell(row["latency_ms"], ".3f"),
            _cell(row["speedup"], ".2f"),
            _cell(row["size_ratio"], ".3f"),
            "yes" if row["simulated"] else "no",
        )
        for row in front_rows(front, baseline)
    ]
    widths = [max(len(c) for c in col) for col in zip(_HEADERS, *body, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        # Text columns left-aligned, numbers right-aligned.
        out = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(_HEADERS), rule, *(line(cells) for cells in body)])


def front_to_csv(
    front: list[dict[str, Any]],
    path: str | os.PathLike[str],
    baseline: dict[str, Any] | None = None,
) -> None:
    """CSV with COLUMNS plus ``description``; numbers unrounded (fractions, not percent),
    empty cells for missing values, ``config`` as JSON. Baseline row first when given."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*COLUMNS, "description"])
    for row in front_rows(front, baseline):
        cells = [
            json.dumps(row["config"], sort_keys=True) if k == "config" else row[k] for k in COLUMNS
        ]
        writer.writerow(["" if c is None else c for c in cells] + [describe_config(row["config"])])
    write_text(path, buf.getvalue())


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    return str(value)


def front_to_json(
    front: list[dict[str, Any]],
    path: str | os.PathLike[str],
    baseline: dict[str, Any] | None = None,
) -> None:
    """JSON list of records (COLUMNS plus ``description``), null for missing values."""
    rows = [
        {**row, "description": describe_config(row["config"])}
        for row in front_rows(front, baseline)
    ]
    text = json.dumps(rows, indent=2, default=_json_default) + "\n"
    write_text(path, text)


def _plottable(r: dict[str, Any]) -> bool:
    return all(_number(r.get(k)) is not None for k in ("val_acc", "size_mb", "latency_ms"))


_TRIAL_STYLE = {"color": "0.65", "s": 22, "zorder": 2}
_FRONT_STYLE = {"color": "tab:red", "s": 60, "edgecolor": "black", "linewidth": 0.6, "zorder": 4}
_BASE_STYLE = {
    "marker": "*",
    "s": 260,
    "color": "gold",
    "edgecolor": "black",
    "linewidth": 0.8,
    "zorder": 6,
}


def _scatter(ax: Any, rs: list[dict[str, Any]], key: str, **style: Any) -> None:
    if rs:
        ax.scatter([r[key] for r in rs], [100 * r["val_acc"] for r in rs], **style)


def plot_front(
    results: list[dict[str, Any]],
    front: list[dict[str, Any]],
    baseline: dict[str, Any],
    path: str | os.PathLike[str],
    history: list[float] | None = None,
) -> None:
    """PNG with accuracy vs size and accuracy vs batch-1 latency, and with `history` the
    hypervolume after each finished trial (sweeper.hv_history) as a third panel.

    All trials grey (infeasible ones as crosses), the front in colour with trial ids, the
    baseline as a star. The figure is drawn on its own Agg canvas rather than through
    pyplot, so it needs no display and never changes the backend of the calling process.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(18 if history else 12, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(1, 3 if history else 2))
    axes[1].sharey(axes[0])
    axes[1].tick_params(labelleft=False)
    if history:
        _plot_history(axes.pop(), history)
    shown = [r for r in results if _plottable(r)]
    infeasible = [r for r in shown if r.get("feasible") is False]
    feasible = [r for r in shown if r.get("feasible") is not False]
    members = [r for r in front if _plottable(r)]

    panels = (("size_mb", "size (MB)"), ("latency_ms", "latency, batch 1 (ms)"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        _front_panel(ax, key, label, feasible, infeasible, members, baseline)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Pareto front: {len(members)} of {len(shown)} trials "
        "(max accuracy, min size, min batch-1 latency)"
    )
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))


def _front_panel(ax: Any, key: str, label: str, feasible: list[dict[str, Any]],
                 infeasible: list[dict[str, Any]], members: list[dict[str, Any]],
                 baseline: dict[str, Any]) -> None:
    """Accuracy against `key`: trials grey, the front in red (hollow where its precision is
    only simulated) with trial ids, the baseline as a star."""
    _scatter(ax, feasible, key, label="trials", **_TRIAL_STYLE)
    _scatter(ax, infeasible, key, label="infeasible", marker="x", **_TRIAL_STYLE)
    real = [r for r in members if not r.get("simulated")]
    emulated = [r for r in members if r.get("simulated")]
    _scatter(ax, real, key, label="Pareto front", **_FRONT_STYLE)
    _scatter(ax, emulated, key, label="front, simulated precision",
             **{**_FRONT_STYLE, "facecolor": "none", "edgecolor": "tab:red", "linewidth": 1.5})
    for i, r in enumerate(members):
        ax.annotate(str(r.get("trial", "")), (r[key], 100 * r["val_acc"]),
                    textcoords="offset points",
                    xytext=(5, 4 if i % 2 == 0 else -11),  # alternate: neighbours overlap less
                    fontsize=8, color="tab:red", zorder=5)
    if _plottable(baseline):
        _scatter(ax, [baseline], key, label="baseline", **_BASE_STYLE)
    ax.set_xlabel(label)
    ax.set_title(f"accuracy vs {label.split(' (')[0]}")
    ax.grid(True, alpha=0.3)


def _plot_history(ax: Any, history: list[float]) -> None:
    steps = range(1, len(history) + 1)
    ax.step(steps, history, where="post", color="tab:blue")
    ax.plot(steps, history, "o", color="tab:blue", markersize=3)
    ax.set_xlabel("finished trials")
    ax.set_ylabel("normalised hypervolume")
    ax.set_title("hypervolume after each trial")
    ax.grid(True, alpha=0.3)


class Front(list):
    """The front's members (each trial's full row), as `SweepOutcome.front`; printing it
    prints the table the CLI prints (the baseline row first), and `records` are that table's
    rows as flat COLUMNS records."""

    def __init__(self, members: list[dict[str, Any]], baseline: dict[str, Any]) -> None:
        super().__init__(members)
        self.baseline = baseline

    @property
    def records(self) -> list[dict[str, Any]]:
        return front_rows(list(self), self.baseline)

    def __str__(self) -> str:
        return format_front_table(list(self), self.baseline)
