"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed over
it, so a reader or a resumed sweep never sees half a file, even after a kill mid-write.
Also the names of a trial checkpoint's files, which the worker writes and the driver,
`export` and the front read."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from sweeper.core.errors import UserError

TRIAL_STATE_FILE = "model.pt"  # the compressed model's state_dict
ARTIFACTS = "artifacts"  # files techniques wrote; logged to the trial's MLflow run
RESULT = "result.json"  # the reported metrics, kept with the model


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call write(file) on a temporary file next to `path`, fsync it, rename it to `path`;
    creates the parent folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    # created as open() creates a file (0666 less the umask), not mkstemp's 0600: an exported
    # model or a front.csv must be readable by whoever could read a plain write of it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str], wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing) for the block: one
    process at a time, across processes on this machine. The kernel drops it when the holder
    dies, so a killed holder leaves nothing to clean up. `wait=False`: BlockingIOError at once
    while another process holds it, and the holder writes its pid into the file, for the
    message of whoever finds it held."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not wait:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def writable_folder(key: str, path: str | os.PathLike[str]) -> None:
    """`path` is a folder we may write in, or can become one: its nearest existing ancestor
    is a writable folder (probed with an empty folder, removed at once)."""
    target = Path(path).absolute()
    try:
        existing = next(p for p in (target, *target.parents) if p.exists())
    except OSError as exc:  # e.g. a parent we may not even look into
        raise UserError(f"{key}={path}: cannot access it ({exc.strerror})") from None
    if not existing.is_dir():
        raise UserError(f"{key}={path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path}: {existing} is not writable")
    try:  # root passes os.access everywhere; a read-only mount or /proc still refuses
        os.rmdir(tempfile.mkdtemp(prefix=".sweeper-probe-", dir=existing))
    except OSError as exc:
        raise UserError(f"{key}={path}: cannot create folders in {existing} "
                        f"({exc.strerror})") from None
