"""Read-model tables, the SQL dialect of each backend, and one batch of row changes.

A batch is what one page of events changes: state rows (keyed by aggregate id, fetched
once per page), sums (added in memory, then read-added-written once per page) and
appended rows. `flush` writes it all with the view's tracking position in one
transaction, so a crash loses nothing and counts nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

KINDS = ("text", "int", "money", "time", "json")
CHUNK = 200


@dataclass(frozen=True)
class Table:
    """A read-model table: `keys` form its primary key; `columns` maps name → kind."""

    name: str
    keys: tuple[str, ...]
    columns: dict[str, str]

    @property
    def all_columns(self) -> list[str]:
        return list(self.keys) + [c for c in self.columns if c not in self.keys]

    def kind(self, column: str) -> str:
        return self.columns.get(column, "text")


@dataclass(frozen=True)
class Dialect:
    backend: str  # "sqlite" | "postgres"
    p: str
    prefix: str  # schema qualification on PostgreSQL

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

    def to_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "json":
            return json.dumps(value, default=str, separators=(",", ":"))
        if self.backend == "sqlite" and kind in ("money", "time"):
            return value.isoformat() if isinstance(value, datetime) else str(value)
        return value

    def from_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "json":
            return json.loads(value) if isinstance(value, str) else value
        if kind == "money":
            return Decimal(value) if not isinstance(value, Decimal) else value
        if kind == "time" and isinstance(value, str):
            return datetime.fromisoformat(value)
        return value

    def upsert(self, table: Table, physical: str, count: int = 1) -> str:
        """Insert or replace rows in one statement. PostgreSQL takes one array per column
        (`unnest`), so the statement stays small and is parsed and planned once."""
        cols = table.all_columns
        names = ", ".join(f'"{c}"' for c in cols)
        keys = ", ".join(f'"{k}"' for k in table.keys)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c not in table.keys)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        if self.backend == "postgres":
            source = f"SELECT {self._casts(table, cols)} FROM {self._unnest(table, cols)}"
        else:
            marks = ", ".join(["(" + ", ".join([self.p] * len(cols)) + ")"] * count)
            source = f"VALUES {marks}"
        return (f"INSERT INTO {self.q(physical)} ({names}) {source} "
                f"ON CONFLICT ({keys}) {action}")

    def _unnest(self, table: Table, cols: Sequence[str]) -> str:
        arrays = ", ".join(
            f"%s::{'text' if table.kind(c) == 'json' else self.sql_type(table.kind(c))}[]"
            for c in cols)
        return f"unnest({arrays}) AS u({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)})"

    def _casts(self, table: Table, cols: Sequence[str]) -> str:
        return ", ".join(f'u."{c}"::jsonb' if table.kind(c) == "json" else f'u."{c}"'
                         for c in cols)

    def params(self, rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
        """Parameters for `upsert`/`select_keys`: flat on SQLite, a list per column on
        PostgreSQL."""
        if self.backend == "postgres":
            return tuple(list(column) for column in zip(*rows, strict=True))
        return tuple(value for row in rows for value in row)

    def row_values(self, table: Table, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(self.to_db(table.kind(c), row.get(c)) for c in table.all_columns)

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
            one = "(" + " AND ".join(f"{k} = {self.p}" for k in repr_keys(table)) + ")"
            where = " OR ".join([one] * count)
        return f"SELECT * FROM {self.q(physical)} WHERE {where}"


def repr_keys(table: Table) -> list[str]:
    return [f'"{k}"' for k in table.keys]


@dataclass
class Batch:
    """The changes one page of events makes to one read model's tables."""

    state: dict[str, dict[tuple[Any, ...], dict[str, Any] | None]] = field(default_factory=dict)
    sums: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    appended: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def get(self, table: Table, *key: Any) -> dict[str, Any] | None:
        """A state row (prefetched for the page's aggregates, or put earlier in the page)."""
        return self.state.setdefault(table.name, {}).get(tuple(key))

    def put(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        self.state.setdefault(table.name, {})[tuple(row[k] for k in table.keys)] = row
        return row

    def add(self, table: Table, key: dict[str, Any], amounts: dict[str, Any]) -> None:
        """Add amounts to the row at `key` (created at zero when new)."""
        rows = self.sums.setdefault(table.name, {})
        k = tuple(key[c] for c in table.keys)
        row = rows.get(k)
        if row is None:
            row = rows[k] = {**key, **dict.fromkeys(amounts, 0)}
        for column, amount in amounts.items():
            row[column] = row[column] + amount

    def append(self, table: Table, row: dict[str, Any]) -> None:
        self.appended.setdefault(table.name, []).append(row)

    def is_empty(self) -> bool:
        return not (any(self.state.values()) or self.sums or self.appended)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
