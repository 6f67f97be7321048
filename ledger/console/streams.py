"""The command line's byte streams: `ledger send`'s input as it arrives; checked output.

Input: JSON Lines, and pretty-printed JSON documents, read as they arrive.

Lines are split on `\\n` only (a U+2028 inside a JSON string is part of its line) and read
from the byte stream one at a time, so memory stays flat however long the input, and a
program that writes one command and waits gets its answer before it writes the next.

Output: every write checked, a failed one reported as what it is.

A full disk under `--out`, `> /dev/full` or a pipe whose reader went away (`| head`) is
not the store's fault: `friendly_errors` runs every command with standard output wrapped
in `CheckedText`, whose failed writes raise `OutputFailed` (never the bare OSError that
would read like a store fault), and turns it into one `Error: cannot write ...` line.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any, Protocol, TextIO

from ledger.commands.parse import MAX_COMMAND_BYTES


class OutputFailed(Exception):
    """The output could not be written: `reason` says why, `where` what was done by then."""

    def __init__(self, reason: str, what: str = "the output", where: str = "") -> None:
        self.reason, self.what, self.where = reason, what, where
        super().__init__(self.message())

    def message(self) -> str:
        return f"cannot write {self.what} ({self.reason})" + (f": {self.where}" if self.where
                                                              else "")

    def stopped(self, what: str, where: str) -> OutputFailed:
        """The same failure, told with what the command had done when it met it."""
        return OutputFailed(self.reason, what, where)


def reason_of(error: OSError) -> str:
    """Why an output write failed, in words (a closed pipe, a full disk, ...)."""
    if isinstance(error, BrokenPipeError):
        return "its reader closed the pipe"
    return error.strerror or str(error)


class CheckedText(io.TextIOWrapper):
    """Text over a byte stream it does not own; a failed write or flush is OutputFailed."""

    def write(self, text: str) -> int:
        if text == "":  # click probes streams with empty writes: no system call to fail
            return 0
        try:
            return super().write(text)
        except OSError as e:
            raise OutputFailed(reason_of(e)) from None

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as e:
            raise OutputFailed(reason_of(e)) from None

    def close(self) -> None:
        """Leave the byte stream open: its owner closes it (or the interpreter, at exit)."""


def discard_stdout() -> None:
    """Point standard output at /dev/null once a write to it failed: the bytes it still
    holds would fail again when Python flushes it at exit, and print a warning then."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file (a test's capture): nothing fails at exit
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


@contextmanager
def checked_stdout() -> Iterator[None]:
    """Run the block with sys.stdout a CheckedText over the same bytes, flushed at the end."""
    original = sys.stdout
    buffer = getattr(original, "buffer", None)
    if isinstance(original, CheckedText) or buffer is None:
        yield
        return
    original.flush()
    checked = CheckedText(buffer, encoding=original.encoding, errors=original.errors,
                          write_through=True)
    sys.stdout = checked
    try:
        yield
        checked.flush()
    finally:
        sys.stdout = original
        with suppress(OutputFailed, ValueError):
            checked.detach()


@contextmanager
def output_file(path: str) -> Iterator[TextIO]:
    """`path` ("-": standard output) as checked text, flushed and closed at the end."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        raw = open(path, "wb")  # noqa: SIM115  (closed below, whatever happens)
    except OSError as e:
        raise OutputFailed(reason_of(e), f"to {path}") from None
    checked = CheckedText(raw, encoding="utf-8", newline="")
    try:
        yield checked
        checked.flush()
        raw.close()
    except OutputFailed as e:
        raise OutputFailed(e.reason, f"to {path}", "the file is incomplete") from None
    except OSError as e:  # the close itself failed (a delayed write error)
        raise OutputFailed(reason_of(e), f"to {path}", "the file is incomplete") from None
    finally:
        with suppress(OutputFailed, ValueError):
            checked.detach()
        with suppress(OSError):
            raw.close()


def reader_gone(stream: IO[Any]) -> bool:
    """True when `stream` is a pipe whose reader has closed it: nobody reads what follows."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, 0)  # ask for nothing: only errors and hang-ups are reported
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


# Input --------------------------------------------------------------------------------------

# A JSON string on one line (strings cannot span lines), so brackets inside it are skipped.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


class LineSource(Protocol):
    """What `documents` reads from: a byte stream's `readline` (a file, stdin, a wrapper)."""

    def readline(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Document:
    """One command's text and the input line it starts at; `unreadable` says why a line
    could not be read as text at all (then `text` is empty)."""

    line: int
    text: str = ""
    unreadable: str | None = None


@dataclass(frozen=True)
class _Line:
    number: int
    text: str | None
    problem: str = ""


def _lines(stream: LineSource) -> Iterator[_Line]:
    """Each line; one longer than a command may be, or not UTF-8, says so instead."""
    number = 0
    while chunk := stream.readline(MAX_COMMAND_BYTES + 1):
        number += 1
        if len(chunk) > MAX_COMMAND_BYTES and not chunk.endswith(b"\n"):
            while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass  # the rest of an over-long line is never held in memory
            yield _Line(number, None, f"command is larger than {MAX_COMMAND_BYTES} bytes")
            continue
        try:
            yield _Line(number, chunk.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as e:
            yield _Line(number, None, f"not valid UTF-8: byte {chunk[e.start]:#04x} at "
                                      f"offset {e.start} of the line")


def documents(stream: LineSource) -> Iterator[Document]:
    """The commands in `stream`, in input order; blank lines are skipped.

    A line is one command, unless it breaks off inside an object (a pretty-printed
    command's first line): then the lines up to the one that closes it are one command.
    If they never make one (the input ends, a line is unreadable, or it outgrows a
    command's size), the opening line alone is the command (and is refused as
    `invalid_json`) and the lines after it are read again as lines of their own.
    """
    source = _lines(stream)
    pending: deque[_Line] = deque()

    def next_line() -> _Line | None:
        return pending.popleft() if pending else next(source, None)

    while (line := next_line()) is not None:
        if line.text is None:
            yield Document(line.number, unreadable=line.problem)
        elif line.text.strip():
            yield _document(line.number, line.text, next_line, pending)


def _document(number: int, first: str, next_line: Callable[[], _Line | None],
              pending: deque[_Line]) -> Document:
    depth = _depth(first)
    if depth <= 0 or not _breaks_off(first):
        return Document(number, first)
    taken: list[_Line] = []
    size = len(first)
    while depth > 0 and size <= MAX_COMMAND_BYTES:
        line = next_line()
        if line is None:
            break
        taken.append(line)
        if line.text is None:
            break
        depth += _depth(line.text)
        size += len(line.text)
    text = "\n".join([first, *(t.text or "" for t in taken)])
    if depth == 0 and _parses(text):
        return Document(number, text)
    pending.extendleft(reversed(taken))
    return Document(number, first)


def _depth(text: str) -> int:
    """How many objects and arrays `text` opens minus how many it closes."""
    bare = _STRING.sub("", text)
    return bare.count("{") + bare.count("[") - bare.count("}") - bare.count("]")


def _breaks_off(text: str) -> bool:
    """True when `text` is the start of a JSON object that only ends too soon."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return False
    try:
        json.loads(stripped)
    except json.JSONDecodeError as e:
        return e.pos >= len(stripped)
    except (ValueError, RecursionError):
        return False
    return False


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True
