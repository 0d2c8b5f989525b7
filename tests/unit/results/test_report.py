"""Terminal table, config descriptions, CSV/JSON files and the front plot."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from sweeper.core.files import atomic_write
from sweeper.results.pareto import pareto_front
from sweeper.results.report import (
    COLUMNS,
    describe_config,
    format_front_table,
    front_rows,
    front_to_csv,
    front_to_json,
    plot_front,
)

BASELINE = {"val_acc": 0.9512, "test_acc": 0.9431, "size_mb": 0.5833, "latency_ms": 1.8214}


def make_results() -> list[dict]:
    rng = np.random.default_rng(0)
    results = []
    for i in range(30):
        m = int(rng.choice([4, 8, 16, 32]))
        acc = 0.80 + 0.004 * m + rng.normal(0, 0.01)
        size = 0.20 + 0.01 * m + rng.normal(0, 0.01)
        lat = 1.0 + 0.03 * m + rng.normal(0, 0.05)
        results.append(
            {
                "trial": f"t{i:04d}",
                "config": {
                    "nystrom": {"enabled": True, "landmarks": m},
                    "recover": {"epochs": int(rng.integers(0, 3))},
                    "quantize": {"enabled": bool(i % 2), "bits": 8},
                },
                "val_acc": float(acc),
                "size_mb": float(size),
                "latency_ms": float(lat),
                "latency_ratio": float(lat) / BASELINE["latency_ms"],
                "speedup": BASELINE["latency_ms"] / lat,
                "size_ratio": size / BASELINE["size_mb"],
                "feasible": i % 7 != 3,
                "test_acc": None,
            }
        )
    return results


FRONT = [
    {
        "trial": "t0003",
        "config": {"nystrom": {"landmarks": 16}, "recover": {"epochs": 2}},
        "val_acc": 0.93,
        "test_acc": 0.9217,
        "size_mb": 0.21,
        "latency_ms": 1.4,
        "speedup": 1.3,
        "size_ratio": 0.36,
        "feasible": True,
    },
    {
        "trial": "t0007",
        "config": {"quantize": {"bits": 8, "method": "static"}},
        "val_acc": 0.9,
        "test_acc": None,
        "size_mb": 0.15,
        "latency_ms": 1.75,
        "feasible": True,
        "simulated": 1.0,  # as trials report it: a metric
    },  # no speedup / size_ratio: derived from the baseline
]


def test_describe_config() -> None:
    cfg = {
        "nystrom": {"enabled": True, "landmarks": 16},
        "recover": {"epochs": 2},
        "quantize": {"bits": 8},
    }
    assert describe_config(cfg) == "nystrom(m=16) + recover(ep=2) + quantize(int8)"
    # Full dataclass dicts as pipeline_to_dict writes them: defaults are left out.
    full = {
        "nystrom": {"landmarks": 8, "pinv_iters": 6, "enabled": True},
        "recover": {"epochs": 1, "lr": 5e-4, "kd_alpha": 0.5, "kd_temperature": 4.0,
                    "enabled": True},
        "quantize": {"method": "dynamic", "bits": 8, "enabled": True},
    }  # fmt: skip
    assert describe_config(full) == "nystrom(m=8) + recover(ep=1, kd=0.5) + quantize(int8)"
    # Disabled or no-op techniques vanish; non-default values show, bare where it reads well.
    cfg = {
        "prune": {"enabled": False, "ratio": 0.5},
        "nystrom": {"landmarks": 32, "pinv_iters": 3},
        "recover": {"epochs": 0, "lr": 1e-3},
        "distill": {"temperature": 2.5, "lr": 0.0001, "teacher": None},
        "quantize": {"method": "static", "bits": 4, "packed": True, "enabled": True},
    }
    assert describe_config(cfg) == (
        "nystrom(m=32, it=3) + distill(T=2.5, lr=0.0001) + quantize(int4, static, packed)"
    )
    assert describe_config({"quantize": {"enabled": False, "bits": 8}}) == "uncompressed"
    assert describe_config({}) == "uncompressed"
    assert describe_config(None) == "uncompressed"
    assert describe_config({"token_merge": {}, "distill": True}) == "token_merge + distill"


def test_table_has_baseline_and_every_front_row() -> None:
    table = format_front_table(FRONT, BASELINE)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["trial", "configuration"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == [
        "baseline", "uncompressed", "95.12", "94.31", "0.583", "1.821", "1.00", "1.000", "no"
    ]  # fmt: skip
    assert lines[3].split() == [
        "t0003", "nystrom(m=16)", "+", "recover(ep=2)",
        "93.00", "92.17", "0.210", "1.400", "1.30", "0.360", "no",
    ]  # fmt: skip
    # Derived: 1.8214 / 1.75 = 1.04x faster, 0.15 / 0.5833 = 0.257 of the size.
    assert lines[4].split() == [
        "t0007", "quantize(int8,", "static)", "90.00", "-", "0.150", "1.750", "1.04", "0.257",
        "yes",
    ]  # fmt: skip
    assert len(lines) == 2 + 1 + len(FRONT)
    # Aligned: every row ends where the header does (numbers are right-aligned).
    assert len({len(line) for line in lines}) == 1


def test_table_of_real_front() -> None:
    results = make_results()
    front = pareto_front(results)
    table = format_front_table(front, BASELINE)
    for r in front:
        assert r["trial"] in table
        assert f"{100 * r['val_acc']:.2f}" in table
    assert "baseline" in table
    infeasible = {r["trial"] for r in results if r["feasible"] is False}
    assert not infeasible & {r["trial"] for r in front}


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "front.csv"
    front_to_csv(FRONT, path, baseline=BASELINE)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [*COLUMNS, "description"]
    assert [r["trial"] for r in rows] == ["baseline", "t0003", "t0007"]
    expected = front_rows(FRONT, BASELINE)
    for got, want in zip(rows, expected, strict=True):
        assert json.loads(got["config"]) == want["config"]
        for key in ("val_acc", "test_acc", "size_mb", "latency_ms", "speedup", "size_ratio"):
            value = float(got[key]) if got[key] else None
            assert value == want[key], key  # full precision, no rounding
    assert rows[2]["test_acc"] == ""
    assert rows[1]["description"] == "nystrom(m=16) + recover(ep=2)"
    # Without a baseline: only the front, and ratios that were not reported stay empty.
    front_to_csv(FRONT, path)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["trial"] for r in rows] == ["t0003", "t0007"]
    assert rows[1]["speedup"] == ""


def test_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "front.json"  # parent is created
    front = [{**FRONT[0], "val_acc": np.float64(0.93), "size_mb": np.float32(0.25)}, FRONT[1]]
    front_to_json(front, path, baseline=BASELINE)
    data = json.loads(path.read_text())
    assert [r["trial"] for r in data] == ["baseline", "t0003", "t0007"]
    assert data[1]["config"] == FRONT[0]["config"]
    assert data[1]["val_acc"] == 0.93
    assert data[1]["size_mb"] == pytest.approx(0.25)
    assert data[2]["test_acc"] is None
    assert data[2]["speedup"] == pytest.approx(BASELINE["latency_ms"] / 1.75)
    assert data[0]["speedup"] == 1.0 and data[0]["size_ratio"] == 1.0
    assert data[2]["description"] == "quantize(int8, static)"
    assert [row["simulated"] for row in data] == [False, False, True]
    # Atomic: no temp files left behind.
    assert os.listdir(path.parent) == ["front.json"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "front.json"
    front_to_json(FRONT, path)
    before = path.read_text()

    def half_then_fail(fh: IO[bytes]) -> None:
        fh.write(b"[{")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, half_then_fail)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["front.json"]


def test_an_atomic_write_is_as_readable_as_a_plain_one(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "model.onnx", lambda fh: fh.write(b"x"))
        (tmp_path / "plain").write_bytes(b"x")
        os.umask(0o077)
        atomic_write(tmp_path / "private", lambda fh: fh.write(b"x"))
    finally:
        os.umask(umask)
    mode = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert mode == {"model.onnx": 0o644, "plain": 0o644, "private": 0o600}  # mkstemp's: 0o600


def test_plot_writes_png(tmp_path: Path) -> None:
    results = make_results()
    results.append({"trial": "t0099", "val_acc": None, "feasible": True})  # failed trial
    front = pareto_front(results)
    path = tmp_path / "front.png"
    plot_front(results, front, BASELINE, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    assert os.listdir(tmp_path) == ["front.png"]
    # An empty sweep still draws (baseline only).
    plot_front([], [], BASELINE, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
