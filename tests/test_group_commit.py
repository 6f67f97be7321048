"""Group commit (issue 14): commands sent in groups get, command for command, what they get
one at a time in input order, and leave the same store behind.

The property: random command sequences (all nine commands; refusals of many kinds; copies
of a command, and a command_id reused for another body; several commands on one
registration; `expire_campaign` in the middle; `expected_version`; bad JSON and roles),
in three phases on one fixed clock, sent one by one into one store and in groups of random
sizes into another: the same results (except `position`), the same rows in every table
(events in the same order, hash links, command rows, the registration index), the same
read models after catch-up, and `audit verify` clean on both. A single writer never
conflicts with itself, so no group may fall back to one at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ledger import FixedClock, Ledger, group
from ledger.aggregates.base import registration_uuid
from ledger.commands import handlers
from ledger.commands.context import Context, Outcome
from ledger.errors import RuleBroken
from ledger.projections.registry import projector
from ledger.store import rows as store_rows  # LedgerRows: the SQL both recorders share
from tests.support.helpers import (
    ACCOUNT,
    ENDS,
    NOW,
    REVIEWER,
    STARTS,
    Json,
    World,
    add_session,
    approve,
    auto_campaign_fields,
    campaign_fields,
    command,
    create_campaign,
    dump_store,
    duplicate,
    expire_campaign,
    hours,
    iso,
    profile,
    record_performance,
    register,
    reject,
    slot,
    with_envelope,
    withdraw,
)
from tests.support.projections import rows_of

# Campaigns: (id, manual, starts_at, ends_at); registration is open in October for all.
NOV = (datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 13, tzinfo=UTC))
DEC = (datetime(2026, 12, 30, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC))
CAMPAIGNS = (("m0", True, *NOV), ("a1", False, *NOV), ("m2", True, *DEC))
# Registration open; the November campaigns ended (December's not started); all ended.
PHASES = (datetime(2026, 10, 5, 9, 30, tzinfo=UTC), datetime(2026, 11, 20, 8, tzinfo=UTC),
          datetime(2027, 1, 10, 8, tzinfo=UTC))
ACCOUNTS = 3
NewUrl = Callable[[], str]
# Per phase, the kinds of action drawn (repeats weigh): mostly what the phase is for.
KINDS = (
    ("register",) * 6 + ("add_session", "add_session", "duplicate", "approve", "approve",
                         "reject", "withdraw", "create", "again", "reuse", "junk"),
    ("approve", "reject", "withdraw", "add_session", "duplicate", "perform", "perform",
     "perform", "expire", "expire", "again", "reuse", "register"),
    ("perform", "perform", "perform", "expire", "expire", "approve", "again", "reuse"),
)

Action = tuple[str, int, int, int, int, bool, int]


def _actions(phase: int, min_size: int, max_size: int) -> st.SearchStrategy[list[Action]]:
    action = st.tuples(st.sampled_from(KINDS[phase]), st.integers(0, len(CAMPAIGNS) - 1),
                       st.integers(0, ACCOUNTS - 1), st.integers(0, 80), st.integers(0, 80),
                       st.booleans(), st.integers(0, 1000))
    return st.lists(action, min_size=min_size, max_size=max_size)


_phases = st.tuples(_actions(0, 10, 40), _actions(1, 0, 25), _actions(2, 0, 12))
_sizes = st.lists(st.integers(1, 12), min_size=1, max_size=8)


def campaign(index: int) -> Json:
    campaign_id, manual, starts_at, ends_at = CAMPAIGNS[index]
    fields = campaign_fields(campaign_id) if manual else auto_campaign_fields(campaign_id)
    fields.update(starts_at=iso(starts_at), ends_at=iso(ends_at), allow_duplicates=manual,
                  max_sessions=3)
    return command("create_campaign", {"id": "ops-anna", "role": "operator"}, fields)


def window(index: int, hour: int) -> Json:
    starts_at = CAMPAIGNS[index][2] + hours(hour)
    return {"starts_at": iso(starts_at), "ends_at": iso(starts_at + hours(1))}


def build(action: Action, sent: list[Json | str], targets: list[tuple[int, int]]
          ) -> Json | str:
    """One command from a drawn action. Targets are derived ids, any of which may be
    missing; mostly one that an earlier `register` was built for (`targets`)."""
    kind, k, a, h1, h2, flag, pick = action
    if kind == "register":
        targets.append((k, a))
    elif targets and pick % 4:
        k, a = targets[pick % len(targets)]
    campaign_id, manual = CAMPAIGNS[k][0], CAMPAIGNS[k][1]
    reg = str(registration_uuid(campaign_id, f"shop-{a}"))
    seller_id = f"seller-{a % 3}" if pick % 9 else "seller-9"  # sometimes not theirs
    sessions = [f"s{1 + h2 % 4}"] if not flag else None
    earlier = [cmd for cmd in sent if isinstance(cmd, dict)]
    if kind == "register":
        return register(campaign_id, seller_id=f"seller-{a % 3}", account_id=f"shop-{a}",
                        main_category="fashion" if h2 % 7 else "toys",
                        level=("standard" if h2 % 3 else "star") if manual else None,
                        sessions=[window(k, h1)] + ([window(k, h2)] if flag else [])
                        if manual else [],
                        profile_=profile() if h1 % 4 else profile(1, 1))
    if kind == "add_session":
        return add_session(reg, window(k, h1), seller_id=seller_id,
                           expected_version=h2 % 6 if pick % 5 == 0 else None)
    if kind == "duplicate":
        return duplicate(reg, f"s{1 + h2 % 4}", window(k, h1), seller_id=seller_id)
    if kind == "approve":
        return approve(reg, sessions, override_reason="strong sales" if pick % 2 else None,
                       expected_version=h1 % 6 if pick % 7 == 0 else None)
    if kind == "reject":
        return reject(reg, sessions, reasons=["policy_violation"] if pick % 8 else [])
    if kind == "withdraw":
        return withdraw(reg, sessions, seller_id=seller_id)
    if kind == "perform":
        start = CAMPAIGNS[k][2] + hours(h1 % 70)
        return record_performance(reg, report_id=f"r{h2 % 3}",
                                  period=(start, start + hours(1)), orders=pick)
    if kind == "expire":
        return expire_campaign(campaign_id)
    if kind == "create":
        return campaign(k)  # already_exists, or a new id if it was refused before
    if kind == "again" and earlier:
        return copy.deepcopy(earlier[pick % len(earlier)])
    if kind == "reuse" and earlier:
        body = build(("approve", k, a, h1, h2, flag, pick), sent, [])
        assert isinstance(body, dict)
        return {**body, "command_id": earlier[pick % len(earlier)]["command_id"]}
    if pick % 2:
        return '{"command": "approve", "command_id": "broken'  # invalid_json
    return command("register", REVIEWER, {"campaign_id": campaign_id})  # forbidden


@dataclass
class Script:
    """The commands of each phase, and how the grouped sender cuts them."""

    phases: list[list[Json | str]]
    sizes: list[int]
    many: bool  # send_many (one group size) instead of send_group per cut

    def cuts(self, commands: list[Json | str]) -> Iterator[list[Json | str]]:
        start, turn = 0, 0
        while start < len(commands):
            size = self.sizes[turn % len(self.sizes)]
            yield commands[start:start + size]
            start, turn = start + size, turn + 1


def script(phases: tuple[list[Action], ...], sizes: list[int], many: bool) -> Script:
    sent: list[Json | str] = [campaign(k) for k in range(len(CAMPAIGNS))]
    built: list[list[Json | str]] = [list(sent)]
    targets: list[tuple[int, int]] = []
    for actions in phases:
        for action in actions:
            sent.append(build(action, sent, targets))
            built[-1].append(sent[-1])
        built.append([])
    return Script(built[:len(PHASES)], sizes, many)


def one_by_one(ledger: Ledger, clock: FixedClock, s: Script) -> list[Json]:
    results = []
    for moment, commands in zip(PHASES, s.phases, strict=True):
        clock.set(moment)
        results.extend(ledger.send(cmd) for cmd in commands)
    return results


def grouped(ledger: Ledger, clock: FixedClock, s: Script) -> list[Json]:
    results: list[Json] = []
    for moment, commands in zip(PHASES, s.phases, strict=True):
        clock.set(moment)
        if s.many:
            results.extend(ledger.send_many(commands, group_size=s.sizes[0]))
        else:
            for cut in s.cuts(commands):
                results.extend(ledger.send_group(cut))
    return results


def without_position(results: list[Json]) -> list[Json]:
    return [{k: v for k, v in r.items() if k != "position"} for r in results]


def assert_verified(ledger: Ledger) -> None:
    checked = ledger.verify()
    assert checked.report.findings == [], checked.report.findings


# Examples are slow (two stores each): no shrinking, a failure is reported as found.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(phases=_phases, sizes=_sizes, many=st.booleans())
def test_commands_in_groups_give_what_they_give_one_at_a_time(
    new_url: NewUrl, phases: tuple[list[Action], ...], sizes: list[int], many: bool
) -> None:
    s = script(phases, sizes, many)
    urls = new_url(), new_url()
    clocks = FixedClock(PHASES[0]), FixedClock(PHASES[0])
    with Ledger.open(urls[0], clock=clocks[0], pool_size=1) as single, \
            Ledger.open(urls[1], clock=clocks[1], pool_size=1) as group:
        expected = one_by_one(single, clocks[0], s)
        found = grouped(group, clocks[1], s)
        assert without_position(found) == without_position(expected)
        assert group.group_stats.one_at_a_time == 0, group.group_stats
        assert dump_store(urls[1]) == dump_store(urls[0])
        views = projector(single.app), projector(group.app)
        for view in views:
            view.catch_up()
        assert rows_of(views[1], exact=True) == rows_of(views[0], exact=True)
        assert_verified(single)
        assert_verified(group)


# What a group does, case by case ---------------------------------------------------------------

@pytest.fixture
def manual(world: World) -> str:
    return str(world.accept(create_campaign())["aggregate_id"])


def codes(results: list[Json]) -> list[str]:
    return [("replayed" if r["replayed"] else "ok") if r["ok"] else r["error"]["code"]
            for r in results]


def test_commands_on_one_registration_see_each_other_and_commit_together(
    world: World, manual: str
) -> None:
    reg = str(registration_uuid(manual, ACCOUNT))
    results = world.ledger.send_group([
        register(manual), add_session(reg, slot(5)), add_session(reg, slot(5)),
        approve(reg, ["s1", "s3"]), withdraw(reg, ["s1"]),
    ])
    assert codes(results) == ["ok", "ok", "session_overlap", "ok", "ok"]
    assert [r.get("version") for r in results] == [3, 4, None, 5, 6]
    assert world.ledger.group_stats.committed == 1
    assert world.session_statuses(reg) == {"s1": "withdrawn", "s2": "under_review",
                                           "s3": "approved"}
    positions = [r["position"] for r in results if r["ok"]]
    assert positions == sorted(positions)
    assert len(set(positions)) == 4
    assert positions[-1] == world.ledger.send(withdraw(reg, ["s2"]))["position"] - 1


def test_a_command_id_repeated_in_a_group_is_a_replay_of_its_first_copy(
    world: World, manual: str
) -> None:
    first = register(manual)
    reused = with_envelope(register(manual, account_id="shop-2"),
                           command_id=first["command_id"])
    results = world.ledger.send_group([first, copy.deepcopy(first), reused])
    assert codes(results) == ["ok", "replayed", "conflict"]
    assert results[1] == {**results[0], "replayed": True}
    assert results[2]["error"]["details"]["reason"] == "command_id_reused"
    # And across groups: the stored row answers, with the same position.
    again = world.ledger.send_group([copy.deepcopy(first)])[0]
    assert again == results[1]


def test_a_refused_first_copy_leaves_the_next_copy_to_be_decided_again(
    world: World, manual: str
) -> None:
    reg = str(registration_uuid(manual, ACCOUNT))
    approval = approve(reg)
    results = world.ledger.send_group([approval, register(manual), copy.deepcopy(approval)])
    assert codes(results) == ["not_found", "ok", "ok"]  # one at a time says the same


def test_a_report_seen_before_writes_its_command_row_and_replays_with_no_position(
    world: World, manual: str
) -> None:
    reg = world.register(register(manual))
    world.accept(approve(reg))
    world.at(STARTS + hours(3))
    report = record_performance(reg)
    seen = record_performance(reg)  # the same report_id, another command
    results = world.ledger.send_group([report, seen])
    assert codes(results) == ["ok", "ok"]
    assert results[1]["events"] == []
    assert results[1]["position"] is None
    assert world.ledger.send(copy.deepcopy(seen)) == {**results[1], "replayed": True}


def test_expire_campaign_goes_alone_between_the_groups_around_it(
    world: World, manual: str
) -> None:
    reg = world.register(register(manual))
    world.accept(approve(reg))
    world.at(ENDS + hours(1))
    results = world.ledger.send_group([
        record_performance(reg), expire_campaign(), record_performance(reg, report_id="r2"),
        add_session(reg, slot(1)),
    ])
    assert codes(results) == ["ok", "ok", "ok", "campaign_ended"]
    assert results[1]["events"] == ["Expired", "Expired"]
    assert world.ledger.group_stats.committed == 2  # the runs before and after it
    assert world.event_names(reg)[-3:] == ["PerformanceRecorded", "Expired",
                                           "PerformanceRecorded"]


def test_refusals_write_nothing_and_disturb_no_other_command(world: World, manual: str) -> None:
    before = world.dump()
    results = world.ledger.send_group([
        "{not json", register(manual, actor=REVIEWER), register("no-such-campaign"),
        register(manual, main_category="toys"), approve(str(registration_uuid(manual, "x"))),
    ])
    assert codes(results) == ["invalid_json", "forbidden", "not_found",
                              "category_not_allowed", "not_found"]
    assert world.dump() == before
    mixed = world.ledger.send_group([register(manual, main_category="toys"), register(manual)])
    assert codes(mixed) == ["category_not_allowed", "ok"]


def test_send_many_streams_results_in_input_order_one_group_at_a_time(
    world: World, manual: str
) -> None:
    reg = world.register(register(manual))
    world.accept(approve(reg))
    world.at(STARTS + hours(3))
    pulled: list[int] = []

    def feed() -> Iterator[Json]:
        for n in range(7):
            pulled.append(n)
            yield record_performance(reg, report_id=f"r{n}")

    stream = world.ledger.send_many(feed(), group_size=3)
    first = next(stream)
    assert pulled == [0, 1, 2]  # one group read, decided and committed; no more
    rest = list(stream)
    assert [r["version"] for r in [first, *rest]] == list(range(5, 12))
    assert world.ledger.group_stats.committed == 3
    with pytest.raises(ValueError, match="group_size"):
        next(world.ledger.send_many([], group_size=0))


def test_a_stream_sees_what_another_writer_did_between_its_groups(
    world: World, manual: str
) -> None:
    """`send_many` reuses the aggregates its previous group committed only while the store
    still holds them at that version: a session another writer added in between is seen."""
    reg = world.register(register(manual))

    def feed(other: Ledger) -> Iterator[Json]:
        yield add_session(reg, slot(5))  # the first group: s3
        assert other.send(add_session(reg, slot(8)))["ok"]  # s4, by another writer
        yield approve(reg, ["s4"])

    with Ledger.open(world.url, clock=FixedClock(NOW), pool_size=1) as other:
        results = list(world.ledger.send_many(feed(other), group_size=1))
    assert codes(results) == ["ok", "ok"]
    assert world.ledger.group_stats.retried == 0  # decided on fresh state the first time
    assert world.session_statuses(reg)["s4"] == "approved"


def test_a_stream_keeps_up_to_keep_aggregates_the_least_recently_used_dropped_first(
    world: World, manual: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream keeps the aggregates its groups committed, to decide the next groups
    without loading them again, but not without end: at most `KEEP`, the least recently
    used dropped first."""
    regs = [world.register(register(manual, seller_id=f"seller-{n}", account_id=f"shop-{n}"))
            for n in range(3)]
    loaded = {UUID(r): world.ledger.app.repository.get(UUID(r)) for r in regs}
    a, b, c = loaded
    monkeypatch.setattr(group, "KEEP", 2)
    writer = group.Writer(world.ledger.app, world.ledger.clock, world.ledger._execute)
    writer.kept.put({a: loaded[a], b: loaded[b]})
    assert list(writer.kept) == [a, b]
    writer.kept.put({c: loaded[c]})  # over KEEP: the least recently used goes
    assert list(writer.kept) == [b, c]
    writer.kept.put({b: loaded[b]})  # used again: now the most recent
    writer.kept.put({a: loaded[a]})
    assert list(writer.kept) == [b, a]
    assert writer.kept.take([a, c]) == {a: loaded[a]}  # a run takes what it reuses
    assert list(writer.kept) == [b]


