"""Snapshots a load may trust: each one written with a hash tying it to its chained event.

The library snapshots a Registration every 50 events (`Application.take_snapshot`, after
the save) and, when loading, starts from the newest snapshot instead of version 1. A
snapshot edited in the database would then decide commands (who owns a registration,
which sessions are open) without any event saying so. So our snapshot recorders:

- write, in the snapshot's own insert transaction, a row to `ledger_snapshot_hashes`:
  `snapshot_hash(hash of event v, id, v, topic, state)`, v being the snapshot's version;
- at load, read the snapshot with that row and the event's hash (one query, joined) and
  use it only if the row matches. Otherwise the snapshot is dropped with a warning on the
  `ledger.store` logger (stderr in the CLI) and the aggregate is replayed from its events.

A database writer who knows this function can recompute the row for an edited snapshot;
`ledger audit verify` re-derives every snapshot from the events and reports any that
differ (`ledger.audit.snapshots`). See docs/design-notes/audit.md for the threat model.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import retry

logger = logging.getLogger("ledger.store")
WARNED_MAX = 10_000  # snapshots warned about once per process (a server would repeat it)


def snapshot_hash(event_hash: bytes, originator_id: UUID, version: int, topic: str,
                  state: bytes) -> bytes:
    """What `ledger_snapshot_hashes` holds for a snapshot taken at `version`."""
    encoded = topic.encode()
    return hashlib.sha256(b"".join((
        b"snapshot", event_hash, originator_id.bytes, struct.pack(">QI", version, len(encoded)),
        encoded, state,
    ))).digest()


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def mismatch(row: Any) -> str | None:
    """Why a snapshot row (joined with its hash row and its event's hash) is not to be
    trusted, or None when it matches."""
    if row["event_hash"] is None:
        return "no chained event at its version"
    if row["snapshot_hash"] is None:
        return "no hash row (deleted, or taken before snapshots were hashed)"
    expected = snapshot_hash(_bytes(row["event_hash"]), _uuid(row["originator_id"]),
                             row["originator_version"], row["topic"], _bytes(row["state"]))
    if expected != _bytes(row["snapshot_hash"]):
        return "its state or hash row was changed"
    return None


class CheckedSnapshots:
    """SQL shared by both backends (`p` placeholder, `t` schema prefix)."""

    p = "?"
    t = ""
    events_table_name: str
    warned: set[tuple[UUID, int]]

    def _select(self, originator_id: UUID, lte: int | None, desc: bool,
                limit: int | None) -> str:
        p = self.p
        return (
            "SELECT s.originator_id, s.originator_version, s.topic, s.state, "
            "h.hash AS snapshot_hash, e.hash AS event_hash "
            f"FROM {self.snapshots_table} s "
            f"LEFT JOIN {self.t}ledger_snapshot_hashes h ON h.originator_id = s.originator_id "
            "AND h.originator_version = s.originator_version "
            f"LEFT JOIN {self.t}ledger_event_hashes e ON e.originator_id = s.originator_id "
            "AND e.originator_version = s.originator_version "
            f"WHERE s.originator_id = {p}"
            + (f" AND s.originator_version <= {p}" if lte is not None else "")
            + f" ORDER BY s.originator_version {'DESC' if desc else 'ASC'}"
            + (f" LIMIT {p}" if limit is not None else ""))

    @property
    def snapshots_table(self) -> str:
        return f"{self.t}{self.events_table_name}"

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        """The library's read of snapshots, keeping only those that match their hash."""
        oid = _uuid(originator_id)
        params = [self.db_id(oid), *([lte] if lte is not None else []),
                  *([limit] if limit is not None else [])]
        rows = self._rows(self._select(oid, lte, desc, limit), params)
        return self.trusted([r for r in rows if gt is None or r["originator_version"] > gt])

    def rows_of(self, originator_id: UUID) -> list[Any]:
        """Every snapshot of an aggregate with its hash row and its event's hash (audit)."""
        return self._rows(self._select(originator_id, None, False, None),
                          [self.db_id(originator_id)])

    def snapshotted(self) -> list[UUID]:
        """The aggregates that have snapshots (audit)."""
        rows = self._rows(f"SELECT DISTINCT originator_id FROM {self.snapshots_table} "
                          "ORDER BY originator_id", [])
        return [_uuid(row["originator_id"]) for row in rows]

    def trusted(self, rows: Sequence[Any]) -> list[StoredEvent]:
        """The rows that match their hash; a warning for each one that does not."""
        kept: list[StoredEvent] = []
        for row in rows:
            reason = mismatch(row)
            oid = _uuid(row["originator_id"])
            if reason is None:
                kept.append(StoredEvent(originator_id=oid,
                                        originator_version=row["originator_version"],
                                        topic=row["topic"], state=_bytes(row["state"])))
            else:
                self._warn(oid, row["originator_version"], reason)
        return kept

    def _warn(self, originator_id: UUID, version: int, reason: str) -> None:
        key = (originator_id, version)
        if key in self.warned:
            return
        if len(self.warned) < WARNED_MAX:
            self.warned.add(key)
        logger.warning(
            "warning: the snapshot of aggregate %s at version %d does not match its chained "
            "events (%s): it was not used, the events were replayed instead; run "
            "`ledger audit verify`", originator_id, version, reason)

    def hash_rows(self, curs: Any, stored_events: Sequence[StoredEvent]
                  ) -> list[tuple[UUID, int, bytes]]:
        """The hash row of each snapshot, tied to its event's stored hash (read here, in
        the snapshot's transaction)."""
        rows = []
        for snapshot in stored_events:
            oid = _uuid(snapshot.originator_id)
            curs.execute(
                f"SELECT hash FROM {self.t}ledger_event_hashes "
                f"WHERE originator_id = {self.p} AND originator_version = {self.p}",
                (self.db_id(oid), snapshot.originator_version))
            found = curs.fetchone()
            if found is None:
                continue  # no chained event: an unhashed snapshot, which loads never use
            rows.append((oid, snapshot.originator_version, snapshot_hash(
                _bytes(found["hash"]), oid, snapshot.originator_version, snapshot.topic,
                snapshot.state)))
        return rows

    def db_id(self, originator_id: UUID) -> Any:
        return originator_id.hex


class LedgerSQLiteSnapshotRecorder(CheckedSnapshots, SQLiteAggregateRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.warned = set()

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        super()._insert_events(c, stored_events, **kwargs)
        c.executemany("INSERT OR REPLACE INTO ledger_snapshot_hashes VALUES (?, ?, ?)",
                      [(oid.hex, v, digest) for oid, v, digest in self.hash_rows(c, stored_events)])
        return None

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return list(c.fetchall())


class LedgerPostgresSnapshotRecorder(CheckedSnapshots, PostgresAggregateRecorder):
    p = "%s"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.t = f'"{self.datastore.schema}".'
        self.warned = set()

    @property
    def snapshots_table(self) -> str:
        return f'{self.t}"{self.events_table_name}"'

    def db_id(self, originator_id: UUID) -> Any:
        return originator_id

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        # The library inserts snapshots in autocommit; the hash row joins them in one
        # transaction, so a snapshot never lands without it.
        if stored_events:
            with self.datastore.transaction(commit=True) as curs:
                self._insert_stored_events(curs, stored_events, **kwargs)
                rows = self.hash_rows(curs, stored_events)
                if rows:
                    curs.executemany(
                        f"INSERT INTO {self.t}ledger_snapshot_hashes VALUES (%s, %s, %s) "
                        "ON CONFLICT (originator_id, originator_version) "
                        "DO UPDATE SET hash = EXCLUDED.hash", rows)
        return None

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql, params, prepare=True)
            return list(curs.fetchall())


def create_statement(t: str, id_type: str, blob: str, big: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {t}ledger_snapshot_hashes ("
            f"originator_id {id_type} NOT NULL, originator_version {big} NOT NULL, "
            f"hash {blob} NOT NULL, PRIMARY KEY (originator_id, originator_version))")
