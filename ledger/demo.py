"""`ledger demo`: a scripted season of campaigns, sent through the public command API."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from ledger.clock import FixedClock
from ledger.errors import Conflict
from ledger.ledger import Ledger
from ledger.projections.campaign_performance import campaign_performance_report
from ledger.projections.manage import manage_page
from ledger.projections.ytd import ytd_report
from ledger.shapes import table
from ledger.store.reset import clear, stored_events
from ledger.store.urls import check_reachable, parse_url

DEMO_URL = "sqlite:///ledger-demo.db"  # the demo's own store, never ./ledger.db
BKK = timezone(timedelta(hours=7))
CATEGORIES = ["fashion", "beauty", "electronics", "home", "food"]
OPS = {"id": "ops-mai", "role": "operator"}
REVIEWERS = [{"id": "rev-anan", "role": "reviewer"}, {"id": "rev-ploy", "role": "reviewer"}]
PERF = {"id": "perf-pipeline", "role": "system"}


@dataclass(frozen=True)
class Plan:
    """One demo campaign: its kind, review mode, days and rules."""
    campaign_id: str
    name: str
    kind: str
    review_mode: str
    day: datetime  # the campaign's first day, 00:00 Bangkok
    days: int
    allow_duplicates: bool
    categories: list[str]


SEASON = [
    Plan("33-mega-live", "3.3 Mega LIVE", "live", "manual", datetime(2026, 3, 3, tzinfo=BKK), 2,
         True, ["fashion", "beauty"]),
    Plan("66-mid-year-video", "6.6 Mid-Year Short Video", "short_video", "auto",
         datetime(2026, 6, 6, tzinfo=BKK), 3, False, []),
    Plan("99-super-shopping", "9.9 Super Shopping LIVE", "live", "manual",
         datetime(2026, 9, 9, tzinfo=BKK), 2, False, ["electronics", "home", "fashion"]),
    Plan("1111-mega-live", "11.11 Mega LIVE", "live", "manual",
         datetime(2026, 11, 10, tzinfo=BKK), 3, True, []),
    Plan("1212-birthday-sale", "12.12 Birthday Sale", "live", "auto",
         datetime(2026, 12, 12, tzinfo=BKK), 2, False, ["fashion", "beauty", "food"]),
]


@dataclass
class Seller:
    """A demo seller and its account."""
    seller_id: str
    account_id: str
    category: str
    account_level: int
    livestream_level: int


@dataclass
class Season:
    """Drives the ledger through the season and counts what happened."""

    ledger: Ledger
    clock: FixedClock
    rng: random.Random
    sellers: list[Seller]
    outcomes: Counter[str] = field(default_factory=Counter)
    seq: int = 0

    def at(self, when: datetime) -> None:
        self.clock.set(when)

    def send(self, name: str, actor: dict[str, str], payload: dict[str, Any],
             command_id: str | None = None) -> dict[str, Any]:
        self.seq += 1
        result = self.ledger.send({"command": name, "command_id": command_id or f"demo-{self.seq}",
                                   "actor": actor, "payload": payload})
        if result["ok"]:
            self.outcomes["replayed" if result["replayed"] else "accepted"] += 1
        else:
            self.outcomes[f"refused: {result['error']['code']}"] += 1
        return result


def iso(when: datetime) -> str:
    """The instant as ISO-8601 text, as commands carry it."""
    return when.isoformat()


def make_sellers(rng: random.Random, count: int = 36) -> list[Seller]:
    """`count` sellers with random categories and levels."""
    sellers = []
    for n in range(1, count + 1):
        sellers.append(Seller(f"seller-{n:02d}", f"shop-{n:02d}", rng.choice(CATEGORIES),
                              rng.randint(1, 5), rng.randint(0, 5)))
    return sellers


def create(season: Season, plan: Plan) -> None:
    """Create the plan's campaign before its registration opens."""
    opens = plan.day - timedelta(days=30)
    season.at(opens - timedelta(days=2))
    payload: dict[str, Any] = {
        "campaign_id": plan.campaign_id, "name": plan.name, "kind": plan.kind,
        "review_mode": plan.review_mode, "registration_opens_at": iso(opens),
        "registration_closes_at": iso(plan.day - timedelta(days=3)),
        "starts_at": iso(plan.day), "ends_at": iso(plan.day + timedelta(days=plan.days)),
        "requirements": {"min_account_level": 2, "min_livestream_level": 1,
                         "categories": plan.categories},
        "allow_duplicates": plan.allow_duplicates, "max_sessions": 4,
    }
    if plan.review_mode == "manual":
        payload["levels"] = [
            {"code": "gold", "name": "Gold stage", "benefits": ["homepage banner"],
             "min_livestream_level": 3},
            {"code": "standard", "name": "Standard", "benefits": ["campaign tag"]},
        ]
    season.send("create_campaign", OPS, payload)
    season.at(opens + timedelta(days=1))


