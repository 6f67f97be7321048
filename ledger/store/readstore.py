"""A database for read models apart from the event store (a market's `read_url`).

The read models need of their database only what the library's infrastructure factory
gives a tracking recorder: a datastore (a pool) and the environment it was made from.
`open_read_store(url)` makes that factory from the same settings `open_application` uses
(`library_env`), so a read database is configured exactly like a store: a PostgreSQL URL
whole (with `?schema=`), or a SQLite file. Nothing of the event store is created there;
the read models create their own tables and tracking table when their projector starts.
"""

from __future__ import annotations

from typing import Any

import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from ledger.store.application import DDL_LOCK_KEY, LedgerApplication, create_schema, library_env
from ledger.store.urls import StoreUrl, check_reachable

NAME = "Ledger"  # the library's application name: tables `ledger_tracking` as in a store


class ReadStore:
    """Where read models are written and read: the library's factory for one database.

    Has what the projections use of a `LedgerApplication` for their own tables: `factory`
    (its `datastore` holds the pool and the locks) and `env` (given to rebuild helpers)."""

    def __init__(self, factory: InfrastructureFactory[Any], env: dict[str, str],
                 display: str) -> None:
        self.factory = factory
        self.env = env
        self.display = display

    def close(self) -> None:
        self.factory.close()


def same_store(app: LedgerApplication) -> ReadStore:
    """The read side of a store that keeps its read models beside its events."""
    return ReadStore(app.factory, dict(app.env), "")


def open_read_store(store: StoreUrl, *, pool_size: int = 5) -> ReadStore:
    """Open the read-model database at `store` (unreachable: one-line StoreUnavailable)."""
    check_reachable(store)
    env = library_env(store, pool_size=pool_size)
    if store.backend == "postgres" and store.schema:
        with psycopg.connect(store.conninfo(), autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
            try:
                create_schema(conn, store.schema)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK_KEY,))
    factory = InfrastructureFactory.construct(Environment(NAME, env))
    return ReadStore(factory, env, store.display)
