"""Contention (issue 6): 8 processes send conflicting commands at the same registrations and
campaigns at once, round after round, each round a different seeded mix and interleaving.

Each round makes fresh campaigns and registrations (sequentially, in this process), then
races three phases through `Racers(8)`:

- registration open (NOW): the same account registering several times, manual and auto;
  copies of one command (same `command_id`, same body); one `command_id` reused for
  different bodies; approve vs reject vs withdraw on the same sessions (with and without
  failed eligibility); overlapping sessions added and duplicated at once; more sessions
  than `max_sessions`; writers with the same `expected_version`;
- the campaign running (DECIDED_AT, the first sessions have started): the same decisions
  again (an approved session that has started can no longer be withdrawn), overlaps and
  capacity again, performance reports sharing a `report_id`;
- the campaign's end, on clocks that disagree (LATE, a bit before the end; ENDS; NOW):
  `expire_campaign` (several times) vs `register`, `add_session`, `approve`, `withdraw`
  (a writer whose clock is hours behind an expiry already stored on its registration is
  refused with `clock_behind`: recorded times never go backwards).

Every result must be accepted, replayed or refused with one of the codes its command may
get in its situation (`Planned.allowed`); where the rules decide the winners (one of N
registrations of an account, one session of an overlapping cluster, `max_sessions` minus
the open ones...), the counts are exact; the accepted decisions, replayed in the order of
their versions, must each have been legal, and each refusal must be explained by the
final state. At the end, `invariants.check_invariants` checks every DOMAIN.md invariant on
the store and every result against it.

Also here: minimal, deterministic reproductions of the races the suite found (an
`Interleave` clock lets one command commit between another's decision and its write), and
proof that the checker can fail: a store the ledger wrote, then one fact it would never
write, forged below the command handlers; the checker must name exactly that.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.aggregates.base import Cause, LedgerAggregate, LedgerEvent, registration_uuid
from ledger.aggregates.campaign import Expired as CampaignExpired
from ledger.aggregates.registration_events import (
    Approved,
    PerformanceRecorded,
    SessionAdded,
    Withdrawn,
)
from ledger.store import rows as store_rows  # LedgerRows: the SQL both recorders share
from ledger.store.plan import CommandRow, WritePlan
from tests.reliability.invariants import check_invariants
from tests.support.helpers import (
    ACCOUNT,
    ENDS,
    MANUAL,
    NOW,
    OPERATOR,
    REVIEWER,
    STARTS,
    SYSTEM,
    Json,
    add_session,
    approve,
    create_auto_campaign,
    create_campaign,
    duplicate,
    expire_campaign,
    hours,
    new_command_id,
    profile,
    record_performance,
    register,
    register_auto,
    reject,
    slot,
    withdraw,
)
from tests.support.racing import Racers

N = 8
SEED = 20261111
ROUNDS = 8
GROUPED_ROUNDS = 4  # per group size
MAX_SESSIONS = 4
DECIDED_AT = STARTS + hours(6)  # the campaign runs; sessions at slot(0) and slot(2) started
LATE = ENDS - hours(2)  # a writer whose clock is still before the campaign's end
SAME = ("ok", "command_id", "aggregate_id", "version", "events")  # what a replay repeats
NewUrl = Callable[[], str]


@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    pool = Racers(N)
    yield pool
    pool.close()


def code(result: Json) -> str:
    return "ok" if result["ok"] else str(result["error"]["code"])


def same(result: Json) -> tuple[Any, ...]:
    return tuple(result.get(key) for key in SAME)


# A plan: commands, where they may end, and what must hold of their results together ----------

@dataclass(frozen=True)
class Planned:
    cmd: Json
    allowed: frozenset[str]  # "ok" and the error codes this command may get here
    at: datetime  # the sender's clock
    copy: bool = False  # one of several copies of a command: all but one replay


Check = Callable[[list[Json]], None]  # the group's results, in the order of its plans


@dataclass
class Group:
    name: str
    plans: list[Planned]
    check: Check


# Every code a command may end with in this suite; each plan names the ones its situation
# allows (a subset). `conflict` comes only from an `expected_version` or a reused command_id;
# `clock_behind` only from a clock hours behind an expiry already recorded on the aggregate.
ALLOWED: dict[str, frozenset[str]] = {
    "register": frozenset({"ok", "already_registered", "registration_closed"}),
    "add_session": frozenset({"ok", "session_overlap", "too_many_sessions", "campaign_ended",
                              "conflict", "clock_behind"}),
    "duplicate": frozenset({"ok", "session_overlap", "too_many_sessions", "campaign_ended"}),
    "approve": frozenset({"ok", "invalid_transition", "override_required", "conflict"}),
    "reject": frozenset({"ok", "invalid_transition"}),
    "withdraw": frozenset({"ok", "invalid_transition", "clock_behind"}),
    "expire_campaign": frozenset({"ok", "invalid_transition"}),
    "record_performance": frozenset({"ok", "invalid_transition"}),
}


def plan(cmd: Json, *codes: str, at: datetime = NOW, copy: bool = False) -> Planned:
    allowed = frozenset(codes)
    assert allowed <= ALLOWED[cmd["command"]], (cmd["command"], allowed)
    return Planned(cmd, allowed, at, copy)


def exactly(results: list[Json], **counts: int) -> None:
    found = Counter(code(r) for r in results)
    assert found == Counter({k: v for k, v in counts.items() if v}), (found, results)


@dataclass
class Reg:
    id: str
    seller: str


@dataclass
class Scene:
    """A ledger in this process that sets each round up, and reads the state afterwards."""

    url: str
    rng: random.Random
    round: int
    clock: FixedClock = field(default_factory=lambda: FixedClock(NOW))
    ledger: Ledger = field(init=False)
    made: int = 0

    def __post_init__(self) -> None:
        self.ledger = Ledger.open(self.url, clock=self.clock, pool_size=1)

    def accept(self, cmd: Json, at: datetime = NOW) -> Json:
        self.clock.set(at)
        result = self.ledger.send(cmd)
        assert result["ok"] is True, result
        assert result["replayed"] is False, result
        return result

    def fresh(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}-r{self.round}-{self.made}"

    def campaign(self, kind: str = "live", **overrides: Any) -> str:
        campaign_id = self.fresh(kind)
        make = create_auto_campaign if kind == "auto" else create_campaign
        self.accept(make(campaign_id, max_sessions=MAX_SESSIONS, **overrides))
        return campaign_id

    def register(self, campaign_id: str, sessions: list[Json], *, low: bool = False) -> Reg:
        seller_id = self.fresh("seller")
        cmd = register(campaign_id, seller_id=seller_id, account_id=self.fresh("shop"),
                       sessions=sessions, profile_=profile(1, 1) if low else profile())
        return Reg(str(self.accept(cmd)["aggregate_id"]), seller_id)

    def statuses(self, reg: Reg) -> dict[str, str]:
        return {sid: s.status for sid, s in self.ledger.registration(reg.id).sessions.items()}

    def version(self, reg: Reg) -> int:
        return int(self.ledger.registration(reg.id).version)

    def close(self) -> None:
        self.ledger.close()


# Phase A: registration open ------------------------------------------------------------------

def same_account(s: Scene, campaign: str, auto: str) -> list[Group]:
    """N registrations of one account at once (different sellers, sessions): one wins."""
    groups = []
    for target in (campaign, auto):
        account = s.fresh("twice")
        cmds = []
        for _ in range(s.rng.randint(3, 6)):
            seller_id = s.fresh("seller")
            if target == auto:
                low = s.rng.random() < 0.5
                cmds.append(register_auto(target, seller_id=seller_id, account_id=account,
                                          profile_=profile(1, 1) if low else profile()))
            else:
                cmds.append(register(target, seller_id=seller_id, account_id=account,
                                     sessions=[slot(s.rng.choice([0, 4, 8]))]))
        reg_id = str(registration_uuid(target, account))

        def check(results: list[Json], n: int = len(cmds), reg_id: str = reg_id) -> None:
            exactly(results, ok=1, already_registered=n - 1)
            winner = next(r for r in results if r["ok"])
            assert winner["aggregate_id"] == reg_id
            assert winner["events"] in (["Registered", "SessionAdded"],
                                        ["Registered", "Approved"], ["Registered", "Rejected"])
            assert all(r["error"]["details"]["registration_id"] == reg_id
                       for r in results if not r["ok"])

        groups.append(Group(f"same account ({target})",
                            [plan(cmd, "ok", "already_registered") for cmd in cmds], check))
    return groups


def copies(s: Scene, campaign: str, at: datetime = NOW) -> Group:
    """One command (one command_id, one body) sent by several workers: written once."""
    kind = s.rng.choice(["register", "add_session", "approve", "withdraw", "duplicate"]
                        if at == NOW else ["add_session", "approve", "record_performance"])
    if kind == "register":
        seller_id = s.fresh("seller")
        cmd = register(campaign, seller_id=seller_id, account_id=s.fresh("shop"),
                       sessions=[slot(0)])
    else:
        reg = s.register(campaign, [slot(0), slot(2)])
        if kind == "add_session":
            cmd = add_session(reg.id, slot(s.rng.randint(10, 60)), seller_id=reg.seller)
        elif kind == "duplicate":
            cmd = duplicate(reg.id, "s1", slot(s.rng.randint(10, 60)), seller_id=reg.seller)
        elif kind == "withdraw":
            cmd = withdraw(reg.id, ["s1"], seller_id=reg.seller)
        elif kind == "approve":
            cmd = approve(reg.id)
        else:
            s.accept(approve(reg.id))
            cmd = record_performance(reg.id, report_id=s.fresh("report"))
    n = s.rng.randint(3, N)

    def check(results: list[Json]) -> None:
        assert sorted(r["replayed"] for r in results) == [False] + [True] * (n - 1), results
        assert all(same(r) == same(results[0]) for r in results), results
        assert results[0]["events"], results

    return Group(f"copies of {kind}", [plan(cmd, "ok", at=at, copy=True)] * n, check)


def reused_id(s: Scene, campaign: str) -> Group:
    """One command_id, different bodies (on one registration): one runs, the rest conflict."""
    reg = s.register(campaign, [slot(0)])
    shared = new_command_id()
    bodies = [add_session(reg.id, slot(10 + 5 * i), seller_id=reg.seller)
              for i in range(s.rng.randint(1, 3))] + [approve(reg.id)]
    for body in bodies:
        body["command_id"] = shared

    def check(results: list[Json]) -> None:
        exactly(results, ok=1, conflict=len(bodies) - 1)
        assert all(r["replayed"] is False for r in results if r["ok"])
        assert all(r["error"]["details"] == {"command_id": shared, "reason": "command_id_reused"}
                   for r in results if not r["ok"])

    return Group("reused command_id", [plan(b, "ok", "conflict") for b in bodies], check)


def decisions(s: Scene, campaign: str, at: datetime) -> Group:
    """approve vs reject vs withdraw on the same sessions; some decided beforehand; with
    failed eligibility, an approval needs an override_reason."""
    low = s.rng.random() < 0.35
    windows = [slot(0), slot(2), slot(10), slot(20)][:s.rng.randint(2, 4)]
    reg = s.register(campaign, windows, low=low)
    override = "founder's shop, vetted by hand" if low else None
    starts = {f"s{i + 1}": datetime.fromisoformat(w["starts_at"]) for i, w in enumerate(windows)}
    ids = list(starts)
    for sid in ids:  # some sessions approved (or rejected) before the race
        roll = s.rng.random()
        if roll < 0.3:
            s.accept(approve(reg.id, [sid], override_reason=override))
        elif roll < 0.4:
            s.accept(reject(reg.id, [sid]))
    initial, v0 = s.statuses(reg), s.version(reg)
    plans = []
    for _ in range(s.rng.randint(4, 8)):
        verb = s.rng.choice(["approve", "reject", "withdraw"])
        targets = None if s.rng.random() < 0.25 else s.rng.sample(ids, s.rng.randint(1, 2))
        if verb == "approve":
            with_override = override is not None and s.rng.random() < 0.6
            cmd = approve(reg.id, targets, override_reason=override if with_override else None)
            allowed = (("ok", "invalid_transition") if with_override or not low
                       else ("override_required", "invalid_transition"))
        elif verb == "reject":
            cmd, allowed = reject(reg.id, targets), ("ok", "invalid_transition")
        else:
            cmd = withdraw(reg.id, targets, seller_id=reg.seller)
            allowed = ("ok", "invalid_transition")
        plans.append(plan(cmd, *allowed, at=at))

    def withdrawable(status: str, sid: str) -> bool:
        return status == "under_review" or (status == "approved" and at < starts[sid])

    def movable(verb: str, status: str, sid: str) -> bool:
        return withdrawable(status, sid) if verb == "withdraw" else status == "under_review"

    def check(results: list[Json]) -> None:
        accepted = sorted((r["version"], p) for p, r in zip(plans, results, strict=True)
                          if r["ok"])
        assert [v for v, _ in accepted] == list(range(v0 + 1, v0 + 1 + len(accepted)))
        model = dict(initial)
        for _, p in accepted:  # each accepted decision was legal when it was made
            verb, named = p.cmd["command"], p.cmd["payload"].get("session_ids")
            chosen = named or [sid for sid in ids if movable(verb, model[sid], sid)]
            assert chosen, (p, model)
            assert all(movable(verb, model[sid], sid) for sid in chosen), (p, model)
            for sid in chosen:
                model[sid] = {"approve": "approved", "reject": "rejected"}.get(verb, "withdrawn")
        final = s.statuses(reg)
        assert final == model
        for p, r in zip(plans, results, strict=True):  # each refusal is explained
            if r["ok"] or code(r) == "override_required":
                continue
            verb, named = p.cmd["command"], p.cmd["payload"].get("session_ids")
            if named:
                assert not all(movable(verb, final[sid], sid) for sid in named), (p, r, final)
            else:
                assert not any(movable(verb, final[sid], sid) for sid in ids), (p, r, final)

    return Group("decisions", plans, check)


def overlaps(s: Scene, campaign: str, at: datetime) -> Group:
    """Clusters of pairwise-overlapping sessions, added and duplicated at once: one of each."""
    reg = s.register(campaign, [slot(0)])
    base = 10 if at == NOW else 30
    clusters = [s.rng.randint(2, 4) for _ in range(s.rng.randint(1, 2))]
    plans = []
    for j, size in enumerate(clusters):
        for i in range(size):
            window = slot(base + 12 * j + 0.25 * i, 2)
            cmd = (add_session(reg.id, window, seller_id=reg.seller) if s.rng.random() < 0.5
                   else duplicate(reg.id, "s1", window, seller_id=reg.seller))
            plans.append(plan(cmd, "ok", "session_overlap", at=at))

    def check(results: list[Json]) -> None:
        start = 0
        for size in clusters:
            exactly(results[start:start + size], ok=1, session_overlap=size - 1)
            start += size
        assert list(s.statuses(reg).values()).count("under_review") == 1 + len(clusters)

    return Group("overlapping sessions", plans, check)


def capacity(s: Scene, campaign: str, at: datetime) -> Group:
    """More sessions than max_sessions, at once, none overlapping: exactly the room left."""
    held = s.rng.randint(1, 2)
    reg = s.register(campaign, [slot(0), slot(2)][:held])
    base = 10 if at == NOW else 30
    n = s.rng.randint(MAX_SESSIONS - held + 1, MAX_SESSIONS + 3)
    plans = [plan(add_session(reg.id, slot(base + 3 * i), seller_id=reg.seller)
                  if s.rng.random() < 0.7 else
                  duplicate(reg.id, "s1", slot(base + 3 * i), seller_id=reg.seller),
                  "ok", "too_many_sessions", at=at) for i in range(n)]

    def check(results: list[Json]) -> None:
        room = MAX_SESSIONS - held
        exactly(results, ok=room, too_many_sessions=n - room)
        assert len(s.statuses(reg)) == MAX_SESSIONS

    return Group("max_sessions", plans, check)


def versioned(s: Scene, campaign: str, at: datetime) -> Group:
    """Writers that all expect the same version: one wins, the others get `conflict`."""
    reg = s.register(campaign, [slot(0)])
    v0 = s.version(reg)
    base = 10 if at == NOW else 30
    plans = [plan(add_session(reg.id, slot(base + 3 * i), seller_id=reg.seller,
                              expected_version=v0), "ok", "conflict", at=at)
             for i in range(s.rng.randint(2, 4))]

    def check(results: list[Json]) -> None:
        exactly(results, ok=1, conflict=len(plans) - 1)
        assert all(r["error"]["details"] == {"expected_version": v0, "actual_version": v0 + 1}
                   for r in results if not r["ok"]), results

    return Group("expected_version", plans, check)


# Phase B: the campaign runs ------------------------------------------------------------------

def reports(s: Scene, campaign: str) -> Group:
    """Reports sharing a report_id (different command_ids) count once; a registration never
    approved takes none."""
    reg = s.register(campaign, [slot(0), slot(2)])
    s.accept(approve(reg.id, ["s1"]))
    never = s.register(campaign, [slot(0)])
    report_id = s.fresh("report")
    n = s.rng.randint(3, 6)
    plans = [plan(record_performance(reg.id, report_id=report_id), "ok", at=DECIDED_AT)
             for _ in range(n)]
    plans.append(plan(record_performance(never.id, report_id=report_id), "invalid_transition",
                      at=DECIDED_AT))

    def check(results: list[Json]) -> None:
        counted = sorted(tuple(r["events"]) for r in results[:n])
        assert counted == [()] * (n - 1) + [("PerformanceRecorded",)], results
        assert all(r["replayed"] is False for r in results[:n])
        assert s.ledger.registration(reg.id).reports == 1
        pair = (UUID(reg.id), report_id)
        assert s.ledger.app.store.reports_seen([pair]) == {pair}

    return Group("same report_id", plans, check)


# Phase C: the end, on clocks that disagree -----------------------------------------------------

END_CLOCKS = [ENDS, ENDS, ENDS, LATE, LATE, LATE, NOW, NOW]


def end_of_campaign(s: Scene) -> Group:
    """expire_campaign (several) vs register (a clock still in the registration window),
    add_session and withdraw (a clock just before the end) and approve (after it)."""
    campaign = s.campaign()
    open_regs = [s.register(campaign, [slot(0), slot(10)]) for _ in range(s.rng.randint(2, 3))]
    s.accept(approve(open_regs[0].id, ["s1"]))
    closed = s.register(campaign, [slot(0), slot(10)])
    s.accept(withdraw(closed.id, seller_id=closed.seller))  # nothing open: expiry skips it
    late = slot(70.5, 1)
    plans = [plan(expire_campaign(campaign, actor=s.rng.choice([OPERATOR, SYSTEM])),
                  "ok", "invalid_transition", at=ENDS) for _ in range(s.rng.randint(2, 3))]
    expiries = len(plans)
    for reg in [*open_regs, closed]:
        # Once the expiry (at ENDS) is stored on an open registration, a writer whose clock
        # is 2 h behind is refused (clock_behind); a closed one is never expired.
        plans.append(plan(add_session(reg.id, late, seller_id=reg.seller), "ok",
                          "campaign_ended", *(["clock_behind"] if reg is not closed else []),
                          at=LATE))
    for reg in open_regs:
        verb = s.rng.choice(["approve", "withdraw", "reject"])
        if verb == "withdraw":
            plans.append(plan(withdraw(reg.id, ["s2"], seller_id=reg.seller),
                              "ok", "invalid_transition", "clock_behind", at=LATE))
        else:
            cmd = approve(reg.id, ["s2"]) if verb == "approve" else reject(reg.id, ["s2"])
            plans.append(plan(cmd, "ok", "invalid_transition", at=ENDS))
    for _ in range(s.rng.randint(1, 2)):
        seller_id = s.fresh("seller")
        plans.append(plan(register(campaign, seller_id=seller_id, account_id=s.fresh("shop"),
                                   sessions=[slot(30)]), "ok", "registration_closed", at=NOW))

    def check(results: list[Json]) -> None:
        # Which registrations the expiry caught is for `check_invariants`: none may be open.
        exactly(results[:expiries], ok=1, invalid_transition=expiries - 1)
        assert s.ledger.campaign(campaign).expired_at is not None

    return Group("expiry vs writers", plans, check)


def end_of_auto_campaign(s: Scene) -> Group:
    """The same for an auto campaign: expiry vs late registrations and withdrawals."""
    campaign = s.campaign("auto")
    regs = []
    for low in (False, False, True):  # approved, approved, rejected by the system
        seller_id = s.fresh("seller")
        cmd = register_auto(campaign, seller_id=seller_id, account_id=s.fresh("shop"),
                            profile_=profile(1, 1) if low else profile())
        regs.append(Reg(str(s.accept(cmd)["aggregate_id"]), seller_id))
    plans = [plan(expire_campaign(campaign), "ok", "invalid_transition", at=ENDS)
             for _ in range(2)]
    plans.append(plan(withdraw(regs[0].id, seller_id=regs[0].seller, reason=None),
                      "ok", "invalid_transition", "clock_behind", at=NOW))
    plans.append(plan(withdraw(regs[2].id, seller_id=regs[2].seller, reason=None),
                      "invalid_transition", at=NOW))  # rejected: nothing to withdraw
    seller_id = s.fresh("seller")
    plans.append(plan(register_auto(campaign, seller_id=seller_id, account_id=s.fresh("shop")),
                      "ok", "registration_closed", at=NOW))

    def check(results: list[Json]) -> None:
        exactly(results[:2], ok=1, invalid_transition=1)
        assert s.ledger.campaign(campaign).expired_at is not None

    return Group("auto expiry vs writers", plans, check)


# Running a phase ------------------------------------------------------------------------------

def run_phase(racers: Racers, url: str, rng: random.Random, groups: list[Group],
              clocks: list[datetime], tally: Counter[tuple[str, str]],
              group_size: int = 0) -> list[Json]:
    """Deal the groups' commands to the workers (a group's commands to different workers,
    from a random one on; each worker's batch shuffled), race them (each worker sending
    in groups of `group_size` if set), check every result."""
    slots: list[list[tuple[int, int]]] = [[] for _ in range(N)]
    for g, group in enumerate(groups):
        by_clock: dict[datetime, list[int]] = defaultdict(list)
        for p, planned in enumerate(group.plans):
            by_clock[planned.at].append(p)
        for at, indexes in by_clock.items():
            workers = [w for w, clock in enumerate(clocks) if clock == at]
            first = rng.randrange(len(workers))
            for k, p in enumerate(indexes):
                slots[workers[(first + k) % len(workers)]].append((g, p))
    for batch in slots:
        rng.shuffle(batch)
    sent = [(clocks[w], [groups[g].plans[p].cmd for g, p in batch])
            for w, batch in enumerate(slots)]
    found: dict[tuple[int, int], Json] = {}
    for batch, results in zip(slots, racers.race_at(url, sent, group_size=group_size),
                              strict=True):
        found.update(zip(batch, results, strict=True))
    everything = []
    for g, group in enumerate(groups):
        results = [found[(g, p)] for p in range(len(group.plans))]
        for planned, result in zip(group.plans, results, strict=True):
            check_result(group.name, planned, result)
            tally[(planned.cmd["command"], code(result))] += 1
        group.check(results)
        everything.extend(results)
    return everything


def check_result(group: str, planned: Planned, result: Json) -> None:
    """Accepted, replayed (copies only) or refused with an allowed code, in DOMAIN.md's shape."""
    assert code(result) in planned.allowed, (group, planned.cmd, result)
    assert result["command_id"] == planned.cmd["command_id"], (group, result)
    if result["ok"]:
        assert set(result) == {*SAME, "replayed", "position"}, result
        assert result["replayed"] is False or planned.copy, (group, result)
    else:
        assert set(result) == {"ok", "command_id", "error"}, result
        assert set(result["error"]) == {"code", "message", "details"}, result
        assert "concurrent writers" not in result["error"]["message"], (group, result)


