"""Snapshots a load may trust: each one tied by a hash to its chained event, and its
identity checked against the aggregate's first event.

The library snapshots a Registration every 50 events (`Application.take_snapshot`, after
the save) and, when loading, starts from the newest snapshot instead of version 1. A
snapshot edited in the database would then decide commands (who owns a registration,
which sessions are open) without any event saying so. So our snapshot recorders:

- write, in the snapshot's own insert transaction, a row to `ledger_snapshot_hashes`:
  `hashing.snapshot_hash(hash of event v, id, v, topic, state)`, v being the snapshot's
  version; HMAC-SHA256 under LEDGER_SEAL_KEY when it is set, else SHA-256;
- at load, read the snapshot with that row, the event's hash and the aggregate's version 1
  event (one query, joined) and use it only if the row matches (keyed, when the key is
  set) *and* the state the first event set (owner, campaign, account, terms: what decides
  who may do what) is the snapshot's. Otherwise the snapshot is dropped with a warning on
  the `ledger.store` logger (stderr in the CLI) and the aggregate is replayed from its
  events.

Without the key, a database writer who knows SHA-256 can recompute the row for an edited
snapshot: its identity still comes from the first event, and `ledger audit verify`
re-derives every snapshot from the events (`ledger.audit.snapshots`). See
docs/design.md ("Integrity against an insider").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import retry

from ledger.store.hashing import SNAPSHOT_HASHES, as_bytes, as_uuid, key_from_env, snapshot_hash

logger = logging.getLogger("ledger.store")
WARNED_MAX = 10_000  # snapshots warned about once per process (a server would repeat it)
# Fields of a first event that are the event's own, not state it sets on the aggregate.
EVENT_ONLY = frozenset({"timestamp", "originator_topic", "actor", "command_id"})


def mismatch(row: Any, key: bytes | None) -> str | None:
    """Why a snapshot row (joined with its hash row, its event's hash and the aggregate's
    first event) is not to be trusted, or None when it matches."""
    if row["event_hash"] is None:
        return "no chained event at its version"
    if row["snapshot_hash"] is None:
        return "no hash row (deleted, or taken before snapshots were hashed)"
    args = (as_bytes(row["event_hash"]), as_uuid(row["originator_id"]),
            row["originator_version"], row["topic"], as_bytes(row["state"]))
    stored = as_bytes(row["snapshot_hash"])
    if snapshot_hash(*args, key=key) != stored:
        if key is not None and snapshot_hash(*args) == stored:
            return UNKEYED
        return "its state or hash row was changed"
    return identity_mismatch(row)


UNKEYED = ("its hash row is not keyed with LEDGER_SEAL_KEY (taken before the key was set, "
           "or rehashed by a database writer)")


def identity_mismatch(row: Any) -> str | None:
    """Why the snapshot's state disagrees with what the aggregate's version 1 event set
    (its owner, campaign, account, terms...), or None when it agrees."""
    if row["first_state"] is None:
        return "no version 1 event"
    try:
        first = json.loads(as_bytes(row["first_state"]))
        snapshot = json.loads(as_bytes(row["state"]))
        state = snapshot["state"]
        differing = sorted(k for k, v in first.items()
                           if k not in EVENT_ONLY and (k not in state or state[k] != v))
        if snapshot["topic"] != first["originator_topic"]:
            differing.insert(0, "topic")
    except (ValueError, TypeError, KeyError, AttributeError):
        return "its state or its version 1 event cannot be read"
    if differing:
        return f"its {', '.join(differing)} differ from the version 1 event"
    return None


class CheckedSnapshots:
    """SQL shared by both backends (`p` placeholder, `t` schema prefix)."""

    p = "?"
    t = ""
    events_table_name: str
    chained_events: str  # the application's events table (set by LedgerApplication)
    key: bytes | None
    warned: set[tuple[UUID, int]]
    load_chunk = 500  # aggregates per query of `latest_of`

    def _select(self, originator_id: UUID, lte: int | None, desc: bool,
                limit: int | None) -> str:
        p = self.p
        return (
            self._joined(f"s.originator_id = {p}")
            + (f" AND s.originator_version <= {p}" if lte is not None else "")
            + f" ORDER BY s.originator_version {'DESC' if desc else 'ASC'}"
            + (f" LIMIT {p}" if limit is not None else ""))

    def _joined(self, where: str) -> str:
        """Snapshots with their hash row, their event's hash and the aggregate's version 1
        event (what `mismatch` checks), `where` the condition on `s`."""
        return (
            "SELECT s.originator_id, s.originator_version, s.topic, s.state, "
            "h.hash AS snapshot_hash, e.hash AS event_hash, f.state AS first_state "
            f"FROM {self.snapshots_table} s "
            f"LEFT JOIN {self.t}{SNAPSHOT_HASHES} h ON h.originator_id = s.originator_id "
            "AND h.originator_version = s.originator_version "
            f"LEFT JOIN {self.t}ledger_event_hashes e ON e.originator_id = s.originator_id "
            "AND e.originator_version = s.originator_version "
            f"LEFT JOIN {self.chained_events} f ON f.originator_id = s.originator_id "
            f"AND f.originator_version = 1 WHERE {where}")

    def _any(self, count: int) -> str:
        """`s.originator_id` among `count` ids (SQLite: a list of placeholders)."""
        return f"s.originator_id IN ({','.join([self.p] * count)})"

    def latest_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, StoredEvent]:
        """Each aggregate's newest snapshot, when it passes the checks a load by `get`
        applies (`select_events(desc=True, limit=1)`): one edited is not used, with the
        same warning, and the aggregate is then replayed from its events. A few queries
        for many aggregates (500 ids each)."""
        found: dict[UUID, StoredEvent] = {}
        step = self.load_chunk
        for start in range(0, len(originator_ids), step):
            chunk = [self.db_id(oid) for oid in originator_ids[start:start + step]]
            rows = self._rows(self._joined(
                f"{self._any(len(chunk))} AND s.originator_version = (SELECT "
                f"MAX(m.originator_version) FROM {self.snapshots_table} m "
                "WHERE m.originator_id = s.originator_id)"), self._any_params(chunk))
            found.update((as_uuid(s.originator_id), s) for s in self.trusted(rows))
        return found

    def _any_params(self, ids: list[Any]) -> list[Any]:
        return ids

    @property
    def snapshots_table(self) -> str:
        return f"{self.t}{self.events_table_name}"

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None,
                      lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> Sequence[StoredEvent]:
        """The library's read of snapshots, keeping only those that match their hash."""
        oid = as_uuid(originator_id)
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
        return [as_uuid(row["originator_id"]) for row in rows]

    def trusted(self, rows: Sequence[Any]) -> list[StoredEvent]:
        """The rows that match their hash; a warning for each one that does not."""
        kept: list[StoredEvent] = []
        for row in rows:
            reason = mismatch(row, self.key)
            oid = as_uuid(row["originator_id"])
            if reason is None:
                kept.append(StoredEvent(originator_id=oid,
                                        originator_version=row["originator_version"],
                                        topic=row["topic"], state=as_bytes(row["state"])))
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
        the snapshot's transaction), keyed when LEDGER_SEAL_KEY is set."""
        rows = []
        for snapshot in stored_events:
            oid = as_uuid(snapshot.originator_id)
            curs.execute(
                f"SELECT hash FROM {self.t}ledger_event_hashes "
                f"WHERE originator_id = {self.p} AND originator_version = {self.p}",
                (self.db_id(oid), snapshot.originator_version))
            found = curs.fetchone()
            if found is None:
                continue  # no chained event: an unhashed snapshot, which loads never use
            rows.append((oid, snapshot.originator_version, snapshot_hash(
                as_bytes(found["hash"]), oid, snapshot.originator_version, snapshot.topic,
                snapshot.state, key=self.key)))
        return rows

    def db_id(self, originator_id: UUID) -> Any:
        return originator_id.hex


