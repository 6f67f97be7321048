"""One process at a time per store for a purpose (`rebuild`, `verify`, `follow`): a lock
the database (or the kernel) holds for the holder's lifetime, and gives back by itself
when the process holding it dies.

PostgreSQL: a session advisory lock, keyed by schema and purpose, on a connection of its
own whose `application_name` names the purpose, process and host; its `backend_start` is
the holder's start. The server drops the lock when that connection ends (exit, crash,
kill -9, lost host).

SQLite: `flock` on a file beside the database (`<db>.<purpose>-lock`), which holds the
holder's pid, host and start time. The kernel drops the lock when the process's file
descriptor is closed, which it does when the process dies however it dies; the file's
text is only read to name the holder, never trusted as the lock itself. (`flock`, not
`fcntl` locks, which SQLite uses on the database itself: closing another descriptor of
the database would drop SQLite's own locks.)
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from eventsourcing.sqlite import SQLiteDatastore

from ledger.errors import Conflict
from ledger.store.faults import Fault, LedgerPostgresDatastore

LOCK_CLASS = 0x1ED6E6  # advisory lock class; the key within it hashes schema and purpose
REBUILD, VERIFY, FOLLOW = "rebuild", "verify", "follow"
BUSY = {
    REBUILD: "a rebuild is already running on this store ({}); wait for it to finish (or "
             "stop it), or run this again with --wait",
    VERIFY: "another `ledger projections verify` is running on this store ({}); try again "
            "when it has finished",
    FOLLOW: "another process follows this store ({})",
}


class LockHeld(Conflict):
    """Another process holds the store's lock for this purpose (the message names it)."""

    def __init__(self, purpose: str, holder: str) -> None:
        super().__init__(BUSY[purpose].format(holder), {"running": holder})
        self.purpose = purpose


def holder_text() -> str:
    """Who holds a lock: this process, host and since when, for messages."""
    return (f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}")


@dataclass
class Lease:
    """The outcome of asking for a lock: held by us (`holder` None), or by `holder`."""

    holder: str | None
    conn: Any = None  # PostgreSQL: the connection the lock lives on

    @property
    def held(self) -> bool:
        return self.holder is None

    def alive(self) -> bool:
        """Whether the lock is still ours. A PostgreSQL lock goes with its connection (a
        server restart, `pg_terminate_backend`), and another process may then take it."""
        if not self.held or self.conn is None:
            return self.held
        try:
            self.conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True


@contextmanager
def only_one(app: Any, purpose: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the store's `purpose` lock for the block; `LockHeld` naming the holder if
    another process holds it (or, with `wait`, wait until it is free)."""
    with lease(app, purpose, wait=wait) as got:
        if got.holder is not None:
            raise LockHeld(purpose, got.holder)
        yield


@contextmanager
def lease(app: Any, purpose: str, *, wait: bool = False) -> Iterator[Lease]:
    """Try to take the store's `purpose` lock for the block; the `Lease` says whether
    this process got it (and if not, who has it). Released at the end of the block."""
    datastore = getattr(app.factory, "datastore", None)
    if isinstance(datastore, LedgerPostgresDatastore):
        with _postgres_lock(datastore, purpose, wait) as got:
            yield got
        return
    pool = datastore.pool if isinstance(datastore, SQLiteDatastore) else None
    if pool is None or pool.is_sqlite_memory_mode:
        yield Lease(None)  # an in-memory store lives in this process only
        return
    path = pool.db_name.removeprefix("file:").split("?", 1)[0]  # a read-only one is a URI
    with _file_lock(lock_path(path, purpose), wait) as got:
        yield got


def lock_path(database: str, purpose: str) -> str:
    """The lock file of `purpose` beside a SQLite database file."""
    return f"{database}.{purpose}-lock"


@contextmanager
def _file_lock(path: str, wait: bool) -> Iterator[Lease]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only folder or file system: nothing could write there
        raise Fault("read-only", f"cannot create {path}: {e.strerror}").unavailable() from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            yield Lease(holder or "another process")
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_text().encode(), 0)
        yield Lease(None)
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def _postgres_lock(datastore: LedgerPostgresDatastore, purpose: str,
                   wait: bool) -> Iterator[Lease]:
    name = f"ledger {purpose} pid {os.getpid()} on {socket.gethostname()}"[:63]
    with datastore.connect(autocommit=True, application_name=name) as conn:
        key = (LOCK_CLASS, f"{datastore.schema}/{purpose}")
        if wait:
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
        else:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", key).fetchone()
            if not (row and row[0]):
                yield Lease(_postgres_holder(conn, purpose, key[1]))
                return
        yield Lease(None, conn)  # closing the connection releases the lock


def _postgres_holder(conn: Any, purpose: str, key: str) -> str:
    row = conn.execute(
        "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND l.classid = %s AND l.objid = hashtext(%s)::oid "
        "AND l.objsubid = 2", (LOCK_CLASS, key)).fetchone()
    if row is None:
        return "another process"
    name, address, since = row
    where = f" from {address}" if address else ""
    started = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{name.removeprefix(f'ledger {purpose} ')}{where}, since {started}"
