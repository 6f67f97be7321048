"""DOMAIN.md's Clock: recorded times never go backwards along an aggregate's versions. A
clock up to 5 s behind an aggregate's last event is decided and recorded at that event's
time; further behind, the command is refused with `clock_behind` and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ledger import FixedClock, Ledger
from ledger.aggregates.base import Cause
from ledger.aggregates.registration_events import Approved
from ledger.audit.decisions import Filters, findings
from ledger.audit.history import as_of, history
from ledger.cli import main
from ledger.errors import ClockBehind
from ledger.values import instant_text
from tests.support.helpers import (
    ENDS,
    NOW,
    STARTS,
    Build,
    Json,
    World,
    add_session,
    approve,
    duplicate,
    expire_campaign,
    hours,
    record_performance,
    register,
    reject,
    slot,
    withdraw,
)
from tests.support.racing import Racers
from tests.support.service import in_process

NINE_DAYS = timedelta(days=9)
THREE_SECONDS = timedelta(seconds=3)
LATER = NOW + timedelta(days=10)  # registration is still open (it closes on Oct 20)


def recorded_times(world: World, public_id: str) -> list[datetime]:
    return [e.timestamp for e in world.ledger.events_of(public_id)]


def assert_never_backwards(world: World, public_id: str) -> None:
    times = recorded_times(world, public_id)
    assert times == sorted(times), times


@pytest.fixture
def touched_later(world: World, registration: str) -> str:
    """The manual registration (s1, s2 under review), whose last event (s3) is at LATER."""
    world.at(LATER)
    world.accept(add_session(registration, slot(40)))
    return registration


# Beyond the skew: refused -------------------------------------------------------------------

COMMANDS: dict[str, Build] = {
    "approve": lambda reg: approve(reg),
    "reject": lambda reg: reject(reg),
    "withdraw": lambda reg: withdraw(reg),
    "add_session": lambda reg: add_session(reg, slot(50)),
    "duplicate": lambda reg: duplicate(reg, "s1", slot(60)),
}


@pytest.mark.parametrize("build", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_command_with_the_clock_nine_days_behind_is_refused_and_writes_nothing(
    world: World, touched_later: str, build: Build
) -> None:
    world.at(LATER - NINE_DAYS)
    refused = world.refuse(build(touched_later), "clock_behind")
    assert refused["error"]["details"] == {
        "aggregate": "registration", "aggregate_id": touched_later,
        "last_recorded_at": instant_text(LATER), "clock": instant_text(LATER - NINE_DAYS),
        "behind_seconds": NINE_DAYS.total_seconds()}


@pytest.fixture
def reported_late(world: World, approved_registration: str) -> str:
    """An approved registration whose last event, a report, was recorded 10 days after
    the campaign ended."""
    world.at(ENDS + timedelta(days=10))
    world.accept(record_performance(approved_registration))
    return approved_registration


def test_expiring_a_campaign_is_refused_when_one_of_its_registrations_is_ahead_of_the_clock(
    world: World, reported_late: str
) -> None:
    world.at(ENDS + timedelta(days=1))  # the campaign has ended: only the clock is wrong
    refused = world.refuse(expire_campaign(), "clock_behind")
    assert refused["error"]["details"]["aggregate_id"] == reported_late


def test_a_report_is_refused_when_the_clock_is_behind_the_last_one(
    world: World, reported_late: str
) -> None:
    world.at(ENDS + timedelta(days=1))
    world.refuse(record_performance(reported_late, report_id="report-2"), "clock_behind")


def test_a_replay_still_answers_when_the_clock_has_fallen_behind(
    world: World, registration: str
) -> None:
    command = approve(registration)
    first = world.accept(command)
    world.at(NOW - NINE_DAYS)
    assert world.ledger.send(command) == {**first, "replayed": True}


# Within the skew: recorded at the last event's time, decided then ---------------------------

def test_a_clock_three_seconds_behind_is_accepted_and_recorded_at_the_last_event_s_time(
    world: World, touched_later: str
) -> None:
    world.at(LATER - THREE_SECONDS)
    world.accept(approve(touched_later))
    assert recorded_times(world, touched_later)[-1] == LATER
    assert_never_backwards(world, touched_later)


def test_expiry_is_decided_at_a_registration_s_later_time_when_the_clock_lags_it(
    world: World, approved_registration: str
) -> None:
    world.at(ENDS)  # a report recorded as the campaign ends
    world.accept(record_performance(approved_registration))
    world.at(ENDS - THREE_SECONDS)  # the campaign has not ended by this clock
    world.accept(expire_campaign())
    assert world.event_names(approved_registration)[-1] == "Expired"
    assert recorded_times(world, approved_registration)[-1] == ENDS
    assert recorded_times(world, "mega-1111-live")[-1] == ENDS


def test_a_session_is_not_withdrawable_when_the_last_event_shows_it_started(
    world: World, registration: str
) -> None:
    world.at(STARTS)  # s1 starts now: approving it now is recorded at its start
    world.accept(approve(registration, ["s1"]))
    world.at(STARTS - THREE_SECONDS)  # by this clock s1 has not started yet
    world.refuse(withdraw(registration, ["s1"]), "invalid_transition")


def test_an_aggregate_never_records_an_event_earlier_than_its_last_one(
    world: World, touched_later: str
) -> None:
    """Whatever a handler does, the aggregate itself refuses to go back in time."""
    reg = world.ledger.registration(touched_later)
    cause = Cause(actor={"id": "rev-bao", "role": "reviewer"}, command_id="c",
                  at=LATER - timedelta(microseconds=1))
    with pytest.raises(ClockBehind):
        reg.approve(None, None, None, cause)
    assert reg.pending_events == []


# Races: every re-run re-reads the clock and the aggregates ----------------------------------

@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    pool = Racers(3)
    yield pool
    pool.close()


def test_writers_whose_clocks_disagree_by_seconds_never_record_time_backwards(
    world: World, approved_registration: str, racers: Racers
) -> None:
    after = ENDS + hours(1)
    batches = [(after - timedelta(seconds=i), [
        record_performance(approved_registration, report_id=f"r{i}-{j}") for j in range(4)])
        for i in range(3)]
    results = racers.race_at(world.url, batches)
    assert all(r["ok"] for batch in results for r in batch), results
    assert_never_backwards(world, approved_registration)


# Faces: ledger send, the service ------------------------------------------------------------

def send(world: World, now: datetime, command: Json) -> Result:
    return CliRunner().invoke(main, ["--db", world.url, "--now", now.isoformat(), "send", "-"],
                              input=json.dumps(command))


def test_ledger_send_with_a_clock_behind_prints_clock_behind_and_exits_1(
    world: World, touched_later: str
) -> None:
    refused = send(world, LATER - NINE_DAYS, approve(touched_later))
    assert refused.exit_code == 1, refused.output
    assert json.loads(refused.stdout)["error"]["code"] == "clock_behind"
    assert "Traceback" not in refused.output
    accepted = send(world, LATER - THREE_SECONDS, approve(touched_later))
    assert accepted.exit_code == 0, accepted.output
    assert recorded_times(world, touched_later)[-1] == LATER


def test_the_service_answers_clock_behind_with_409(
    ledger: Ledger, backend: str, clock: FixedClock, touched_later: str
) -> None:
    clock.set(LATER - NINE_DAYS)
    with in_process(backend, clock, ledger) as api:
        response = api.send("reviewer", approve(touched_later))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "clock_behind"


# Audit: older stores, and as-of ---------------------------------------------------------------

def forge_backwards_approval(world: World, registration_id: str, at: datetime) -> None:
    """What a ledger without the Clock rule wrote: an approval recorded at `at`, earlier
    than the registration's last event (saved through the application, hash chain and all)."""
    reg = world.ledger.registration(registration_id)
    reg.trigger_event(Approved, actor={"id": "rev-bao", "role": "reviewer"},
                      command_id="old-approve", timestamp=at, session_ids=["s1", "s2"],
                      note=None, override_reason=None)
    world.ledger.app.save(reg)


