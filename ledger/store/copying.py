"""Binary COPY for a group's save on PostgreSQL: many commands' rows in one transaction.

The library inserts events with `INSERT ... SELECT ... FROM unnest(composite[])`, which
psycopg dumps row by row in Python (~8,000 events/s here); binary `COPY` of the same rows
reached ~45,000/s (EVENTSOURCING-9.5.md), and a group's whole insert (events, command,
index and hash rows) by COPY takes 2.5 times less client CPU than by INSERT
(docs/benchmarks.md, "storefast"). A save carrying many rows (a group commit:
`WritePlan.commands` of ~200 commands) goes through `copy_save`; a small one keeps the
library's pipelined path, which needs one round trip where COPY needs several (the
threshold is measured by bench/group_store.py).

What `copy_save` keeps of the library's path, in the same order:
- the `LOCK TABLE ... IN EXCLUSIVE MODE` (after `SET LOCAL lock_timeout`) taken first, and
  held to the commit, so that notification order equals commit order, and the `NOTIFY`;
- the plan's rows and guards, then the events, then their hash links, in one transaction;
- its errors: psycopg's are turned into the library's by `datastore.get_connection()`, so a
  duplicate key anywhere in a COPY raises `IntegrityError` (nothing is written: the
  transaction is rolled back), and a lost connection an `OperationalError`.

COPY cannot return the notification ids, so they are drawn from the table's own sequence
(`nextval`, n times, under the lock) and written in the `notification_id` column: the ids
are ascending in the order the events are given, by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from psycopg import Cursor, sql

from ledger.store import hashing
from ledger.store.plan import CommandRow, RegistrationRow, WritePlan

COPY_MIN_ROWS = 16  # events + plan rows from which COPY beats the pipelined INSERT
EVENT_COLUMNS = ("originator_id", "originator_version", "topic", "state", "notification_id")
EVENT_TYPES = ("uuid", "int8", "text", "bytea", "int8")
COMMAND_COLUMNS = ("command_id", "fingerprint", "aggregate_id", "version", "result",
                   "recorded_at")
COMMAND_TYPES = ("text", "text", "uuid", "int4", "text", "timestamptz")
REGISTRATION_COLUMNS = ("registration_id", "campaign_id", "account_id", "seller_id")
REGISTRATION_TYPES = ("uuid", "text", "text", "text")
REPORT_COLUMNS = ("registration_id", "report_id", "version")
REPORT_TYPES = ("uuid", "text", "int4")
HASH_TYPES = ("uuid", "int8", "bytea")


def rows_of(stored_events: Sequence[StoredEvent], plan: WritePlan | None) -> int:
    """How many rows a save inserts (what chooses COPY or the library's INSERT)."""
    return len(stored_events) + (len(plan.commands) + len(plan.registrations)
                                 + len(plan.reports) if plan else 0)


def copy_rows(curs: Cursor[Any], table: sql.Composable, columns: Sequence[str],
              types: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY rows into `table` in binary (no text escaping; every value typed)."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns)))
    with curs.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def command_values(row: CommandRow) -> tuple[Any, ...]:
    """A `ledger_commands` row typed for binary COPY (`CommandRow.values` is its text)."""
    text = row.values()
    return (text[0], text[1], UUID(row.aggregate_id), row.version, text[4], row.recorded_at)


def registration_values(row: RegistrationRow) -> tuple[Any, ...]:
    """A `ledger_registrations` row typed for binary COPY."""
    return (UUID(row.registration_id), row.campaign_id, row.account_id, row.seller_id)


def stored_values(stored_events: Iterable[StoredEvent]) -> Iterable[tuple[Any, ...]]:
    """Stored events (or snapshots) as rows of their table, typed for binary COPY."""
    for event in stored_events:
        yield (hashing.as_uuid(event.originator_id), event.originator_version, event.topic,
               event.state)


def event_values(stored_events: Sequence[StoredEvent], ids: Sequence[int]
                 ) -> Iterable[tuple[Any, ...]]:
    """The events' rows with the notification ids drawn for them, in the given order."""
    for row, notification_id in zip(stored_values(stored_events), ids, strict=True):
        yield (*row, notification_id)


def lock_and_draw_ids(schema: str, table: str, sequence: str, lock_timeout: int, channel: str,
                      count: int) -> sql.Composed:
    """One round trip: the library's lock statements, its NOTIFY, and `count` ids drawn
    from the table's sequence under that lock (simple query protocol: no parameters)."""
    return sql.SQL(
        "SET LOCAL lock_timeout = '{timeout}s'; LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
        "NOTIFY {channel}; SELECT nextval({sequence}) AS id FROM generate_series(1, {count})"
    ).format(timeout=sql.SQL(str(int(lock_timeout))), schema=sql.Identifier(schema),
             table=sql.Identifier(table), channel=sql.Identifier(channel),
             sequence=sql.Literal(sequence), count=sql.Literal(count))


def drawn_ids(curs: Cursor[Any]) -> list[int]:
    """The ids of `lock_and_draw_ids`: the last of its results."""
    while curs.nextset():
        pass
    return sorted(int(row["id"]) for row in curs.fetchall())