def play_round(racers: Racers, url: str, seed: int, round_no: int,
               tally: Counter[tuple[str, str]], group_size: int = 0) -> list[Json]:
    rng = random.Random(seed * 1000 + round_no)
    scene = Scene(url, rng, round_no)
    try:
        live, auto = scene.campaign(), scene.campaign("auto")
        # A mix of the phase's groups: the conflicts every round, the others at random.
        opening = [*same_account(scene, live, auto), copies(scene, live),
                   decisions(scene, live, NOW), overlaps(scene, live, NOW)]
        opening += [maker(scene, live, NOW) for maker in (capacity, versioned, decisions)
                    if rng.random() < 0.7]
        if rng.random() < 0.7:
            opening.append(reused_id(scene, live))
        running = [decisions(scene, live, DECIDED_AT), reports(scene, live),
                   overlaps(scene, live, DECIDED_AT), copies(scene, live, DECIDED_AT)]
        running += [maker(scene, live, DECIDED_AT) for maker in (capacity, decisions)
                    if rng.random() < 0.6]
        ending = [end_of_campaign(scene), end_of_auto_campaign(scene)]
        results = run_phase(racers, url, rng, opening, [NOW] * N, tally, group_size)
        results += run_phase(racers, url, rng, running, [DECIDED_AT] * N, tally, group_size)
        results += run_phase(racers, url, rng, ending, END_CLOCKS, tally, group_size)
        return results
    finally:
        scene.close()


