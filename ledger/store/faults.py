"""Store faults: what went wrong with the database, in words a user can act on.

`classify(error)` maps a database error (the library's, psycopg's or sqlite3's, looked up
along the exception's causes) to a `Fault`: its cause (the database cannot be reached, the
connection was lost, the disk is full, the database is read-only, another writer holds
the lock), whether trying again in a moment can help (`transient`), and one line for the
user. Errors that are not faults of the store (a bug, a constraint) give None.

`LedgerPostgresFactory` is the library's PostgreSQL factory with a datastore that fails
fast while the database refuses connections: without it every one of the library's ten
retries of a read or a write waits the pool's whole timeout (5 s), and one command took
minutes to report that the store was down.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError
from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import PoolTimeout

from ledger import metrics
from ledger.errors import StoreUnavailable, first_line

Cause = Literal["unreachable", "connection lost", "disk full", "read-only", "locked", "busy"]

PHRASES: dict[Cause, str] = {
    "unreachable": "the database cannot be reached",
    "connection lost": "the connection to the database was lost",
    "disk full": "the disk is full",
    "read-only": "the database is read-only",
    "locked": "another process holds the database's write lock",
    "busy": "the database is overloaded",
}
StoreErrors = (PersistenceError, psycopg.Error, sqlite3.Error)  # what a store fault may be
TRANSIENT: frozenset[Cause] = frozenset({"unreachable", "connection lost", "locked", "busy"})


@dataclass(frozen=True)
class Fault:
    """A database failure as a person should read it: its cause and the database's words."""
    cause: Cause
    detail: str  # the database's own words, one line
    down_for: float = 0.0  # seconds the database has been known to refuse connections

    @property
    def transient(self) -> bool:
        """Might trying again within seconds help? (Not for a full disk or a read-only
        database: those wait for an operator.)"""
        return self.cause in TRANSIENT

    def describe(self) -> str:
        return f"{PHRASES[self.cause]} ({self.detail})"

    def unavailable(self, *, resend: bool = False) -> StoreUnavailable:
        """The one-line error a user sees; for a command (`resend`), that resending is safe."""
        safe = "; sending the same command_id again is safe" if resend else ""
        return StoreUnavailable(f"{self.headline()}{safe}", self.headline())

    def headline(self) -> str:
        """`store unavailable: <cause> (<the database's words>)`."""
        return f"store unavailable: {self.describe()}"


OUTAGE_BUDGET = 5.0  # seconds a write keeps trying again while the store is unreachable


@dataclass
class Outage:
    """A write's patience with a failing store: a transient fault (connection lost, the
    database unreachable or locked) is waited out, with backoff, for up to OUTAGE_BUDGET
    seconds from the first; a full disk or a read-only database ends it at once."""

    faults: int = 0
    first: float = 0.0

    def wait(self, error: BaseException) -> Fault | None:
        """Sleep before the next attempt and return None; or return the fault to report
        (the budget is spent, or waiting cannot help). Re-raises what is not a store fault."""
        fault = classify(error)
        if fault is None:
            raise error
        metrics.store_fault(fault.cause)
        self.faults += 1
        now = time.monotonic()
        self.first = self.first or now
        delay = min(1.0, 0.05 * 2 ** self.faults)
        if (not fault.transient or fault.down_for > OUTAGE_BUDGET
                or now + delay - self.first > OUTAGE_BUDGET):
            return fault
        time.sleep(delay)
        return None


