"""`LedgerApplication.get_many` (a group commit's prefetch) loads every aggregate exactly as
`get` does, on SQLite and PostgreSQL: from its newest snapshot when that one passes the
snapshot checks, from its events when the snapshot was edited (with the same warning)."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import FixedClock, Ledger
from ledger.aggregates.base import campaign_uuid
from ledger.store.application import LedgerApplication
from ledger.store.snapshots import CheckedSnapshots
from tests.conftest import NewUrl
from tests.support.helpers import (
    NOW,
    STARTS,
    SYSTEM,
    create_auto_campaign,
    hours,
    record_performance,
    register_auto,
)
from tests.test_audit_chain import Tables

SNAPSHOTS = {True: "stored_snapshots", False: "ledger_snapshots"}


def build(url: str, reports: list[int]) -> list[UUID]:
    """A campaign and one registration per entry of `reports`, with that many reports (a
    snapshot every 50 versions); the aggregate ids, the campaign's first."""
    clock = FixedClock(NOW)
    with Ledger.open(url, clock=clock, pool_size=1) as ledger:
        ids = [ledger.send(create_auto_campaign())["aggregate_id"]]
        ids += [ledger.send(register_auto(account_id=f"acc-{i}", seller_id=f"seller-{i}"))[
            "aggregate_id"] for i in range(len(reports))]
        clock.set(STARTS + hours(3))
        for reg, count in zip(ids[1:], reports, strict=True):
            for j in range(count):
                assert ledger.send(record_performance(reg, report_id=f"r{j}", actor=SYSTEM))["ok"]
        return [campaign_uuid(ids[0]), *(UUID(reg) for reg in ids[1:])]


def tamper(url: str, registration: UUID, index: int) -> None:
    """Edit the registration's newest snapshot (its owner) in the database."""
    tables = Tables(url)
    edited = ("CAST(replace(CAST(state AS TEXT), ?, ?) AS BLOB)" if tables.sqlite
              else "convert_to(replace(convert_from(state, 'UTF8'), ?, ?), 'UTF8')")
    table = SNAPSHOTS[tables.sqlite]
    tables.run(f"UPDATE {table} SET state = {edited} WHERE originator_id = ? AND "
               f"originator_version = (SELECT MAX(originator_version) FROM {table} "
               "WHERE originator_id = ?)", f'"seller-{index}"', '"mallory"', registration,
               registration)


def state(app: LedgerApplication, aggregate: Any) -> bytes:
    """Everything an aggregate holds, encoded (aggregates do not compare by value)."""
    return app.mapper.transcoder.encode(dict(vars(aggregate)))


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(reports=st.lists(st.integers(0, 105), min_size=1, max_size=3),
       tampered=st.lists(st.booleans(), min_size=3, max_size=3))
def test_get_many_loads_every_aggregate_as_get_does(
        new_url: NewUrl, reports: list[int], tampered: list[bool],
        caplog: pytest.LogCaptureFixture) -> None:
    url = new_url()
    ids = build(url, reports)
    edited = {reg for i, reg in enumerate(ids[1:]) if tampered[i] and reports[i] >= 49}
    for i, reg in enumerate(ids[1:]):
        if reg in edited:
            tamper(url, reg, i)
    missing = uuid4()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ledger.store"), \
            Ledger.open(url, pool_size=1) as ledger:
        app = ledger.app
        loaded = app.get_many([*ids, missing, ids[0]])
        warned = {UUID(r.args[0]) if isinstance(r.args[0], str) else r.args[0]
                  for r in caplog.records if isinstance(r.args, tuple)}
        assert set(loaded) == set(ids)
        for uid in ids:
            assert loaded[uid].version == app.get(uid).version
            assert state(app, loaded[uid]) == state(app, app.get(uid))
    assert warned == edited


def test_get_many_of_nothing_or_of_unknown_ids_is_empty(new_url: NewUrl) -> None:
    url = new_url()
    build(url, [])
    with Ledger.open(url, pool_size=1) as ledger:
        assert ledger.app.get_many([]) == {}
        assert ledger.app.get_many({uuid4(), uuid4()}) == {}


def test_get_many_reads_in_chunks_without_losing_or_mixing_aggregates(new_url: NewUrl) -> None:
    url = new_url()
    ids = build(url, [55, 3, 51, 0, 120])
    with Ledger.open(url, pool_size=1) as ledger:
        app = ledger.app
        assert app.snapshots is not None
        snapshots = app.snapshots.recorder
        assert isinstance(snapshots, CheckedSnapshots)
        app.store.load_chunk, snapshots.load_chunk = 2, 3  # several queries for 6 aggregates
        loaded = app.get_many(list(reversed(ids)))
        assert set(loaded) == set(ids)
        for uid in ids:
            assert state(app, loaded[uid]) == state(app, app.get(uid))