# The tests ------------------------------------------------------------------------------------

def test_eight_writers_racing_conflicting_commands_break_no_invariant(
    new_url: NewUrl, racers: Racers
) -> None:
    url = new_url()
    tally: Counter[tuple[str, str]] = Counter()
    started = time.monotonic()
    results: list[Json] = []
    for round_no in range(ROUNDS):
        results += play_round(racers, url, SEED, round_no, tally)
    problems = check_invariants(url, results)
    assert problems == [], "\n".join(problems)
    # Contention happened: each rule that decides a race refused somebody (whether a
    # writer racing the expiry is refused depends on who commits first, so not asserted).
    refused = {c for (_, c), n in tally.items() if c != "ok" and n}
    assert refused >= {"already_registered", "conflict", "invalid_transition", "session_overlap",
                       "too_many_sessions"}, tally
    print(f"\n{len(results)} results in {time.monotonic() - started:.1f}s: "
          + ", ".join(f"{name} {c} x{n}" for (name, c), n in sorted(tally.items())))


@pytest.mark.parametrize("group_size", [2, 200])
def test_eight_writers_sending_groups_of_conflicting_commands_break_no_invariant(
    new_url: NewUrl, racers: Racers, group_size: int
) -> None:
    """The same rounds, each worker sending its batch with `send_many`: several commands
    per transaction, conflicting with the other workers' groups (issue 14)."""
    url = new_url()
    tally: Counter[tuple[str, str]] = Counter()
    results: list[Json] = []
    for round_no in range(GROUPED_ROUNDS):
        results += play_round(racers, url, SEED + group_size, round_no, tally, group_size)
    problems = check_invariants(url, results)
    assert problems == [], "\n".join(problems)
    refused = {c for (_, c), n in tally.items() if c != "ok" and n}
    assert refused >= {"already_registered", "conflict", "invalid_transition", "session_overlap",
                       "too_many_sessions"}, tally


