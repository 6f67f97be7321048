"""`ledger send`'s groups: its input read on a thread of its own and cut into groups.

A group holds at most `size` documents and closes early when the input pauses: the
first document of a group waits at most `wait` seconds for the others, so a program that
writes one command and waits for its answer gets it after that wait, not never. A file
fills every group at once. At most two batches of `size` documents are queued ahead of
the group being run, so memory does not grow with the input.

The reader thread hands documents over in batches, not one by one (a hand-over costs
more than reading a line): a batch goes when it is full, at the end of the input, and
whenever the reader is about to wait for input that has not arrived (`_Descriptor`
reads the descriptor itself, so it knows when a read would block; a buffered reader's
buffer hides that). Why a thread and not `selectors` in one loop: `streams.documents`
reads a pretty-printed command line by line and may block in the middle of one; on a
thread of its own that blocks nothing but the reader.
"""

from __future__ import annotations

import os
import queue
import select
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import click

from ledger.console.streams import Document, LineSource, documents

PROGRESS_MIN_BYTES = 1 << 20  # a file at least this large gets a progress bar on a terminal
CHUNK = 1 << 16


@dataclass(frozen=True)
class Read:
    """A document and how many bytes of the input had been read once it was."""

    document: Document
    offset: int


class _Descriptor:
    """`readline` straight from a file descriptor, counting the bytes it returns; before a
    read that would wait for input, `before_wait()` is called.

    Reading the descriptor (not a buffered file object) also means a reader thread
    blocked in it holds no lock the interpreter needs at exit: a daemon thread blocked in
    `sys.stdin.buffer` aborts the process when it exits (`_enter_buffered_busy`).
    """

    def __init__(self, fd: int, before_wait: Callable[[], None]) -> None:
        self.fd, self.before_wait = fd, before_wait
        self.buffer = bytearray()
        self.start = 0  # where the unread bytes of `buffer` begin
        self.ended = False
        self.count = 0

    def readline(self, size: int = -1, /) -> bytes:
        while True:
            end = self.buffer.find(b"\n", self.start)
            limit = self.start + size if size >= 0 else None
            if end >= 0 and (limit is None or end < limit):
                return self._take(end + 1)
            if limit is not None and len(self.buffer) >= limit:
                return self._take(limit)
            if self.ended:
                return self._take(len(self.buffer))
            self._fill()

    def _take(self, end: int) -> bytes:
        line = bytes(self.buffer[self.start:end])
        self.start = end
        self.count += len(line)
        return line

    def _fill(self) -> None:
        del self.buffer[:self.start]
        self.start = 0
        if not select.select([self.fd], [], [], 0)[0]:
            self.before_wait()  # nothing has come: hand over what was read so far
        chunk = os.read(self.fd, CHUNK)
        self.ended = not chunk
        self.buffer += chunk


class _Stream:
    """`readline` from a file object without a descriptor (a test's in-memory input),
    counting the bytes it returns; such input never waits."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.count = 0

    def readline(self, size: int = -1, /) -> bytes:
        chunk = self.stream.readline(size)
        self.count += len(chunk)
        return chunk


class _End:
    """Put on the queue after the last batch (with the error that ended the input)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


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
        self._queue: queue.Queue[list[Read] | _End] = queue.Queue(maxsize=2)
        self._batch: list[Read] = []
        self._carry: deque[Read] = deque()
        self._ended: _End | None = None
        try:
            fd = source.fileno()
        except (OSError, ValueError, AttributeError):
            self._input: _Descriptor | _Stream = _Stream(source)
        else:
            self._input = _Descriptor(fd, self._hand_over)
        self._reader = threading.Thread(target=self._read, name="ledger-send-reader",
                                        daemon=True)
        self._reader.start()

    # The reader thread

    def _read(self) -> None:
        source: LineSource = self._input
        try:
            for document in documents(source):
                self._batch.append(Read(document, self._input.count))
                if len(self._batch) >= self.size:
                    self._hand_over()
        except Exception as e:  # a failed read: raised again on the caller's thread
            self._hand_over()
            self._queue.put(_End(e))
        else:
            self._hand_over()
            self._queue.put(_End())

    def _hand_over(self) -> None:
        if self._batch:
            self._queue.put(self._batch)
            self._batch = []

    # The caller's thread

    def __iter__(self) -> Iterator[list[Read]]:
        while group := self._next_group():
            yield group
        if self._ended is not None and self._ended.error is not None:
            raise self._ended.error

    def _next_group(self) -> list[Read]:
        if not self._carry and not self._more(None):
            return []
        deadline = time.monotonic() + self.wait
        group: list[Read] = []
        while True:
            while self._carry and len(group) < self.size:
                group.append(self._carry.popleft())
            if len(group) == self.size or not self._more(max(0.0, deadline -
                                                             time.monotonic())):
                return group

    def _more(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: for ever) for the next batch; False if
        none came in time (the input paused) or the input has ended."""
        if self._ended is not None:
            return False
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        if isinstance(item, _End):
            self._ended = item
            return False
        self._carry.extend(item)
        return True


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
