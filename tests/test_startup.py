"""sweeper.startup.heavy_imports: the collector is off inside, back as it was after, and
what was allocated inside is frozen."""

from __future__ import annotations

import gc

from sweeper.startup import heavy_imports


def test_the_collector_pauses_inside_and_what_was_made_there_is_frozen() -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()
    with heavy_imports():
        assert not gc.isenabled()
        made = [[] for _ in range(1000)]  # tracked containers, as imports create
    assert gc.isenabled()
    assert gc.get_freeze_count() >= before + len(made)


def test_a_collector_the_caller_turned_off_stays_off() -> None:
    gc.disable()
    try:
        with heavy_imports():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_comes_back_when_an_import_fails() -> None:
    try:
        with heavy_imports():
            import sweeper_no_such_module  # noqa: F401
    except ModuleNotFoundError:
        pass
    assert gc.isenabled()
