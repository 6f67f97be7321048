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
locked in one order and two writers cannot deadlock. A save of many rows (a group commit)
is written by binary COPY instead, under the same lock (`ledger.store.copying`).

`events_after` (with `CheckedSnapshots.latest_of`) is the read half of a group:
`LedgerApplication.get_many` loads many aggregates with it in a few queries.

The SQL both recorders share is `ledger.store.rows.LedgerRows`; this module mixes it into
the library's recorders and adds what differs per backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Identifier

from ledger.store import copying, hashing
from ledger.store.plan import WritePlan
from ledger.store.rows import (
    EventRow,
    Heads,
    LedgerRows,
    Topics,
    _Cursor,
    topic_filter,
    write_plan_of,
)

DASHED_CACHE = 100_000  # aggregate ids whose dashed text `select_rows` keeps


class LedgerSQLiteRecorder(LedgerRows, SQLiteApplicationRecorder):
    """The application recorder on SQLite, writing our rows in its transactions."""
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self._dashed: dict[str, str] = {}  # an aggregate id's stored hex -> its dashed text
        self.heads = Heads()

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
        # One `execute` per event, as the library does (to read each `lastrowid`): one
        # `executemany` and the rowids computed after it measured no faster here (65 and
        # 67 us of CPU per command in a group; docs/benchmarks.md):
        # sqlite3 keeps the statement prepared either way.
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        self.write_hashes(c, stored_events, written=kwargs.get("written"))
        return notification_ids

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        """The library's insert (one transaction); its chain links remembered once it
        has committed (`Heads`)."""
        written: list[hashing.Link] = []
        ids: Sequence[int] | None = super().insert_events(stored_events, written=written,
                                                          **kwargs)
        self.heads.remember(written)
        return ids

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

    def select_rows(self, after: int, limit: int, stop: int, topics: Topics = None
                    ) -> list[EventRow]:
        """The events after position `after` up to `stop`, at most `limit`, as plain rows:
        what `select_notifications` reads, without making an object and a UUID of each
        row (read models key their rows by the id's text; SQLite stores it as hex).
        `topics`: `(names, True)` only events of these topics, `(names, False)` all but."""
        where, params = topic_filter(topics, "?")
        with self.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples, not the datastore's sqlite3.Row
            cursor.execute(self._select_rows(where), (after, stop, *params, limit))
            found = cursor.fetchall()
        # The id as its dashed text, made once per aggregate (a cache, cleared when it is
        # full): in SQL it cost 0.8 us a row, and one string object per aggregate is
        # hashed once where read models key their rows and cells by it.
        dashed = self._dashed
        rows: list[EventRow] = []
        append = rows.append
        for position, hex_id, version, topic, state in found:
            aid = dashed.get(hex_id)
            if aid is None:
                if len(dashed) >= DASHED_CACHE:
                    dashed.clear()
                aid = dashed[hex_id] = (f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-"
                                        f"{hex_id[16:20]}-{hex_id[20:]}")
            append((position, aid, version, topic, state))
        return rows

    def _select_rows(self, where: str) -> str:
        return (f"SELECT rowid, originator_id, originator_version, topic, state "
                f"FROM {self.events_table_name} WHERE rowid > ? AND rowid <= ?{where} "
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
    # Rows from which a save is written by COPY (bench/group_store.py sets it to compare).
    bulk_min_rows = copying.COPY_MIN_ROWS

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.t = f'"{datastore.schema}".'
        self.sql_create_statements.extend(
            SQL(s).format() for s in self.ledger_create_statements()
        )
        self._sequence: str | None = None
        self.heads = Heads()
        # The library's statements as text, once: psycopg converts a composed statement
        # again at every execute, but caches the conversion of a text (8% of a small
        # group's save, with the table locked).
        self.insert_events_statement = _text(self.insert_events_statement)
        self.lock_table_statements = [_text(s) for s in self.lock_table_statements]
        self._notify = _text(SQL("NOTIFY {0}").format(Identifier(self.channel_name)))

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        """Many rows (a group's save) by binary COPY (`ledger.store.copying`); few by the
        library's pipelined INSERT, which needs one round trip to COPY's several."""
        plan = write_plan_of(kwargs)
        written: list[hashing.Link] = []
        inserted: Sequence[int] | None
        if (kwargs.get("tracking") is None and not self.datastore.enable_db_functions
                and copying.rows_of(stored_events, plan) >= self.bulk_min_rows):
            inserted = self.copy_save(stored_events, plan, written)
        else:
            inserted = super().insert_events(stored_events, written=written, **kwargs)
        self.heads.remember(written)  # committed: the chain links are the heads now
        return inserted

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library's
    def copy_save(self, stored_events: Sequence[StoredEvent], plan: WritePlan | None,
                  written: list[hashing.Link] | None = None) -> Sequence[int]:
        """The events, the plan's rows and guards, and the hash links in one transaction,
        under the library's table lock, by COPY; the events' notification ids in order."""
        datastore = self.datastore
        sequence = self._sequence or self._notification_sequence()
        with datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(copying.lock_and_draw_ids(
                datastore.schema, self.events_table_name, sequence, datastore.lock_timeout,
                self.channel_name, len(stored_events)))
            ids = copying.drawn_ids(curs)
            if plan is not None:
                self.copy_plan(curs, plan)
            if stored_events:
                copying.copy_rows(curs, SQL(self.events_table), copying.EVENT_COLUMNS,
                                  copying.EVENT_TYPES, copying.event_values(stored_events, ids))
                self.write_hashes(curs, stored_events, bulk=True, written=written)
        return ids

    def _notification_sequence(self) -> str:
        rows = self._query("SELECT pg_get_serial_sequence(%s, 'notification_id') AS s",
                           (self.events_table,))
        self._sequence = str(rows[0]["s"])
        return self._sequence

    def copy_plan(self, curs: Cursor[Any], plan: WritePlan) -> None:
        """The plan's rows by binary COPY, then its guards (`write_plan`'s work)."""
        if plan.commands:
            copying.copy_rows(curs, SQL(f"{self.t}ledger_commands"), copying.COMMAND_COLUMNS,
                              copying.COMMAND_TYPES, map(copying.command_values, plan.commands))
        if plan.registrations:
            copying.copy_rows(curs, SQL(f"{self.t}ledger_registrations"),
                              copying.REGISTRATION_COLUMNS, copying.REGISTRATION_TYPES,
                              map(copying.registration_values, plan.registrations))
        if plan.reports:
            copying.copy_rows(curs, SQL(f"{self.t}ledger_reports"), copying.REPORT_COLUMNS,
                              copying.REPORT_TYPES, map(self.report_values, plan.reports))
        self.check_guards(curs, plan.guards)

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # The library calls this first, outside the `try` that holds back the errors of
        # its own insert until its transaction has ended: a guard that fails here must end
        # the transaction unwritten.
        plan = _rows_to_write(kwargs)
        if plan is not None:
            self._lock_table(curs)
            self.write_plan(curs, plan)

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """The library's (table lock, NOTIFY, insert), without locking the table a second
        time when the plan's write (`_insert_events`) took the lock in this transaction."""
        if _rows_to_write(kwargs) is None:
            self._lock_table(curs)
        self._notify_channel(curs)
        PostgresAggregateRecorder._insert_stored_events(self, curs, stored_events, **kwargs)

    def _notify_channel(self, curs: Any) -> None:
        curs.execute(self._notify)

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # The library calls this after its table lock and its insert, in its transaction.
        notification_ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        self.write_hashes(curs, stored_events, written=kwargs.get("written"))
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

    def _insert_hashes(self, curs: _Cursor, rows: list[hashing.Link], *,
                       bulk: bool = False) -> None:
        if bulk and isinstance(curs, Cursor):
            copying.copy_rows(curs, SQL(self.hashes_table), hashing.HASH_COLUMNS,
                              copying.HASH_TYPES, rows)
            return
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

    def _after_query(self, wanted: list[tuple[UUID, int]]) -> tuple[str, tuple[Any, ...]]:
        return (f"SELECT e.originator_id, e.originator_version, e.topic, e.state "
                f"FROM {self.events_table} e JOIN unnest(%s::uuid[], %s::bigint[]) "
                "AS w(id, after) ON e.originator_id = w.id AND e.originator_version > w.after "
                "ORDER BY e.originator_id, e.originator_version",
                ([oid for oid, _ in wanted], [version for _, version in wanted]))

    # Arrays, not lists of placeholders: one statement psycopg parses once, whatever the
    # count (parsing a 200-placeholder statement cost ~10 ms a group, measured).

    def _versions_query(self, keys: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        # One backward index probe per id (as SQLite's): `MAX ... GROUP BY` over `ANY`
        # read every version of every id, by a sequential scan of the events on a store
        # of 23,000 (6 ms a group of 200, against 1.2 ms).
        return (f"SELECT w.id, e.v FROM unnest(%s::uuid[]) AS w(id) CROSS JOIN LATERAL "
                f"(SELECT originator_version AS v FROM {self.events_table} "
                "WHERE originator_id = w.id ORDER BY originator_version DESC LIMIT 1) AS e",
                (list(keys),))

    def _commands_query(self, command_ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        return (f"SELECT * FROM {self.t}ledger_commands WHERE command_id = ANY(%s::text[])",
                (list(command_ids),))

    def _reports_query(self, pairs: list[tuple[UUID, str]]) -> tuple[str, tuple[Any, ...]]:
        return (f"SELECT r.registration_id, r.report_id FROM {self.t}ledger_reports r "
                "JOIN unnest(%s::uuid[], %s::text[]) AS w(registration_id, report_id) "
                "USING (registration_id, report_id)",
                ([reg_id for reg_id, _ in pairs], [report_id for _, report_id in pairs]))

    def db_time(self, moment: datetime) -> Any:
        return moment

    def lock_events(self, curs: Any) -> None:
        """The library's table lock, which every insert of events takes first."""
        self._lock_table(curs)

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
    def select_rows(self, after: int, limit: int, stop: int, topics: Topics = None
                    ) -> list[EventRow]:
        """The events after position `after` up to `stop`, at most `limit`, as plain rows
        (see the SQLite recorder's); in binary, so `state` needs no hex decoding."""
        where, params = topic_filter(topics, "%s")
        with self.datastore.get_connection() as conn, conn.cursor(
                row_factory=tuple_row, binary=True) as curs:
            curs.execute(
                f"SELECT notification_id, originator_id::text, originator_version, topic, "
                f"state FROM {self.events_table} WHERE notification_id > %s AND "
                f"notification_id <= %s{where} ORDER BY notification_id LIMIT %s",
                (after, stop, *params, limit), prepare=True)
            return curs.fetchall()

    def position_of(self, originator_id: str, version: int) -> int | None:
        rows = self._query(
            f'SELECT notification_id AS position FROM {self.t}"{self.events_table_name}" '
            "WHERE originator_id=%s AND originator_version=%s",
            (originator_id, version),
        )
        return int(rows[0]["position"]) if rows else None


def _text(statement: Any) -> Any:
    """A composed statement as its text (identifiers quoted as psycopg quotes them)."""
    return statement.as_string(None) if isinstance(statement, Composable) else statement


def _rows_to_write(kwargs: dict[str, Any]) -> WritePlan | None:
    """The save's plan when it has rows or guards (written first, under the lock)."""
    plan = write_plan_of(kwargs)
    return None if plan is None or plan.empty else plan
