"""The eventsourcing Application behind the ledger, configured from a database URL."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Collection, Iterable
from itertools import chain
from typing import Any, ClassVar
from uuid import UUID

import orjson
import psycopg
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    EventStore,
    IntegrityError,
    JSONTranscoder,
    OperationalError,
    PersistenceError,
    Recording,
    StoredEvent,
    Transcoding,
)
from eventsourcing.postgres import PostgresFactory
from eventsourcing.sqlite import SQLiteFactory
from eventsourcing.utils import get_topic
from psycopg import sql

from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.aggregates.registration_events import PerformanceRecorded
from ledger.aggregates.sessions import Session
from ledger.jsontext import PLAIN, only
from ledger.store.faults import classify, read_only_sqlite_uri
from ledger.store.recorders import LedgerPostgresRecorder, LedgerSQLiteRecorder
from ledger.store.snapshots import (
    CheckedSnapshots,
    LedgerPostgresSnapshotRecorder,
    LedgerSQLiteSnapshotRecorder,
)
from ledger.store.urls import StoreUrl

SNAPSHOT_INTERVAL = 50
# Snapshots written per transaction after a save. A group of 200 reports can bring 200
# registrations to a snapshot; written in one, they raised `ledger send`'s peak RSS by
# ~4 MB on PostgreSQL (bench/group.py --memory 100000 --memory-kind reports).
SNAPSHOTS_PER_TRANSACTION = 20
DDL_LOCK_KEY = 0x1ED6E5  # advisory lock held while creating tables


class SessionAsDict(Transcoding):
    """Sessions inside Registration snapshots."""

    type = Session
    name = "ledger_session"

    def encode(self, obj: Session) -> dict[str, Any]:
        return dict(vars(obj))

    def decode(self, data: dict[str, Any]) -> Session:
        return Session(**data)


class FastTranscoder(JSONTranscoder):
    """The library's JSON transcoder, whose `encode` hands orjson (`ledger.jsontext`) an
    event state made of JSON's types, amounts and times: the same bytes as the library's
    `json` encoder (compact separators, non-ASCII as UTF-8), 2.6x faster (22 → 8.4 µs a
    report here). Anything else (a snapshot's UUID, a session, a float, what orjson
    refuses) is encoded by the library's encoder, as before; decoding is the library's.
    Chosen by the library's own setting, `TRANSCODER_TOPIC` (`library_env`)."""

    def __init__(self) -> None:
        super().__init__()
        self.leaves: set[type] = set(PLAIN)

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        # Only the library's own spelling of amounts and times: another transcoding of
        # those types could return what orjson writes otherwise.
        if type(transcoding) in (DecimalAsStr, DatetimeAsISO):
            self.leaves.add(transcoding.type)
        else:
            self.leaves.discard(transcoding.type)

    def encode(self, obj: Any) -> bytes:
        if only(obj, self.leaves):
            try:
                return orjson.dumps(obj, default=self._encode_obj,
                                    option=orjson.OPT_PASSTHROUGH_DATETIME)
            except orjson.JSONEncodeError:
                pass
        return super().encode(obj)


