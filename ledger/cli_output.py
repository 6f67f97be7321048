"""Where the CLI's output goes: every write checked, a failed one reported as what it is.

A full disk under `--out`, `> /dev/full` or a pipe whose reader went away (`| head`) is
not the store's fault: `friendly_errors` runs every command with standard output wrapped
in `CheckedText`, whose failed writes raise `OutputFailed` (never the bare OSError that
would read like a store fault), and turns it into one `Error: cannot write ...` line.
"""

from __future__ import annotations

import io
import os
import select
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any, TextIO


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