def slot(plan: Plan, index: int) -> tuple[datetime, datetime]:
    """Two-hour LIVE slots from 10:00 to 22:00 on each campaign day."""
    day, hour = divmod(index, 6)
    start = plan.day + timedelta(days=day % plan.days, hours=10 + 2 * hour)
    return start, start + timedelta(hours=2)


def register_all(season: Season, plan: Plan) -> dict[str, Seller]:
    """Register most sellers; the registrations made, by id, with their seller."""
    registered: dict[str, Seller] = {}
    for n, seller in enumerate(season.rng.sample(season.sellers, k=24)):
        if plan.categories and seller.category not in plan.categories and n % 4:
            continue  # most sellers outside the allowed categories do not apply
        payload: dict[str, Any] = {
            "campaign_id": plan.campaign_id, "seller_id": seller.seller_id,
            "account_id": seller.account_id, "main_category": seller.category,
            "profile": {"account_level": seller.account_level,
                        "livestream_level": seller.livestream_level},
        }
        if plan.review_mode == "manual":
            payload["level"] = "gold" if seller.livestream_level >= 2 else "standard"
            payload["sessions"] = [dict(zip(("starts_at", "ends_at"),
                                            map(iso, slot(plan, n * 2)), strict=True))]
        seller_actor = {"id": seller.seller_id, "role": "seller"}
        result = season.send("register", seller_actor, payload)
        if result["ok"]:
            registered[result["aggregate_id"]] = seller
            if n == 0:  # a client retry of the same command: replayed, nothing written
                season.send("register", seller_actor, payload, command_id=result["command_id"])
    return registered


def review(season: Season, plan: Plan, registered: dict[str, Seller]) -> None:
    """Add sessions, then approve, reject and withdraw some, as reviewers and sellers do."""
    for n, (reg_id, seller) in enumerate(registered.items()):
        actor = {"id": seller.seller_id, "role": "seller"}
        if n % 5 == 1:  # a second session, and an overlapping one that is refused
            start, end = slot(plan, n * 2 + 1)
            season.send("add_session", actor, {"registration_id": reg_id,
                                               "starts_at": iso(start), "ends_at": iso(end)})
            season.send("add_session", actor, {
                "registration_id": reg_id, "starts_at": iso(start + timedelta(minutes=30)),
                "ends_at": iso(end + timedelta(minutes=30))})
        if n % 7 == 3:
            season.send("withdraw", actor, {"registration_id": reg_id,
                                            "reason": "stock not ready"})
            continue
        reviewer = REVIEWERS[n % 2]
        state = season.ledger.registration(reg_id)
        if state.failed_criteria:
            if n % 4 == 0:
                season.send("approve", reviewer, {
                    "registration_id": reg_id, "note": "strong sales history",
                    "override_reason": "top seller in category last quarter"})
            else:
                season.send("reject", reviewer, {"registration_id": reg_id,
                                                 "reasons": ["criteria_not_met"]})
        elif n % 6 == 5:
            season.send("reject", reviewer, {"registration_id": reg_id,
                                             "reasons": ["capacity_full"], "note": "slots full"})
        else:
            season.send("approve", reviewer, {"registration_id": reg_id})