class StoreUnreachable(OperationalError):
    """Raised at once, without a round trip, while the database is known to refuse
    connections (see `LedgerPostgresDatastore`), and since when."""

    def __init__(self, message: str, since: float) -> None:
        super().__init__(message)
        self.since = since


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# SQLSTATE classes and codes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
PG_STATES: list[tuple[str, Cause]] = [
    ("53100", "disk full"),          # disk_full
    ("53", "busy"),                  # insufficient resources: memory, too many connections
    ("25006", "read-only"),          # read_only_sql_transaction
    ("57P01", "connection lost"),    # admin_shutdown (pg_terminate_backend, a restart)
    ("57P02", "connection lost"),    # crash_shutdown
    ("57P03", "unreachable"),        # cannot_connect_now (starting up, in recovery)
    ("55000", "unreachable"),        # e.g. "database ... is not currently accepting connections"
    ("08", "connection lost"),       # connection exceptions
    ("55P03", "locked"),             # lock_not_available
    ("40001", "busy"),               # serialization_failure
    ("40P01", "busy"),               # deadlock_detected
    ("58030", "disk full"),          # io_error (often ENOSPC on a WAL or temp file)
]
SQLITE_NAMES: list[tuple[str, Cause]] = [
    ("SQLITE_FULL", "disk full"),
    ("SQLITE_IOERR", "disk full"),   # a write the file system refused (no space, EFBIG)
    ("SQLITE_READONLY", "read-only"),
    ("SQLITE_BUSY", "locked"),
    ("SQLITE_LOCKED", "locked"),
    ("SQLITE_CANTOPEN", "unreachable"),
]
WORDS: list[tuple[str, Cause]] = [
    ("disk is full", "disk full"),
    ("no space left", "disk full"),
    ("disk i/o error", "disk full"),
    ("file too large", "disk full"),
    ("read-only", "read-only"),
    ("readonly", "read-only"),
    ("database is locked", "locked"),
    ("not currently accepting connections", "unreachable"),
    ("connection refused", "unreachable"),
    ("couldn't get a connection", "unreachable"),
    ("unable to open database", "unreachable"),
    ("terminating connection", "connection lost"),
    ("server closed the connection", "connection lost"),
    ("connection is closed", "connection lost"),
    ("connection is lost", "connection lost"),
    ("consuming input failed", "connection lost"),
    ("ssl syscall", "connection lost"),
]


def classify(error: BaseException) -> Fault | None:
    """The store fault behind `error`, or None if it is not one."""
    chain = list(_chain(error))
    detail = first_line(error)
    for link in chain:
        if isinstance(link, StoreUnreachable):
            return Fault("unreachable", detail, time.monotonic() - link.since)
        if isinstance(link, PoolTimeout):
            return Fault("unreachable", first_line(link))
        state = getattr(link, "sqlstate", None) if isinstance(link, psycopg.Error) else None
        if state:
            for prefix, cause in PG_STATES:
                if state.startswith(prefix):
                    return Fault(cause, first_line(link))
        name = getattr(link, "sqlite_errorname", None) if isinstance(link, sqlite3.Error) else None
        if name:
            for prefix, cause in SQLITE_NAMES:
                if name.startswith(prefix):
                    return Fault(cause, first_line(link))
    if not any(isinstance(link, PersistenceError | psycopg.Error | sqlite3.Error | OSError)
               for link in chain):
        return None
    text = " ".join(str(link) for link in chain).lower()
    for words, cause in WORDS:
        if words in text:
            return Fault(cause, detail)
    if any(isinstance(link, psycopg.OperationalError | psycopg.InterfaceError)
           for link in chain):
        return Fault("connection lost", detail)
    return None


def read_only_folder(path: str) -> bool:
    """Is the folder of this (SQLite) file on a read-only file system, or not writable?"""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


def read_only_sqlite_uri(path: str) -> str | None:
    """A URI that reads this SQLite file without writing anything beside it, when it may
    not be written (a forensic copy: its folder, file system or the file read-only); None
    when it may be (or does not exist yet).

    `immutable=1` (no locks, no -shm) is right only if nothing writes the file, which a
    read-only copy promises; but it ignores a -wal file, so a copy that has one is read
    with `mode=ro`, which needs the -shm beside it (or a folder where it can make one)."""
    if not os.path.exists(path) or not (read_only_folder(path) or not os.access(path, os.W_OK)):
        return None
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    wal = f"{path}-wal"
    if not os.path.exists(wal) or os.path.getsize(wal) == 0:
        return f"{uri}&immutable=1"
    if os.path.exists(f"{path}-shm") or not read_only_folder(path):
        return uri
    raise Fault("read-only", f"{path} is read-only and its {os.path.basename(wal)} holds "
                "writes that SQLite reads only with the -shm file beside it: copy "
                f"{os.path.basename(path)}-shm too").unavailable()


# PostgreSQL: fail fast while the database refuses connections -----------------------------

CONNINFO = "POSTGRES_CONNINFO"  # the library's settings key for the whole URL (ours)
PROBE_EVERY = 0.5  # seconds between attempts to connect while the database is down