# Minimal reproductions of what the suite found ---------------------------------------------------

class Interleave:
    """A fixed clock that lets another writer in. `Ledger.send` reads its clock once to
    decide (the events' time) and once more just before it writes (the command row's
    time); on the second reading this clock runs `then` once: another command that commits
    between this command's decision and its write, the window any racing writer has."""

    def __init__(self, at: datetime, then: Callable[[], Json]) -> None:
        self.at, self.then, self.reads = at, then, 0
        self.result: Json = {}

    def now(self) -> datetime:
        self.reads += 1
        if self.reads == 2:
            self.result = self.then()
        return self.at


def assert_invariants(url: str) -> None:
    problems = check_invariants(url)
    assert problems == [], "\n".join(problems)


def closed_registration(url: str, others: int = 0) -> str:
    """The default manual campaign, and a registration whose sessions were all withdrawn (so
    an expiry has nothing of it to expire), after `others` registrations closed alike."""
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert ledger.send(create_campaign())["ok"]
        for account in [f"shop-closed-{n}" for n in range(others)] + [ACCOUNT]:
            reg = str(ledger.send(register(account_id=account, sessions=[slot(0)]))
                      ["aggregate_id"])
            assert ledger.send(withdraw(reg))["ok"]
        return reg


def test_a_registration_written_just_after_its_campaign_expired_is_refused(backend: str) -> None:
    closed_registration(backend)
    with Ledger.open(backend, clock=FixedClock(ENDS), pool_size=1) as operator:
        clock = Interleave(NOW, lambda: operator.send(expire_campaign()))
        with Ledger.open(backend, clock=clock, pool_size=1) as seller_ledger:
            result = seller_ledger.send(register(account_id="shop-late"))
    assert clock.result["ok"], clock.result  # the expiry committed first
    assert_invariants(backend)
    assert code(result) == "registration_closed", result


