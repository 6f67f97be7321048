"""Session rules: inside the campaign, not in the past, no overlap, at most max_sessions.

Each refusal leaves the store unchanged (`World.refuse` compares a dump of every table).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.helpers import (
    ENDS,
    STARTS,
    Json,
    World,
    add_session,
    approve,
    create_campaign,
    duplicate,
    hours,
    iso,
    register,
    reject,
    slot,
    withdraw,
)

# The default registration has s1 = [0h, 1h) and s2 = [2h, 3h) after the campaign starts.
Send = Callable[[str, Json], Json]  # (registration id, window) -> command

ADD: dict[str, Send] = {
    "add_session": lambda r, w: add_session(r, w),
    "duplicate": lambda r, w: duplicate(r, "s1", w),
}


@pytest.fixture(params=list(ADD.values()), ids=list(ADD))
def send(request: pytest.FixtureRequest) -> Send:
    """Both ways of adding a session to a registration follow the same rules."""
    result: Send = request.param
    return result


# session_outside_campaign ------------------------------------------------------------------

OUTSIDE: dict[str, Json] = {
    "starts before the campaign": slot(-1, 2),
    "wholly before the campaign": slot(-5, 1),
    "ends after the campaign": slot(71, 2),
    "starts at the campaign end": {"starts_at": iso(ENDS), "ends_at": iso(ENDS + hours(1))},
}


@pytest.mark.parametrize("window", OUTSIDE.values(), ids=OUTSIDE.keys())
def test_a_session_outside_the_campaign_period_is_refused_with_session_outside_campaign(
    world: World, registration: str, send: Send, window: Json
) -> None:
    world.refuse(send(registration, window), "session_outside_campaign")


def test_registering_a_session_outside_the_campaign_is_refused_with_session_outside_campaign(
    world: World, manual_campaign: str
) -> None:
    world.refuse(register(sessions=[slot(0), slot(-2)]), "session_outside_campaign")


def test_a_session_filling_the_whole_campaign_period_is_inside_it(
    world: World, manual_campaign: str
) -> None:
    whole = {"starts_at": iso(STARTS), "ends_at": iso(ENDS)}
    world.accept(register(sessions=[whole]))


# session_in_past ---------------------------------------------------------------------------

def test_a_session_starting_before_now_is_refused_with_session_in_past(
    world: World, registration: str, send: Send
) -> None:
    world.at(STARTS + hours(10))
    world.refuse(send(registration, slot(9, 3)), "session_in_past")


def test_a_session_starting_now_is_accepted(world: World, registration: str, send: Send) -> None:
    world.at(STARTS + hours(10))
    world.accept(send(registration, slot(10)))


# session_overlap ---------------------------------------------------------------------------

OVERLAPPING: dict[str, Json] = {
    "same window": slot(0),
    "starts inside": slot(0.5),
    "ends inside": slot(1.5, 1),
    "contains it": slot(1.5, 2),
    "inside it": slot(2.25, 0.5),
}


@pytest.mark.parametrize("window", OVERLAPPING.values(), ids=OVERLAPPING.keys())
def test_a_session_overlapping_one_under_review_is_refused_with_session_overlap(
    world: World, registration: str, send: Send, window: Json
) -> None:
    world.refuse(send(registration, window), "session_overlap")


def test_a_session_overlapping_an_approved_one_is_refused_with_session_overlap(
    world: World, approved_registration: str, send: Send
) -> None:
    world.refuse(send(approved_registration, slot(2.5)), "session_overlap")


@pytest.mark.parametrize("window", [slot(1, 0.5), slot(1.5, 0.5), slot(1), slot(3, 4)],
                         ids=["starts-as-s1-ends", "ends-as-s2-starts", "between", "after-last"])
def test_touching_sessions_do_not_overlap(
    world: World, registration: str, send: Send, window: Json
) -> None:
    # Windows are half-open: [a, b) and [b, c) share no instant.
    world.accept(send(registration, window))


@pytest.mark.parametrize("close", [
    lambda r: withdraw(r, ["s1"]), lambda r: reject(r, ["s1"]),
], ids=["withdrawn", "rejected"])
def test_a_session_may_take_the_place_of_a_closed_one(
    world: World, registration: str, send: Send, close: Callable[[str], Json]
) -> None:
    world.accept(close(registration))
    world.accept(send(registration, slot(0)))


def test_sessions_of_one_registration_overlapping_each_other_are_refused_with_session_overlap(
    world: World, manual_campaign: str
) -> None:
    world.refuse(register(sessions=[slot(0, 2), slot(1, 2)]), "session_overlap")


def test_sessions_of_different_registrations_may_overlap(
    world: World, registration: str
) -> None:
    world.accept(register(account_id="shop-2", sessions=[slot(0), slot(2)]))


def test_touching_sessions_in_one_registration_are_accepted(
    world: World, manual_campaign: str
) -> None:
    world.accept(register(sessions=[slot(0), slot(1), slot(2)]))


# too_many_sessions -------------------------------------------------------------------------

@pytest.fixture
def small_campaign(world: World) -> str:
    """A campaign allowing two open sessions per registration."""
    return str(world.accept(create_campaign(max_sessions=2))["aggregate_id"])


def test_registering_more_sessions_than_allowed_is_refused_with_too_many_sessions(
    world: World, small_campaign: str
) -> None:
    error = world.refuse(register(sessions=[slot(0), slot(2), slot(4)]),
                         "too_many_sessions")["error"]
    assert error["details"]["max_sessions"] == 2


def test_adding_a_session_beyond_max_sessions_is_refused_with_too_many_sessions(
    world: World, small_campaign: str, send: Send
) -> None:
    reg = world.register(register(sessions=[slot(0), slot(2)]))
    world.refuse(send(reg, slot(4)), "too_many_sessions")


@pytest.mark.parametrize("close", [
    lambda r: withdraw(r, ["s2"]), lambda r: reject(r, ["s2"]),
], ids=["withdrawn", "rejected"])
def test_closed_sessions_do_not_count_towards_max_sessions(
    world: World, small_campaign: str, send: Send, close: Callable[[str], Json]
) -> None:
    reg = world.register(register(sessions=[slot(0), slot(2)]))
    world.accept(close(reg))
    world.accept(send(reg, slot(4)))
    world.refuse(send(reg, slot(6)), "too_many_sessions")


def test_approved_sessions_count_towards_max_sessions(
    world: World, small_campaign: str
) -> None:
    reg = world.register(register(sessions=[slot(0), slot(2)]))
    world.accept(approve(reg))
    world.refuse(add_session(reg, slot(4)), "too_many_sessions")
