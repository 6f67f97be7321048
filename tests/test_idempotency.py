"""Idempotency: a command_id sent again replays the first result and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from ledger import Ledger
from tests.support.helpers import (
    ENDS,
    REG_CLOSES,
    REG_OPENS,
    STARTS,
    Json,
    World,
    add_session,
    approve,
    create_auto_campaign,
    create_campaign,
    duplicate,
    expire_campaign,
    hours,
    record_performance,
    register,
    register_auto,
    reject,
    slot,
    withdraw,
)

Setup = Callable[[World, str], Json]  # (world, registration id) -> the command to repeat


def _expire(world: World, reg: str) -> Json:
    world.accept(register(account_id="shop-2"))
    world.at(ENDS)
    return expire_campaign()


def _report(world: World, reg: str) -> Json:
    world.accept(approve(reg))
    world.at(STARTS + hours(3))
    return record_performance(reg)


def _repeated_report(world: World, reg: str) -> Json:
    world.accept(_report(world, reg))
    return record_performance(reg)  # same report_id, new command_id: events []


CASES: dict[str, Setup] = {
    "create_campaign": lambda w, r: create_campaign("another-campaign"),
    "register manual": lambda w, r: register(account_id="shop-2"),
    "register auto": lambda w, r: register_auto(),
    "add_session": lambda w, r: add_session(r, slot(30)),
    "duplicate": lambda w, r: duplicate(r, "s1", slot(30)),
    "withdraw": lambda w, r: withdraw(r, ["s1"]),
    "approve": lambda w, r: approve(r),
    "reject": lambda w, r: reject(r, ["s2"], reasons=["capacity_full"]),
    "expire_campaign": _expire,
    "record_performance": _report,
    "record_performance, known report_id": _repeated_report,
}


@pytest.mark.parametrize("setup", CASES.values(), ids=CASES.keys())
def test_the_same_command_again_replays_the_first_result_and_writes_nothing(
    world: World, scene: str, setup: Setup
) -> None:
    cmd = setup(world, scene)
    first = world.accept(cmd)
    before = world.dump()
    assert world.ledger.send(cmd) == {**first, "replayed": True}
    assert world.ledger.send(json.dumps(cmd)) == {**first, "replayed": True}
    assert world.dump() == before


@pytest.mark.parametrize("setup", CASES.values(), ids=CASES.keys())
def test_a_command_is_replayed_after_the_ledger_restarts(
    world: World, scene: str, setup: Setup
) -> None:
    cmd = setup(world, scene)
    first = world.accept(cmd)
    world.ledger.close()
    before = world.dump()
    with Ledger.open(world.url, clock=world.clock, pool_size=1) as restarted:
        assert restarted.send(cmd) == {**first, "replayed": True}
    assert world.dump() == before


def test_a_replay_ignores_the_clock_and_later_changes(world: World, scene: str) -> None:
    cmd = approve(scene, ["s1"])
    first = world.accept(cmd)
    world.accept(reject(scene, ["s2"]))
    world.at(ENDS + hours(48))  # the campaign has ended; s1 is no longer under review
    again = world.ledger.send(cmd)
    assert again == {**first, "replayed": True}
    assert again["version"] == 4


@pytest.mark.parametrize("build", [
    lambda r: approve(r), lambda r: reject(r), lambda r: withdraw(r),
], ids=["approve all", "reject all", "withdraw all"])
def test_a_replay_is_not_run_again_even_where_it_would_now_do_more(
    world: World, registration: str, build: Callable[[str], Json]
) -> None:
    cmd = build(registration)
    first = world.accept(cmd)
    world.accept(add_session(registration, slot(30)))  # s3, under review
    before = world.dump()
    assert world.ledger.send(cmd) == {**first, "replayed": True}
    assert world.dump() == before
    assert world.session_statuses(registration)["s3"] == "under_review"


def test_a_replay_of_register_is_not_already_registered(world: World, manual_campaign: str) -> None:
    cmd = register()
    first = world.accept(cmd)
    world.at(REG_CLOSES + hours(1))
    assert world.ledger.send(cmd) == {**first, "replayed": True}


def test_a_refused_command_is_not_recorded_and_is_evaluated_again(
    world: World, manual_campaign: str
) -> None:
    cmd = register()
    world.at(REG_OPENS - hours(1))
    world.refuse(cmd, "registration_closed")
    world.refuse(cmd, "registration_closed")
    world.at(REG_OPENS)
    assert world.accept(cmd)["events"] == ["Registered", "SessionAdded", "SessionAdded"]


def test_the_id_of_a_refused_command_may_be_used_for_another_command(
    world: World, registration: str
) -> None:
    refused = approve(registration, ["s9"])
    world.refuse(refused, "not_found")
    other = approve(registration, ["s1"])
    other["command_id"] = refused["command_id"]
    assert world.accept(other)["events"] == ["Approved"]


def test_an_absent_optional_field_and_an_explicit_null_are_the_same_command(
    world: World, registration: str
) -> None:
    cmd = approve(registration)
    first = world.accept(cmd)
    explicit = {**cmd, "payload": {**cmd["payload"], "session_ids": None, "note": None}}
    assert world.ledger.send(explicit) == {**first, "replayed": True}


def test_replayed_commands_leave_every_event_once(world: World, registration: str) -> None:
    cmd = add_session(registration, slot(30))
    for _ in range(3):
        world.ledger.send(cmd)
    assert world.event_names(registration) == [
        "Registered", "SessionAdded", "SessionAdded", "SessionAdded"]


def test_a_command_id_is_global_across_aggregates(world: World, registration: str) -> None:
    first = create_auto_campaign()
    world.accept(first)
    other = approve(registration)
    other["command_id"] = first["command_id"]
    world.refuse(other, "conflict")
