"""The sweep folder's append-only files before a resume appends to them: a record a killed
driver cut short is dropped; a damaged study journal is refused before anything changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.core import journal
from sweeper.core.errors import UserError
from sweeper.core.files import exclusive


def test_a_record_cut_short_is_dropped_and_the_next_append_reads_back(tmp_path: Path) -> None:
    path = tmp_path / journal.TRIALS
    journal.append(path, {"trial": "a"})
    with path.open("ab") as f:
        f.write(b'{"trial": "b", "val')  # the driver died mid-write
    assert journal.cut_partial_tail(path, every_line_json=True) == len(b'{"trial": "b", "val')
    journal.append(path, {"trial": "c"})
    assert [r["trial"] for r in journal.read(path)] == ["a", "c"]  # c is not glued to b
    assert journal.cut_partial_tail(path, every_line_json=True) == 0  # whole lines: untouched
    assert journal.cut_partial_tail(tmp_path / "absent.jsonl", every_line_json=True) == 0


def test_a_damaged_line_in_the_study_journal_is_refused_before_anything_is_cut(
        tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    body = b'{"op_code": 0}\n{"op_code": 4, "trial\n{"op_code": 5}\n{"op_code": 6'
    path.write_bytes(body)
    with pytest.raises(UserError, match=r"optuna.journal is damaged at line 2"):
        journal.cut_partial_tail(path, every_line_json=True)
    assert path.read_bytes() == body
    assert journal.cut_partial_tail(path, every_line_json=False) == len(b'{"op_code": 6')


def test_a_held_lock_is_refused_without_waiting_and_names_its_holder(tmp_path: Path) -> None:
    lock = tmp_path / "driver.lock"
    with exclusive(lock, wait=False):
        with pytest.raises(BlockingIOError), exclusive(lock, wait=False):
            pass
        assert lock.read_text().strip().isdigit()
    with exclusive(lock, wait=False):  # released on exit
        pass