def duplicates(season: Season, plan: Plan, registered: dict[str, Seller]) -> None:
    """Duplicate some approved sessions after registration closed."""
    season.at(plan.day - timedelta(days=2))  # registration closed; duplicates still allowed
    for n, (reg_id, seller) in enumerate(list(registered.items())[:8]):
        state = season.ledger.registration(reg_id)
        approved = [s for s in state.sessions.values() if s.status == "approved"]
        if not approved:
            continue
        shift = timedelta(days=1 if approved[0].ends_at + timedelta(days=1) <= plan.day
                          + timedelta(days=plan.days) else -1)
        start, end = approved[0].starts_at + shift, approved[0].ends_at + shift
        result = season.send("duplicate", {"id": seller.seller_id, "role": "seller"}, {
            "registration_id": reg_id, "session_id": approved[0].session_id,
            "starts_at": iso(start), "ends_at": iso(end)})
        if result["ok"] and n % 2 == 0:
            season.send("approve", REVIEWERS[0], {"registration_id": reg_id, "override_reason":
                        "duplicate of an approved session" if state.failed_criteria else None})


def perform(season: Season, plan: Plan, registered: dict[str, Seller]) -> None:
    """Record performance reports after the campaign ends."""
    end = plan.day + timedelta(days=plan.days)
    season.at(end + timedelta(hours=1))
    for reg_id in registered:
        state = season.ledger.registration(reg_id)
        if state.is_manual:
            windows: list[tuple[str | None, datetime, datetime]] = [
                (s.session_id, s.starts_at, s.ends_at) for s in state.sessions.values()
                       if s.status == "approved"]
        elif state.decision == "approved":
            windows = [(None, plan.day + timedelta(days=d), plan.day + timedelta(days=d + 1))
                       for d in range(plan.days)]
        else:
            windows = []
        for session_id, start, stop in windows:
            gmv = Decimal(season.rng.randint(5_000, 900_000)) / 100
            season.send("record_performance", PERF, {
                "registration_id": reg_id, "report_id": f"{reg_id[:8]}-{start:%Y%m%d%H}",
                "session_id": session_id, "period_start": iso(start), "period_end": iso(stop),
                "currency": "THB", "gmv": str(gmv), "orders": season.rng.randint(5, 400),
                "items_sold": season.rng.randint(5, 600), "buyers": season.rng.randint(5, 350),
                "views": season.rng.randint(1_000, 90_000),
                "refunds": str((gmv * Decimal("0.03")).quantize(Decimal("0.01")))})


def run_campaign(season: Season, plan: Plan) -> None:
    """One campaign from creation to its performance reports."""
    create(season, plan)
    registered = register_all(season, plan)
    if plan.review_mode == "manual":
        season.at(season.clock.now() + timedelta(days=2, hours=5))  # reviewers take a while
        review(season, plan, registered)
        if plan.allow_duplicates:
            duplicates(season, plan, registered)
    else:
        season.at(plan.day - timedelta(days=5))
        for reg_id, seller in list(registered.items())[:2]:
            season.send("withdraw", {"id": seller.seller_id, "role": "seller"},
                        {"registration_id": reg_id, "reason": "changed plans"})
    perform(season, plan, registered)
    season.send("expire_campaign", OPS, {"campaign_id": plan.campaign_id})


