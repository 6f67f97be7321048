"""Our recorders: the library's, plus rows written in the same transaction as the events.

`Application.save(*aggregates, plan=WritePlan(...))` passes the command's write plan
(`ledger/store/plan.py`) down to `insert_events`, and the library calls `_insert_events`
inside its insert transaction. We write there:

- `ledger_commands`: the command's id, body fingerprint and result (idempotency);
- `ledger_registrations`: (campaign, account) → registration, the write-side index that
  `expire_campaign` reads;
- and check the plan's guards (what the command read still holds), under the write lock.

After the events, in the same transaction, every event's link in its aggregate's hash
chain goes to `ledger_event_hashes` (`ledger.store.hashing`): one read of the previous
hashes, one insert.

On PostgreSQL we take the library's table lock first, so that our rows and its events are
locked in one order and two writers cannot deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL

from ledger.store import hashing, tokens
from ledger.store.plan import (
    CampaignNotExpired,
    CommandRow,
    Guard,
    GuardFailed,
    Unchanged,
    WritePlan,
)

GUARD_CHUNK = 500  # registration ids per look-up (SQLite allows 32,766 parameters)
# A stored event as read models read it: (position, aggregate id as text with dashes,
# version, topic, state), from `select_rows`.
EventRow = tuple[int, str, int, str, bytes]


class _Cursor(Protocol):
    def execute(self, query: Any, params: Any = ..., **kwargs: Any) -> Any: ...
    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


class LedgerRows:
    """SQL shared by both backends; `p` is the parameter placeholder, `t` the table prefix."""

    p = "?"
    t = ""
    id_type = "TEXT"
    time_type = "TEXT"
    blob_type = "BLOB"
    big_type = "INTEGER"
    serial_key = "INTEGER PRIMARY KEY"
    position_column = "rowid"
    events_table_name: str

    def ledger_create_statements(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.t}ledger_commands ("  # CommandRow.values()
            "command_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
            f"aggregate_id {self.id_type} NOT NULL, version INTEGER, result TEXT NOT NULL, "
            f"recorded_at {self.time_type} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.t}ledger_registrations ("
            f"registration_id {self.id_type} PRIMARY KEY, campaign_id TEXT NOT NULL, "
            "account_id TEXT NOT NULL, seller_id TEXT NOT NULL, "
            "UNIQUE (campaign_id, account_id))",
            *hashing.create_statements(self.t, self.id_type, self.blob_type, self.big_type,
                                       self.time_type, self.serial_key),
            *tokens.create_statements(self.t, self.time_type),
        ]

    def write_plan(self, curs: _Cursor, plan: WritePlan) -> None:
        """The plan's rows, then its guards, all in the events' transaction."""
        p = self.p
        if plan.commands:
            curs.executemany(
                f"INSERT INTO {self.t}ledger_commands VALUES ({p},{p},{p},{p},{p},{p})",
                [c.values() for c in plan.commands],
            )
        if plan.registrations:
            curs.executemany(
                f"INSERT INTO {self.t}ledger_registrations VALUES ({p},{p},{p},{p})",
                [(r.registration_id, r.campaign_id, r.account_id, r.seller_id)
                 for r in plan.registrations],
            )
        for guard in plan.guards:
            self._check(curs, guard)

    def _check(self, curs: _Cursor, guard: Guard) -> None:
        """Expiry against the writers that race it, under the write lock: a registration or
        session written once the campaign's `Expired` is stored; a registration that
        `expire_campaign` read as closed but that was reopened before it committed; a
        `register` committed between an expiry's read and its write."""
        p = self.p
        if isinstance(guard, CampaignNotExpired):
            curs.execute(
                f"SELECT topic FROM {self.events_table} WHERE originator_id={p} "
                "ORDER BY originator_version DESC LIMIT 1", (self.db_id(guard.campaign_id),))
            row = curs.fetchone()
            if row is not None and row["topic"] == guard.expired_topic:
                raise GuardFailed("the campaign expired meanwhile")
        elif isinstance(guard, Unchanged):
            expected = {self.db_id(reg_id): v for reg_id, v in guard.versions.items()}
            keys = list(expected)
            for start in range(0, len(keys), GUARD_CHUNK):
                chunk = keys[start:start + GUARD_CHUNK]
                curs.execute(
                    f"SELECT originator_id AS id, MAX(originator_version) AS v "
                    f"FROM {self.events_table} "
                    f"WHERE originator_id IN ({','.join([p] * len(chunk))}) "
                    "GROUP BY originator_id", chunk)
                for row in curs.fetchall():
                    if row["v"] != expected[row["id"]]:
                        raise GuardFailed(f"registration {row['id']} changed meanwhile")
        else:
            curs.execute(
                f"SELECT COUNT(*) AS n FROM {self.t}ledger_registrations WHERE campaign_id={p}",
                (guard.campaign_id,),
            )
            found = curs.fetchone()["n"]
            if found != guard.count:
                raise GuardFailed(f"campaign {guard.campaign_id} has {found} registrations, "
                                  f"not {guard.count}")

    # The hash chains (ledger.store.hashing) ----------------------------------------------

    def write_hashes(self, curs: _Cursor, stored_events: Sequence[StoredEvent]) -> None:
        """Chain the batch's events to their aggregates' stored heads: one read, one insert."""
        wanted = hashing.previous_links(stored_events)
        previous = self._previous_hashes(curs, wanted) if wanted else {}
        self._insert_hashes(curs, hashing.link(stored_events, previous))

    def _previous_hashes(self, curs: _Cursor, wanted: list[tuple[UUID, int]]
                         ) -> dict[UUID, bytes]:
        found: dict[UUID, bytes] = {}
        # ORs of key equalities, 200 at a time: SQLite answers them from the primary key
        # (a row-value IN over VALUES is a scan of the whole table, on every save).
        for start in range(0, len(wanted), 200):
            part = wanted[start:start + 200]
            curs.execute(
                "SELECT originator_id, hash FROM ledger_event_hashes WHERE "
                + " OR ".join(["(originator_id = ? AND originator_version = ?)"] * len(part)),
                [x for oid, version in part for x in (oid.hex, version)],
            )
            found.update((UUID(row["originator_id"]), row["hash"]) for row in curs.fetchall())
        return found

    def _insert_hashes(self, curs: _Cursor, rows: list[hashing.Link]) -> None:
        curs.executemany("INSERT INTO ledger_event_hashes VALUES (?,?,?)",
                         [(oid.hex, version, digest) for oid, version, digest in rows])

    @property
    def events_table(self) -> str:
        return self.events_table_name

    @property
    def hashes_table(self) -> str:
        return f"{self.t}ledger_event_hashes"

    @property
    def seals_table(self) -> str:
        return f"{self.t}ledger_seals"

    @property
    def seal_heads_table(self) -> str:
        return f"{self.t}ledger_seal_heads"

    @property
    def seal_signatures_table(self) -> str:
        return f"{self.t}ledger_seal_signatures"

    def db_id(self, originator_id: UUID) -> Any:
        return originator_id.hex

    def db_time(self, moment: datetime) -> Any:
        return moment.isoformat()

    # Reads -------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    def find_command(self, command_id: str) -> CommandRow | None:
        rows = self._query(
            f"SELECT * FROM {self.t}ledger_commands WHERE command_id={self.p}", (command_id,)
        )
        if not rows:
            return None
        row = rows[0]
        return CommandRow(
            command_id=row["command_id"], fingerprint=row["fingerprint"],
            aggregate_id=str(row["aggregate_id"]), version=row["version"],
            result=json.loads(row["result"]), recorded_at=_as_datetime(row["recorded_at"]),
        )

    def registrations_of(self, campaign_id: str) -> list[str]:
        rows = self._query(
            f"SELECT registration_id FROM {self.t}ledger_registrations WHERE campaign_id={self.p} "
            "ORDER BY registration_id",
            (campaign_id,),
        )
        return [str(row["registration_id"]) for row in rows]


