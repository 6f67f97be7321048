"""Read-model tables, the SQL dialect of each backend, and a read model's working set.

The working set (`Batch`) holds the rows a read model changed since its last write:
state rows (keyed by aggregate id), sum rows (measures added in memory) and appended
rows. `ViewMixin.flush` writes the dirty ones with the tracking position in one
transaction, so a crash loses nothing and counts nothing twice. A rebuild keeps the set
across writes (see docs/design.md, "The working set").
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain, islice
from operator import itemgetter
from typing import Any

import orjson

from ledger.jsontext import compact

CHUNK = 200
Row = dict[str, Any]
Key = tuple[Any, ...]
Convert = Callable[[Any], Any] | None


@dataclass(frozen=True)
class Table:
    """A read-model table: `keys` form its primary key; `columns` maps name → kind.

    A sum table's non-key columns (`measures`) are added to, never replaced."""

    name: str
    keys: tuple[str, ...]
    columns: dict[str, str]
    all_columns: tuple[str, ...] = field(init=False, compare=False)
    measures: tuple[str, ...] = field(init=False, compare=False)
    # A row's values in `all_columns` order (made in C: a rebuild of 1M events writes
    # ~300,000 rows); a tuple, but of a one-column table.
    values_of: Callable[[Row], Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        rest = tuple(c for c in self.columns if c not in self.keys)
        object.__setattr__(self, "all_columns", self.keys + rest)
        object.__setattr__(self, "measures", rest)
        object.__setattr__(self, "values_of", itemgetter(*self.all_columns))

    def kind(self, column: str) -> str:
        return self.columns.get(column, "text")

    def key_of(self, row: Row) -> Key:
        return tuple([row[k] for k in self.keys])


# A JSON column holds what `json.dumps(value, default=str, separators=(",", ":"))` wrote,
# written by orjson (`ledger.jsontext.compact`), ~1.7x faster here (a rebuild of 1M
# events writes ~100,000 JSON values; `json.dumps` was 8% of its main process): times,
# subclasses of built-in types and dataclasses go to `str` as they did (`OPT_PASSTHROUGH_*`).
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
                   | orjson.OPT_PASSTHROUGH_DATACLASS)


def _json_dump(value: Any) -> str:
    return compact(value, default=str, option=_ORJSON_OPTIONS)


# The text of times written lately (`_iso`): a row is written again at each write that
# finds it changed, and many rows share a time (a campaign's, a report's hour), so most
# times are spelled more than once. Equal instants (in any offset) have one text.
_ISO_TEXTS: dict[datetime, str] = {}
ISO_CACHE = 10_000


