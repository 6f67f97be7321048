"""Read-model test helpers: fresh stores without fixtures, table dumps, copies of a store's
events, and the child process that the crash tests kill."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from ledger import Ledger
from ledger.projections.registry import READ_MODELS, projector
from ledger.projections.runner import Projector
from ledger.projections.tables import Table
from ledger.projections.view import STATUS, physical
from ledger.store.application import LedgerApplication, index_old_reports

Rows = dict[str, list[tuple[Any, ...]]]


# Fresh stores ---------------------------------------------------------------------------------

def new_sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / f'ledger-{uuid4().hex[:8]}.db'}"


def new_schema_url(database_url: str) -> str:
    """A new, empty schema in the run's PostgreSQL database, as a store URL."""
    schema = f"p_{uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return urlunsplit(urlsplit(database_url)._replace(query=f"schema={schema}"))


# What the read models hold ----------------------------------------------------------------------

def read_model_tables() -> list[Table]:
    """Every table of every registered read model (new read models included)."""
    return [table for model in READ_MODELS.values() for table in model.tables]


def _canonical(kind: str, value: Any, exact: bool) -> Any:
    """A value as the database holds it, comparable across rows: JSON parsed (key order is
    no difference), money as its decimal text (exact: with its scale, since exports show
    it; else normalised, 25.00 = 25.0)."""
    if value is None:
        return None
    if kind == "money":
        amount = Decimal(str(value))
        return f"decimal:{amount if exact else amount.normalize()}"
    if isinstance(value, datetime):
        return value.isoformat()
    if kind == "json" and isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def table_rows(p: Projector, table: Table, *, shadow: bool = False,
               exact: bool = False) -> list[tuple[Any, ...]]:
    rows = p.view.query(f"SELECT * FROM {p.view.dialect.q(physical(table, shadow))}")
    found = [tuple((c, _canonical(table.kind(c), row[c], exact)) for c in table.all_columns)
             for row in rows]
    return sorted(found, key=repr)


def rows_of(p: Projector, *, shadow: bool = False, exact: bool = False) -> Rows:
    """Every row of every read-model table (not the status table), order-independent."""
    return {physical(t, shadow): table_rows(p, t, shadow=shadow, exact=exact)
            for t in read_model_tables()}


def status_of(p: Projector) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in p.status()}


def status_table(p: Projector) -> list[tuple[Any, ...]]:
    return table_rows(p, STATUS)


def store_tables(p: Projector) -> set[str]:
    """The names of the tables in the store's database (or schema)."""
    if p.view.dialect.backend == "sqlite":
        found = p.view.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        schema = p.view.dialect.prefix.rstrip(".").strip('"')
        found = p.view.query("SELECT table_name AS name FROM information_schema.tables "
                             "WHERE table_schema = %s", (schema,))
    return {row["name"] for row in found}


def event_count(app: LedgerApplication) -> int:
    return len(app.recorder.select_notifications(0, 10**6))


# Copies of the events, for reference rows built in tables of their own ----------------------

def copy_events(source: LedgerApplication, target: LedgerApplication, *, after: int = 0,
                upto: int | None = None) -> None:
    """Append the source's events in (after, upto] to the target, in order."""
    start = after
    while page := source.recorder.select_notifications(start, 500, stop=upto,
                                                       inclusive_of_start=False):
        target.recorder.insert_events([
            StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)
            for n in page])
        start = page[-1].id


def clone_events(source: LedgerApplication, url: str, *, upto: int | None = None) -> Ledger:
    """A new store holding the same events at the same positions, their reports indexed
    as the ledger indexes them (`ledger_reports`), and nothing else."""
    clone = Ledger.open(url, pool_size=1)
    copy_events(source, clone.app, upto=upto)
    index_old_reports(clone.app)
    return clone


def rows_elsewhere(source: LedgerApplication, url: str, *, rebuild: bool = False,
                   exact: bool = False) -> Rows:
    """The rows a catch-up (or a rebuild) gives in a separate store with the same events."""
    with clone_events(source, url) as clone:
        p = projector(clone.app, page=50)
        if rebuild:
            p.rebuild()
        else:
            p.catch_up()
        return rows_of(p, exact=exact)


# The child the crash tests kill -----------------------------------------------------------------

def child(mode: str, url: str, page: int, out: Connection) -> None:
    """Catch up or rebuild, reporting each page's position (the parent kills us mid-way)."""
    with Ledger.open(url, pool_size=1) as ledger:
        p = projector(ledger.app, page=page)
        out.send(("ready", 0))

        def progress(position: int, stop: int) -> None:
            out.send(("at", position))

        if mode == "catch-up":
            p.catch_up(progress=progress)
        elif mode == "rebuild":
            p.rebuild(progress=progress)
        else:  # "rebuild-jobs": this process and a spawned helper, each rebuilding a half
            p.rebuild(progress=progress, jobs=2)
        out.send(("done", 0))
