"""The store as the audit reads it: its tables, and their rows in key order (keyset pages)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from ledger.store.hashing import as_bytes, as_uuid

PAGE = 5_000
Progress = Callable[[int, int], None]


class ChainStore(Protocol):
    """What our recorders offer the audit: tables, placeholders, a snapshot, a writer."""

    p: str
    position_column: str

    @property
    def events_table(self) -> str: ...
    @property
    def hashes_table(self) -> str: ...
    @property
    def seals_table(self) -> str: ...
    @property
    def seal_heads_table(self) -> str: ...
    @property
    def seal_signatures_table(self) -> str: ...

    def snapshot(self) -> AbstractContextManager[Any]: ...
    def writing(self) -> AbstractContextManager[Any]: ...
    def db_id(self, originator_id: UUID) -> Any: ...
    def db_time(self, moment: datetime) -> Any: ...


def pages(store: ChainStore, curs: Any, table: str, columns: str,
           where: str = "", params: tuple[Any, ...] = ()) -> Iterator[Any]:
    """Rows of `table` by (originator_id, originator_version), PAGE at a time (keyset)."""
    p = store.p
    base = f"SELECT {columns} FROM {table} WHERE {where + ' AND ' if where else ''}"
    order = f" ORDER BY originator_id, originator_version LIMIT {PAGE}"
    curs.execute(base + "TRUE" + order, params)
    while rows := list(curs.fetchall()):
        yield from rows
        last = rows[-1]
        if len(rows) < PAGE:
            return
        curs.execute(base + f"(originator_id, originator_version) > ({p}, {p})" + order,
                     (*params, last["originator_id"], last["originator_version"]))


def events_in_key_order(store: ChainStore, curs: Any, columns: str) -> Iterator[Any]:
    """Every stored event's `columns`, by aggregate then version (keyset pages, flat memory)."""
    return pages(store, curs, store.events_table, columns)


def keyed(rows: Iterator[Any]) -> Iterator[tuple[tuple[UUID, int], Any]]:
    """Rows keyed by (originator id, version), for merging in key order."""
    for row in rows:
        yield (as_uuid(row["originator_id"]), row["originator_version"]), row


def merged(events: Iterator[Any], hashes: Iterator[Any]
            ) -> Iterator[tuple[UUID, int, Any, bytes | None]]:
    """Events and hash rows side by side: (id, version, event or None, hash or None)."""
    e_it, h_it = keyed(events), keyed(hashes)
    e, h = next(e_it, None), next(h_it, None)
    while e is not None or h is not None:
        if h is None or (e is not None and e[0] < h[0]):
            assert e is not None
            yield *e[0], e[1], None
            e = next(e_it, None)
        elif e is None or h[0] < e[0]:
            yield *h[0], None, as_bytes(h[1]["hash"])
            h = next(h_it, None)
        else:
            yield *e[0], e[1], as_bytes(h[1]["hash"])
            e, h = next(e_it, None), next(h_it, None)


def scalar(curs: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the query's first row, or None."""
    curs.execute(sql, params)
    row = curs.fetchone()
    return None if row is None else row[next(iter(row.keys()))]

