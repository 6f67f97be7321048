"""Command histories for read-model tests: random valid ones (hypothesis) and a fixed season.

A history is a list of campaigns plus three phases of actions, each at its own time:
registration open (October), during the first LIVE period (November 11), and after every
period ended (January). An action picks its target by index among the registrations it
applies to by then (approve: one with a session under review; perform: one ever approved),
so most commands are accepted; the refusals left are part of real traffic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from ledger import FixedClock, Ledger
from ledger.aggregates.registration import Registration
from tests.support.helpers import (
    OPERATOR,
    Json,
    approve,
    auto_campaign_fields,
    campaign_fields,
    command,
    duplicate,
    expire_campaign,
    hours,
    iso,
    profile,
    record_performance,
    register,
    reject,
    seller,
    withdraw,
)

# LIVE periods: within a month, across a month end, across a year end.
PERIODS = (
    (datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 13, tzinfo=UTC)),
    (datetime(2026, 11, 28, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC)),
    (datetime(2026, 12, 30, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC)),
)
PHASES = (
    datetime(2026, 10, 5, 9, 30, tzinfo=UTC),  # registration open
    datetime(2026, 11, 11, 12, 0, tzinfo=UTC),  # the first period is under way
    datetime(2027, 1, 10, 8, 0, tzinfo=UTC),  # every period has ended
)
ACCOUNTS = 12
SELLERS = 3
CATEGORIES = ("fashion", "beauty", "fashion", "toys")  # toys: not allowed in manual ones


@dataclass(frozen=True)
class CampaignSpec:
    manual: bool
    period: int
    allow_duplicates: bool


Action = tuple[Any, ...]


@dataclass(frozen=True)
class History:
    campaigns: list[CampaignSpec]
    phases: list[list[Action]]


# Strategies ---------------------------------------------------------------------------------

def _money() -> st.SearchStrategy[str]:
    """Amounts of several scales, zero included (sums must not depend on paging)."""
    return st.one_of(st.sampled_from(["0", "0.00", "0.5", "10", "19.99", "125000.50"]),
                     st.decimals(0, 10**6, places=2).map(str))


_PICK = st.integers(0, 50)
_HOUR = st.integers(0, 200)
_ACTIONS = {
    "register": st.tuples(st.just("register"), _PICK, st.integers(0, ACCOUNTS - 1),
                          st.booleans(), st.sampled_from(CATEGORIES),
                          st.sampled_from(["standard", "star"]),
                          st.lists(_HOUR, min_size=1, max_size=3)),
    "add_session": st.tuples(st.just("add_session"), _PICK, _HOUR),
    "duplicate": st.tuples(st.just("duplicate"), _PICK, _PICK, _HOUR),
    "approve": st.tuples(st.just("approve"), _PICK, st.booleans()),
    "reject": st.tuples(st.just("reject"), _PICK, st.booleans()),
    "withdraw": st.tuples(st.just("withdraw"), _PICK, st.booleans()),
    "perform": st.tuples(st.just("perform"), _PICK, st.integers(0, 3),
                         st.sampled_from(["THB", "USD"]), _HOUR, _money(), _money(),
                         st.integers(0, 500)),
    "expire": st.tuples(st.just("expire"), _PICK),
}


def _phase(weights: dict[str, int], min_size: int, max_size: int) -> st.SearchStrategy[
        list[Action]]:
    kinds = [kind for kind, weight in weights.items() for _ in range(weight)]
    return st.lists(st.sampled_from(kinds).flatmap(_ACTIONS.__getitem__),
                    min_size=min_size, max_size=max_size)


def histories() -> st.SearchStrategy[History]:
    campaign = st.builds(CampaignSpec, st.booleans(), st.integers(0, len(PERIODS) - 1),
                         st.booleans())
    phases = st.tuples(
        _phase({"register": 4, "add_session": 1, "duplicate": 1, "approve": 2, "reject": 1,
                "withdraw": 1}, 6, 30),
        _phase({"approve": 1, "reject": 1, "withdraw": 1, "duplicate": 1, "perform": 2}, 0, 8),
        _phase({"perform": 4, "approve": 1, "expire": 1}, 2, 16),
    ).map(list)
    return st.builds(History, st.lists(campaign, min_size=1, max_size=3), phases)


# Playing a history ----------------------------------------------------------------------------

@dataclass
class Player:
    """Turns actions into commands against what exists now, and sends them."""

    ledger: Ledger
    clock: FixedClock
    campaigns: list[tuple[str, CampaignSpec]] = field(default_factory=list)
    registrations: dict[str, tuple[Registration, CampaignSpec]] = field(default_factory=dict)
    sent: int = 0
    accepted: int = 0

    def play(self, history: History) -> None:
        self.clock.set(PHASES[0])
        for spec in history.campaigns:
            self.create(spec)
        for moment, phase in zip(PHASES, history.phases, strict=True):
            for step, action in enumerate(phase):
                self.clock.set(moment + timedelta(minutes=step))
                self.act(*action)

    def send(self, cmd: Json) -> Json:
        result = self.ledger.send(cmd)
        self.sent += 1
        self.accepted += bool(result["ok"])
        if result["ok"]:
            everything = cmd["command"] == "expire_campaign"
            self.reload(list(self.registrations) if everything else [result["aggregate_id"]])
        return result

    def reload(self, reg_ids: list[str]) -> None:
        for reg_id in reg_ids:
            if reg_id in self.registrations:
                spec = self.registrations[reg_id][1]
                self.registrations[reg_id] = (self.ledger.registration(reg_id), spec)

    def create(self, spec: CampaignSpec) -> None:
        campaign_id = f"c{len(self.campaigns)}"
        fields = campaign_fields(campaign_id) if spec.manual else auto_campaign_fields(
            campaign_id)
        starts_at, ends_at = PERIODS[spec.period]
        fields.update(starts_at=iso(starts_at), ends_at=iso(ends_at),
                      allow_duplicates=spec.allow_duplicates and spec.manual)
        self.send(command("create_campaign", OPERATOR, fields))
        self.campaigns.append((campaign_id, spec))

    def act(self, kind: str, pick: int, *args: Any) -> None:
        if kind == "register":
            self.register(pick, *args)
        elif kind == "expire":
            self.send(expire_campaign(self.campaigns[pick % len(self.campaigns)][0]))
        elif candidates := [r for r in self.registrations.values() if self.applies(kind, *r)]:
            reg, spec = candidates[pick % len(candidates)]
            self.on_registration(kind, reg, spec, *args)

    def applies(self, kind: str, reg: Registration, spec: CampaignSpec) -> bool:
        now = self.clock.now()
        statuses = {s.status for s in reg.sessions.values()}
        if kind in ("add_session", "duplicate"):
            return spec.manual and not reg.expired
        if kind in ("approve", "reject"):
            return "under_review" in statuses
        if kind == "withdraw":
            return "under_review" in statuses or any(
                s.status == "approved" and now < s.starts_at for s in reg.sessions.values()) or (
                reg.decision == "approved" and now < PERIODS[spec.period][0])
        return reg.ever_approved  # perform

    def register(self, pick: int, account: int, eligible: bool, category: str, level: str,
                 starts: list[int]) -> None:
        campaign_id, spec = self.campaigns[pick % len(self.campaigns)]
        sessions = [w for h in starts if (w := self.window(spec, h))] if spec.manual else []
        result = self.send(register(
            campaign_id, seller_id=f"seller-{account % SELLERS}", account_id=f"shop-{account}",
            main_category=category, level=level if spec.manual else None, sessions=sessions,
            profile_=profile() if eligible else profile(1, 1)))
        if result["ok"]:
            reg_id = result["aggregate_id"]
            self.registrations[reg_id] = (self.ledger.registration(reg_id), spec)

    def on_registration(self, kind: str, reg: Registration, spec: CampaignSpec,
                        *args: Any) -> None:
        reg_id, sessions = reg.registration_id, list(reg.sessions)
        some = sessions[: 1 + len(sessions) // 2] if args and args[0] is True else None
        if kind == "add_session" and (window := self.window(spec, args[0])):
            self.send(command("add_session", seller(reg.seller_id),
                              {"registration_id": reg_id, **window}))
        elif kind == "duplicate" and sessions and (window := self.window(spec, args[1])):
            source = sessions[args[0] % len(sessions)]
            self.send(duplicate(reg_id, source, window, seller_id=reg.seller_id))
        elif kind == "approve":
            self.send(approve(reg_id, some, note="looks good", override_reason=None
                              if not reg.failed_criteria else "strong sales history"))
        elif kind == "reject":
            self.send(reject(reg_id, some, reasons=["policy_violation", "incomplete_info"]))
        elif kind == "withdraw":
            self.send(withdraw(reg_id, None, seller_id=reg.seller_id))
        elif kind == "perform":
            self.perform(reg_id, spec, *args)

    def perform(self, reg_id: str, spec: CampaignSpec, report: int, currency: str, hour: int,
                gmv: str, refunds: str, orders: int) -> None:
        starts_at, ends_at = PERIODS[spec.period]
        span = int((min(ends_at, self.clock.now()) - starts_at) / hours(1))
        if span < 1:
            return
        start = starts_at + hours(hour % span)
        self.send(record_performance(
            reg_id, report_id=f"r{report}", period=(start, start + hours(1)), currency=currency,
            gmv=gmv, refunds=refunds, orders=orders, items_sold=orders * 2, buyers=orders // 2,
            views=orders * 40))

    def window(self, spec: CampaignSpec, hour: int) -> Json | None:
        """A one-hour session in the period, after now (None when none is left)."""
        starts_at, ends_at = PERIODS[spec.period]
        earliest = max(0, int((self.clock.now() - starts_at) / hours(1)) + 1)
        span = int((ends_at - starts_at) / hours(1)) - earliest
        if span < 1:
            return None
        begin = starts_at + hours(earliest + hour % span)
        return {"starts_at": iso(begin), "ends_at": iso(begin + hours(1))}


def season(ledger: Ledger, clock: FixedClock, registrations: int = 36, seed: int = 7) -> Player:
    """A fixed, busy history (a few hundred events): every command kind, most accepted."""
    rng = random.Random(seed)
    specs = [CampaignSpec(True, 0, True), CampaignSpec(False, 1, False),
             CampaignSpec(True, 2, True)]
    phases: list[list[Action]] = [[], [], []]
    for n in range(registrations):
        phases[0].append(("register", n, n, n % 5 != 0, "fashion", "standard",
                          [rng.randrange(200), rng.randrange(200)]))
        phases[0].append(("add_session", n, rng.randrange(200)))
    for n in range(registrations):
        phases[0].append((rng.choice(["approve", "approve", "reject", "withdraw"]), n,
                          rng.random() < 0.5))
        phases[0].append(("duplicate", n, rng.randrange(3), rng.randrange(200)))
        phases[1].append(("approve", n, False))
        for report in range(2):
            phases[2].append(("perform", n, report, rng.choice(["THB", "USD"]),
                              rng.randrange(200), f"{rng.randrange(10**6)}.{rng.randrange(100)}",
                              rng.choice(["0", "0.00", "12.5"]), rng.randrange(300)))
    phases[2].extend([("expire", 0), ("expire", 1), ("expire", 2)])
    player = Player(ledger, clock)
    player.play(History(specs, phases))
    return player


@contextmanager
def seasoned(url: str, registrations: int = 36) -> Iterator[Ledger]:
    """A Ledger on `url` holding `season`'s history (written on the season's clock)."""
    clock = FixedClock(PHASES[0])
    with Ledger.open(url, clock=clock, pool_size=1) as ledger:
        season(ledger, clock, registrations=registrations)
        yield ledger