def project(aggregate: Any, events: Iterable[Any]) -> Any:
    """Replay events onto an aggregate: the library's default, without its per-event
    runtime-protocol `isinstance` check (30 µs an event here)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class LedgerApplication(Application[UUID]):
    """The eventsourcing application over our recorders, with snapshots of registrations."""
    name = "Ledger"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Registration: SNAPSHOT_INTERVAL}
    snapshotting_projectors: ClassVar[dict[type[Any], Any]] = {Registration: project}

    def construct_snapshot_store(self) -> EventStore[UUID]:
        """The library's snapshot store, on our recorders: each snapshot is written with a
        hash tying it to its chained event, and loads skip one that does not match it or
        the aggregate's version 1 event (`ledger.store.snapshots`)."""
        factory = self.factory
        recorder: LedgerSQLiteSnapshotRecorder | LedgerPostgresSnapshotRecorder
        if isinstance(factory, SQLiteFactory):
            recorder = LedgerSQLiteSnapshotRecorder(factory.datastore, "stored_snapshots")
        elif isinstance(factory, PostgresFactory):
            recorder = LedgerPostgresSnapshotRecorder(
                factory.datastore, events_table_name=f"{self.name.lower()}_snapshots")
        else:
            return super().construct_snapshot_store()
        recorder.chained_events = self.store.events_table  # where loads read version 1
        if factory.env_create_table():
            recorder.create_table()
        return self.factory.event_store(mapper=self.mapper, recorder=recorder)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """The library's save (record, snapshot, notify), collecting events and aggregates
        by their classes: its `collect_events` asks `isinstance(obj, DomainEventProtocol)`
        of every object, a runtime protocol check of ~100 µs here, which on a group commit
        (hundreds of events per save) cost more than the whole insert. Anything else goes
        through the library's collection as before."""
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, DomainEvent):
                processing.events.append(obj)
            elif isinstance(obj, Aggregate):
                processing.events.extend(obj.collect_events())
                processing.aggregates[obj.id] = obj
            else:
                processing.collect_events(obj)
        processing.saved_kwargs.update(kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)  # the library's deprecated hook, as its save calls it
        return recordings

    def _take_snapshots(self, processing: ProcessingEvent[UUID]) -> None:
        """The library's snapshots (an aggregate at every `snapshotting_intervals`-th
        version, after the save), taken from the saved aggregate when it is at that
        version, and written a few (`SNAPSHOTS_PER_TRANSACTION`) to a transaction.

        The library's `take_snapshot` loads each aggregate again from the store at that
        version and writes each snapshot in a transaction of its own. In a feed of
        long-lived registrations (a report every few minutes) that was a fifth of
        `ledger send`'s wall time: a load and a durable commit per snapshot. The saved
        aggregate is the one those events made (its state is set by its events alone,
        so it is what the load would rebuild; `ledger audit verify` derives every
        snapshot again from the events). An aggregate that moved past the version within
        the save (a group of several commands on it) is loaded at the version, as the
        library does."""
        if self.snapshots is None or not self.snapshotting_intervals:
            return
        taken = []
        for event in processing.events:
            aggregate = processing.aggregates.get(event.originator_id)
            if aggregate is None:
                continue
            kind = type(aggregate)
            interval = self.snapshotting_intervals.get(kind)
            version = event.originator_version
            if interval is None or version % interval:
                continue
            snapshot_class = getattr(kind, "Snapshot", type(self).snapshot_class)
            if (isinstance(aggregate, Aggregate) and aggregate.version == version
                    and not aggregate.pending_events and snapshot_class is not None):
                taken.append(snapshot_class.take(aggregate))
            else:  # the library's way: a load at the version, then a transaction
                self.take_snapshot(event.originator_id, version=version,
                                   projector_func=self.snapshotting_projectors.get(kind, project))
        for start in range(0, len(taken), SNAPSHOTS_PER_TRANSACTION):
            self.snapshots.put(taken[start:start + SNAPSHOTS_PER_TRANSACTION])

    def get(self, aggregate_id: UUID, version: int | None = None) -> Any:
        """Load an aggregate (at a version); AggregateNotFoundError when there is none."""
        return self.repository.get(aggregate_id, version=version, projector_func=project)

    def get_many(self, aggregate_ids: Collection[UUID]) -> dict[UUID, Any]:
        """Load many aggregates in a few queries (a group commit's prefetch): each one's
        newest snapshot that passes `get`'s checks (`ledger.store.snapshots`), then the
        events after it, decoded with the application's mapper. Equal to `get` for every
        id; an id with no events is absent."""
        ids = list(dict.fromkeys(aggregate_ids))
        snapshots: dict[UUID, StoredEvent] = {}
        snapshot_store = self.snapshots
        if snapshot_store is not None and isinstance(snapshot_store.recorder, CheckedSnapshots):
            snapshots = snapshot_store.recorder.latest_of(ids)
        after = {oid: snapshots[oid].originator_version if oid in snapshots else 0
                 for oid in ids}
        decode = self.mapper.to_domain_event
        loaded: dict[UUID, Any] = {}
        for oid, events in self.store.events_after(after).items():
            start = [decode(snapshots[oid])] if oid in snapshots else []
            aggregate = project(None, chain(start, map(decode, events)))
            if aggregate is not None:
                loaded[oid] = aggregate
        return loaded

    def exists(self, aggregate_id: UUID) -> bool:
        return bool(self.recorder.select_events(aggregate_id, limit=1))

    def last_event_topic(self, aggregate_id: UUID) -> str | None:
        events = self.recorder.select_events(aggregate_id, desc=True, limit=1)
        return events[0].topic if events else None

    def report_seen(self, registration_id: UUID, report_id: str) -> bool:
        """Has the registration recorded this report (`ledger_reports`)?"""
        return bool(self.store.reports_seen([(registration_id, report_id)]))

    def registrations_of(self, campaign_id: str) -> list[str]:
        """The campaign's registration ids, from the write-side index."""
        return self.store.registrations_of(campaign_id)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(SessionAsDict())

    @property
    def store(self) -> LedgerSQLiteRecorder | LedgerPostgresRecorder:
        recorder = self.recorder
        assert isinstance(recorder, LedgerSQLiteRecorder | LedgerPostgresRecorder)
        return recorder


SQLITE_OPEN_ATTEMPTS = 20