def write_plan_of(kwargs: dict[str, Any]) -> WritePlan | None:
    """The plan `Application.save(..., plan=...)` passed down; nothing else is accepted."""
    plan = kwargs.get("plan")
    if plan is not None and not isinstance(plan, WritePlan):
        raise TypeError(f"plan must be a WritePlan, not {type(plan).__name__}")
    unknown = set(kwargs) - {"plan", "tracking"}  # `tracking`: the library's own
    if unknown:
        raise TypeError(f"unexpected save arguments: {sorted(unknown)}")
    return plan


def _as_datetime(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


class LedgerSQLiteRecorder(LedgerRows, SQLiteApplicationRecorder):
    """The application recorder on SQLite, writing our rows in its transactions."""
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)

    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + self.ledger_create_statements()

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Any, **kwargs: Any
    ) -> Any:
        # Our rows first: the first write takes SQLite's write lock, so the guards are
        # checked under it.
        plan = write_plan_of(kwargs)
        if plan is not None:
            self.write_plan(c, plan)
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        self.write_hashes(c, stored_events)
        return notification_ids

    @contextmanager
    def snapshot(self) -> Iterator[SQLiteCursor]:
        """A read transaction: in WAL mode it sees one state of the file throughout."""
        with self.datastore.transaction(commit=False) as c:
            yield c

    @contextmanager
    def writing(self) -> Iterator[SQLiteCursor]:
        with self.datastore.transaction(commit=True) as c:
            yield c

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return list(c.fetchall())

    def select_rows(self, after: int, limit: int, stop: int) -> list[EventRow]:
        """The events after position `after` up to `stop`, at most `limit`, as plain rows:
        what `select_notifications` reads, without making an object and a UUID of each
        row (read models key their rows by the id's text; SQLite stores it as hex)."""
        with self.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples, not the datastore's sqlite3.Row
            cursor.execute(self._select_rows, (after, stop, limit))
            rows: list[EventRow] = cursor.fetchall()
            return rows

    @property
    def _select_rows(self) -> str:
        dashed = "||'-'||".join(f"substr(originator_id, {a}, {n})" for a, n in
                                ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12)))
        return (f"SELECT rowid, {dashed}, originator_version, topic, state "
                f"FROM {self.events_table_name} WHERE rowid > ? AND rowid <= ? "
                "ORDER BY rowid LIMIT ?")

    def position_of(self, originator_id: str, version: int) -> int | None:
        rows = self._query(
            f"SELECT rowid AS position FROM {self.events_table_name} "
            "WHERE originator_id=? AND originator_version=?",
            (originator_id.replace("-", ""), version),
        )
        return int(rows[0]["position"]) if rows else None


