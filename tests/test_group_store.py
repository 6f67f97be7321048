"""The store side of group commit (issue 14), on SQLite and PostgreSQL: one save of many
commands' events and rows writes exactly what the same commands saved one by one write;
its notification ids follow the order given; a duplicate key anywhere in it writes
nothing and raises the library's `IntegrityError`; the chains still verify."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from bench.common import Step, group_save, save_steps, steps_of
from ledger import FixedClock, Ledger
from ledger.aggregates.base import campaign_uuid
from ledger.audit import integrity
from ledger.commands.handlers import not_expired
from ledger.store.application import LedgerApplication, project
from ledger.store.faults import StoreErrors, classify
from ledger.store.hashing import as_uuid
from ledger.store.plan import GuardFailed, WritePlan
from tests.conftest import NewUrl
from tests.reliability.test_storage_faults import _admin, _url, database, read_only
from tests.support.helpers import (
    AUTO,
    ENDS,
    NOW,
    STARTS,
    SYSTEM,
    create_auto_campaign,
    dump_store,
    expire_campaign,
    hours,
    record_performance,
    register_auto,
)


def send_season(url: str, accounts: int, reports: int) -> None:
    """A campaign, `accounts` registrations, `reports` reports for each (one by one)."""
    clock = FixedClock(NOW)
    with Ledger.open(url, clock=clock, pool_size=1) as ledger:
        ids = [ledger.send(cmd)["aggregate_id"] for cmd in [create_auto_campaign()] + [
            register_auto(account_id=f"acc-{i}", seller_id=f"seller-{i}")
            for i in range(accounts)]][1:]
        clock.set(STARTS + hours(3))
        for j in range(reports):
            for reg in ids:
                assert ledger.send(record_performance(reg, report_id=f"r{j}", actor=SYSTEM))["ok"]


@pytest.fixture(scope="module")
def season(new_url: NewUrl) -> list[Step]:
    """113 commands (a campaign, 16 registrations, 6 reports each), one by one."""
    url = new_url()
    send_season(url, accounts=16, reports=6)
    return steps_of(url)


@pytest.fixture
def store(new_url: NewUrl) -> Iterator[tuple[str, LedgerApplication]]:
    url = new_url()
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=2) as ledger:
        yield url, ledger.app


def test_one_save_of_many_commands_writes_what_one_save_per_command_writes(
        season: list[Step], new_url: NewUrl) -> None:
    one_by_one, grouped = new_url(), new_url()
    with Ledger.open(one_by_one, pool_size=1) as ledger:
        for step in season:
            save_steps(ledger.app, [step])
    with Ledger.open(grouped, pool_size=1) as ledger:
        ids = save_steps(ledger.app, season)
    assert len(ids) == sum(len(s.events) for s in season) > 100
    assert dump_store(grouped) == dump_store(one_by_one)


def test_a_group_save_returns_the_notification_ids_of_its_events_in_the_order_given(
        season: list[Step], store: tuple[str, LedgerApplication]) -> None:
    _, app = store
    first = save_steps(app, season[:30])
    second = save_steps(app, season[30:])
    ids = first + second
    assert ids == list(range(1, len(ids) + 1))
    events = [e for step in season for e in step.events]
    for notification_id, event in zip(ids, events, strict=True):
        assert app.store.position_of(str(event.originator_id),
                                     event.originator_version) == notification_id
    listed = app.recorder.select_notifications(start=1, limit=len(ids))
    assert [(n.originator_id, n.originator_version) for n in listed] == [
        (e.originator_id, e.originator_version) for e in events]


def test_an_event_stored_meanwhile_fails_the_whole_group_and_writes_nothing(
        season: list[Step], store: tuple[str, LedgerApplication]) -> None:
    url, app = store
    save_steps(app, season[:5])
    taken = season[30]
    app.recorder.insert_events(list(taken.events))  # its events, without its command row
    before = dump_store(url)
    with pytest.raises(IntegrityError):
        save_steps(app, season[5:50])  # the duplicate key is in the middle of the events
    assert dump_store(url) == before


def test_a_command_id_stored_meanwhile_fails_the_whole_group_and_writes_nothing(
        season: list[Step], store: tuple[str, LedgerApplication]) -> None:
    url, app = store
    save_steps(app, season[:5])
    app.recorder.insert_events([], plan=WritePlan(commands=(season[30].command,)))
    before = dump_store(url)
    with pytest.raises(IntegrityError):
        save_steps(app, season[5:50])  # the duplicate key is in the middle of the command rows
    assert dump_store(url) == before


def test_a_group_of_commands_that_wrote_no_events_stores_their_command_rows(
        season: list[Step], store: tuple[str, LedgerApplication]) -> None:
    """(A report seen before is accepted without an event: only its command row.)"""
    url, app = store
    rows = tuple(step.command for step in season[:40])
    assert app.save(plan=WritePlan(commands=rows)) == []
    assert sorted(r[0] for r in dump_store(url)["ledger_commands"]) == sorted(
        r.command_id for r in rows)
    assert app.recorder.max_notification_id() is None


def test_a_store_written_in_big_groups_verifies_clean(
        season: list[Step], store: tuple[str, LedgerApplication]) -> None:
    _, app = store
    save_steps(app, season[:25])
    save_steps(app, season[25:])
    checked = integrity.verify(app)
    assert checked.report.findings == []
    assert checked.commands == len(season)


def test_concurrent_group_and_single_saves_interleave_whole_transactions_only(
        season: list[Step], new_url: NewUrl) -> None:
    """Three writers at once (two in groups, one command at a time), each on its own
    aggregates: every group's events get consecutive ids (no other writer's event falls
    inside a group: its lock is held from its first id to its commit), nothing is lost,
    and the chains verify."""
    url = new_url()
    first, rest = season[0], season[1:]
    lanes: list[list[Step]] = [[], [], []]
    for step in rest:
        lanes[as_uuid(step.events[0].originator_id).int % 3].append(step)
    ids: list[list[int]] = []
    with Ledger.open(url, pool_size=4) as ledger:
        app = ledger.app
        save_steps(app, [first])

        def write(lane: int) -> None:
            size = 1 if lane == 0 else 8
            for start in range(0, len(lanes[lane]), size):
                ids.append(save_steps(app, lanes[lane][start:start + size]))

        writers = [threading.Thread(target=write, args=(lane,)) for lane in range(3)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(60)
        assert all(group == list(range(group[0], group[0] + len(group))) for group in ids)
        assert sorted(i for group in ids for i in group) == list(
            range(2, sum(len(s.events) for s in season) + 1))
        assert integrity.verify(app).report.findings == []


def guarded(steps: list[Step], *campaigns: UUID) -> tuple[list[Any], WritePlan]:
    """The steps as one save whose plan also holds `not_expired` guards of `campaigns`."""
    plan = WritePlan(commands=tuple(s.command for s in steps),
                     registrations=tuple(r for s in steps for r in s.registrations),
                     guards=tuple(not_expired(c) for c in campaigns),
                     reports=tuple(r for s in steps for r in s.reports))
    return [e for s in steps for e in s.events], plan


def test_a_group_with_a_campaign_that_expired_meanwhile_fails_whole_and_writes_nothing(
        season: list[Step], store: tuple[str, LedgerApplication]) -> None:
    url, app = store
    save_steps(app, season[:1])  # the campaign
    campaign = campaign_uuid(AUTO)
    with Ledger.open(url, clock=FixedClock(ENDS), pool_size=1) as other:
        assert other.send(expire_campaign(AUTO))["ok"]
    before = dump_store(url)
    events, plan = guarded(season[1:60], uuid4(), campaign, uuid4())
    with pytest.raises(GuardFailed):
        app.recorder.insert_events(events, plan=plan)
    assert dump_store(url) == before


def test_a_group_whose_campaigns_did_not_expire_passes_their_guards(
        season: list[Step], store: tuple[str, LedgerApplication]) -> None:
    _, app = store
    save_steps(app, season[:1])
    events, plan = guarded(season[1:60], uuid4(), campaign_uuid(AUTO), uuid4())
    app.recorder.insert_events(events, plan=plan)
    assert app.recorder.max_notification_id() == sum(len(s.events) for s in season[:60])


@pytest.mark.postgres
def test_a_group_save_on_postgres_waits_for_the_events_table_lock(
        season: list[Step], postgres_database: str) -> None:
    """Notification order equals commit order only if the COPY path takes the library's
    table lock, as its INSERT does: a save held up by another holder of it waits."""
    from tests.support.projections import new_schema_url
    url = new_schema_url(postgres_database)
    schema = url.rsplit("schema=", 1)[1]
    with Ledger.open(url, pool_size=2) as ledger:
        done = threading.Event()
        with psycopg.connect(postgres_database) as holder:
            holder.execute(f'LOCK TABLE "{schema}".ledger_events IN EXCLUSIVE MODE')
            writer = threading.Thread(target=lambda: (save_steps(ledger.app, season), done.set()))
            writer.start()
            assert not done.wait(0.5)  # blocked while the lock is held
            holder.rollback()
        writer.join(10)
        assert done.is_set()
        assert ledger.app.recorder.max_notification_id() == sum(len(s.events) for s in season)


def test_a_group_passing_a_snapshot_version_saves_a_snapshot_that_loads_and_verifies(
        new_url: NewUrl) -> None:
    """As `send_group` calls it: the group's events, then its aggregates (for the library's
    snapshots): a registration that passes version 50 inside one group is snapshotted,
    `get` and `get_many` start from that snapshot, and the store verifies clean."""
    source, url = new_url(), new_url()
    send_season(source, accounts=2, reports=55)  # versions 1-57 for each registration
    steps = steps_of(source)
    with Ledger.open(url, pool_size=1) as ledger:
        app = ledger.app
        save_steps(app, steps[:60])
        events, plan = group_save(app, steps[60:])
        aggregates = {e.originator_id for e in events}
        decided = [project(app.get(oid), (e for e in events if e.originator_id == oid))
                   for oid in aggregates]
        assert app.save(*events, *decided, plan=plan)
        snapshotted = app.snapshots.recorder.snapshotted() if app.snapshots else []
        assert len(snapshotted) == 2
        loaded = app.get_many(snapshotted)
        for oid in snapshotted:
            assert loaded[oid].version == app.get(oid).version == 57
        assert integrity.verify(app).report.findings == []


@pytest.mark.postgres
def test_a_group_on_a_read_only_postgres_is_a_read_only_fault_and_writes_nothing(
        season: list[Step]) -> None:
    """The COPY path's failures are classified as the INSERT path's are (`faults.py`)."""
    with _admin() as admin, database(admin) as name:
        url = _url(name)
        with Ledger.open(url, pool_size=1) as ledger:
            save_steps(ledger.app, season[:1])
            before = dump_store(url)
            read_only(admin, name, True)
            try:
                with pytest.raises(StoreErrors) as raised:
                    save_steps(ledger.app, season[1:60])
                fault = classify(raised.value)
                assert fault is not None, raised.value
                assert fault.cause == "read-only", raised.value
                assert dump_store(url) == before
            finally:
                read_only(admin, name, False)
            assert len(save_steps(ledger.app, season[1:60])) == sum(
                len(s.events) for s in season[1:60])