class LedgerPostgresDatastore(PostgresDatastore):
    """The library's datastore, plus a circuit: once the pool cannot get a connection and
    a direct attempt to connect fails too, the database is *down*: every request for a
    connection fails at once (`StoreUnreachable`, with the server's reason), except one
    direct attempt every `PROBE_EVERY` seconds. The first that succeeds closes the
    circuit and gives the pool a fresh start (its own reconnection backs off to many
    seconds during a long outage)."""

    _down: str | None = None
    _down_since = 0.0
    _next_probe = 0.0
    _circuit: threading.Lock

    def setup_circuit(self) -> None:
        self._down = None
        self._down_since = self._next_probe = 0.0
        self._circuit = threading.Lock()

    @contextmanager
    def get_connection(self) -> Iterator[psycopg.Connection[DictRow]]:
        self._check_circuit()
        try:
            with super().get_connection() as conn:
                yield conn
        except (OperationalError, InterfaceError) as e:
            # No connection in time, or ours died: if a new one cannot be made either,
            # the database is down (not merely busy, or restarted and back already).
            fault = classify(e)
            if fault is not None and fault.cause in ("unreachable", "connection lost"):
                reason = self._probe()
                if reason is not None:
                    self._trip(reason)
                    raise self._unreachable(reason) from e
            raise

    def _check_circuit(self) -> None:
        if self._down is None:
            return
        with self._circuit:
            if self._down is None:
                return
            if time.monotonic() < self._next_probe:
                raise self._unreachable(self._down)
            self._next_probe = time.monotonic() + PROBE_EVERY
            reason = self._probe()
            if reason is not None:
                self._down = reason
                raise self._unreachable(reason)
            self._down = None
            self._refresh_pool()

    def _trip(self, reason: str) -> None:
        with self._circuit:
            if self._down is None:
                self._down_since = time.monotonic()
            self._down = reason
            self._next_probe = time.monotonic() + PROBE_EVERY

    def _probe(self) -> str | None:
        """None if a new connection can be made now, else the server's reason."""
        try:
            with self.connect(connect_timeout=2):
                return None
        except psycopg.Error as e:
            # "connection failed: connection to server at ..., port ... failed: FATAL:  why"
            return first_line(e).rsplit("FATAL:", 1)[-1].strip()

    def connect(self, **extra: Any) -> psycopg.Connection[Any]:
        """A connection of its own (not the pool's), with the pool's parameters."""
        kwargs = {k: v for k, v in self._kwargs().items() if k != "row_factory"}
        return psycopg.connect(self._conninfo(), **{**kwargs, **extra})

    def _kwargs(self) -> dict[str, Any]:
        kwargs = self.pool.kwargs
        return dict(kwargs() if callable(kwargs) else kwargs or {})

    def _conninfo(self) -> str:
        conninfo = self.pool.conninfo
        return conninfo if isinstance(conninfo, str) else ""

    def _unreachable(self, reason: str) -> StoreUnreachable:
        kwargs = {**conninfo_to_dict(self._conninfo()), **self._kwargs()}
        return StoreUnreachable(
            f"PostgreSQL at {kwargs.get('host')}:{kwargs.get('port')}: {reason}",
            self._down_since)

    def _refresh_pool(self) -> None:
        """Replace the pool by a new one (the old one's connections died with the outage
        and its reconnection attempts wait out a back-off): connections come at once."""
        old = self.pool
        try:
            self.pool = type(old)(
                conninfo=old.conninfo, connection_class=old.connection_class, kwargs=old.kwargs,
                min_size=old.min_size, max_size=old.max_size, open=False,
                configure=old._configure, timeout=old.timeout, max_waiting=old.max_waiting,
                max_lifetime=old.max_lifetime, check=old._check,
                get_password_func=getattr(old, "get_password_func", None))
        except (AttributeError, TypeError):
            return  # a psycopg_pool unlike 3.2-3.3: keep the old pool (it reconnects, slower)
        threading.Thread(target=old.close, kwargs={"timeout": 5.0}, daemon=True).start()


class LedgerPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory, with `LedgerPostgresDatastore`, whose pool
    connects with the whole URL (`POSTGRES_CONNINFO`): the library itself passes only
    dbname, host, port, user and password, and `sslmode=require` (say) would be lost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The library builds its datastore from the environment (and does not open its
        # pool yet); ours only adds the circuit, so it takes the same object over.
        datastore = self.datastore
        datastore.__class__ = LedgerPostgresDatastore
        assert isinstance(datastore, LedgerPostgresDatastore)
        datastore.setup_circuit()
        conninfo = self.env.get(CONNINFO)
        if conninfo:
            # The pool connects with `connect(conninfo, **kwargs)`, kwargs winning: keep
            # only the row factory there, so that every parameter comes from the URL.
            datastore.pool.conninfo = conninfo
            datastore.pool.kwargs = {"row_factory": dict_row}
