"""sweeper.startup.heavy_imports: the collector is off inside, back as it was after, and
what was allocated inside is frozen."""

from __future__ import annotations

import gc
import subprocess
import sys

from sweeper.core.startup import heavy_imports


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


def test_a_trial_worker_imports_torch_and_timm_without_the_collector() -> None:
    """A Ray worker first imports torch and timm through sweeper.trial (unpickling the trial
    inputs): in a fresh interpreter, that import leaves them frozen and the collector on."""
    code = ("import gc, sys; import sweeper.trial.run; "
            "print(gc.isenabled(), 'torch' in sys.modules, 'timm' in sys.modules, "
            "gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out[:3] == ["True", "True", "True"]
    assert int(out[3]) > 100_000  # torch and timm alone make several hundred thousand objects
