"""Reports seen are kept in `ledger_reports`, not in the Registration's state
(docs/design.md, "Reports seen"): a report sent again changes nothing, one at a time and in
groups; snapshots stop growing with a registration's reports; a store written before the
index is indexed when it is opened and its old snapshots still load and verify; the audit
finds a row deleted or inserted. Both backends (the fixture's events are copied into a
new schema on PostgreSQL)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger import FixedClock, Ledger
from ledger.aggregates.base import registration_uuid
from ledger.aggregates.registration import Registration
from ledger.store.application import index_old_reports
from ledger.store.plan import RegistrationRow, WritePlan
from tests.conftest import NewUrl
from tests.fixtures.make_report_ids_store import REPORTS, report_id
from tests.support.helpers import (
    ACCOUNT,
    MANUAL,
    NOW,
    STARTS,
    Json,
    approve,
    create_campaign,
    event_tables,
    hours,
    record_performance,
    register,
)
from tests.support.projections import copy_events

FIXTURE = Path(__file__).parent / "fixtures" / "report-ids-store.db"
REG = str(registration_uuid(MANUAL, ACCOUNT))


def run_sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """A statement on the store behind the ledger's back (an insider's edit)."""
    if url.startswith("sqlite:"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
            return db.execute(statement, params).fetchall()
    base, _, schema = url.partition("?schema=")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        cursor = conn.execute(statement.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def report_rows(url: str) -> int:
    return int(run_sql(url, "SELECT COUNT(*) FROM ledger_reports")[0][0])


def sent(ledger: Ledger, command: Json) -> Json:
    result = ledger.send(command)
    assert result["ok"] is True, result
    return result


@contextmanager
def reporting(url: str) -> Iterator[Ledger]:
    """A ledger on a new store holding one approved registration (`REG`), its clock in
    the LIVE period, when reports are due."""
    clock = FixedClock(NOW)
    with Ledger.open(url, clock=clock, pool_size=1) as ledger:
        for command in (create_campaign(), register(MANUAL), approve(REG)):
            sent(ledger, command)
        clock.set(STARTS + hours(3))
        yield ledger


@pytest.fixture
def old(new_url: NewUrl, tmp_path: Path) -> tuple[str, list[str]]:
    """(URL, the notices its first opening gave) of a store written before the index: on
    SQLite the fixture file itself (with its snapshot), on PostgreSQL its events."""
    url = new_url()
    copy = tmp_path / "report-ids-store.db"
    shutil.copy(FIXTURE, copy)
    fixture = f"sqlite:///{copy}"
    if url.startswith("sqlite"):
        url = fixture
    else:
        ids = [row[0] for row in run_sql(fixture, "SELECT command_id FROM ledger_commands")]
        registrations = tuple(RegistrationRow(*row) for row in run_sql(
            fixture, "SELECT registration_id, campaign_id, account_id, seller_id "
            "FROM ledger_registrations"))
        with Ledger.open(fixture, pool_size=1) as source, \
                Ledger.open(url, pool_size=1) as target:
            copy_events(source.app, target.app)
            with target.app.store.writing() as curs:  # its other rows, as they are
                target.app.store.write_plan(curs, WritePlan(
                    tuple(source.app.store.find_commands(ids).values()), registrations))
        run_sql(url, "DELETE FROM ledger_reports")  # as a store of that time has none
    with Ledger.open(url, pool_size=1) as ledger:
        notices = list(ledger.notices)
    return url, notices


def test_a_store_written_before_the_index_is_indexed_once_when_opened(
    old: tuple[str, list[str]]
) -> None:
    url, notices = old
    assert notices == [f"indexed the {REPORTS} performance reports of a store written by an "
                       "older ledger (ledger_reports)"]
    assert report_rows(url) == REPORTS
    with Ledger.open(url, pool_size=1) as ledger:
        assert ledger.notices == []
        assert ledger.registration_state(REG)["performance_reports"] == REPORTS
        assert ledger.verify().report.findings == []


@pytest.mark.parametrize("grouped", [False, True], ids=["one", "group"])
def test_an_old_report_sent_again_changes_nothing_and_a_new_one_counts(
    old: tuple[str, list[str]], grouped: bool
) -> None:
    url, _ = old
    with Ledger.open(url, clock=FixedClock(STARTS + hours(90)), pool_size=1) as ledger:
        again = record_performance(REG, report_id=report_id(5), gmv="1.00")
        new = record_performance(REG, report_id="new-report", gmv="2.00")
        twice = record_performance(REG, report_id="new-report", gmv="3.00")
        commands = [again, new, twice]
        results = (ledger.send_group(commands) if grouped
                   else [ledger.send(c) for c in commands])
        assert [(r["ok"], r["events"]) for r in results] == [
            (True, []), (True, ["PerformanceRecorded"]), (True, [])]
        assert ledger.registration_state(REG)["performance_reports"] == REPORTS + 1
        assert report_rows(url) == REPORTS + 1
        assert ledger.verify().report.findings == []


def test_a_snapshot_holding_report_ids_loads_as_a_count_and_verifies(tmp_path: Path) -> None:
    copy = tmp_path / "report-ids-store.db"
    shutil.copy(FIXTURE, copy)
    url = f"sqlite:///{copy}"
    (version, state), = run_sql(url, "SELECT originator_version, state FROM stored_snapshots")
    held = json.loads(bytes(state))["state"]["report_ids"]  # what that ledger snapshotted
    assert len(held) == 46  # (versions 5 to 50)
    with Ledger.open(url, pool_size=1) as ledger:
        loaded = ledger.app.get(UUID(REG))
        assert isinstance(loaded, Registration)
        assert loaded.reports == REPORTS
        assert "report_ids" not in vars(loaded)
        at_snapshot = ledger.app.get(UUID(REG), version)
        assert at_snapshot.reports == len(held)  # loaded from the snapshot, upcast
        checked = ledger.verify()
        assert checked.snapshots == 1
        assert checked.report.findings == []


def test_snapshots_no_longer_grow_with_a_registrations_reports(new_url: NewUrl) -> None:
    url = new_url()
    with reporting(url) as ledger:
        results = list(ledger.send_many(
            record_performance(REG, report_id=f"r-{n:04d}") for n in range(300)))
        assert all(r["ok"] and r["events"] for r in results)
        assert ledger.registration_state(REG)["performance_reports"] == 300
    _, snapshots = event_tables(url)
    sizes = [len(bytes(state)) for _, state in run_sql(
        url, f"SELECT originator_version, state FROM {snapshots} ORDER BY originator_version")]
    assert len(sizes) == 6  # versions 50 to 300
    assert max(sizes) - min(sizes) < 100, sizes  # (a count's digits), not 250 ids more


def test_snapshots_taken_from_the_saved_registration_equal_its_events(new_url: NewUrl) -> None:
    """A snapshot is taken every 50 versions, from the saved aggregate when it stands at
    that version (one command at a time, or a group ending there), else loaded at that
    version (a group on the registration that runs past it); each equals what its events
    make, at exactly the library's versions."""
    url = new_url()
    reports = (record_performance(REG, report_id=f"r-{n:04d}") for n in range(1000))
    with reporting(url) as ledger:
        start = ledger.app.get(UUID(REG)).version
        for _ in range(50 - start):  # one at a time, up to version 50
            sent(ledger, next(reports))
        ran_past = list(ledger.send_many([next(reports) for _ in range(60)], group_size=60))
        ended_on = list(ledger.send_many([next(reports) for _ in range(40)], group_size=40))
        assert all(r["ok"] for r in ran_past + ended_on)
        assert ledger.app.get(UUID(REG)).version == 150
        checked = ledger.verify()  # each stored snapshot against its events, re-derived
        assert checked.report.findings == []
        assert checked.snapshots == 3
        loaded = ledger.app.get(UUID(REG))  # from the snapshot at 150
        assert loaded.reports == 150 - start
    _, snapshots = event_tables(url)
    versions = [v for v, in run_sql(
        url, f"SELECT originator_version FROM {snapshots} ORDER BY originator_version")]
    assert versions == [50, 100, 150]


