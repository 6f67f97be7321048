"""One rebuild at a time per store: a lock the database (or the kernel) holds for the
rebuild's lifetime, and gives back by itself when the process holding it dies.

PostgreSQL: a session advisory lock, keyed by the schema, on a connection of its own whose
`application_name` names the process and host; its `backend_start` is the rebuild's start.
The server drops the lock when that connection ends (exit, crash, kill -9, lost host).

SQLite: `flock` on a file beside the database (`<db>.rebuild-lock`), which holds the
holder's pid, host and start time. The kernel drops the lock when the process's file
descriptor is closed, which it does when the process dies however it dies; the file's
text is only read to name the holder, never trusted as the lock itself.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from eventsourcing.sqlite import SQLiteDatastore

from ledger.errors import Conflict
from ledger.store.faults import Fault, LedgerPostgresDatastore

REBUILD_LOCK_CLASS = 0x1ED6E6  # advisory lock class; the key within it is the schema's hash


class RebuildRunning(Conflict):
    """Another `projections rebuild` holds the store's rebuild lock."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"a rebuild is already running on this store ({holder}); wait for it "
                         "to finish (or stop it), or run this again with --wait",
                         {"running": holder})


def holder_text() -> str:
    return (f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}")


@contextmanager
def rebuild_lock(app: Any, *, wait: bool = False) -> Iterator[None]:
    """Hold the store's rebuild lock for the block; `RebuildRunning` if another process
    holds it (or, with `wait`, wait until it is free)."""
    datastore = getattr(app.factory, "datastore", None)
    if isinstance(datastore, LedgerPostgresDatastore):
        with _postgres_lock(datastore, wait):
            yield
        return
    pool = datastore.pool if isinstance(datastore, SQLiteDatastore) else None
    if pool is None or pool.is_sqlite_memory_mode:
        yield  # an in-memory store lives in this process only
        return
    path = pool.db_name.removeprefix("file:").split("?", 1)[0]  # a read-only one is a URI
    with _file_lock(f"{path}.rebuild-lock", wait):
        yield


@contextmanager
def _file_lock(path: str, wait: bool) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only folder or file system: no rebuild could write there
        raise Fault("read-only", f"cannot create {path}: {e.strerror}").unavailable() from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            raise RebuildRunning(holder or "another process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_text().encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def _postgres_lock(datastore: LedgerPostgresDatastore, wait: bool) -> Iterator[None]:
    name = f"ledger rebuild pid {os.getpid()} on {socket.gethostname()}"[:63]
    with datastore.connect(autocommit=True, application_name=name) as conn:
        key = (REBUILD_LOCK_CLASS, datastore.schema)
        if wait:
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
        else:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", key).fetchone()
            if not (row and row[0]):
                raise RebuildRunning(_postgres_holder(conn, datastore.schema))
        yield  # closing the connection releases the lock


def _postgres_holder(conn: Any, schema: str) -> str:
    row = conn.execute(
        "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND l.classid = %s AND l.objid = hashtext(%s)::oid",
        (REBUILD_LOCK_CLASS, schema)).fetchone()
    if row is None:
        return "another process"
    name, address, since = row
    where = f" from {address}" if address else ""
    started = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{name.removeprefix('ledger rebuild ')}{where}, since {started}"