class LedgerPostgresRecorder(LedgerRows, PostgresApplicationRecorder):
    """The application recorder on PostgreSQL, writing our rows in its transactions."""
    p = "%s"
    id_type = "uuid"
    time_type = "timestamptz"
    blob_type = "bytea"
    big_type = "bigint"
    serial_key = "bigserial PRIMARY KEY"
    position_column = "notification_id"

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.t = f'"{datastore.schema}".'
        self.sql_create_statements.extend(
            SQL(s).format() for s in self.ledger_create_statements()
        )

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        plan = write_plan_of(kwargs)
        if plan is not None and not plan.empty:
            self._lock_table(curs)
            self.write_plan(curs, plan)

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # The library calls this after its table lock and its insert, in its transaction.
        notification_ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        self.write_hashes(curs, stored_events)
        return notification_ids

    def _previous_hashes(self, curs: _Cursor, wanted: list[tuple[UUID, int]]
                         ) -> dict[UUID, bytes]:
        curs.execute(
            f"SELECT originator_id, hash FROM {self.hashes_table} "
            "WHERE (originator_id, originator_version) IN "
            "(SELECT * FROM unnest(%s::uuid[], %s::bigint[]))",
            ([oid for oid, _ in wanted], [version for _, version in wanted]), prepare=True,
        )
        return {row["originator_id"]: row["hash"] for row in curs.fetchall()}

    def _insert_hashes(self, curs: _Cursor, rows: list[hashing.Link]) -> None:
        curs.execute(
            f"INSERT INTO {self.hashes_table} "
            "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::bytea[])",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]), prepare=True,
        )

    @property
    def events_table(self) -> str:
        return f'{self.t}"{self.events_table_name}"'

    def db_id(self, originator_id: UUID) -> Any:
        return originator_id

    def db_time(self, moment: datetime) -> Any:
        return moment

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """One REPEATABLE READ, read-only transaction: every page sees the same store."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield curs

    @contextmanager
    def writing(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=True) as curs:
            yield curs

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql, params)
            return list(curs.fetchall())

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_rows(self, after: int, limit: int, stop: int) -> list[EventRow]:
        """The events after position `after` up to `stop`, at most `limit`, as plain rows
        (see the SQLite recorder's); in binary, so `state` needs no hex decoding."""
        with self.datastore.get_connection() as conn, conn.cursor(
                row_factory=tuple_row, binary=True) as curs:
            curs.execute(
                f"SELECT notification_id, originator_id::text, originator_version, topic, "
                f"state FROM {self.events_table} WHERE notification_id > %s AND "
                "notification_id <= %s ORDER BY notification_id LIMIT %s",
                (after, stop, limit), prepare=True)
            return curs.fetchall()

    def position_of(self, originator_id: str, version: int) -> int | None:
        rows = self._query(
            f'SELECT notification_id AS position FROM {self.t}"{self.events_table_name}" '
            "WHERE originator_id=%s AND originator_version=%s",
            (originator_id, version),
        )
        return int(rows[0]["position"]) if rows else None