class LedgerSQLiteSnapshotRecorder(CheckedSnapshots, SQLiteAggregateRecorder):
    """Snapshots on SQLite, each written with its hash."""
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.warned = set()
        self.key = key_from_env()

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        super()._insert_events(c, stored_events, **kwargs)
        c.executemany(f"INSERT OR REPLACE INTO {SNAPSHOT_HASHES} VALUES (?, ?, ?)",
                      [(oid.hex, v, digest) for oid, v, digest in self.hash_rows(c, stored_events)])
        return None

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return list(c.fetchall())


class LedgerPostgresSnapshotRecorder(CheckedSnapshots, PostgresAggregateRecorder):
    """Snapshots on PostgreSQL, each written with its hash."""
    p = "%s"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.t = f'"{self.datastore.schema}".'
        self.warned = set()
        self.key = key_from_env()

    @property
    def snapshots_table(self) -> str:
        return f'{self.t}"{self.events_table_name}"'

    def db_id(self, originator_id: UUID) -> Any:
        return originator_id

    def _any(self, count: int) -> str:
        return "s.originator_id = ANY(%s)"  # one array: one prepared statement for any count

    def _any_params(self, ids: list[Any]) -> list[Any]:
        return [ids]

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
                        f"INSERT INTO {self.t}{SNAPSHOT_HASHES} VALUES (%s, %s, %s) "
                        "ON CONFLICT (originator_id, originator_version) "
                        "DO UPDATE SET hash = EXCLUDED.hash", rows)
        return None

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql, params, prepare=True)
            return list(curs.fetchall())