def test_a_group_decided_before_its_campaign_expired_is_decided_again(backend: str) -> None:
    """Issue 14: the group read the campaign (prefetched, not expired) and decided both
    registrations; the expiry commits before the group writes. The group's guards fail
    and it is decided again on fresh state: both refused, nothing written."""
    closed_registration(backend)
    with Ledger.open(backend, clock=FixedClock(ENDS), pool_size=1) as operator:
        clock = Interleave(NOW, lambda: operator.send(expire_campaign()))
        with Ledger.open(backend, clock=clock, pool_size=1) as seller_ledger:
            results = seller_ledger.send_group([register(account_id="shop-late"),
                                                register(account_id="shop-later")])
            stats = seller_ledger.group_stats
    assert clock.result["ok"], clock.result  # the expiry committed first
    assert_invariants(backend)
    assert [code(r) for r in results] == ["registration_closed"] * 2, results
    assert (stats.retried, stats.committed) == (1, 1), stats


def test_a_group_that_read_its_campaign_before_it_expired_is_decided_again(
        backend: str) -> None:
    """A run asks the store once whether a campaign has expired: the first `add_session`
    reads "not expired", the expiry commits, the second command is decided on that answer.
    The guards both write fail at commit, and the run decided again (asking again) refuses
    both; nothing of either is written. Asked again, not remembered past the run: one
    retry, then the run commits (its refusals) in one go, not one command at a time."""
    reg = closed_registration(backend, others=1)
    other = str(registration_uuid(MANUAL, "shop-closed-0"))
    with Ledger.open(backend, clock=FixedClock(ENDS), pool_size=1) as operator:
        # The clock's second reading is the first command's row, after its check.
        clock = Interleave(LATE, lambda: operator.send(expire_campaign()))
        with Ledger.open(backend, clock=clock, pool_size=1) as seller_ledger:
            results = seller_ledger.send_group([add_session(reg, slot(70.5, 1)),
                                                add_session(other, slot(70.5, 1))])
            stats = seller_ledger.group_stats
    assert clock.result["ok"], clock.result  # the expiry committed between the two
    assert_invariants(backend)
    assert [code(r) for r in results] == ["campaign_ended"] * 2, results
    assert (stats.retried, stats.committed, stats.one_at_a_time) == (1, 1, 0), stats
    with Ledger.open(backend, clock=FixedClock(LATE), pool_size=1) as reader:
        for registration_id in (reg, other):
            assert len(reader.registration(registration_id).sessions) == 1  # withdrawn only


