"""Decisions' happy paths: withdraw, approve, reject, expire_campaign, record_performance."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.helpers import (
    AUTO,
    ENDS,
    OPERATOR,
    REVIEWER,
    STARTS,
    SYSTEM,
    World,
    add_session,
    approve,
    event_tables,
    expire_campaign,
    hours,
    profile,
    record_performance,
    register,
    register_auto,
    reject,
    slot,
    withdraw,
)


def test_withdraw_specific_sessions_withdraws_only_those(world: World, registration: str) -> None:
    result = world.accept(withdraw(registration, ["s2"]))
    assert result["events"] == ["Withdrawn"]
    assert world.session_statuses(registration) == {"s1": "under_review", "s2": "withdrawn"}
    assert world.ledger.events_of(registration)[-1].reason == "schedule changed"


@pytest.mark.parametrize("session_ids", [None, []], ids=["absent", "empty"])
def test_withdraw_without_session_ids_withdraws_every_withdrawable_session(
    world: World, registration: str, session_ids: list[str] | None
) -> None:
    world.accept(add_session(registration, slot(30)))
    world.accept(approve(registration, ["s1"]))
    world.accept(reject(registration, ["s3"]))
    world.accept(withdraw(registration, session_ids))
    assert world.session_statuses(registration) == {
        "s1": "withdrawn", "s2": "withdrawn", "s3": "rejected"}
    assert world.ledger.registration(registration).status() == "rejected"


def test_withdraw_all_skips_approved_sessions_that_have_started(
    world: World, registration: str
) -> None:
    world.accept(approve(registration))
    world.at(STARTS + hours(0.5))  # s1 (hour 0) has started, s2 (hour 2) has not
    world.accept(withdraw(registration))
    assert world.session_statuses(registration) == {"s1": "approved", "s2": "withdrawn"}


def test_an_approved_session_may_be_withdrawn_before_it_starts(
    world: World, approved_registration: str
) -> None:
    world.at(STARTS + hours(1))
    world.accept(withdraw(approved_registration, ["s2"]))
    assert world.session_statuses(approved_registration)["s2"] == "withdrawn"


def test_an_auto_registration_is_withdrawn_as_a_whole_before_the_campaign_starts(
    world: World, auto_registration: str
) -> None:
    world.at(STARTS - hours(1))
    result = world.accept(withdraw(auto_registration))
    assert result["events"] == ["Withdrawn"]
    assert world.ledger.registration(auto_registration).status() == "withdrawn"


def test_approve_without_session_ids_approves_every_session_under_review(
    world: World, registration: str
) -> None:
    world.accept(add_session(registration, slot(30)))
    world.accept(withdraw(registration, ["s3"]))
    result = world.accept(approve(registration, note="great track record"))
    assert result["events"] == ["Approved"]
    event = world.ledger.events_of(registration)[-1]
    assert (event.session_ids, event.note, event.override_reason) == (
        ["s1", "s2"], "great track record", None)
    assert world.session_statuses(registration) == {
        "s1": "approved", "s2": "approved", "s3": "withdrawn"}


def test_approve_specific_sessions_leaves_the_others_under_review(
    world: World, registration: str
) -> None:
    world.accept(approve(registration, ["s2"]))
    assert world.session_statuses(registration) == {"s1": "under_review", "s2": "approved"}


@pytest.mark.parametrize("actor", [REVIEWER, OPERATOR], ids=["reviewer", "operator"])
def test_a_reviewer_or_an_operator_may_decide(
    world: World, registration: str, actor: dict[str, str]
) -> None:
    world.accept(approve(registration, ["s1"], actor=actor))
    world.accept(reject(registration, ["s2"], actor=actor))
    assert world.session_statuses(registration) == {"s1": "approved", "s2": "rejected"}


def test_approving_with_a_failed_criterion_records_the_override_reason(
    world: World, manual_campaign: str
) -> None:
    reg_id = world.register(register(manual_campaign, level="star",
                                     profile_=profile(livestream_level=2)))
    world.accept(approve(reg_id, override_reason="top seller in category last quarter"))
    event = world.ledger.events_of(reg_id)[-1]
    assert event.override_reason == "top seller in category last quarter"
    assert world.ledger.registration(reg_id).status() == "approved"


def test_reject_records_its_reasons_and_note(world: World, registration: str) -> None:
    reasons = ["performance_below_threshold", "incomplete_info"]
    world.accept(reject(registration, reasons=reasons, note="add a product list"))
    event = world.ledger.events_of(registration)[-1]
    assert (event.reasons, event.note, event.session_ids) == (
        reasons, "add a product list", ["s1", "s2"])
    assert world.ledger.registration(registration).status() == "rejected"


def test_expire_campaign_expires_registrations_with_open_sessions_and_leaves_closed_ones(
    world: World, manual_campaign: str
) -> None:
    pending = world.register(register(account_id="shop-pending"))
    approved = world.register(register(account_id="shop-approved"))
    world.accept(approve(approved))
    rejected = world.register(register(account_id="shop-rejected"))
    world.accept(reject(rejected))
    withdrawn = world.register(register(account_id="shop-withdrawn"))
    world.accept(withdraw(withdrawn))
    world.at(ENDS)
    cmd = expire_campaign(manual_campaign)
    result = world.accept(cmd)
    assert result["events"] == ["Expired", "Expired", "Expired"]
    assert result["aggregate_id"] == manual_campaign
    for public_id, actor in [(manual_campaign, OPERATOR), (pending, SYSTEM), (approved, SYSTEM)]:
        expired = world.ledger.events_of(public_id)[-1]
        assert (expired.actor, expired.command_id, expired.timestamp) == (
            actor, cmd["command_id"], ENDS)
    statuses = {r: world.ledger.registration(r).status()
                for r in (pending, approved, rejected, withdrawn)}
    assert statuses == {pending: "expired", approved: "expired",
                        rejected: "rejected", withdrawn: "withdrawn"}
    assert world.event_names(rejected)[-1] == "Rejected"


def test_expire_campaign_expires_approved_auto_registrations_by_system(
    world: World, auto_registration: str
) -> None:
    rejected = world.register(register_auto(account_id="shop-low", profile_=profile(1, 1)))
    world.at(ENDS + hours(1))
    world.accept(expire_campaign(AUTO, actor=SYSTEM))
    assert world.ledger.registration(auto_registration).status() == "expired"
    assert world.ledger.registration(rejected).status() == "rejected"
    assert world.ledger.events_of(auto_registration)[-1].actor == SYSTEM
    assert world.ledger.campaign(AUTO).status(world.clock.now()) == "expired"


def test_expire_campaign_records_an_expired_session_for_each_open_one(
    world: World, registration: str
) -> None:
    world.accept(add_session(registration, slot(30)))
    world.accept(approve(registration, ["s1"]))
    world.accept(reject(registration, ["s3"]))
    world.at(ENDS)
    world.accept(expire_campaign())
    assert world.session_statuses(registration) == {
        "s1": "expired", "s2": "expired", "s3": "rejected"}


def test_record_performance_records_the_report_with_decimal_money(
    world: World, approved_registration: str
) -> None:
    world.at(STARTS + hours(3))
    result = world.accept(record_performance(approved_registration, session_id="s1"))
    assert result["events"] == ["PerformanceRecorded"]
    event = world.ledger.events_of(approved_registration)[-1]
    assert (event.gmv, event.refunds) == (Decimal("125000.50"), Decimal("1520.00"))
    assert isinstance(event.gmv, Decimal)
    assert (event.orders, event.currency, event.session_id) == (412, "THB", "s1")


def test_record_performance_is_accepted_after_the_campaign_expired(
    world: World, approved_registration: str
) -> None:
    world.at(ENDS)
    world.accept(expire_campaign())
    world.accept(record_performance(approved_registration, period=(ENDS - hours(2), ENDS)))
    assert world.event_names(approved_registration)[-1] == "PerformanceRecorded"


def test_a_repeated_report_id_is_accepted_with_no_events_and_changes_nothing(
    world: World, approved_registration: str
) -> None:
    world.at(STARTS + hours(3))
    first = world.accept(record_performance(approved_registration, report_id="r-77"))
    events_table, snapshots_table = event_tables(world.url)
    before = world.dump()
    again = world.accept(record_performance(approved_registration, report_id="r-77", orders=1))
    assert again["events"] == []
    assert again["version"] == first["version"]
    after = world.dump()
    assert after[events_table] == before[events_table]
    assert after[snapshots_table] == before[snapshots_table]
    assert world.ledger.events_of(approved_registration)[-1].orders == 412