def open_application(store: StoreUrl, *, pool_size: int = 5,
                     notices: list[str] | None = None) -> LedgerApplication:
    """Construct the application; its tables (and its PostgreSQL schema) are created on
    first use. What it did that a user should hear of is appended to `notices`.

    On PostgreSQL, `CREATE TABLE IF NOT EXISTS` run by two processes at once can fail
    (a unique violation in the catalog), so construction holds an advisory lock. On SQLite,
    a process whose table-creating transaction read the schema before another process
    committed its tables gets "database is locked" at once (WAL mode cannot upgrade that
    stale read to a write, and does not wait), as does a new connection switching the file
    to WAL while another process does: it simply tries again.
    """
    env = library_env(store, pool_size=pool_size)
    if store.backend != "postgres":
        for attempt in range(SQLITE_OPEN_ATTEMPTS):
            try:
                return _indexed(LedgerApplication(env=env), notices)
            except (OperationalError, sqlite3.OperationalError, IntegrityError) as e:
                # (`PRAGMA journal_mode=WAL` on a new connection raises sqlite3's own error.)
                if attempt == SQLITE_OPEN_ATTEMPTS - 1 or (
                        not isinstance(e, IntegrityError) and "locked" not in str(e)):
                    raise
                time.sleep(0.02 * (attempt + 1) * (1 + random.random()))
    with psycopg.connect(store.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
        try:
            if store.schema and create_schema(conn, store.schema) and notices is not None:
                notices.append(f"created schema {store.schema!r} in database "
                               f"{store.dbname!r} (it did not exist)")
            return _indexed(LedgerApplication(env=env), notices)
        except PersistenceError as e:
            # A read-only database (a standby, `default_transaction_read_only`) refuses
            # even CREATE ... IF NOT EXISTS: open it without creating tables, so that
            # reads work; writes then fail, saying it is read-only.
            fault = classify(e)
            if fault is None or fault.cause != "read-only":
                raise
            return LedgerApplication(env={**env, "CREATE_TABLE": "no"})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK_KEY,))


def _indexed(app: LedgerApplication, notices: list[str] | None) -> LedgerApplication:
    """The application, once the reports of a store written before `ledger_reports` are
    indexed (`LedgerRows.index_reports`; not on a store opened without creating tables)."""
    factory = app.factory
    if isinstance(factory, SQLiteFactory | PostgresFactory) and factory.env_create_table():
        try:
            count = index_old_reports(app)
        except BaseException:
            app.close()
            raise
        if count and notices is not None:
            notices.append(f"indexed the {count:,} performance reports of a store written "
                           "by an older ledger (ledger_reports)")
    return app


def index_old_reports(app: LedgerApplication) -> int:
    """Index the reports of a store written before `ledger_reports`, if that table is
    empty (`LedgerRows.index_reports`); how many. Each event is decoded by the
    application's mapper, so any stored version of it upcasts."""
    return app.store.index_reports(
        get_topic(PerformanceRecorded),
        lambda stored: _report(app.mapper.to_domain_event(stored)).report_id)


def _report(event: Any) -> PerformanceRecorded:
    assert isinstance(event, PerformanceRecorded), type(event)
    return event


def create_schema(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Create the URL's schema if it is missing (the library assumes it exists); created?"""
    found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    if found:
        return False
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    return True


TRANSCODER_TOPIC = "ledger.store.application:FastTranscoder"


def library_env(store: StoreUrl, *, pool_size: int = 5) -> dict[str, str]:
    """The library's settings for a database URL (they override os.environ)."""
    if store.backend == "sqlite":
        env = {
            "PERSISTENCE_MODULE": "ledger.store.turns:LedgerSQLiteFactory",  # turns.py
            "SQLITE_DBNAME": store.path,
            # Seconds a writer waits for another's write lock ("busy timeout").
            "SQLITE_LOCK_TIMEOUT": os.environ.get("LEDGER_SQLITE_BUSY_TIMEOUT") or "30",
            "APPLICATION_RECORDER_TOPIC": "ledger.store.recorders:LedgerSQLiteRecorder",
            "TRANSCODER_TOPIC": TRANSCODER_TOPIC,
        }
        reading = read_only_sqlite_uri(store.path)
        if reading is not None:  # read it as it is; a write says the store is read-only
            env.update(SQLITE_DBNAME=reading, CREATE_TABLE="no")
        return env
    env = {
        "PERSISTENCE_MODULE": "ledger.store.faults:LedgerPostgresFactory",
        "POSTGRES_DBNAME": store.dbname,
        "POSTGRES_HOST": store.host,
        "POSTGRES_PORT": store.port,
        "POSTGRES_CONNINFO": store.dsn,  # what the pool really connects with (faults.py)
        "POSTGRES_USER": store.user,
        "POSTGRES_PASSWORD": store.password,
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "10",
        "APPLICATION_RECORDER_TOPIC": "ledger.store.recorders:LedgerPostgresRecorder",
        "TRANSCODER_TOPIC": TRANSCODER_TOPIC,
    }
    if store.schema:
        env["POSTGRES_SCHEMA"] = store.schema
    return env


__all__ = ["Campaign", "LedgerApplication", "Registration", "library_env"]