def test_audit_findings_report_times_that_went_backwards_in_an_older_store(
    world: World, touched_later: str
) -> None:
    forge_backwards_approval(world, touched_later, LATER - NINE_DAYS)
    found = [f for f in findings(world.ledger) if f["finding"] == "time_went_backwards"]
    assert [f["evidence"] for f in found] == [{
        "aggregate": "registration", "aggregate_id": touched_later, "version": 5,
        "recorded_at": LATER - NINE_DAYS, "previous_version": 4, "previous_recorded_at": LATER,
        "behind_seconds": NINE_DAYS.total_seconds()}]
    assert found[0]["command_id"] == "old-approve"
    assert found[0]["seller_id"] == "seller-1"


def test_audit_findings_cli_lists_the_backwards_time_and_its_filters_select_it(
    world: World, touched_later: str
) -> None:
    forge_backwards_approval(world, touched_later, LATER - NINE_DAYS)
    cli = CliRunner().invoke(main, ["--db", world.url, "audit", "findings", "--json"])
    assert cli.exit_code == 0, cli.output
    assert [json.loads(line)["finding"] for line in cli.output.splitlines()] == [
        "time_went_backwards"]
    assert not list(findings(world.ledger, Filters(campaign="another-campaign")))
    assert not list(findings(world.ledger, Filters(reviewer="rev-bao")))
    assert not list(findings(world.ledger, Filters(since=LATER)))


def test_a_store_written_through_the_ledger_has_no_backwards_time_and_as_of_tells_the_truth(
    world: World, registration: str
) -> None:
    approved_at = NOW + hours(1)
    world.at(approved_at)
    world.accept(approve(registration, ["s1"]))
    world.at(approved_at - THREE_SECONDS)
    world.accept(withdraw(registration, ["s2"]))
    world.at(approved_at - NINE_DAYS)
    world.refuse(reject(registration, ["s1"]), "clock_behind")
    assert not [f for f in findings(world.ledger) if f["finding"] == "time_went_backwards"]
    # Every event is in the state as of its own recorded time, none in the state before it.
    for record in history(world.ledger, registration):
        moment = datetime.fromisoformat(record["recorded_at"])
        assert as_of(world.ledger, registration, at=moment).version >= record["version"]
    before = as_of(world.ledger, registration, at=approved_at - THREE_SECONDS)
    assert sessions_of(before.state) == {"s1": "under_review", "s2": "under_review"}


def sessions_of(state: dict[str, Any]) -> dict[str, str]:
    return {s["session_id"]: s["status"] for s in state["sessions"]}


def test_register_is_not_refused_for_a_campaign_recorded_after_the_clock(
    world: World, manual_campaign: str
) -> None:
    """A registration is new: the campaign it reads is not written, so its time is not
    the registration's (DOMAIN.md: the aggregates a command writes)."""
    world.at(NOW - NINE_DAYS + timedelta(days=5))  # still inside the registration window
    world.register(register(manual_campaign))
