"""How many events a store holds, looked at without creating anything; and clearing it.

For `ledger demo`: it writes only into an empty store, and clears one only when asked.
Clearing a SQLite store removes its file (and the -wal and -shm beside it); clearing a
PostgreSQL store drops the ledger's own tables (`ledger_*`, `rm_*`) in the URL's schema,
in one transaction, and nothing else that lives there.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
from psycopg import sql

from ledger.errors import StoreUnavailable
from ledger.store.urls import StoreUrl

OWN_TABLES = ("ledger\\_%", "rm\\_%")  # LIKE patterns of every table the ledger creates


def stored_events(store: StoreUrl) -> int:
    """The number of events in the store (0 for a file or schema that is not there yet)."""
    if store.backend == "sqlite":
        return _sqlite_events(Path(store.path))
    schema = store.schema or "public"
    with psycopg.connect(store.conninfo()) as conn:
        table = conn.execute("SELECT to_regclass(%s)",
                             (f'"{schema}"."ledger_events"',)).fetchone()
        if table is None or table[0] is None:
            return 0
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}.ledger_events").format(
            sql.Identifier(schema))).fetchone()
        return int(row[0]) if row else 0


def _sqlite_events(path: Path) -> int:
    if not path.exists() or path.stat().st_size == 0:
        return 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'stored_events'"
                                ).fetchone():
                return 0
            return int(conn.execute("SELECT count(*) FROM stored_events").fetchone()[0])
    except sqlite3.DatabaseError as e:
        raise StoreUnavailable(f"{path} is not a ledger store ({e})") from None


def clear(store: StoreUrl) -> None:
    """Delete everything the ledger stored there."""
    if store.backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(store.path + suffix).unlink(missing_ok=True)
        return
    schema = store.schema or "public"
    with psycopg.connect(store.conninfo()) as conn:
        names = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s "
            "AND (tablename LIKE %s OR tablename LIKE %s)", (schema, *OWN_TABLES))]
        if names:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.SQL(", ").join(
                sql.Identifier(schema, name) for name in names)))