def summarise(season: Season, echo: Callable[[str], None]) -> dict[str, Any]:
    """Print the season's table, and return it as data (`ledger demo --json`)."""
    ledger = season.ledger
    echo("")
    echo(f"{'campaign':<26} {'mode':<7} {'regs':>4}  {'status of registrations':<44} "
         f"{'GMV (THB)':>13}")
    campaigns = [campaign_summary(ledger, plan) for plan in SEASON]
    for row in campaigns:
        text = ", ".join(f"{k} {v}" for k, v in row["statuses"].items())
        echo(f"{row['name']:<26} {row['review_mode']:<7} {row['registrations']:>4}  "
             f"{text:<44} {row['gmv']:>13,.2f}")
    echo("")
    echo("commands: " + ", ".join(f"{k} {v}" for k, v in sorted(season.outcomes.items())))
    head = ledger.app.recorder.max_notification_id() or 0
    echo(f"events stored: {head}")
    show_read_models(ledger, echo)
    echo("")
    db = f"ledger --db {ledger.url}"
    echo(f"next: {db} manage --seller seller-07   |   {db} decisions --overrides   |   "
         f"{db} events 1111-mega-live")
    return {"events": head, "commands": dict(sorted(season.outcomes.items())),
            "campaigns": campaigns}


def campaign_summary(ledger: Ledger, plan: Plan) -> dict[str, Any]:
    """One campaign of the season: its registrations by status, and the GMV reported."""
    statuses: Counter[str] = Counter()
    gmv = Decimal(0)
    for reg_id in ledger.app.store.registrations_of(plan.campaign_id):
        statuses[ledger.registration(reg_id).status()] += 1
        gmv += sum((e.gmv for e in ledger.events_of(reg_id)
                    if type(e).__name__ == "PerformanceRecorded"), Decimal(0))
    return {"campaign_id": plan.campaign_id, "name": plan.name,
            "review_mode": plan.review_mode, "registrations": sum(statuses.values()),
            "statuses": dict(sorted(statuses.items())), "gmv": gmv}


def show_read_models(ledger: Ledger, echo: Callable[[str], None]) -> None:
    """The seller's Manage Campaign page, YTD and a campaign's performance, as read models."""
    p = ledger.projector()
    done = p.rebuild()
    echo(f"read models rebuilt from {done} events: {', '.join(m.name for m in p.models)}")
    seller, money = "seller-07", ["currency", "gmv", "refunds", "orders", "buyers", "reports"]
    rows = manage_page(p.view, seller, ledger.clock.now())
    for row in rows:
        row["sessions"] = [f"{s['session_id']}:{s['status']}" for s in row["sessions"]]
    echo(f"\nManage Campaign, {seller}:")
    echo(table(rows, ["campaign_name", "account_id", "status", "sessions", "last_decision"]))
    ytd = ytd_report(p.view, seller, 2026)
    echo(f"\nYTD 2026, {seller} ({ytd['campaigns_joined']} campaigns joined):")
    echo(table(ytd["months"], ["month", *money]))
    report = campaign_performance_report(p.view, "1111-mega-live")
    approval = report["approval"]
    echo(f"\n11.11 Mega LIVE: {report['registrations']['total']} registrations, approval rate "
         f"{approval['approval_rate']}, per day:")
    echo(table(report["days"], ["day", *money]))


def run_demo(url: str, *, reset: bool, own: bool, echo: Callable[[str], None],
             read_url: str | None = None) -> dict[str, Any]:
    """Run the season into `url` and return its summary. A store that holds events is
    refused unless `reset`; the demo's `own` default file is the demo's to replace, and it
    says so."""
    store = parse_url(url)
    check_reachable(store)
    held = stored_events(store)
    if held and not (reset or own):
        raise Conflict(f"{store.display} already holds {held:,} events: the demo writes only "
                       "into an empty store; add --reset to delete them first, or choose "
                       "another --db", {"store": store.display, "events": held})
    if held:
        clear(store)
        why = "from an earlier demo" if own else "--reset"
        echo(f"cleared {store.display}: {held:,} events deleted ({why})")
    echo(f"store: {store.display}")
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    with Ledger.open(url, clock=clock, read_url=read_url) as ledger:
        rng = random.Random(1111)
        season = Season(ledger, clock, rng, make_sellers(rng))
        for plan in SEASON:
            echo(f"{plan.day:%d %b %Y}  {plan.name} ({plan.kind}, {plan.review_mode} review)")
            run_campaign(season, plan)
        summary = summarise(season, echo)
    echo(f"look at it: ledger --db {store.display} campaigns")
    return {"store": store.display, **summary}
