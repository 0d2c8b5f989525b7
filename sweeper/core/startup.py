"""Imports without the cyclic garbage collector.

Importing torch, timm, Ray and MLflow creates about a million objects that live as long as
the process, and CPython's collector scans them all again and again while they are being
created: about 1.5 s of a 7 s start on a 2-core EPYC, and again at exit. `heavy_imports`
pauses the collector while its block imports, then freezes everything allocated so far
(`gc.freeze`: moved where no collection, nor the one at exit, scans it). The CLI wraps
its imports in it, and `sweeper.trial` its own, which a trial's worker process loads first."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def heavy_imports() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
