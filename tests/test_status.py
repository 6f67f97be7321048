"""Derived statuses: a registration's, in DOMAIN.md's order, and a campaign's, from the clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ledger import Ledger
from tests.support.helpers import (
    AUTO,
    ENDS,
    MANUAL,
    NOW,
    REG_CLOSES,
    REG_OPENS,
    STARTS,
    World,
    add_session,
    approve,
    expire_campaign,
    profile,
    register_auto,
    reject,
    slot,
    withdraw,
)

Step = tuple[str, list[str]]  # (verb, session ids)


def play(world: World, reg: str, steps: list[Step]) -> None:
    for verb, ids in steps:
        if verb == "approve":
            world.accept(approve(reg, ids))
        elif verb == "reject":
            world.accept(reject(reg, ids))
        elif verb == "withdraw":
            world.accept(withdraw(reg, ids))
        elif verb == "add":
            world.accept(add_session(reg, slot(30)))
        elif verb == "expire":
            world.at(ENDS)
            world.accept(expire_campaign(MANUAL))


# Starting from s1 and s2 under review.
MANUAL_CASES: dict[str, tuple[list[Step], str]] = {
    "every session under review": ([], "under_review"),
    "one approved, one under review": ([("approve", ["s1"])], "under_review"),
    "one rejected, one under review": ([("reject", ["s1"])], "under_review"),
    "all withdrawn, then one added": ([("withdraw", []), ("add", [])], "under_review"),
    "every session approved": ([("approve", [])], "approved"),
    "approved and rejected": ([("approve", ["s1"]), ("reject", ["s2"])], "approved"),
    "approved and withdrawn": ([("approve", ["s1"]), ("withdraw", ["s2"])], "approved"),
    "every session rejected": ([("reject", [])], "rejected"),
    "rejected and withdrawn": ([("reject", ["s1"]), ("withdraw", ["s2"])], "rejected"),
    "every session withdrawn": ([("withdraw", [])], "withdrawn"),
    "approved, then withdrawn": ([("approve", []), ("withdraw", [])], "withdrawn"),
    "expired under review": ([("expire", [])], "expired"),
    "expired while approved": ([("approve", ["s1"]), ("reject", ["s2"]), ("expire", [])],
                               "expired"),
    "rejected before expiry": ([("reject", []), ("expire", [])], "rejected"),
    "withdrawn before expiry": ([("withdraw", []), ("expire", [])], "withdrawn"),
}


@pytest.mark.parametrize(("steps", "status"), MANUAL_CASES.values(), ids=MANUAL_CASES.keys())
def test_a_manual_registration_status_follows_its_sessions_in_order(
    world: World, registration: str, steps: list[Step], status: str
) -> None:
    play(world, registration, steps)
    assert world.ledger.registration(registration).status() == status


def test_a_reloaded_ledger_derives_the_same_status(world: World, registration: str) -> None:
    play(world, registration, [("approve", ["s1"]), ("reject", ["s2"])])
    with Ledger.open(world.url, clock=world.clock, pool_size=1) as again:
        reg = again.registration(registration)
        assert reg.status() == "approved"
        assert {sid: s.status for sid, s in reg.sessions.items()} == {
            "s1": "approved", "s2": "rejected"}


def test_an_approved_auto_registration_is_approved(world: World, auto_registration: str) -> None:
    assert world.ledger.registration(auto_registration).status() == "approved"


def test_an_auto_registration_failing_a_criterion_is_rejected(
    world: World, auto_campaign: str
) -> None:
    reg = world.register(register_auto(profile_=profile(account_level=1)))
    assert world.ledger.registration(reg).status() == "rejected"


def test_a_withdrawn_auto_registration_is_withdrawn(world: World, auto_registration: str) -> None:
    world.accept(withdraw(auto_registration))
    assert world.ledger.registration(auto_registration).status() == "withdrawn"


def test_an_approved_auto_registration_is_expired_with_its_campaign(
    world: World, auto_registration: str
) -> None:
    world.at(ENDS)
    world.accept(expire_campaign(AUTO))
    assert world.ledger.registration(auto_registration).status() == "expired"


@pytest.mark.parametrize("profile_levels", [(1, 5), None], ids=["rejected", "withdrawn"])
def test_a_closed_auto_registration_keeps_its_status_when_the_campaign_expires(
    world: World, auto_campaign: str, profile_levels: tuple[int, int] | None
) -> None:
    reg = world.register(register_auto(profile_=profile(*(profile_levels or (5, 5)))))
    if profile_levels is None:
        world.accept(withdraw(reg))
    before = world.ledger.registration(reg).status()
    world.at(ENDS)
    world.accept(expire_campaign(AUTO))
    assert world.ledger.registration(reg).status() == before != "expired"


SECOND = timedelta(seconds=1)
CAMPAIGN_CASES: dict[str, tuple[datetime, str]] = {
    "before registration opens": (REG_OPENS - SECOND, "upcoming"),
    "as registration opens": (REG_OPENS, "registration_open"),
    "while registration is open": (NOW, "registration_open"),
    "a second before registration closes": (REG_CLOSES - SECOND, "registration_open"),
    "as registration closes": (REG_CLOSES, "registration_closed"),
    "a second before the start": (STARTS - SECOND, "registration_closed"),
    "as the campaign starts": (STARTS, "ongoing"),
    "a second before the end": (ENDS - SECOND, "ongoing"),
    "as the campaign ends": (ENDS, "ended"),
    "a year later": (ENDS + timedelta(days=365), "ended"),
}


@pytest.mark.parametrize(("moment", "status"), CAMPAIGN_CASES.values(),
                         ids=CAMPAIGN_CASES.keys())
def test_a_campaign_status_follows_the_clock(
    world: World, manual_campaign: str, moment: datetime, status: str
) -> None:
    world.at(moment)
    assert world.ledger.campaign(manual_campaign).status(world.clock.now()) == status


@pytest.mark.parametrize("later", [ENDS, REG_OPENS - SECOND, NOW],
                         ids=["at-expiry", "read-before-open", "read-while-open"])
def test_an_expired_campaign_is_expired_whatever_the_clock_says(
    world: World, manual_campaign: str, later: datetime
) -> None:
    world.at(ENDS)
    world.accept(expire_campaign())
    assert world.ledger.campaign(manual_campaign).status(later) == "expired"
