"""A store written by a ledger whose reports were v1 (no `refunds`) still replays, projects,
verifies and takes new events. The fixture is tests/fixtures/v1-store.db (made by
tests/fixtures/make_v1_store.py); on PostgreSQL its events are copied into a new schema."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ledger import FixedClock, Ledger
from ledger.aggregates import registration_events as r
from ledger.audit import chain
from ledger.audit.history import history
from ledger.commands.results import admit
from ledger.projections.registry import projector
from ledger.projections.ytd import ytd_report
from ledger.store.application import index_old_reports
from ledger.store.plan import WritePlan
from tests.conftest import NewUrl
from tests.fixtures.make_v1_store import REPORTS, commands_sent
from tests.support.helpers import (
    SELLER,
    STARTS,
    hours,
    record_performance,
)
from tests.support.projections import copy_events

FIXTURE = Path(__file__).parent / "fixtures" / "v1-store.db"


@pytest.fixture
def v1(new_url: NewUrl, tmp_path: Path) -> Iterator[Ledger]:
    copy = tmp_path / "v1-store.db"
    shutil.copy(FIXTURE, copy)
    url = new_url()
    clock = FixedClock(STARTS + hours(5))
    if url.startswith("sqlite"):
        with Ledger.open(f"sqlite:///{copy}", clock=clock, pool_size=1) as ledger:
            yield ledger  # the fixture file itself, with the hash rows it was written with
        return
    with Ledger.open(f"sqlite:///{copy}", pool_size=1) as source, \
            Ledger.open(url, clock=clock, pool_size=1) as ledger:
        copy_events(source.app, ledger.app)
        assert index_old_reports(ledger.app) == len(REPORTS)  # as opening it would
        stored = source.app.store.find_commands([cid for cid, _ in stored_fingerprints()])
        with ledger.app.store.writing() as curs:  # and its command rows, as they are
            ledger.app.store.write_plan(curs, WritePlan(tuple(stored.values())))
        yield ledger


def stored_fingerprints() -> list[tuple[str, str]]:
    """(command_id, fingerprint) of the fixture's commands, in the order they were sent."""
    with closing(sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)) as db:
        return db.execute("SELECT command_id, fingerprint FROM ledger_commands "
                          "ORDER BY rowid").fetchall()


def fixture_history() -> list[dict[str, Any]]:
    """The commands tests/fixtures/make_v1_store.py sent, with the ids it stored them under."""
    before, later = commands_sent()
    sent = [*before, *later]
    stored = stored_fingerprints()
    assert len(stored) == len(sent)
    return [{**command, "command_id": command_id}
            for command, (command_id, _) in zip(sent, stored, strict=True)]


def reports(ledger: Ledger) -> list[r.PerformanceRecorded]:
    notifications = ledger.app.recorder.select_notifications(0, 1000)
    return [e for e in map(ledger.app.mapper.to_domain_event, notifications)
            if isinstance(e, r.PerformanceRecorded)]


def test_the_fixture_holds_v1_reports() -> None:
    with closing(sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)) as db:
        states = [json.loads(state) for (state,) in db.execute(
            "SELECT state FROM stored_events WHERE topic LIKE '%PerformanceRecorded'")]
    assert len(states) == len(REPORTS)
    for state in states:
        assert "refunds" not in state
        assert "class_version" not in state


def test_v1_reports_upcast_with_no_refunds(v1: Ledger) -> None:
    found = reports(v1)
    assert [e.report_id for e in found] == list(REPORTS)
    assert all(e.refunds == Decimal("0") for e in found)
    assert [e.gmv for e in found] == [Decimal("1000.25"), Decimal("1001.25"), Decimal("1002.25")]


def test_a_v1_store_verifies_and_takes_v2_events_that_verify_too(v1: Ledger) -> None:
    report = chain.verify(v1.app.store)
    assert report.clean, [f.line() for f in report.findings]
    assert (report.events, report.aggregates) == (12, 3)

    registration = str(reports(v1)[0].originator_id)
    v1.send(record_performance(registration, report_id="v2-report", refunds="10.50"))

    report = chain.verify(v1.app.store)
    assert report.clean, [f.line() for f in report.findings]
    assert report.events == 13
    newest = v1.app.recorder.select_notifications(0, 1000)[-1]
    assert json.loads(newest.state)["class_version"] == 2
    steps = [(e["type"], e["data"].get("report_id"), e["data"].get("refunds"))
             for e in history(v1, registration) if e["type"] == "PerformanceRecorded"]
    assert steps == [("PerformanceRecorded", "v1-report-1", "0"),
                     ("PerformanceRecorded", "v1-report-2", "0"),
                     ("PerformanceRecorded", "v1-report-3", "0"),
                     ("PerformanceRecorded", "v2-report", "10.50")]


def test_commands_a_ledger_stored_before_replay_with_their_stored_fingerprints(
    v1: Ledger
) -> None:
    """The fingerprint's bytes never change: the fixture's commands, sent again (in a
    group, and one at a time), are replays, not `command_id_reused`."""
    sent = fixture_history()
    fingerprints = dict(stored_fingerprints())
    for command in sent:
        assert admit(command).fingerprint() == fingerprints[command["command_id"]]
    grouped = v1.send_group([json.dumps(command) for command in sent])
    assert [(r["ok"], r["replayed"]) for r in grouped] == [(True, True)] * len(sent)
    assert [r["events"] for r in grouped][-1] == ["PerformanceRecorded"]
    alone = v1.send(sent[3])
    assert (alone["ok"], alone["replayed"], alone["events"]) == (True, True, ["Approved"])
    changed = v1.send({**sent[3], "payload": {**sent[3]["payload"], "note": "new"}})
    assert changed["error"]["details"]["reason"] == "command_id_reused"


def test_read_models_rebuild_from_a_v1_store(v1: Ledger) -> None:
    p = projector(v1.app)
    p.rebuild()
    year = ytd_report(p.view, SELLER, STARTS.year)
    assert [(t["currency"], t["gmv"], t["refunds"], t["reports"]) for t in year["totals"]] == [
        ("THB", "3003.75", "0", 3)]
