"""Writers to one SQLite file take turns through a lock file the kernel hands over at once.

SQLite lets one connection write a file at a time. A writer that finds the write lock
taken waits in SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 50 ms...
between tries: the file may be free for most of a sleep while the waiter still sleeps.
Two `ledger serve` workers (and the follower's read-model writes) writing one store
measured p99 latencies of 46-88 ms at half their peak rate that way
(docs/benchmarks.md, round 7).

So every write transaction of the ledger's SQLite datastore first takes an exclusive
`flock` on `<database>.writes-lock`, and lets it go after its commit or rollback. A
waiter tries again every 0.1-1 ms (the kernel has no timed `flock`), so the turn passes
within a millisecond of the commit.

What it does not change:
- **Correctness.** SQLite's own write lock still guards every write; the turn only
  orders the writers that take it. A writer that does not (another program, an older
  ledger) is waited for by SQLite's busy handler, as before.
- **Patience.** A turn not had within the busy timeout (`LEDGER_SQLITE_BUSY_TIMEOUT`, 30 s)
  fails as SQLite's does: `database is locked`, a transient store fault.
- **Crashes.** The kernel drops a dead process's `flock`; a file left behind holds nothing.
- **Reads.** Readers never take a turn (WAL: readers do not block the writer).

A thread that already has the file's turn (a write transaction inside another on a second
pool) goes on without waiting for itself. The lock file is opened for each turn and closed
after it, so a process forked between writes (a rebuild's helper: ledger/projections/
share.py checks that no descriptor of it is open) shares no turn with its parent, and
`O_CLOEXEC` keeps it out of programs started meanwhile. Where the file cannot be made (a
read-only folder: nothing there can be written), there are no turns.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import OperationalError
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteConnection,
    SQLiteDatastore,
    SQLiteFactory,
)

FIRST_PAUSE = 0.0001  # seconds between tries for a taken turn, doubling up to
LONGEST_PAUSE = 0.001

_held = threading.local()  # the lock files this thread has a turn on


def turns_path(database: str) -> str:
    """The lock file beside a SQLite database file through which its writers take turns."""
    return f"{database}.writes-lock"


class WriteTurns:
    """Turns at writing one database file, for the processes and threads that ask."""

    def __init__(self, database: str, patience: float) -> None:
        self.path = turns_path(database)
        self.patience = patience

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the file's turn for the block (waiting up to `patience` seconds for it)."""
        held: set[str] = _held.__dict__.setdefault("paths", set())
        if self.path in held:  # this thread has it already, on another pool's connection
            yield
            return
        try:
            # Read-only is enough for `flock`: another user's lock file serves as well.
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:  # a read-only folder: SQLite's busy handler orders what writes there
            yield
            return
        try:
            self._take(fd)
            held.add(self.path)
            try:
                yield
            finally:
                held.discard(self.path)
        finally:
            os.close(fd)  # closing the last descriptor of the open file lets the turn go

    def _take(self, fd: int) -> None:
        deadline = time.monotonic() + self.patience
        pause = FIRST_PAUSE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError(sqlite3.OperationalError(
                        "database is locked (another writer kept its turn for "
                        f"{self.patience:g} s)")) from None
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE)


class TurnTakingDatastore(SQLiteDatastore):
    """The library's SQLite datastore, its write transactions taking turns (`WriteTurns`)
    with every other process and pool writing the same file."""

    def __init__(self, db_name: str, **kwargs: Any) -> None:
        super().__init__(db_name, **kwargs)
        # A `file:` URI is how a read-only store is opened (faults.read_only_sqlite_uri).
        file_backed = not self.pool.is_sqlite_memory_mode and not db_name.startswith("file:")
        patience = float(kwargs.get("lock_timeout") or SQLITE3_DEFAULT_LOCK_TIMEOUT)
        # realpath: a link to the file and the file itself take the same turns.
        self.turns = WriteTurns(os.path.realpath(db_name), patience) if file_backed else None

    @contextmanager
    def get_connection(self, *, commit: bool) -> Iterator[SQLiteConnection]:
        with super().get_connection(commit=commit) as connection:
            if not commit or self.turns is None:
                yield connection
                return
            # After the pool's own writer lock: the pool's other writers queue there, so
            # at most one thread per pool (the store's, the read models') waits here.
            with self.turns.turn():
                yield connection


class LedgerSQLiteFactory(SQLiteFactory):
    """The library's SQLite factory, its datastore a `TurnTakingDatastore`."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        library = self.datastore
        self.datastore = TurnTakingDatastore(
            library.pool.db_name, lock_timeout=library.pool.lock_timeout,
            single_row_tracking=library.single_row_tracking,
            originator_id_type=library.originator_id_type)
        library.close()  # it never opened a connection
