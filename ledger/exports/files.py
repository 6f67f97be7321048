"""Writing files so that a reader never sees half of one: written beside the target under
a `.tmp` name, flushed to disk, then renamed over it (a rename is atomic on POSIX)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP = ".tmp"


def temporary(path: Path) -> Path:
    """Where `path` is written before it is renamed into place."""
    return path.with_name(path.name + TMP)


def settle(tmp: Path, path: Path) -> None:
    """`tmp` (closed) made durable and renamed to `path`, its folder entry made durable."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, value: Any) -> None:
    """A small JSON file written atomically (the event export's state)."""
    tmp = temporary(path)
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    settle(tmp, path)


class Busy(RuntimeError):
    """Another export is writing into the same folder."""


@contextlib.contextmanager
def only_writer(folder: Path) -> Iterator[None]:
    """An exclusive `flock` on `folder/.lock` for the export's duration; `Busy` if another
    process holds it. The kernel drops it when the process dies, however it dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another export is writing into {folder}; wait for it to finish"
                       ) from None
        yield
