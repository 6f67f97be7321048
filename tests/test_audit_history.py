"""`ledger audit history` and `ledger audit as-of`: an aggregate's events, and its state
as it was at a version or a moment, replayed from the store."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from click.testing import CliRunner, Result

from ledger.audit.history import as_of, history, stored_events
from ledger.cli import main
from ledger.errors import NotFound
from ledger.shapes import registration_state
from ledger.values import instant_text
from tests.support.helpers import (
    MANUAL,
    NOW,
    REG_CLOSES,
    REVIEWER,
    STARTS,
    World,
    add_session,
    approve,
    hours,
    register,
    slot,
)

APPROVED_AT = NOW + hours(24)


def audit(world: World, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", world.url, "audit", *args])


@pytest.fixture
def reviewed(world: World, registration: str) -> str:
    """The manual registration (s1, s2 under review since NOW), approved a day later."""
    world.at(APPROVED_AT)
    world.accept(approve(registration, note="good fit"))
    return registration


# History ------------------------------------------------------------------------------------

def test_history_of_a_registration_lists_register_then_approve_with_actor_and_command_id(
    world: World, reviewed: str
) -> None:
    records = list(history(world.ledger, reviewed))
    assert [(r["version"], r["type"], r["actor"]["id"]) for r in records] == [
        (1, "Registered", "seller-1"), (2, "SessionAdded", "seller-1"),
        (3, "SessionAdded", "seller-1"), (4, "Approved", REVIEWER["id"])]
    assert records[0]["command_id"] == records[1]["command_id"]  # one register command
    assert records[3]["command_id"] != records[0]["command_id"]
    assert records[3]["recorded_at"] == instant_text(APPROVED_AT)
    assert records[3]["data"] == {"session_ids": ["s1", "s2"], "note": "good fit",
                                  "override_reason": None}


def test_history_json_prints_one_event_per_line_with_the_fields_it_set(
    world: World, reviewed: str
) -> None:
    result = audit(world, "history", reviewed, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["type"] for line in lines] == [
        "Registered", "SessionAdded", "SessionAdded", "Approved"]
    assert lines[1]["data"]["session_id"] == "s1"
    assert set(lines[0]) == {"version", "recorded_at", "type", "actor", "command_id", "data"}


def test_history_of_a_campaign_by_its_id_reads_as_a_table(
    world: World, manual_campaign: str
) -> None:
    result = audit(world, "history", MANUAL)
    assert result.exit_code == 0, result.output
    header, first = result.output.splitlines()
    assert header.split() == ["version", "recorded_at", "type", "actor", "command_id",
                              "changes"]
    assert "CampaignCreated" in first
    assert "operator:ops-anna" in first
    assert "campaign_id=mega-1111-live" in first
    assert '"min_account_level": 2' in first


@pytest.mark.parametrize("unknown", ["no-such-campaign", "6f1c1a4e-0000-5000-8000-000000000000"])
def test_history_of_an_unknown_id_is_not_found(world: World, unknown: str) -> None:
    result = audit(world, "history", unknown)
    assert result.exit_code == 1
    assert "not_found" in result.output
    assert "not found" in result.output


def test_a_long_history_is_read_page_by_page_in_order(world: World, registration: str) -> None:
    for n in range(5):
        world.accept(add_session(registration, slot(10 + 2 * n)))
    versions = [e.originator_version for e in stored_events(
        world.ledger, world.ledger.registration(registration).id, page=2)]
    assert versions == list(range(1, 9))


# As of --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("moment", "status", "version"), [
    (NOW, "under_review", 3),
    (APPROVED_AT - hours(1), "under_review", 3),
    (APPROVED_AT, "approved", 4),
    (REG_CLOSES, "approved", 4),
])
def test_as_of_a_moment_shows_the_status_before_and_after_the_approval(
    world: World, reviewed: str, moment: datetime, status: str, version: int
) -> None:
    found = as_of(world.ledger, reviewed, at=moment)
    assert (found.state["status"], found.version, found.last_version) == (status, version, 4)
    statuses = {s["session_id"]: s["status"] for s in found.state["sessions"]}
    assert statuses == {"s1": status, "s2": status}
    assert len(found.state["decisions"]) == (1 if status == "approved" else 0)


def test_as_of_a_version_replays_exactly_that_many_events(world: World, reviewed: str) -> None:
    assert [s["session_id"] for s in as_of(world.ledger, reviewed, version=2)
            .state["sessions"]] == ["s1"]
    assert as_of(world.ledger, reviewed, version=3).state["status"] == "under_review"
    latest = as_of(world.ledger, reviewed, version=4)
    assert latest.state == json.loads(json.dumps(
        registration_state(world.ledger.registration(reviewed))))


def test_as_of_prints_what_show_prints_and_names_the_version_on_stderr(
    world: World, reviewed: str
) -> None:
    runner = CliRunner()
    shown = runner.invoke(main, ["--db", world.url, "show", "registration", reviewed])
    result = runner.invoke(main, ["--db", world.url, "audit", "as-of", reviewed, "--at",
                                  STARTS.isoformat()])
    assert result.exit_code == 0, result.output
    assert result.stdout == shown.stdout
    assert "version 4 of 4" in result.stderr


def test_as_of_before_the_registration_existed_says_it_did_not_exist_yet(
    world: World, reviewed: str
) -> None:
    with pytest.raises(NotFound, match="did not exist yet"):
        as_of(world.ledger, reviewed, at=NOW - hours(1))
    result = audit(world, "as-of", reviewed, "--at", (NOW - hours(1)).isoformat())
    assert result.exit_code == 1
    assert "not_found" in result.stderr
    assert "did not exist yet" in result.stderr


def test_as_of_a_version_beyond_the_last_is_refused_with_the_last_version(
    world: World, reviewed: str
) -> None:
    result = audit(world, "as-of", reviewed, "--version", "5")
    assert result.exit_code == 1
    assert "has no version 5: its versions are 1 to 4" in result.stderr


@pytest.mark.parametrize("args", [[], ["--at", NOW.isoformat(), "--version", "1"]],
                         ids=["neither", "both"])
def test_as_of_needs_exactly_one_of_at_and_version(
    world: World, reviewed: str, args: list[str]
) -> None:
    result = audit(world, "as-of", reviewed, *args)
    assert result.exit_code == 2
    assert "exactly one of --at and --version" in result.output


def test_a_campaign_as_of_a_moment_has_the_status_and_registrations_of_that_moment(
    world: World, manual_campaign: str
) -> None:
    world.at(NOW + hours(2))
    world.register(register(MANUAL))
    world.at(STARTS + hours(80))  # long after: the campaign has ended by the wall clock
    before = as_of(world.ledger, MANUAL, at=NOW + hours(1))
    assert (before.state["status"], before.state["registrations"]) == ("registration_open", 0)
    assert as_of(world.ledger, MANUAL, at=NOW + hours(2)).state["registrations"] == 1
    assert as_of(world.ledger, MANUAL, at=STARTS).state["status"] == "ongoing"
    assert as_of(world.ledger, MANUAL, version=1).state["status"] == "registration_open"
