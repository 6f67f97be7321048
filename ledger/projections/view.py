"""The view: a TrackingRecorder of the library that also writes read-model tables.

Every read model shares one recorder per database. A read model's tracking key is
`Ledger/<name>` (its shadow, while rebuilding: `Ledger/<name>/rebuild`; while verifying:
`Ledger/<name>/verify`), so several read models can follow the same store, each at its
own position.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg import sql
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.types.datetime import TimestamptzLoader

from ledger.projections.tables import Batch, Dialect, Key, Table, chunks
from ledger.store.copying import copy_rows

STATUS = Table("projection_status", ("name",), {
    "name": "text", "position": "int", "last_advanced_at": "time", "events_applied": "int",
    "skipped": "json", "rebuilt_at": "time"})


REBUILD, VERIFY = "rebuild", "verify"  # what a view's shadow tables are for
SUFFIX = {REBUILD: "new", VERIFY: "verify"}


class Page(NamedTuple):
    """One read model's page to write: its working set, applied from position `after` up
    to `position`, with the counts of what it applied and skipped."""

    name: str
    tables: Sequence[Table]
    batch: Batch
    after: int
    position: int
    applied: int
    skipped: dict[str, int]


def _at(row: Any, index: int, column: str) -> Any:
    """A column of a fetched row: a tuple (SQLite) or a dict (PostgreSQL's dict rows)."""
    return row[column] if isinstance(row, dict) else row[index]


def physical(table: Table, shadow: bool, aside: str = REBUILD) -> str:
    """The table's name in the database: live, or set aside (`aside`) for a rebuild."""
    return f"rm_{table.name}__{SUFFIX[aside]}" if shadow else f"rm_{table.name}"


def tracking_key(name: str, shadow: bool, aside: str = REBUILD) -> str:
    """The tracking name of a read model's live or set-aside position."""
    return f"Ledger/{name}/{aside}" if shadow else f"Ledger/{name}"


class ViewMixin:
    """Read-model writes that are the same on both backends; `dialect` says the rest."""

    dialect: Dialect
    datastore: Any  # the library recorder's (SQLite or PostgreSQL)
    # A rebuild's shadow tables are swapped in; a verify's are compared, then dropped.
    aside: str = REBUILD

    def physical(self, table: Table, shadow: bool) -> str:
        return physical(table, shadow and table is not STATUS, self.aside)

    def tracking_key(self, name: str, shadow: bool) -> str:
        return tracking_key(name, shadow, self.aside)

    @contextmanager
    def _txn(self) -> Iterator[Any]:
        raise NotImplementedError
        yield

    if TYPE_CHECKING:  # provided by the library's tracking recorders
        def _insert_tracking(self, c: Any, tracking: Tracking) -> None: ...

    # Tables ------------------------------------------------------------------------------

    def create_tables(self, tables: Sequence[Table], *, shadow: bool = False) -> None:
        with self._txn() as c:
            for table in [*tables, STATUS]:
                c.execute(self.dialect.create(table, self.physical(table, shadow)))

    def drop_tables(self, tables: Sequence[Table], *, shadow: bool) -> None:
        with self._txn() as c:
            for table in tables:
                c.execute(f"DROP TABLE IF EXISTS {self.dialect.q(self.physical(table, shadow))}")

    def position(self, name: str, *, shadow: bool = False) -> int:
        with self._txn() as c:
            return self.position_in(c, name, shadow=shadow)

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        """The live positions of read models `names`, read in one transaction (0: none)."""
        with self._reading() as c:
            return self._positions_in(c, names)

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A read-only transaction: on SQLite the library's pool lets readers in alongside
        a writer of this process (a `ledger serve` worker's commands, or the follower's
        page), where `_txn`, a write transaction, would take the writer's place."""
        with self.datastore.transaction(commit=False) as c:
            yield c

    def marks(self, names: Sequence[str]) -> dict[str, tuple[int, Any]]:
        """Each live read model's position and when a rebuild last swapped it in
        (`rebuilt_at` as stored; None: never), in one read-only transaction. A catch-up
        keeps a read model's working set from one call to the next only while its mark is
        unchanged (see `CatchUp.catch_up`)."""
        with self._reading() as c:
            found = self._positions_in(c, names)
            d = self.dialect
            c.execute(f"SELECT name, rebuilt_at FROM {d.q(physical(STATUS, False))} "
                      f"WHERE name IN ({', '.join([d.p] * len(names))})", tuple(names))
            rebuilt = {_at(row, 0, "name"): _at(row, 1, "rebuilt_at") for row in c.fetchall()}
        return {name: (found[name], rebuilt.get(name)) for name in names}

    def _positions_in(self, c: Any, names: Sequence[str]) -> dict[str, int]:
        d = self.dialect
        keys = {tracking_key(name, False): name for name in names}
        c.execute(f"SELECT application_name, notification_id FROM {self._tracking_table()} "
                  f"WHERE application_name IN ({', '.join([d.p] * len(keys))})", tuple(keys))
        found = {keys[_at(row, 0, "application_name")]: int(_at(row, 1, "notification_id"))
                 for row in c.fetchall()}
        return {name: found.get(name, 0) for name in names}

    def position_in(self, c: Any, name: str, *, shadow: bool = False) -> int:
        """The tracked position, read in the caller's transaction."""
        c.execute(f"SELECT notification_id FROM {self._tracking_table()} "
                  f"WHERE application_name = {self.dialect.p}", (self.tracking_key(name, shadow),))
        row = c.fetchone()
        return int(_at(row, 0, "notification_id")) if row else 0

    def _tracking_table(self) -> str:
        raise NotImplementedError

    @contextmanager
    def snapshot(self, tables: Sequence[str]) -> Iterator[Any]:
        """A read-only transaction that sees one committed state of these tables and the
        tracking positions, and keeps a rebuild from swapping them meanwhile."""
        raise NotImplementedError
        yield

    # Reading and writing a page ------------------------------------------------------------

    def prefetch(self, tables: Sequence[Table], ids: Iterable[str], batch: Batch,
                 *, shadow: bool) -> None:
        """Fetch the state rows of these aggregates that the working set cannot answer for
        (state tables are keyed by aggregate id)."""
        keys = [(i,) for i in ids]
        wanted = [(table, batch.missing(table, keys)) for table in tables]
        if not any(missing for _, missing in wanted):
            return
        d = self.dialect
        with self._reading() as c:
            for table, missing in wanted:
                found: list[dict[str, Any]] = []
                for part in chunks(missing):
                    c.execute(d.select_keys(table, self.physical(table, shadow), len(part)),
                              d.params(part))
                    found.extend(d.decode(table, row) for row in c.fetchall())
                batch.fetched(table, missing, found)

    def decode_row(self, table: Table, row: Any) -> dict[str, Any]:
        return self.dialect.decode(table, row)

    def flush(self, name: str, tables: Sequence[Table], batch: Batch, after: int,
              position: int, applied: int, skipped: dict[str, int], *, shadow: bool) -> None:
        """Write the working set's changes and the tracking position in one transaction.

        The changes were computed from the rows as they were at position `after`; if
        another runner has moved the position since, this raises IntegrityError and writes
        nothing (the caller must then drop the working set)."""
        page = Page(name, tables, batch, after, position, applied, skipped)
        with self._txn() as c:
            self._claim(c, self.tracking_key(name, shadow), after)
            summed = self._write_page(c, page, shadow)
        batch.written(summed)

    def flush_live(self, pages: Sequence[Page], rebuilt: dict[str, Any]) -> set[str]:
        """Write several live read models' pages in one transaction (one commit, and on
        SQLite one turn of the write lock, where a page each took four): each behind its
        own compare-and-set, as `flush`, which also checks that no rebuild was swapped in
        since the page's rows were read (`rebuilt`: each one's `rebuilt_at` then, from
        `marks`): a swap at the very position the page starts from would otherwise be
        written over with rows read before it. The names of those lost (nothing of theirs
        written; the caller drops their working sets)."""
        lost: set[str] = set()
        summed: dict[str, dict[str, dict[Key, list[Any]]]] = {}
        with self._txn() as c:
            for page in pages:  # every claim first: each locks its tracking row
                if not self._claimed(c, self.tracking_key(page.name, False), page.after,
                                     (page.name, rebuilt[page.name])):
                    lost.add(page.name)
            for page in pages:
                if page.name not in lost:
                    summed[page.name] = self._write_page(c, page, False)
        for page in pages:
            if page.name not in lost:
                page.batch.written(summed[page.name])
        return lost

    def _write_page(self, c: Any, page: Page, shadow: bool) -> dict[str, dict[Key, list[Any]]]:
        """A page's rows, status and position, in the caller's transaction; the sum rows
        its deltas gave, as written."""
        d, batch = self.dialect, page.batch
        summed: dict[str, dict[Key, list[Any]]] = {}
        for table in page.tables:
            target = self.physical(table, shadow)
            if batch.deltas[table.name]:
                summed[table.name] = self._add_sums(c, table, batch.deltas[table.name], target)
            dirty = batch.dirty[table.name]
            if dirty:
                rows, sums = batch.rows[table.name], batch.sums[table.name]
                values = []
                for key in dirty:
                    row = rows.get(key)
                    if row is not None:
                        values.append(d.row_values(table, row))
                    else:
                        values.append(d.encode(table, (*key, *sums[key])))
                self.write_rows(c, table, target, values)
            appended = batch.appended[table.name]
            if appended:
                self.write_rows(c, table, target,
                                [d.row_values(table, row) for row in appended])
        if self.aside == REBUILD:  # a verify leaves the status table alone
            self._record_status(c, page.name, page.position, page.applied, page.skipped,
                                shadow)
        self._insert_tracking(c, Tracking(self.tracking_key(page.name, shadow), page.position))
        return summed

    def _claim(self, c: Any, key: str, after: int) -> None:
        """`_claimed`, or IntegrityError."""
        if not self._claimed(c, key, after):
            raise IntegrityError(f"{key} is no longer at position {after}")

    def _claimed(self, c: Any, key: str, after: int,
                 unswapped: tuple[str, Any] | None = None) -> bool:
        """Compare-and-set on the tracking row, first in the transaction: it locks the row
        (PostgreSQL) or takes the write lock (SQLite) until the page is committed. False:
        the position is no longer `after` (another runner moved it), or, `unswapped`
        given (a read model's name and the `rebuilt_at` its rows were read under), a
        rebuild was swapped in since."""
        d, table = self.dialect, self._tracking_table()
        if after == 0:
            c.execute(f"INSERT INTO {table} (application_name, notification_id) "
                      f"VALUES ({d.p}, 0) ON CONFLICT (application_name) DO NOTHING", (key,))
        guard = ""
        params: tuple[Any, ...] = (key, after)
        if unswapped is not None:
            same = (f"IS NOT DISTINCT FROM {d.p}::{d.sql_type('time')}"
                    if d.backend == "postgres" else f"IS {d.p}")
            guard = (f" AND (SELECT rebuilt_at FROM {d.q(physical(STATUS, False))} "
                     f"WHERE name = {d.p}) {same}")
            params = (key, after, *unswapped)
        c.execute(f"UPDATE {table} SET notification_id = notification_id "
                  f"WHERE application_name = {d.p} AND notification_id = {d.p}{guard} "
                  "RETURNING notification_id", params)
        return c.fetchone() is not None

    def _add_sums(self, c: Any, table: Table, deltas: dict[Key, list[Any]],
                  target: str) -> dict[Key, list[Any]]:
        """Add changes to sum rows whose stored values the working set does not know:
        read, add, write. Returns the rows as written."""
        d = self.dialect
        full = {key: list(delta) for key, delta in deltas.items()}
        keys = list(full)
        for part in chunks(keys):
            c.execute(d.select_keys(table, target, len(part)),
                      d.params([d.encode_key(table, key) for key in part]))
            for row in c.fetchall():
                old = d.decode(table, row)
                new = full[table.key_of(old)]
                for i, column in enumerate(table.measures):
                    # `is None`, not `or`: Decimal("0.00") is falsy and its scale counts.
                    if old[column] is not None:
                        new[i] = old[column] + new[i]
        self.write_rows(c, table, target, [d.encode(table, (*key, *full[key])) for key in keys])
        return full

    def write_rows(self, c: Any, table: Table, name: str, values: list[tuple[Any, ...]]) -> None:
        """Upsert rows in multi-row statements: far fewer round trips than executemany."""
        for part in chunks(values):
            c.execute(self.dialect.upsert(table, name, len(part)), self.dialect.params(part))

    def _record_status(self, c: Any, name: str, position: int, applied: int,
                       skipped: dict[str, int], shadow: bool) -> None:
        key = f"{name}/rebuild" if shadow else name
        d = self.dialect
        now = datetime.now(UTC)
        if not skipped:  # (nearly always) one statement: the count is added in the database
            json = f"::{d.sql_type('json')}" if d.backend == "postgres" else ""
            c.execute(f'INSERT INTO {d.q(physical(STATUS, False))} AS s ("name", "position", '
                      f'"last_advanced_at", "events_applied", "skipped", "rebuilt_at") '
                      f"VALUES ({d.p}, {d.p}, {d.p}, {d.p}, {d.p}{json}, NULL) "
                      'ON CONFLICT ("name") DO UPDATE SET "position" = excluded."position", '
                      '"last_advanced_at" = excluded."last_advanced_at", "events_applied" = '
                      'COALESCE(s."events_applied", 0) + excluded."events_applied"',
                      (key, position, d.to_db("time", now), applied, d.to_db("json", {})))
            return
        c.execute(f"SELECT * FROM {d.q(physical(STATUS, False))} WHERE name = {d.p}", (key,))
        row = c.fetchone()
        old: dict[str, Any] = (self.decode_row(STATUS, row) if row
                               else {"events_applied": 0, "skipped": {}})
        merged = dict(old["skipped"] or {})
        for topic, count in skipped.items():
            merged[topic] = merged.get(topic, 0) + count
        status = {"name": key, "position": position, "last_advanced_at": now,
                  "events_applied": (old["events_applied"] or 0) + applied, "skipped": merged,
                  "rebuilt_at": old.get("rebuilt_at")}
        c.execute(d.upsert(STATUS, physical(STATUS, False)),
                  d.params([d.row_values(STATUS, status)]))

    def status_rows(self) -> list[dict[str, Any]]:
        with self._txn() as c:
            c.execute(f"SELECT * FROM {self.dialect.q(physical(STATUS, False))}")
            return [self.decode_row(STATUS, row) for row in c.fetchall()]

    def swap(self, name: str, tables: Sequence[Table]) -> None:
        """Replace the live tables by the rebuilt ones, atomically, with their position."""
        d = self.dialect
        position = self.position(name, shadow=True)
        with self._txn() as c:
            for table in tables:
                live, new = physical(table, False), physical(table, True)
                c.execute(f"DROP TABLE IF EXISTS {d.q(live)}")
                c.execute(f'ALTER TABLE {d.q(new)} RENAME TO "{live}"')
                if d.backend == "postgres":
                    c.execute(f'ALTER INDEX {d.prefix}"{new}_pk" RENAME TO "{live}_pk"')
            c.execute(f"DELETE FROM {self._tracking_table()} WHERE application_name IN "
                      f"({d.p}, {d.p})", (tracking_key(name, False), tracking_key(name, True)))
            self._insert_tracking(c, Tracking(tracking_key(name, False), position))
            c.execute(f"SELECT * FROM {d.q(physical(STATUS, False))} WHERE name = {d.p}",
                      (f"{name}/rebuild",))
            row = c.fetchone()
            rebuilt = self.decode_row(STATUS, row) if row else {"events_applied": 0, "skipped": {}}
            c.execute(f"DELETE FROM {d.q(physical(STATUS, False))} WHERE name IN ({d.p}, {d.p})",
                      (name, f"{name}/rebuild"))
            now = datetime.now(UTC)
            status = {**rebuilt, "name": name, "position": position, "last_advanced_at": now,
                      "rebuilt_at": now}
            c.execute(d.upsert(STATUS, physical(STATUS, False)),
                      d.params([d.row_values(STATUS, status)]))

    def reset_shadow(self, name: str, tables: Sequence[Table]) -> None:
        self.drop_tables(tables, shadow=True)
        d = self.dialect
        with self._txn() as c:
            c.execute(f"DELETE FROM {self._tracking_table()} WHERE application_name = {d.p}",
                      (self.tracking_key(name, True),))
            if self.aside == REBUILD:
                c.execute(f"DELETE FROM {d.q(physical(STATUS, False))} WHERE name = {d.p}",
                          (f"{name}/rebuild",))

    def query(self, sql: str, params: Sequence[Any] = (), *,
              tolerant: bool = False) -> list[dict[str, Any]]:
        """The rows `sql` selects. `tolerant`: a stored time the driver cannot turn into a
        datetime comes back as its text, for the caller to report (see rows.py), instead of
        failing the whole fetch."""
        with self._txn() as c:
            if tolerant:
                self._tolerate(c)
            c.execute(sql, tuple(params))
            return [dict(row) for row in c.fetchall()]

    def _tolerate(self, c: Any) -> None:
        """SQLite hands times over as text: nothing to do."""


class SQLiteView(ViewMixin, SQLiteTrackingRecorder):
    """Read-model writes on SQLite."""
    dialect = Dialect("sqlite", "?", "")

    @contextmanager
    def _txn(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=True) as c:
            yield c

    def _tracking_table(self) -> str:
        return "tracking"

    @contextmanager
    def snapshot(self, tables: Sequence[str]) -> Iterator[Any]:
        # In WAL mode a read transaction sees the database as of its first read.
        with self.datastore.transaction(commit=False) as c:
            yield c


# Rows from which a write on PostgreSQL goes by binary COPY into a staging table, then one
# INSERT ... SELECT from it, instead of one array per column in statements of 200 rows:
# psycopg dumps an array's elements in Python, one call each, and COPY's rows in C. At
# 1,000 rows a write takes 40% less of our CPU and as much of the machine's (the server
# does a little more); at 4,000, half of ours and 11% less of the machine's; under a few
# hundred, the extra round trips cost more than they save (docs/benchmarks.md, round 11).
COPY_MIN_ROWS = 1000


@dataclass
class Staged:
    """A session's staging tables (see `PostgresView.write_rows`)."""

    made: set[str] = field(default_factory=set)  # committed: there for the session
    making: set[str] = field(default_factory=set)  # made by the transaction under way
    used: set[str] = field(default_factory=set)  # written by the transaction under way

    def ended(self, *, committed: bool) -> None:
        if committed:
            self.made |= self.making
        self.making.clear()
        self.used.clear()  # (emptied by PostgreSQL: ON COMMIT DELETE ROWS, or rolled back)


class PostgresView(ViewMixin, PostgresTrackingRecorder):
    """Read-model writes on PostgreSQL, in the store's schema."""
    copy_min_rows = COPY_MIN_ROWS  # (an attribute: the tests take both ways)

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.dialect = Dialect("postgres", "%s", f'"{datastore.schema}".')
        # Per connection: the staging tables its session holds (a temporary table lives as
        # long as the session: made once, emptied by PostgreSQL at the end of each
        # transaction that used it), those made in the transaction under way (gone if it
        # rolls back: known only once it commits), and those it has used.
        self._staged: weakref.WeakKeyDictionary[Any, Staged] = weakref.WeakKeyDictionary()

    def write_rows(self, c: Any, table: Table, name: str, values: list[tuple[Any, ...]]) -> None:
        """Many rows: binary COPY into this session's staging table of `name`, then one
        upsert from it (the same statement, the same conflicts as `unnest`'s)."""
        if len(values) < self.copy_min_rows:
            super().write_rows(c, table, name, values)
            return
        d = self.dialect
        staged = f'pg_temp."stage_{name}"'
        state = self._staged.setdefault(c.connection, Staged())
        if staged in state.used:
            c.execute(f"DELETE FROM {staged}")  # an earlier write of this transaction's
        elif staged not in state.made and staged not in state.making:
            c.execute(d.staging(table, staged))
            state.making.add(staged)
        state.used.add(staged)
        copy_rows(c, sql.SQL(staged), table.all_columns, d.column_types(table), values)
        c.execute(d.upsert(table, name, staged=staged))

    @contextmanager
    def _txn(self) -> Iterator[Any]:
        connection = None
        try:
            with self.datastore.transaction(commit=True) as c:
                connection = c.connection
                yield c
        except BaseException:
            self._ended(connection, committed=False)
            raise
        self._ended(connection, committed=True)

    def _ended(self, connection: Any, *, committed: bool) -> None:
        state = self._staged.get(connection) if connection is not None else None
        if state is not None:
            state.ended(committed=committed)

    def _tracking_table(self) -> str:
        return f'"{self.datastore.schema}"."{self.tracking_table_name}"'

    @contextmanager
    def snapshot(self, tables: Sequence[str]) -> Iterator[Any]:
        # LOCK before the first query, so the snapshot is taken after it: a rebuild's
        # swap (DROP, RENAME) then waits for us instead of changing tables under us.
        # ACCESS SHARE does not hold up a follower's writes.
        with self.datastore.transaction(commit=False) as c:
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            c.execute(f"LOCK TABLE {', '.join(self.dialect.q(t) for t in tables)} "
                      "IN ACCESS SHARE MODE")
            yield c

    def _tolerate(self, c: Any) -> None:
        # Only this cursor: PostgreSQL holds years up to 294276, Python's datetime 9999.
        c.adapters.register_loader("timestamptz", TolerantTimestamptz)


class TolerantTimestamptz(Loader):
    """psycopg's own loader (the C one cannot be subclassed), but a value it refuses, such
    as '10000-01-01 04:59:59+00', is returned as its text."""

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        # From the global map: the cursor's own now names this class.
        inner = psycopg.adapters.get_loader(oid, Format.TEXT) or TimestamptzLoader
        self._inner = inner(oid, context)

    def load(self, data: Buffer) -> Any:
        try:
            return self._inner.load(data)
        except psycopg.DataError:
            return bytes(data).decode()
