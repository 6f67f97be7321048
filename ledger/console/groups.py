"""`ledger send`'s groups: its input read on a thread of its own and cut into groups.

A group holds at most `size` documents and closes early when the input pauses: the
first document of a group waits at most `wait` seconds for the others, so a program that
writes one command and waits for its answer gets it after that wait, not never. A file
fills every group at once. At most one group is queued ahead of the one being run, so
memory does not grow with the input.

Why a thread and not `selectors`: the input is split into documents by
`streams.documents` from a buffered byte stream, whose buffer may already hold the next
lines while the descriptor reads as idle; a reader thread with a bounded queue sees
exactly what has arrived, on pipes, terminals and files alike.
"""

from __future__ import annotations

import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import click

from ledger.console.streams import Document, documents

PROGRESS_MIN_BYTES = 1 << 20  # a file at least this large gets a progress bar on a terminal


@dataclass(frozen=True)
class Read:
    """A document and how many bytes of the input had been read once it was."""

    document: Document
    offset: int


class _Counted:
    """The input's `readline`, counting the bytes it returns."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.count = 0

    def readline(self, size: int = -1, /) -> bytes:
        chunk = self.stream.readline(size)
        self.count += len(chunk)
        return chunk


class _End:
    """Put on the queue after the last document (with the error that ended the input)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def private_reader(source: IO[bytes]) -> IO[bytes]:
    """The input to read on the reader thread. A pipe or a terminal (standard input, a
    named FIFO) gets a reader of its own over the same descriptor: a daemon thread
    blocked in `sys.stdin.buffer` at exit would hold that object's lock while the
    interpreter closes it, which aborts the process (`_enter_buffered_busy`)."""
    try:
        fd = source.fileno()
    except (OSError, ValueError, AttributeError):
        return source  # a test's in-memory input: nothing blocks
    if file_size(source) is not None:
        return source  # a regular file never blocks
    return open(fd, "rb", closefd=False)  # closefd=False: the descriptor is not ours


def file_size(source: IO[bytes]) -> int | None:
    """The size of the input when it is a regular file (not a pipe or a terminal)."""
    try:
        status = os.fstat(source.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


class Groups:
    """The documents of `source` in groups of at most `size`, cut after `wait` seconds
    of waiting for more; iterate once. A read error ends the groups and is raised."""

    def __init__(self, source: IO[bytes], size: int, wait: float) -> None:
        self.size, self.wait = size, wait
        self._input = _Counted(private_reader(source))
        self._queue: queue.Queue[Read | _End] = queue.Queue(maxsize=size)
        self._reader = threading.Thread(target=self._read, name="ledger-send-reader",
                                        daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for document in documents(self._input):
                self._queue.put(Read(document, self._input.count))
        except Exception as e:  # a failed read: raised again on the caller's thread
            self._queue.put(_End(e))
        else:
            self._queue.put(_End())

    def __iter__(self) -> Iterator[list[Read]]:
        item = self._queue.get()
        while not isinstance(item, _End):
            group = [item]
            deadline = time.monotonic() + self.wait
            while len(group) < self.size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:  # the input paused: run what has come
                    break
                if isinstance(item, _End):
                    break
                group.append(item)
            yield group
            if not isinstance(item, _End):
                item = self._queue.get()
        if item.error is not None:
            raise item.error


@contextmanager
def progress(source: IO[bytes], wanted: bool) -> Iterator[Callable[[int, int], None]]:
    """`advance(offset, done)`: a bar on stderr by bytes of `source` read, if `wanted`
    (the caller knows who is watching) and `source` is a file of PROGRESS_MIN_BYTES or
    more; otherwise `advance` does nothing."""
    size = file_size(source)
    if not wanted or size is None or size < PROGRESS_MIN_BYTES:
        yield lambda offset, done: None
        return
    shown = 0

    def commands(done: int | None) -> str | None:
        return None if done is None else f"{done:,} commands"

    with click.progressbar(length=size, label="sending", file=sys.stderr,
                           item_show_func=commands) as bar:
        def advance(offset: int, done: int) -> None:
            nonlocal shown
            bar.update(offset - shown, done)
            shown = offset

        yield advance


def watched(as_json: bool) -> bool:
    """True when a person watches stderr on a terminal while the results go elsewhere:
    the bar never shares a screen with the results, nor runs under `--json` to a file."""
    return sys.stderr.isatty() and not sys.stdout.isatty() and not as_json
