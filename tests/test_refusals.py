"""Every refusal of DOMAIN.md: the right error code, and nothing written to the store.

Session rules (outside campaign, in the past, overlap, too many) are in test_session_rules.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest

from tests.support.helpers import (
    AUTO,
    ENDS,
    MANUAL,
    OPERATOR,
    REG_CLOSES,
    REG_OPENS,
    REVIEWER,
    STARTS,
    SYSTEM,
    Build,
    Json,
    World,
    add_session,
    approve,
    campaign_fields,
    command,
    create_auto_campaign,
    create_campaign,
    duplicate,
    expire_campaign,
    hours,
    iso,
    profile,
    record_performance,
    register,
    reject,
    seller,
    slot,
    with_envelope,
    with_payload,
    withdraw,
)

# invalid_json ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    '{"command": "approve", "command_id": "c-1"',
    "not json at all",
    "",
    '{"command_id": "c-1", "gmv": NaN}',
    "Infinity",
    b"\xff\xfe{}",
])
def test_text_that_is_not_json_is_refused_as_invalid_json_without_a_command_id(
    world: World, scene: str, text: str | bytes
) -> None:
    result = world.refuse(text, "invalid_json")
    assert result["command_id"] is None


# validation_error --------------------------------------------------------------------------

VALIDATION: dict[str, Build] = {
    "unknown command": lambda r: command("approve_everything", REVIEWER, {"registration_id": r}),
    "missing command": lambda r: {k: v for k, v in approve(r).items() if k != "command"},
    "missing actor": lambda r: {k: v for k, v in approve(r).items() if k != "actor"},
    "unknown role": lambda r: with_envelope(approve(r), actor={"id": "x", "role": "admin"}),
    "unknown envelope field": lambda r: with_envelope(approve(r), priority="high"),
    "unknown payload field": lambda r: with_payload(approve(r), urgent=True),
    "payload not an object": lambda r: with_envelope(approve(r), payload=[r]),
    "command_id not a string": lambda r: with_envelope(approve(r), command_id=42),
    "empty command_id": lambda r: with_envelope(approve(r), command_id=""),
    "negative expected_version": lambda r: approve(r, expected_version=-1),
    "expected_version as text": lambda r: with_envelope(approve(r), expected_version="3"),
    "registration_id not a uuid": lambda r: add_session("shop-1", slot(10)),
    "naive starts_at": lambda r: with_payload(add_session(r, slot(10)),
                                              starts_at="2026-11-10T10:00:00"),
    "starts_at not a time": lambda r: with_payload(add_session(r, slot(10)),
                                                   starts_at="next tuesday"),
    "starts_at as a number": lambda r: with_payload(add_session(r, slot(10)),
                                                    starts_at=1794268800),
    "session ends before it starts": lambda r: add_session(r, {
        "starts_at": slot(10)["ends_at"], "ends_at": slot(10)["starts_at"]}),
    "session of zero length": lambda r: add_session(r, {
        "starts_at": slot(10)["starts_at"], "ends_at": slot(10)["starts_at"]}),
    "empty reasons": lambda r: reject(r, reasons=[]),
    "unknown reason": lambda r: reject(r, reasons=["too_loud"]),
    "session_ids not a list": lambda r: with_payload(approve(r), session_ids="s1"),
    "note too long": lambda r: approve(r, note="x" * 2001),
    "register: level out of range": lambda r: register(
        account_id="shop-9", profile_=profile(account_level=1001)),
    "register: level as text": lambda r: register(
        account_id="shop-9", profile_={"account_level": "5", "livestream_level": 5}),
    "register: missing profile": lambda r: with_payload(register(account_id="shop-9"),
                                                        profile=None),
    "register: manual without level": lambda r: register(account_id="shop-9", level=None),
    "register: manual without sessions": lambda r: register(account_id="shop-9", sessions=[]),
    "register: auto with sessions": lambda r: register(AUTO, level=None, sessions=[slot(0)]),
    "register: auto with a level": lambda r: register(AUTO, level="standard", sessions=[]),
    "register: NUL in the category": lambda r: register(account_id="shop-9",
                                                        main_category="fash\x00ion"),
    "register: a session ends before it starts": lambda r: register(
        account_id="shop-9", sessions=[slot(0), {"starts_at": slot(5)["ends_at"],
                                                 "ends_at": slot(5)["starts_at"]}]),
}


@pytest.mark.parametrize("build", VALIDATION.values(), ids=VALIDATION.keys())
def test_a_malformed_command_is_refused_with_validation_error(
    world: World, scene: str, build: Build
) -> None:
    error = world.refuse(build(scene), "validation_error")["error"]
    assert error["details"], error


CAMPAIGN_VALIDATION: dict[str, dict[str, Any]] = {
    "registration closes before it opens": {"registration_closes_at": iso(REG_OPENS - hours(1))},
    "registration opens when it closes": {"registration_opens_at": iso(REG_CLOSES)},
    "registration closes after the start": {"registration_closes_at": iso(STARTS + hours(1))},
    "campaign ends when it starts": {"ends_at": iso(STARTS)},
    "campaign ends before it starts": {"ends_at": iso(STARTS - hours(1))},
    "naive ends_at": {"ends_at": "2026-11-13T00:00:00"},
    "unknown kind": {"kind": "podcast"},
    "unknown review_mode": {"review_mode": "maybe"},
    "slug with capitals": {"campaign_id": "Mega-1111"},
    "empty name": {"name": "   "},
    "max_sessions zero": {"max_sessions": 0},
    "max_sessions negative": {"max_sessions": -3},
    "max_sessions as a float": {"max_sessions": 2.0},
    "allow_duplicates as text": {"allow_duplicates": "yes"},
    "manual campaign without levels": {"levels": []},
    "duplicate level codes": {"levels": [{"code": "std", "name": "A"},
                                         {"code": "std", "name": "B"}]},
    "negative requirement": {"requirements": {"min_account_level": -1}},
    "unknown requirement": {"requirements": {"min_followers": 1000}},
    # PostgreSQL text cannot hold NUL; an event carrying one would stop the read models.
    "NUL in the name": {"name": "11.11\x00Sale"},
    "NUL in a level's name": {"levels": [{"code": "std", "name": "Stand\x00ard"}]},
}


@pytest.mark.parametrize("fields", CAMPAIGN_VALIDATION.values(), ids=CAMPAIGN_VALIDATION.keys())
def test_a_campaign_with_bad_fields_is_refused_with_validation_error(
    world: World, fields: dict[str, Any]
) -> None:
    payload = {**campaign_fields("new-campaign"), **fields}
    world.refuse(command("create_campaign", OPERATOR, payload), "validation_error")


def test_an_auto_campaign_offering_levels_is_refused_with_validation_error(world: World) -> None:
    cmd = create_auto_campaign(levels=[{"code": "std", "name": "Standard"}])
    world.refuse(cmd, "validation_error")


PERFORMANCE_VALIDATION: dict[str, dict[str, Any]] = {
    "gmv as a JSON number": {"gmv": 125000.5},
    "gmv as an integer": {"gmv": 125000},
    "gmv with an exponent": {"gmv": "1e5"},
    "gmv NaN": {"gmv": "NaN"},
    "gmv Infinity": {"gmv": "Infinity"},
    "negative refunds": {"refunds": "-1.00"},
    "negative orders": {"orders": -1},
    "negative views": {"views": -10},
    "orders as text": {"orders": "412"},
    "orders as a bool": {"orders": True},
    "orders as a float": {"orders": 412.0},
    "lowercase currency": {"currency": "thb"},
    "period ends before it starts": {"period_start": iso(STARTS + hours(2)),
                                     "period_end": iso(STARTS)},
    "empty period": {"period_start": iso(STARTS), "period_end": iso(STARTS)},
    "period starts before the campaign": {"period_start": iso(STARTS - hours(1))},
    "period starts after the campaign": {"period_start": iso(ENDS),
                                         "period_end": iso(ENDS + hours(1))},
    "period not ended yet": {"period_end": iso(STARTS + hours(4))},
}


@pytest.mark.parametrize("fields", PERFORMANCE_VALIDATION.values(),
                         ids=PERFORMANCE_VALIDATION.keys())
def test_a_bad_performance_report_is_refused_with_validation_error(
    world: World, approved_registration: str, fields: dict[str, Any]
) -> None:
    world.at(STARTS + hours(3))
    world.refuse(record_performance(approved_registration, **fields), "validation_error")


def test_float_money_in_json_text_is_refused_with_validation_error(
    world: World, approved_registration: str
) -> None:
    world.at(STARTS + hours(3))
    text = json.dumps(record_performance(approved_registration))
    assert '"gmv": "125000.50"' in text
    world.refuse(text.replace('"gmv": "125000.50"', '"gmv": 125000.50'), "validation_error")


def test_validation_error_details_list_every_bad_field(world: World, scene: str) -> None:
    cmd = add_session("not-a-uuid", {"starts_at": "2026-11-10T10:00:00", "ends_at": "soon"},
                      expected_version=-1)
    cmd["payload"]["color"] = "red"
    details = world.refuse(cmd, "validation_error")["error"]["details"]
    assert {d["field"] for d in details} == {
        "expected_version", "payload.registration_id", "payload.starts_at", "payload.ends_at",
        "payload.color"}
    assert all(d["message"] for d in details)


def test_an_unknown_command_is_a_validation_error_naming_the_command_field(
    world: World
) -> None:
    result = world.refuse(command("delete_campaign", OPERATOR, {"campaign_id": MANUAL}),
                          "validation_error")
    assert [d["field"] for d in result["error"]["details"]] == ["command"]
    assert result["command_id"].startswith("cmd-")


# not_found ---------------------------------------------------------------------------------

NOT_FOUND: dict[str, Build] = {
    "register for an unknown campaign": lambda r: register("no-such-campaign"),
    "add_session to an unknown registration": lambda r: add_session(str(uuid4()), slot(10)),
    "approve an unknown registration": lambda r: approve(str(uuid4())),
    "reject an unknown registration": lambda r: reject(str(uuid4())),
    "withdraw an unknown registration": lambda r: withdraw(str(uuid4())),
    "duplicate an unknown session": lambda r: duplicate(r, "s9", slot(10)),
    "approve an unknown session": lambda r: approve(r, ["s1", "s9"]),
    "reject an unknown session": lambda r: reject(r, ["s9"]),
    "withdraw an unknown session": lambda r: withdraw(r, ["s9"]),
    "expire an unknown campaign": lambda r: expire_campaign("no-such-campaign"),
    "record performance of an unknown registration": lambda r: record_performance(str(uuid4())),
    "the nil uuid as a registration id": lambda r: approve(
        "00000000-0000-0000-0000-000000000000"),
}


@pytest.mark.parametrize("build", NOT_FOUND.values(), ids=NOT_FOUND.keys())
def test_a_command_about_something_unknown_is_refused_with_not_found(
    world: World, scene: str, build: Build
) -> None:
    world.refuse(build(scene), "not_found")


def test_performance_for_an_unknown_session_is_refused_with_not_found(
    world: World, approved_registration: str
) -> None:
    world.at(STARTS + hours(3))
    world.refuse(record_performance(approved_registration, session_id="s9"), "not_found")


# forbidden ---------------------------------------------------------------------------------

WRONG_ROLE: dict[str, tuple[Build, Json]] = {
    "reviewer creates a campaign": (lambda r: create_campaign("new-one"), REVIEWER),
    "seller creates a campaign": (lambda r: create_campaign("new-one"), seller()),
    "system creates a campaign": (lambda r: create_campaign("new-one"), SYSTEM),
    "reviewer expires a campaign": (lambda r: expire_campaign(), REVIEWER),
    "seller expires a campaign": (lambda r: expire_campaign(), seller()),
    "seller approves": (lambda r: approve(r), seller()),
    "system approves": (lambda r: approve(r), SYSTEM),
    "seller rejects": (lambda r: reject(r), seller()),
    "system rejects": (lambda r: reject(r), SYSTEM),
    "operator registers": (lambda r: register(account_id="shop-9", seller_id="ops-anna"),
                           OPERATOR),
    "reviewer adds a session": (lambda r: add_session(r, slot(10)), REVIEWER),
    "operator duplicates": (lambda r: duplicate(r, "s1", slot(10)), OPERATOR),
    "system withdraws": (lambda r: withdraw(r), SYSTEM),
    "operator records performance": (lambda r: record_performance(r), OPERATOR),
    "reviewer records performance": (lambda r: record_performance(r), REVIEWER),
    "seller records performance": (lambda r: record_performance(r), seller()),
}


@pytest.mark.parametrize(("build", "actor"), WRONG_ROLE.values(), ids=WRONG_ROLE.keys())
def test_a_role_that_may_not_send_a_command_is_refused_with_forbidden(
    world: World, scene: str, build: Build, actor: Json
) -> None:
    world.refuse(with_envelope(build(scene), actor=actor), "forbidden")


OTHER_SELLER: dict[str, Build] = {
    "add_session": lambda r: add_session(r, slot(10), seller_id="seller-2"),
    "duplicate": lambda r: duplicate(r, "s1", slot(10), seller_id="seller-2"),
    "withdraw": lambda r: withdraw(r, seller_id="seller-2"),
    "withdraw a session": lambda r: withdraw(r, ["s1"], seller_id="seller-2"),
}


@pytest.mark.parametrize("build", OTHER_SELLER.values(), ids=OTHER_SELLER.keys())
def test_a_seller_acting_on_another_sellers_registration_is_refused_with_not_found(
    world: World, scene: str, build: Build
) -> None:
    # Not forbidden: that would tell the seller the registration exists (DOMAIN.md).
    world.refuse(build(scene), "not_found")


def test_a_seller_registering_for_another_seller_id_is_refused_with_forbidden(
    world: World, scene: str
) -> None:
    world.refuse(register(account_id="shop-9", seller_id="seller-2", actor=seller()),
                 "forbidden")


# conflict ----------------------------------------------------------------------------------

STALE: dict[str, Build] = {
    "approve, version behind": lambda r: approve(r, expected_version=2),
    "approve, version ahead": lambda r: approve(r, expected_version=4),
    "approve, expects new": lambda r: approve(r, expected_version=0),
    "add_session, version behind": lambda r: add_session(r, slot(10), expected_version=1),
    "register an account, expecting it to exist": lambda r: with_envelope(
        register(account_id="shop-9"), expected_version=3),
    "create a campaign, expecting it to exist": lambda r: create_campaign(
        "new-one", expected_version=1),
}


@pytest.mark.parametrize("build", STALE.values(), ids=STALE.keys())
def test_a_stale_expected_version_is_refused_with_conflict(
    world: World, scene: str, build: Build
) -> None:
    error = world.refuse(build(scene), "conflict")["error"]
    assert error["details"]["expected_version"] == build(scene)["expected_version"]


def test_the_current_expected_version_is_accepted(world: World, scene: str) -> None:
    assert world.accept(approve(scene, expected_version=3))["version"] == 4


def test_expire_campaign_with_a_stale_expected_version_is_refused_with_conflict(
    world: World, scene: str
) -> None:
    world.at(ENDS)
    world.refuse(expire_campaign(expected_version=2), "conflict")
    world.accept(expire_campaign(expected_version=1))


@pytest.mark.parametrize("change", [
    lambda cmd: with_payload(cmd, session_ids=["s2"]),
    lambda cmd: with_envelope(cmd, actor=OPERATOR),
    lambda cmd: with_envelope(cmd, expected_version=3),
    lambda cmd: with_payload(cmd, note="changed my mind"),
], ids=["payload", "actor", "expected_version", "note"])
def test_a_command_id_reused_for_a_different_command_is_refused_with_conflict(
    world: World, scene: str, change: Callable[[Json], Json]
) -> None:
    first = approve(scene, ["s1"])
    world.accept(first)
    reused = change(approve(scene, ["s1"]))
    reused["command_id"] = first["command_id"]
    error = world.refuse(reused, "conflict")["error"]
    assert error["details"]["reason"] == "command_id_reused"
