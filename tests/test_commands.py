"""Happy paths of create_campaign, register, add_session, duplicate; what every event carries.

The decisions (withdraw, approve, reject, expire, performance) are in test_decisions.py.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.support.helpers import (
    AUTO,
    ENDS,
    MANUAL,
    NOW,
    OPERATOR,
    REG_CLOSES,
    STARTS,
    SYSTEM,
    World,
    add_session,
    approve,
    create_auto_campaign,
    create_campaign,
    duplicate,
    expire_campaign,
    hours,
    profile,
    record_performance,
    register,
    register_auto,
    reject,
    seller,
    slot,
    withdraw,
)


def test_create_campaign_records_campaign_created_with_its_terms(world: World) -> None:
    result = world.accept(create_campaign())
    assert result["aggregate_id"] == MANUAL
    assert result["events"] == ["CampaignCreated"]
    assert result["version"] == 1
    assert isinstance(result["position"], int)
    campaign = world.ledger.campaign(MANUAL)
    assert (campaign.name, campaign.kind, campaign.review_mode) == (
        "11.11 Mega LIVE Sale", "live", "manual")
    assert (campaign.starts_at, campaign.ends_at) == (STARTS, ENDS)
    assert [level["code"] for level in campaign.levels] == ["standard", "star"]
    assert campaign.allow_duplicates is True


def test_create_campaign_defaults_max_sessions_to_100(world: World) -> None:
    cmd = create_campaign()
    del cmd["payload"]["max_sessions"]
    world.accept(cmd)
    assert world.ledger.campaign(MANUAL).max_sessions == 100


def test_a_command_may_be_sent_as_json_text(world: World) -> None:
    result = world.accept(json.dumps(create_campaign()))
    assert result["events"] == ["CampaignCreated"]


def test_register_in_a_manual_campaign_adds_each_session_under_review(
    world: World, manual_campaign: str
) -> None:
    result = world.accept(register(manual_campaign, sessions=[slot(0), slot(2), slot(5)]))
    assert result["events"] == ["Registered", "SessionAdded", "SessionAdded", "SessionAdded"]
    assert result["version"] == 4
    reg = world.ledger.registration(result["aggregate_id"])
    assert world.session_statuses(result["aggregate_id"]) == {
        "s1": "under_review", "s2": "under_review", "s3": "under_review"}
    assert reg.status() == "under_review"
    assert (reg.campaign_id, reg.seller_id, reg.account_id) == (MANUAL, "seller-1", "shop-1")


def test_register_records_eligibility_including_a_failed_criterion(
    world: World, manual_campaign: str
) -> None:
    reg_id = world.register(register(manual_campaign, level="star",
                                     profile_=profile(account_level=3, livestream_level=2)))
    eligibility = world.ledger.registration(reg_id).eligibility
    assert {c["criterion"]: c["passed"] for c in eligibility} == {
        "min_account_level": True, "min_livestream_level": True,
        "level_min_livestream_level": False}
    failed = next(c for c in eligibility if not c["passed"])
    assert (failed["required"], failed["actual"]) == (4, 2)


def test_register_in_an_auto_campaign_is_approved_by_system_when_every_criterion_passes(
    world: World, auto_campaign: str
) -> None:
    result = world.accept(register_auto(auto_campaign))
    assert result["events"] == ["Registered", "Approved"]
    reg = world.ledger.registration(result["aggregate_id"])
    assert reg.status() == "approved"
    assert reg.sessions == {}
    approved = world.ledger.events_of(result["aggregate_id"])[-1]
    assert (approved.actor, approved.command_id, approved.timestamp) == (
        SYSTEM, result["command_id"], NOW)


@pytest.mark.parametrize(("account_level", "livestream_level"), [(2, 5), (5, 1), (0, 0)])
def test_register_in_an_auto_campaign_is_rejected_with_criteria_not_met_when_one_fails(
    world: World, auto_campaign: str, account_level: int, livestream_level: int
) -> None:
    result = world.accept(register_auto(auto_campaign,
                                        profile_=profile(account_level, livestream_level)))
    assert result["events"] == ["Registered", "Rejected"]
    rejected = world.ledger.events_of(result["aggregate_id"])[-1]
    assert rejected.reasons == ["criteria_not_met"]
    assert rejected.actor == SYSTEM
    assert world.ledger.registration(result["aggregate_id"]).status() == "rejected"


def test_add_session_adds_an_under_review_session_with_the_next_id(
    world: World, registration: str
) -> None:
    result = world.accept(add_session(registration, slot(10, 2)))
    assert result["events"] == ["SessionAdded"]
    assert result["version"] == 4
    session = world.ledger.registration(registration).sessions["s3"]
    assert (session.status, session.duplicated_from) == ("under_review", None)
    assert session.starts_at == STARTS + hours(10)
    assert session.ends_at == STARTS + hours(12)


def test_add_session_is_allowed_after_registration_closes(world: World, registration: str) -> None:
    world.at(REG_CLOSES + hours(1))
    assert world.accept(add_session(registration, slot(10)))["events"] == ["SessionAdded"]


def test_duplicate_copies_category_and_level_and_names_its_source(
    world: World, registration: str
) -> None:
    result = world.accept(duplicate(registration, "s2", slot(24)))
    assert result["events"] == ["Duplicated"]
    copy = world.ledger.registration(registration).sessions["s3"]
    assert (copy.status, copy.duplicated_from) == ("under_review", "s2")
    assert (copy.main_category, copy.level) == ("fashion", "standard")
    assert copy.starts_at == STARTS + hours(24)


@pytest.mark.parametrize("moment", [REG_CLOSES, REG_CLOSES + hours(1), STARTS + hours(20)],
                         ids=["at-close", "after-close", "during-campaign"])
def test_duplicate_is_allowed_after_registration_closes_until_the_campaign_ends(
    world: World, registration: str, moment: datetime
) -> None:
    world.at(moment)
    assert world.accept(duplicate(registration, "s1", slot(30)))["events"] == ["Duplicated"]


def test_duplicate_copies_a_session_of_any_status(world: World, registration: str) -> None:
    world.accept(reject(registration, ["s1"]))
    world.accept(withdraw(registration, ["s2"]))
    world.accept(duplicate(registration, "s1", slot(0)))
    world.accept(duplicate(registration, "s2", slot(2)))
    assert world.session_statuses(registration) == {
        "s1": "rejected", "s2": "withdrawn", "s3": "under_review", "s4": "under_review"}


def test_every_event_carries_its_actor_command_id_and_the_clock_time(
    world: World, manual_campaign: str
) -> None:
    registered = register(manual_campaign)
    reg_id = world.register(registered)
    steps = [
        (NOW + hours(1), add_session(reg_id, slot(30))),
        (NOW + hours(2), duplicate(reg_id, "s1", slot(40))),
        (NOW + hours(3), withdraw(reg_id, ["s4"])),
        (NOW + hours(4), approve(reg_id, ["s1", "s2"])),
        (NOW + hours(5), reject(reg_id, ["s3"])),
        (STARTS + hours(3), record_performance(reg_id)),
    ]
    for moment, cmd in steps:
        world.at(moment)
        world.accept(cmd)
    expected = [(NOW, registered)] * 3 + steps  # Registered, SessionAdded x2
    events = world.ledger.events_of(reg_id)
    assert len(events) == len(expected)
    for event, (moment, cmd) in zip(events, expected, strict=True):
        assert (event.actor, event.command_id, event.timestamp) == (
            cmd["actor"], cmd["command_id"], moment), type(event).__name__


def test_campaign_events_carry_the_operator_and_the_clock_time(world: World) -> None:
    created = create_campaign()
    world.accept(created)
    world.at(ENDS + hours(5))
    expired = expire_campaign()
    world.accept(expired)
    events = world.ledger.events_of(MANUAL)
    assert [type(e).__name__ for e in events] == ["CampaignCreated", "Expired"]
    assert [(e.actor, e.command_id, e.timestamp) for e in events] == [
        (OPERATOR, created["command_id"], NOW), (OPERATOR, expired["command_id"], ENDS + hours(5))]


def test_results_report_the_aggregate_version_and_a_growing_store_position(
    world: World, manual_campaign: str
) -> None:
    first = world.accept(register(manual_campaign))
    second = world.accept(add_session(first["aggregate_id"], slot(30)))
    assert (first["version"], second["version"]) == (3, 4)
    assert second["position"] > first["position"]
    assert world.ledger.registration(first["aggregate_id"]).version == 4
    assert [e.originator_version for e in world.ledger.events_of(first["aggregate_id"])] == [
        1, 2, 3, 4]


def test_an_auto_campaign_and_a_seller_of_another_shop_are_independent(
    world: World, manual_campaign: str
) -> None:
    world.accept(create_auto_campaign())
    one = world.register(register(manual_campaign))
    other = world.register(register(manual_campaign, seller_id="seller-2", account_id="shop-2",
                                    actor=seller("seller-2"), sessions=[slot(0)]))
    auto = world.register(register_auto(AUTO))
    assert len({one, other, auto}) == 3
