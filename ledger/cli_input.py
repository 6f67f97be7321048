"""`ledger send`'s input, read as it arrives: JSON Lines, and pretty-printed JSON documents.

Lines are split on `\\n` only (a U+2028 inside a JSON string is part of its line) and read
from the byte stream one at a time, so memory stays flat however long the input, and a
program that writes one command and waits gets its answer before it writes the next.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from ledger.commands.parse import MAX_COMMAND_BYTES

# A JSON string on one line (strings cannot span lines), so brackets inside it are skipped.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


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


def _lines(stream: IO[bytes]) -> Iterator[_Line]:
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


def documents(stream: IO[bytes]) -> Iterator[Document]:
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
