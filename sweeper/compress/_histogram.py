"""Importance-score histograms (kept vs removed) written as JSON and PNG artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def write_histogram(
    directory: Path,
    stem: str,
    kept: torch.Tensor,
    removed: torch.Tensor,
    xlabel: str,
    log10: bool,
    bins: int = 60,
) -> list[Path]:
    """Histogram of importance scores of what was kept and what was removed.

    With `log10`, scores are binned by log10(score) (magnitudes span decades); exact zeros are
    counted apart, since their logarithm is undefined.
    """
    directory.mkdir(parents=True, exist_ok=True)
    kept, removed = kept.float().reshape(-1), removed.float().reshape(-1)
    zeros = {"kept": int((kept == 0).sum()), "removed": int((removed == 0).sum())}
    if log10:
        kept, removed = kept[kept > 0].log10(), removed[removed > 0].log10()
    both = torch.cat([kept, removed])
    low, high = (float(both.min()), float(both.max())) if both.numel() else (0.0, 1.0)
    high = high if high > low else low + 1.0
    edges = torch.linspace(low, high, bins + 1)
    counts = {name: torch.histc(v, bins, low, high).int().tolist()
              for name, v in (("kept", kept), ("removed", removed))}
    data = {"xlabel": xlabel, "log10": log10, "edges": edges.tolist(), **counts,
            "zeros": zeros}
    json_path = directory / f"{stem}.json"
    json_path.write_text(json.dumps(data, indent=1))
    png_path = directory / f"{stem}.png"
    _plot(data, png_path)
    return [json_path, png_path]


def _plot(data: dict, path: Path) -> None:
    # Figure + Agg canvas: no pyplot global state, safe inside any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    edges = data["edges"]
    for name, colour in (("kept", "tab:blue"), ("removed", "tab:red")):
        ax.stairs(data[name], edges, fill=True, alpha=0.6, color=colour, label=name)
    ax.set_xlabel(("log10 " if data["log10"] else "") + data["xlabel"])
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