def test_a_stream_over_more_history_than_it_keeps_gives_the_same_results(
    world: World, manual: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing kept between groups, each group loads its aggregates again: the
    results are those of a stream that keeps them."""
    regs = [world.register(register(manual, seller_id=f"seller-{n}", account_id=f"shop-{n}"))
            for n in range(2)]
    for reg in regs:
        world.accept(approve(reg))
    world.at(STARTS + hours(3))
    approved = world.ledger.app.repository.get(UUID(regs[0])).version
    monkeypatch.setattr(group, "KEEP", 0)
    reports = [record_performance(regs[n % 2], report_id=f"r{n}") for n in range(8)]
    results = list(world.ledger.send_many(reports, group_size=3))
    assert codes(results) == ["ok"] * 8
    assert [r["version"] for r in results] == [approved + 1 + n // 2 for n in range(8)]


@pytest.mark.parametrize("chunk", [500, 2])
def test_a_group_sent_again_replays_every_command(
    world: World, manual: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with the command ids looked up a few at a time (`find_commands` in chunks)."""
    monkeypatch.setattr(store_rows, "GUARD_CHUNK", chunk)
    commands = [register(manual, account_id=f"shop-{n}") for n in range(5)]
    first = world.ledger.send_group(commands)
    before = world.dump()
    again = world.ledger.send_group(copy.deepcopy(commands))
    assert codes(again) == ["replayed"] * 5
    assert again == [{**r, "replayed": True} for r in first]
    assert world.dump() == before


def test_a_refusal_that_left_events_behind_sends_its_run_one_at_a_time(
    world: World, manual: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No handler records before it refuses; if one ever did, the events it left on a
    registration the run shares must not reach the store: the run goes one at a time."""
    reg = world.register(register(manual))

    def records_then_refuses(p: Any, ctx: Context) -> Outcome:
        registration = ctx.registration(p.registration_id)
        registration.approve(None, "half-done", None, ctx.cause)
        raise RuleBroken("invalid_transition", "refused after recording")

    monkeypatch.setitem(handlers.HANDLERS, "reject", records_then_refuses)
    results = world.ledger.send_group([add_session(reg, slot(5)), reject(reg),
                                       withdraw(reg, ["s1"])])
    assert codes(results) == ["ok", "invalid_transition", "ok"]
    assert world.ledger.group_stats.one_at_a_time == 1
    assert "Approved" not in world.event_names(reg)
    assert world.session_statuses(reg) == {"s1": "withdrawn", "s2": "under_review",
                                           "s3": "under_review"}