@pytest.mark.parametrize("edit", ["deleted", "inserted", "version"])
def test_an_edited_report_row_is_an_audit_finding(new_url: NewUrl, edit: str) -> None:
    url = new_url()
    with reporting(url) as ledger:
        versions = [sent(ledger, record_performance(REG, report_id=f"r-{n}"))["version"]
                    for n in range(3)]
        assert ledger.verify().report.findings == []
        key = run_sql(url, "SELECT registration_id FROM ledger_reports")[0][0]
        if edit == "deleted":
            run_sql(url, "DELETE FROM ledger_reports WHERE report_id = 'r-1'")
        elif edit == "inserted":
            run_sql(url, "INSERT INTO ledger_reports VALUES (?, 'never-sent', 9)", (key,))
        else:
            run_sql(url, "UPDATE ledger_reports SET version = 99 WHERE report_id = 'r-2'")
        findings = ledger.verify().report.findings
        assert [(f.kind, f.aggregate_id) for f in findings] == [("index_altered", UUID(REG))]
        told = findings[0].detail
        assert {"deleted": "'r-1' has no report row (deleted)",
                "inserted": "'never-sent', which no PerformanceRecorded",
                "version": f"names version 99, its event is version {versions[2]}"}[edit] in told
        if edit == "deleted":  # what the finding warns of: sent again, it counts twice
            again = ledger.send(record_performance(REG, report_id="r-1"))
            assert again["events"] == ["PerformanceRecorded"]


def test_a_store_with_no_reports_is_not_indexed_and_takes_reports(new_url: NewUrl) -> None:
    url = new_url()
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        sent(ledger, create_campaign())
        assert index_old_reports(ledger.app) == 0
    assert report_rows(url) == 0


def test_indexing_an_old_store_says_so_before_it_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A big store takes a while (about 40 µs a report here): a line says what is going on
    before the writers are held back, and progress lines follow every 500,000 reports."""
    copy = tmp_path / "report-ids-store.db"
    shutil.copy(FIXTURE, copy)
    with caplog.at_level("WARNING", logger="ledger.store"), \
            Ledger.open(f"sqlite:///{copy}", pool_size=1) as ledger:
        assert ledger.notices  # and, once done, how many
    assert [r.getMessage() for r in caplog.records] == [
        "indexing the performance reports of a store written by an older ledger (once; "
        "writers wait until it is done)"]