def _iso(value: Any) -> str:
    """A time for a SQLite TEXT column: UTC, always to the microsecond, so that the text
    sorts as the instants do (ORDER BY, as PostgreSQL's timestamptz sorts)."""
    if isinstance(value, datetime):
        text = _ISO_TEXTS.get(value)
        if text is None:
            if len(_ISO_TEXTS) >= ISO_CACHE:
                _ISO_TEXTS.clear()
            # (Most times are UTC already: no new object for them.)
            text = _ISO_TEXTS[value] = (
                value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat(
                    timespec="microseconds")
        return text
    return str(value)


def _json_load(value: Any) -> Any:
    """A JSON column's value, its objects' keys sorted: PostgreSQL's JSONB keeps its own key
    order (shortest first), SQLite's text the order written; sorted, both read alike."""
    return _sorted_keys(json.loads(value) if isinstance(value, str) else value)


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def _money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _time(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Dialect:
    """How one backend spells SQL: placeholders, schema prefix, value encodings."""
    backend: str  # "sqlite" | "postgres"
    p: str
    prefix: str  # schema qualification on PostgreSQL
    _encoders: dict[str, tuple[Convert, ...]] = field(default_factory=dict, compare=False)
    _decoders: dict[str, tuple[Convert, ...]] = field(default_factory=dict, compare=False)
    _converts: dict[str, tuple[tuple[int, Callable[[Any], Any]], ...]] = field(
        default_factory=dict, compare=False)

    def sql_type(self, kind: str) -> str:
        if self.backend == "postgres":
            return {"text": "TEXT", "int": "BIGINT", "money": "NUMERIC", "time": "TIMESTAMPTZ",
                    "json": "JSONB"}[kind]
        return {"text": "TEXT", "int": "INTEGER", "money": "TEXT", "time": "TEXT",
                "json": "TEXT"}[kind]

    def q(self, physical: str) -> str:
        return f'{self.prefix}"{physical}"'

    def create(self, table: Table, physical: str) -> str:
        cols = ", ".join(f'"{c}" {self.sql_type(table.kind(c))}' for c in table.all_columns)
        keys = ", ".join(f'"{k}"' for k in table.keys)
        return (f"CREATE TABLE IF NOT EXISTS {self.q(physical)} ({cols}, "
                f'CONSTRAINT "{physical}_pk" PRIMARY KEY ({keys}))')

    # Values to and from the database: one converter per column, worked out once per table;
    # text and int columns (most of them) are passed as they are.

    def _encoder(self, kind: str) -> Convert:
        if kind == "json":
            return _json_dump
        if self.backend == "sqlite" and kind in ("money", "time"):
            return _iso
        return None

    def _decoder(self, kind: str) -> Convert:
        return {"json": _json_load, "money": _money, "time": _time}.get(kind)

    def encoders(self, table: Table) -> tuple[Convert, ...]:
        found = self._encoders.get(table.name)
        if found is None:
            found = self._encoders[table.name] = tuple(
                self._encoder(table.kind(c)) for c in table.all_columns)
        return found

    def _conversions(self, table: Table) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
        """The columns (by index) whose values are converted on the way in, and how: most
        are passed as they are, so a row is converted where it needs to be only (a rebuild
        of 1M events writes ~300,000 rows)."""
        found = self._converts.get(table.name)
        if found is None:
            found = self._converts[table.name] = tuple(
                (i, f) for i, f in enumerate(self.encoders(table)) if f is not None)
        return found

    def decoders(self, table: Table) -> tuple[Convert, ...]:
        found = self._decoders.get(table.name)
        if found is None:
            found = self._decoders[table.name] = tuple(
                self._decoder(table.kind(c)) for c in table.all_columns)
        return found

    def to_db(self, kind: str, value: Any) -> Any:
        convert = self._encoder(kind)
        return value if convert is None or value is None else convert(value)

    def encode(self, table: Table, values: Iterable[Any]) -> tuple[Any, ...]:
        """A row's values (in `all_columns` order) as the database takes them."""
        conversions = self._conversions(table)
        if not conversions and type(values) is tuple and len(values) == len(table.all_columns):
            return values
        out = list(values)
        if len(out) != len(table.all_columns):
            raise ValueError(f"{table.name}: {len(out)} values for "
                             f"{len(table.all_columns)} columns")
        for i, f in conversions:
            v = out[i]
            if v is not None:
                out[i] = f(v)
        return tuple(out)

    def encode_key(self, table: Table, key: Key) -> tuple[Any, ...]:
        return tuple([v if f is None or v is None else f(v)
                      for v, f in zip(key, self.encoders(table), strict=False)])

    def row_values(self, table: Table, row: Row) -> tuple[Any, ...]:
        try:
            values = table.values_of(row)
        except KeyError:  # a column the row leaves out is NULL
            values = tuple([row.get(c) for c in table.all_columns])
        else:
            if len(table.all_columns) == 1:
                values = (values,)
        return self.encode(table, values)

    def decode(self, table: Table, row: Any) -> Row:
        """A fetched row (a mapping of column → value) as Python values."""
        return {c: (row[c] if f is None or row[c] is None else f(row[c]))
                for c, f in zip(table.all_columns, self.decoders(table), strict=True)}

    # Statements ----------------------------------------------------------------------------

    def upsert(self, table: Table, physical: str, count: int = 1,
               staged: str | None = None) -> str:
        """Insert or replace rows in one statement. PostgreSQL takes one array per column
        (`unnest`), so the statement stays small and is parsed and planned once; or, with
        `staged`, the rows of that table (see `staging`)."""
        cols = table.all_columns
        names = ", ".join(f'"{c}"' for c in cols)
        keys = ", ".join(f'"{k}"' for k in table.keys)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c not in table.keys)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        if self.backend == "postgres":
            rows = f"{staged} AS u" if staged else self._unnest(table, cols)
            source = f"SELECT {self._casts(table, cols)} FROM {rows}"
        else:
            marks = ", ".join(["(" + ", ".join([self.p] * len(cols)) + ")"] * count)
            source = f"VALUES {marks}"
        return (f"INSERT INTO {self.q(physical)} ({names}) {source} "
                f"ON CONFLICT ({keys}) {action}")

    def _unnest(self, table: Table, cols: Sequence[str]) -> str:
        # `%b`: each column's list goes over in binary. In text, psycopg quotes and
        # escapes every element with a regular expression (times and JSON always need
        # it): that was half of a PostgreSQL rebuild's writing, measured.
        arrays = ", ".join(f"%b::{self.travel_type(table, c)}[]" for c in cols)
        return f"unnest({arrays}) AS u({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)})"

    def travel_type(self, table: Table, column: str) -> str:
        """PostgreSQL: a column's type as its values travel (a JSON column as its text,
        cast to JSONB by `_casts`)."""
        kind = table.kind(column)
        return "text" if kind == "json" else self.sql_type(kind).lower()

    def column_types(self, table: Table) -> list[str]:
        """PostgreSQL: each column's `travel_type`, in `all_columns` order."""
        return [self.travel_type(table, c) for c in table.all_columns]

    def staging(self, table: Table, staged: str) -> str:
        """PostgreSQL: a temporary table (this session's, emptied at commit) that rows of
        `table` are copied into before `upsert(..., staged=...)`."""
        cols = ", ".join(f'"{c}" {kind}' for c, kind in zip(
            table.all_columns, self.column_types(table), strict=True))
        return f"CREATE TEMPORARY TABLE {staged} ({cols}) ON COMMIT DELETE ROWS"

    def _casts(self, table: Table, cols: Sequence[str]) -> str:
        return ", ".join(f'u."{c}"::jsonb' if table.kind(c) == "json" else f'u."{c}"'
                         for c in cols)

    def params(self, rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
        """Parameters for `upsert`/`select_keys`: flat on SQLite, a list per column on
        PostgreSQL."""
        if self.backend == "postgres":
            return tuple(list(column) for column in zip(*rows, strict=True))
        return tuple(chain.from_iterable(rows))

    def select_keys(self, table: Table, physical: str, count: int) -> str:
        """Rows by primary key, in a form each planner answers from the key's index
        (a row-value IN over VALUES is a scan of the whole table on both)."""
        if self.backend == "postgres":
            on = " AND ".join(f't."{k}" = u."{k}"' for k in table.keys)
            return (f"SELECT t.* FROM {self.q(physical)} AS t JOIN "
                    f"{self._unnest(table, table.keys)} ON {on}")
        if len(table.keys) == 1:
            where = f'"{table.keys[0]}" IN ({", ".join([self.p] * count)})'
        else:
            one = "(" + " AND ".join(f'"{k}" = {self.p}' for k in table.keys) + ")"
            where = " OR ".join([one] * count)
        return f"SELECT * FROM {self.q(physical)} WHERE {where}"


class Batch:
    """A read model's working set: the rows it holds in memory, and which changed.

    - State rows: `get` one (fetched beforehand by the runner, or cached), change it and
      `put` it back; `put` marks it dirty. `None` means "known not to exist".
    - Sum rows: `add(table, key, values)` adds `values` (in `table.measures` order). A key
      whose stored row is known (cached, or new in a complete set) is summed in full;
      otherwise the change is kept as a delta, read-added-written at the next write.
    - Appended rows are queued until the next write.
    - `cells`: a read model's own pending amounts, in named groups of cells (one group
      per kind of key), folded into sum rows by its `settle()` before each write (see
      `ytd.add_report`).

    `complete` tables are those whose every stored row the set holds (a rebuild that
    started on empty tables and dropped nothing): a key it lacks does not exist.
    """

    def __init__(self, tables: Sequence[Table] = (), *, complete: bool = False,
                 fold: tuple[Table, tuple[str, ...]] | None = None) -> None:
        self.rows: dict[str, dict[Key, Row | None]] = {t.name: {} for t in tables}
        # `fold`: a state table and the columns fold handlers read of it (they never change
        # once a row is put). Those columns of every row put or fetched are kept here, and
        # never dropped: a fold reads them without its row being fetched again.
        self.fold_table = fold[0].name if fold else None
        self.fold_columns = fold[1] if fold else ()
        self.folded: dict[Any, Row] = {}  # by aggregate id (the fold table's one key)
        self.sums: dict[str, dict[Key, list[Any]]] = {t.name: {} for t in tables}
        self.deltas: dict[str, dict[Key, list[Any]]] = {t.name: {} for t in tables}
        self.dirty: dict[str, set[Key]] = {t.name: set() for t in tables}
        self.appended: dict[str, list[Row]] = {t.name: [] for t in tables}
        self.complete: set[str] = {t.name for t in tables} if complete else set()
        self.cells: defaultdict[str, dict[Key, list[Any]]] = defaultdict(dict)

    # What handlers call ----------------------------------------------------------------------

    def get(self, table: Table, *key: Any) -> Row | None:
        try:
            return self.rows[table.name][key]
        except KeyError:  # not fetched (a fold's aggregate): its fold columns, if kept
            return self.folded.get(key[0]) if table.name == self.fold_table else None

    def fold_get(self, table: Table, aid: str) -> Row | None:
        """For a fold handler: the state row of `aid` in the fold table (`table`), or its
        fold columns alone; None when it does not exist. The same as `get`, but asked
        first of the fold columns, which a rebuild keeps for every row and never drops."""
        found = self.folded.get(aid)
        return found if found is not None else self.rows[table.name].get((aid,))

    def put(self, table: Table, row: Row) -> Row:
        key = table.key_of(row)
        rows = self.rows[table.name]
        rows.pop(key, None)  # re-inserted last: `evict` drops the rows changed longest ago
        rows[key] = row
        self.dirty[table.name].add(key)
        self.keep_fold(table, key, row)
        return row

    def add(self, table: Table, key: Key, values: Sequence[Any]) -> None:
        name = table.name
        row = self.sums[name].get(key)
        if row is None:
            if name in self.complete:
                self.sums[name][key] = list(values)
                self.dirty[name].add(key)
                return
            deltas = self.deltas[name]
            row = deltas.get(key)
            if row is None:
                deltas[key] = list(values)
                return
        else:
            self.dirty[name].add(key)
        for i, value in enumerate(values):
            row[i] += value

    def append(self, table: Table, row: Row) -> None:
        self.appended[table.name].append(row)

    # What the runner and the view use --------------------------------------------------------

    def missing(self, table: Table, keys: Iterable[Key]) -> list[Key]:
        """The keys of `table` the set cannot answer for (to fetch before a page)."""
        if table.name in self.complete:
            return []
        rows = self.rows[table.name]
        return [k for k in keys if k not in rows]

    def fetched(self, table: Table, keys: Iterable[Key], found: Iterable[Row]) -> None:
        """Record what the database holds for `keys`: these rows, and nothing for the rest."""
        rows = self.rows[table.name]
        for key in keys:
            rows[key] = None
        for row in found:
            key = table.key_of(row)
            rows[key] = row
            self.keep_fold(table, key, row)

    def keep_fold(self, table: Table, key: Key, row: Row) -> None:
        """Keep the fold columns of a row of the fold table (they never change: the first
        seen stays)."""
        if table.name == self.fold_table and key[0] not in self.folded:
            self.folded[key[0]] = {c: row[c] for c in self.fold_columns}

    def largest(self) -> int:
        """The most rows cached for one table."""
        return max((len(part) for group in (self.rows, self.sums) for part in group.values()),
                   default=0)

    def pending(self) -> bool:
        return any(any(group.values()) for group in (
            self.cells, self.dirty, self.deltas, self.appended))

    def written(self, summed: dict[str, dict[Key, list[Any]]]) -> None:
        """After a write: the deltas' rows as written are known rows; nothing is dirty."""
        for name, deltas in self.deltas.items():
            self.sums[name].update(summed.get(name, {}))
            deltas.clear()
        for dirty in self.dirty.values():
            dirty.clear()
        for appended in self.appended.values():
            appended.clear()

    def evict(self, limit: int, *, fold_too: bool = False) -> None:
        """Keep at most `limit` cached rows per table, dropping the oldest (down to half the
        limit, so that this is not needed again at once). Only after a write: nothing
        dropped is dirty. A table that dropped rows is no longer complete. `fold_too`: the
        fold columns kept as well (at most `limit` aggregates'; a fold of one not kept
        reads its row, fetched first, as any handler does)."""
        assert not self.pending()
        if fold_too and len(self.folded) > limit:
            for key in list(islice(iter(self.folded), len(self.folded) - limit // 2)):
                del self.folded[key]
        for group in (self.rows, self.sums):
            for name, part in group.items():
                if len(part) > limit:
                    for key in list(islice(iter(part), len(part) - limit // 2)):
                        del part[key]
                    self.complete.discard(name)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """`items` in slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