def test_a_session_written_just_after_its_campaign_expired_is_refused(backend: str) -> None:
    reg = closed_registration(backend)
    with Ledger.open(backend, clock=FixedClock(ENDS), pool_size=1) as operator:
        clock = Interleave(LATE, lambda: operator.send(expire_campaign()))
        with Ledger.open(backend, clock=clock, pool_size=1) as seller_ledger:
            result = seller_ledger.send(add_session(reg, slot(70.5, 1)))
    assert clock.result["ok"], clock.result  # the expiry committed first
    assert_invariants(backend)
    assert code(result) == "campaign_ended", result


@pytest.mark.parametrize("chunk", [500, 2])
def test_an_expiry_expires_a_registration_reopened_while_it_ran(
    backend: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with the skipped registrations checked a few at a time (the reopened one is in
    the last look-up)."""
    monkeypatch.setattr(store_rows, "GUARD_CHUNK", chunk)
    reg = closed_registration(backend, others=4)
    with Ledger.open(backend, clock=FixedClock(LATE), pool_size=1) as seller_ledger:
        clock = Interleave(ENDS, lambda: seller_ledger.send(add_session(reg, slot(70.5, 1))))
        with Ledger.open(backend, clock=clock, pool_size=1) as operator:
            result = operator.send(expire_campaign())
        assert clock.result["ok"], clock.result  # the session committed first
        assert result["ok"], result
        assert_invariants(backend)
        assert seller_ledger.registration(reg).status() == "expired"


# The checker can fail --------------------------------------------------------------------------

@dataclass
class Store:
    """A small store written by the ledger, and ways to write what the ledger never would."""

    url: str
    ledger: Ledger
    clock: FixedClock

    def send(self, cmd: Json, at: datetime = NOW) -> Json:
        self.clock.set(at)
        result = self.ledger.send(cmd)
        assert result["ok"], result
        return result

    def forge(self, aggregate: LedgerAggregate, event: type[LedgerEvent], *,
              actor: Json = REVIEWER, at: datetime = NOW, **fields: Any) -> None:
        """Record an event on the aggregate without its command's checks, and save it with a
        command row that matches, as `Ledger.send` would (so only the forged fact is wrong)."""
        command_id = new_command_id()
        aggregate.record(event, Cause(actor={"id": actor["id"], "role": actor["role"]},
                                      command_id=command_id, at=at), **fields)
        public_id = getattr(aggregate, "registration_id", None) or getattr(
            aggregate, "campaign_id", "")
        result = {"ok": True, "command_id": command_id, "aggregate_id": public_id,
                  "version": aggregate.version, "events": [event.__name__], "replayed": False}
        self.ledger.app.save(aggregate, plan=WritePlan(commands=(CommandRow(
            command_id=command_id, fingerprint="forged", aggregate_id=str(aggregate.id),
            version=aggregate.version, result=result, recorded_at=at),)))

    def execute(self, statement: str, params: tuple[Any, ...]) -> None:
        """Raw SQL on the store (`%s` placeholders)."""
        if self.url.startswith("sqlite:"):
            with closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as conn:
                conn.execute(statement.replace("%s", "?"), params)
                conn.commit()
            return
        parts = urlsplit(self.url)
        schema = parse_qs(parts.query)["schema"][0]
        with psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(statement.encode(), params)


def forge_overlap(store: Store, reg: str, campaign: str) -> None:
    store.forge(store.ledger.registration(reg), SessionAdded, actor=_seller(store, reg),
                session_id="s3", **_window(slot(0.5)))


def forge_too_many(store: Store, reg: str, campaign: str) -> None:
    for n in (3, 4, 5):  # max_sessions is 4
        store.forge(store.ledger.registration(reg), SessionAdded, actor=_seller(store, reg),
                    session_id=f"s{n}", **_window(slot(10 * n)))


def forge_transition(store: Store, reg: str, campaign: str) -> None:
    store.send(withdraw(reg, ["s1"]))
    store.forge(store.ledger.registration(reg), Approved, session_ids=["s1"], note=None,
                override_reason=None)


def forge_no_override(store: Store, reg: str, campaign: str) -> None:
    low = store.send(register(campaign, account_id="shop-low", profile_=profile(1, 1)))
    store.forge(store.ledger.registration(low["aggregate_id"]), Approved, session_ids=["s1"],
                note=None, override_reason=None)


def forge_report_twice(store: Store, reg: str, campaign: str) -> None:
    store.send(approve(reg))
    store.send(record_performance(reg, report_id="report-1"), at=DECIDED_AT)
    report = record_performance(reg, report_id="report-1")["payload"]
    fields = {k: v for k, v in report.items() if k != "registration_id"}
    fields.update(session_id=None, period_start=STARTS, period_end=STARTS + hours(2))
    fields.update(gmv=Decimal(fields["gmv"]), refunds=Decimal(fields["refunds"]))
    store.forge(store.ledger.registration(reg), PerformanceRecorded, actor=SYSTEM,
                at=DECIDED_AT, **fields)


def forge_expiry_skipping_an_open_registration(store: Store, reg: str, campaign: str) -> None:
    store.forge(store.ledger.campaign(campaign), CampaignExpired, actor=OPERATOR, at=ENDS)


def forge_events_without_command(store: Store, reg: str, campaign: str) -> None:
    aggregate = store.ledger.registration(reg)
    aggregate.record(Withdrawn, Cause(actor={"id": "seller-1", "role": "seller"},
                                      command_id="never-sent", at=NOW),
                     session_ids=["s2"], reason=None)
    store.ledger.app.save(aggregate)


def forge_time_going_back(store: Store, reg: str, campaign: str) -> None:
    # trigger_event, not record: the aggregate itself refuses an earlier time.
    aggregate = store.ledger.registration(reg)
    aggregate.trigger_event(Withdrawn, actor=_seller(store, reg), command_id="never-sent",
                            timestamp=NOW - hours(1), session_ids=["s2"], reason=None)
    store.ledger.app.save(aggregate)


def forge_a_deleted_hash(store: Store, reg: str, campaign: str) -> None:
    store.execute("DELETE FROM ledger_event_hashes WHERE originator_version = %s "
                  "AND originator_id = %s", (2, _db_id(store, reg)))


FORGERIES: dict[str, tuple[Callable[[Store, str, str], None], set[str]]] = {
    "overlapping session": (forge_overlap, {"overlap"}),
    "more sessions than max_sessions": (forge_too_many, {"max_sessions"}),
    "approval of a withdrawn session": (forge_transition, {"transition"}),
    "approval of failed criteria without override": (forge_no_override, {"override"}),
    "a report_id counted twice": (forge_report_twice, {"report"}),
    "an expiry that leaves a registration open": (
        forge_expiry_skipping_an_open_registration, {"expiry", "after expiry"}),
    "events without a stored command": (forge_events_without_command, {"command"}),
    "an event recorded before its previous version": (forge_time_going_back,
                                                      {"time", "command"}),
    "a hash row deleted": (forge_a_deleted_hash, {"chain"}),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_the_checker_finds_what_the_ledger_never_writes(backend: str, forgery: str) -> None:
    forge, kinds = FORGERIES[forgery]
    clock = FixedClock(NOW)
    with Ledger.open(backend, clock=clock, pool_size=1) as ledger:
        store = Store(backend, ledger, clock)
        store.send(create_campaign(max_sessions=MAX_SESSIONS))
        reg = str(store.send(register(sessions=[slot(0), slot(2)]))["aggregate_id"])
        assert_invariants(backend)
        forge(store, reg, "mega-1111-live")
    problems = check_invariants(backend)
    assert problems, f"the checker missed: {forgery}"
    assert {p.split(":")[0] for p in problems} == kinds, problems


def _seller(store: Store, reg: str) -> Json:
    return {"id": store.ledger.registration(reg).seller_id, "role": "seller"}


def _window(window: Json) -> dict[str, datetime]:
    return {k: datetime.fromisoformat(v) for k, v in window.items()}


def _db_id(store: Store, reg: str) -> Any:
    return UUID(reg).hex if store.url.startswith("sqlite:") else UUID(reg)
