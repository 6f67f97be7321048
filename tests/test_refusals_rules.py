"""Refusals by the business rules of DOMAIN.md, each leaving the store unchanged.

Malformed, unknown, forbidden and conflicting commands are in test_refusals.py; the session
rules (outside campaign, in the past, overlap, too many) in test_session_rules.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from tests.support.helpers import (
    AUTO,
    ENDS,
    NOW,
    REG_CLOSES,
    REG_OPENS,
    STARTS,
    Build,
    Json,
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
    slot,
    withdraw,
)

# already_exists / registration_closed / already_registered ---------------------------------

@pytest.mark.parametrize("build", [create_campaign, create_auto_campaign], ids=["manual", "auto"])
def test_creating_a_campaign_with_a_used_id_is_refused_with_already_exists(
    world: World, manual_campaign: str, build: Callable[[str], Json]
) -> None:
    world.refuse(build(manual_campaign), "already_exists")


@pytest.mark.parametrize("moment", [
    REG_OPENS - timedelta(seconds=1), REG_CLOSES, REG_CLOSES + hours(1),
    STARTS + hours(1), ENDS + hours(24),
], ids=["before-open", "at-close", "after-close", "ongoing", "ended"])
def test_registering_outside_the_registration_window_is_refused_with_registration_closed(
    world: World, manual_campaign: str, auto_campaign: str, moment: datetime
) -> None:
    world.at(moment)
    world.refuse(register(manual_campaign, sessions=[slot(48)]), "registration_closed")
    world.refuse(register_auto(auto_campaign), "registration_closed")


def test_registering_as_the_window_opens_is_accepted(world: World, manual_campaign: str) -> None:
    world.at(REG_OPENS)
    world.accept(register(manual_campaign))


@pytest.mark.parametrize("seller_id", ["seller-1", "seller-2"])
def test_registering_an_account_twice_for_a_campaign_is_refused_with_already_registered(
    world: World, scene: str, seller_id: str
) -> None:
    again = register(seller_id=seller_id, sessions=[slot(30)])
    error = world.refuse(again, "already_registered")["error"]
    assert error["details"]["registration_id"] == scene


def test_registering_an_account_twice_for_an_auto_campaign_is_refused_with_already_registered(
    world: World, auto_registration: str
) -> None:
    world.refuse(register_auto(), "already_registered")


def test_the_same_account_may_register_for_another_campaign(world: World, scene: str) -> None:
    world.accept(register_auto(AUTO))


def test_a_category_the_campaign_does_not_allow_is_refused_with_category_not_allowed(
    world: World, scene: str
) -> None:
    error = world.refuse(register(account_id="shop-9", main_category="electronics"),
                         "category_not_allowed")["error"]
    assert error["details"]["allowed"] == ["fashion", "beauty"]


def test_a_level_the_campaign_does_not_offer_is_refused_with_level_not_offered(
    world: World, scene: str
) -> None:
    world.refuse(register(account_id="shop-9", level="diamond"), "level_not_offered")


# invalid_transition ------------------------------------------------------------------------

def _withdraw_s1_then(build: Build) -> Callable[[World, str], Json]:
    def setup(world: World, reg: str) -> Json:
        world.accept(withdraw(reg, ["s1"]))
        return build(reg)
    return setup


def _approve_all_then(build: Build) -> Callable[[World, str], Json]:
    def setup(world: World, reg: str) -> Json:
        world.accept(approve(reg))
        return build(reg)
    return setup


def _reject_all_then(build: Build) -> Callable[[World, str], Json]:
    def setup(world: World, reg: str) -> Json:
        world.accept(reject(reg))
        return build(reg)
    return setup


def _started(world: World, reg: str) -> Json:
    world.accept(approve(reg))
    world.at(STARTS + hours(0.5))
    return withdraw(reg, ["s1"])


def _nothing_withdrawable(world: World, reg: str) -> Json:
    world.accept(withdraw(reg, ["s2"]))
    world.accept(approve(reg, ["s1"]))
    world.at(STARTS + hours(0.5))
    return withdraw(reg)


def _report_after(decide: Build | None) -> Callable[[World, str], Json]:
    def setup(world: World, reg: str) -> Json:
        if decide is not None:
            world.accept(decide(reg))
        world.at(STARTS + hours(3))
        return record_performance(reg)
    return setup


def _expired_session(world: World, reg: str) -> Json:
    world.at(ENDS)
    world.accept(expire_campaign())
    return approve(reg, ["s1"])


TRANSITIONS: dict[str, Callable[[World, str], Json]] = {
    "approve a withdrawn session": _withdraw_s1_then(lambda r: approve(r, ["s1"])),
    "reject a withdrawn session": _withdraw_s1_then(lambda r: reject(r, ["s1"])),
    "withdraw a withdrawn session": _withdraw_s1_then(lambda r: withdraw(r, ["s1"])),
    "approve an approved session": _approve_all_then(lambda r: approve(r, ["s2"])),
    "reject an approved session": _approve_all_then(lambda r: reject(r, ["s1"])),
    "approve with nothing under review": _approve_all_then(lambda r: approve(r)),
    "reject with nothing under review": _approve_all_then(lambda r: reject(r)),
    "approve a rejected session": _reject_all_then(lambda r: approve(r, ["s1"])),
    "withdraw a rejected session": _reject_all_then(lambda r: withdraw(r, ["s1"])),
    "withdraw all with only rejected sessions": _reject_all_then(lambda r: withdraw(r)),
    "withdraw an approved session after it started": _started,
    "withdraw all when the only open session has started": _nothing_withdrawable,
    "approve an expired session": _expired_session,
    "record performance of a never approved registration": _report_after(None),
    "record performance of a rejected registration": _report_after(lambda r: reject(r)),
}


@pytest.mark.parametrize("setup", TRANSITIONS.values(), ids=TRANSITIONS.keys())
def test_a_move_the_status_does_not_allow_is_refused_with_invalid_transition(
    world: World, scene: str, setup: Callable[[World, str], Json]
) -> None:
    world.refuse(setup(world, scene), "invalid_transition")


AUTO_TRANSITIONS: dict[str, tuple[datetime, Build]] = {
    "add a session": (NOW, lambda r: add_session(r, slot(10))),
    "approve": (NOW, lambda r: approve(r)),
    "reject": (NOW, lambda r: reject(r)),
    "withdraw once the campaign started": (STARTS, lambda r: withdraw(r)),
}


@pytest.mark.parametrize(("moment", "build"), AUTO_TRANSITIONS.values(),
                         ids=AUTO_TRANSITIONS.keys())
def test_an_auto_registration_refuses_manual_moves_with_invalid_transition(
    world: World, auto_registration: str, moment: datetime, build: Build
) -> None:
    world.at(moment)
    world.refuse(build(auto_registration), "invalid_transition")


def test_withdrawing_an_auto_registration_twice_is_refused_with_invalid_transition(
    world: World, auto_registration: str
) -> None:
    world.accept(withdraw(auto_registration))
    world.refuse(withdraw(auto_registration), "invalid_transition")


def test_withdrawing_a_rejected_auto_registration_is_refused_with_invalid_transition(
    world: World, auto_campaign: str
) -> None:
    reg = world.register(register_auto(auto_campaign, profile_=profile(1, 1)))
    world.refuse(withdraw(reg), "invalid_transition")


def test_duplicating_in_an_auto_campaign_is_refused_with_invalid_transition(
    world: World
) -> None:
    world.accept(create_auto_campaign(allow_duplicates=True))
    reg = world.register(register_auto())
    world.refuse(duplicate(reg, "s1", slot(10)), "invalid_transition")


def test_expiring_a_campaign_twice_is_refused_with_invalid_transition(
    world: World, scene: str
) -> None:
    world.at(ENDS)
    world.accept(expire_campaign())
    world.refuse(expire_campaign(), "invalid_transition")


# duplicates_not_allowed / campaign_ended / override_required / campaign_not_ended ----------

def test_duplicating_where_the_campaign_forbids_it_is_refused_with_duplicates_not_allowed(
    world: World
) -> None:
    world.accept(create_campaign(allow_duplicates=False))
    reg = world.register()
    world.refuse(duplicate(reg, "s1", slot(10)), "duplicates_not_allowed")


@pytest.mark.parametrize("moment", [ENDS, ENDS + hours(30)], ids=["at-end", "after-end"])
@pytest.mark.parametrize("build", [
    lambda r: add_session(r, slot(10)), lambda r: duplicate(r, "s1", slot(10)),
], ids=["add_session", "duplicate"])
def test_changing_sessions_once_the_campaign_ended_is_refused_with_campaign_ended(
    world: World, scene: str, moment: datetime, build: Build
) -> None:
    world.at(moment)
    world.refuse(build(scene), "campaign_ended")


def test_adding_a_session_after_the_campaign_expired_is_refused_with_campaign_ended(
    world: World, scene: str
) -> None:
    world.accept(reject(scene))  # not open, so not expired with its campaign
    world.at(ENDS)
    world.accept(expire_campaign())
    world.refuse(add_session(scene, slot(10)), "campaign_ended")
    world.refuse(duplicate(scene, "s1", slot(10)), "campaign_ended")


@pytest.mark.parametrize("override_reason", [None, ""], ids=["absent", "empty"])
def test_approving_a_failed_criterion_without_a_reason_is_refused_with_override_required(
    world: World, manual_campaign: str, override_reason: str | None
) -> None:
    reg = world.register(register(level="star", profile_=profile(livestream_level=2)))
    error = world.refuse(approve(reg, override_reason=override_reason),
                         "override_required")["error"]
    assert [c["criterion"] for c in error["details"]["failed_criteria"]] == [
        "level_min_livestream_level"]


def test_rejecting_a_failed_criterion_needs_no_override(world: World, manual_campaign: str) -> None:
    reg = world.register(register(level="star", profile_=profile(livestream_level=2)))
    world.accept(reject(reg, reasons=["criteria_not_met"]))


@pytest.mark.parametrize("moment", [NOW, STARTS + hours(1), ENDS - timedelta(seconds=1)],
                         ids=["registration-open", "ongoing", "a-second-before-end"])
def test_expiring_a_campaign_before_it_ends_is_refused_with_campaign_not_ended(
    world: World, scene: str, moment: datetime
) -> None:
    world.at(moment)
    world.refuse(expire_campaign(), "campaign_not_ended")
