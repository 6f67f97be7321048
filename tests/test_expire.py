"""expire_campaign as one atomic write, and long-lived registrations loaded from snapshots."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from ledger import FixedClock, Ledger
from ledger.aggregates.base import Cause
from ledger.aggregates.registration import Registration
from tests.support.helpers import (
    ENDS,
    STARTS,
    World,
    add_session,
    approve,
    event_tables,
    expire_campaign,
    hours,
    record_performance,
    register,
    reject,
    slot,
    withdraw,
)

REGISTRATIONS = 300


def register_many(world: World, n: int) -> list[str]:
    """n registrations with one session each; every tenth rejected (so not expired)."""
    regs = [world.register(register(account_id=f"shop-{i:03}", sessions=[slot(i % 60)]))
            for i in range(n)]
    for reg in regs[::10]:
        world.accept(reject(reg))
    return regs


def test_expiring_a_campaign_of_300_registrations_is_one_write(
    world: World, manual_campaign: str
) -> None:
    regs = register_many(world, REGISTRATIONS)
    open_regs = [r for i, r in enumerate(regs) if i % 10]
    last_before = world.ledger.app.recorder.max_notification_id() or 0
    world.at(ENDS)
    cmd = expire_campaign()
    result = world.accept(cmd)
    assert result["events"] == ["Expired"] * (1 + len(open_regs))
    written = world.ledger.app.recorder.select_notifications(last_before + 1, limit=1000)
    assert [n.id for n in written] == list(range(last_before + 1, result["position"] + 1))
    assert all(n.topic.endswith(":Expired") for n in written)
    assert len(world.dump()["ledger_commands"]) == 1 + len(regs) + len(regs[::10]) + 1
    for i, reg in enumerate(regs):
        last = world.ledger.events_of(reg)[-1]
        assert (type(last).__name__ == "Expired") == (reg in open_regs), i
    assert world.ledger.campaign(manual_campaign).status(ENDS) == "expired"


def test_an_expiry_that_loses_a_race_writes_nothing_and_runs_again(
    world: World, manual_campaign: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    regs = [world.register(register(account_id=f"shop-{i}")) for i in range(5)]
    world.at(ENDS)
    expire = Registration.expire
    raced: list[dict[str, Any]] = []

    def expire_after_a_reviewer(self: Registration, by: Cause) -> None:
        if self.registration_id == regs[3] and not raced:
            # Another process approves regs[3] after the expiry has read it.
            with Ledger.open(world.url, clock=FixedClock(ENDS), pool_size=1) as other:
                raced.append(other.send(approve(regs[3], ["s1"])))
        expire(self, by)

    monkeypatch.setattr(Registration, "expire", expire_after_a_reviewer)
    result = world.accept(expire_campaign())
    assert raced[0]["ok"], raced
    assert result["events"] == ["Expired"] * 6
    assert Counter(world.event_names(manual_campaign)) == {"CampaignCreated": 1, "Expired": 1}
    for reg in regs:
        assert world.event_names(reg).count("Expired") == 1
    assert world.session_statuses(regs[3]) == {"s1": "expired", "s2": "expired"}
    assert world.event_names(regs[3])[-2:] == ["Approved", "Expired"]


# Snapshots (every 50 events of a registration) ------------------------------------------

def build_long_history(world: World, reg: str) -> None:
    """62 more sessions and some decisions: 70 events in all."""
    for hour in range(4, 66):
        world.accept(add_session(reg, slot(hour)))
    world.accept(approve(reg, ["s1", "s10", "s60"]))
    world.accept(reject(reg, ["s2", "s61"], reasons=["capacity_full"]))
    world.accept(withdraw(reg, ["s62"]))
    world.at(STARTS + hours(3))
    world.accept(record_performance(reg))
    world.accept(record_performance(reg, report_id="report-2"))


def replayed_without_snapshots(ledger: Ledger, reg: str) -> Registration:
    aggregate: Any = None
    for event in ledger.events_of(reg):
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, Registration)
    return aggregate


def state(reg: Registration) -> tuple[Any, ...]:
    return (reg.version, reg.status(), reg.sessions, reg.decisions, reg.eligibility,
            reg.terms, reg.reports, reg.ever_approved, reg.expired)


def snapshot_versions(world: World) -> list[int]:
    _, snapshots_table = event_tables(world.url)
    return [row[1] for row in world.dump()[snapshots_table]]


def test_a_registration_with_more_than_60_events_loads_from_its_snapshot(
    world: World, registration: str
) -> None:
    build_long_history(world, registration)
    assert snapshot_versions(world) == [50]
    loaded = world.ledger.registration(registration)
    assert loaded.version == 70
    assert state(loaded) == state(replayed_without_snapshots(world.ledger, registration))
    assert len(loaded.sessions) == 64
    assert loaded.sessions["s60"].status == "approved"


def test_a_long_registration_loads_the_same_after_a_restart(
    world: World, registration: str
) -> None:
    build_long_history(world, registration)
    expected = state(world.ledger.registration(registration))
    world.ledger.close()
    with Ledger.open(world.url, clock=world.clock, pool_size=1) as restarted:
        assert state(restarted.registration(registration)) == expected
        result = restarted.send(add_session(registration, slot(70)))
        assert result["ok"], result
        assert result["version"] == 71


def test_rules_still_hold_on_a_registration_loaded_from_a_snapshot(
    world: World, registration: str
) -> None:
    build_long_history(world, registration)
    world.at(STARTS + hours(3))
    world.refuse(add_session(registration, slot(10.5)), "session_overlap")
    world.refuse(approve(registration, ["s1"]), "invalid_transition")
    world.accept(record_performance(registration))  # report-1 again: no event
    assert world.ledger.registration(registration).version == 70


def test_a_snapshot_taken_inside_one_write_of_many_events_loads_correctly(
    world: World, manual_campaign: str
) -> None:
    reg = world.register(register(sessions=[slot(h) for h in range(60)]))
    assert snapshot_versions(world) == [50]
    loaded = world.ledger.registration(reg)
    assert loaded.version == 61
    assert state(loaded) == state(replayed_without_snapshots(world.ledger, reg))
