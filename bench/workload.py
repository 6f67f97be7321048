"""The benchmarks' workload: a season's commands as ledger commands and as the bare
library's calls (`Op`, `Seller`, `plan_mix`), the service's per-client command streams
(`Plan`), and fresh stores to run them in (`SQLiteBackend`, `PostgresBackend`).

Imported by the scripts as `workload` (their folder is on the path); it imports nothing of
them, so no benchmark script imports another.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Protocol
from uuid import UUID

import psycopg
from common import (
    AFTER_CAMPAIGN,
    CAMPAIGN_STARTS,
    CATEGORIES,
    FEED,
    IN_WINDOW,
    REVIEWER,
    campaign_command,
    campaign_fields,
    command,
    iso,
)
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.aggregates.base import Cause, campaign_uuid, registration_uuid
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.store.application import LedgerApplication
from ledger.store.tokens import TokenActor
from ledger.store.urls import parse_url

ENDED_CAMPAIGN = "bench-ended"  # the dates below: over by now, reports are due

# Scenario ----------------------------------------------------------------------------------

BareStep = Callable[[LedgerApplication, Cause], None]


@dataclass(frozen=True)
class Op:
    """One domain operation: as a ledger command, and as the bare library calls."""

    command: dict[str, Any]
    bare: BareStep

    def cause(self, at: datetime) -> Cause:
        actor = self.command["actor"]
        return Cause(actor={"id": actor["id"], "role": actor["role"]},
                     command_id=self.command["command_id"], at=at)


@dataclass(frozen=True)
class Phase:
    name: str
    at: datetime
    ops: list[Op]


# The bare loop: load, decide, save -- nothing else.

def bare_create(app: LedgerApplication, by: Cause, *, fields: dict[str, Any]) -> None:
    app.save(Campaign.create(by, **fields))


def bare_register(app: LedgerApplication, by: Cause, *, campaign_id: str,
                  fields: dict[str, Any]) -> None:
    campaign: Campaign = app.repository.get(campaign_uuid(campaign_id))
    app.save(Registration.register(campaign, **fields, by=by))


def bare_update(app: LedgerApplication, by: Cause, *, reg_id: UUID,
                decide: Callable[..., object]) -> None:
    reg: Registration = app.repository.get(reg_id)
    decide(reg, by=by)
    app.save(reg)


def on_registration(reg_id: UUID, method: Callable[..., object], **kwargs: Any) -> BareStep:
    return partial(bare_update, reg_id=reg_id, decide=partial(method, **kwargs))


# The operations, built once for both sides.

def create_campaign_op(campaign_id: str) -> Op:
    fields = campaign_fields(campaign_id)
    return Op(campaign_command(campaign_id), partial(bare_create, fields=fields))


@dataclass(frozen=True)
class Seller:
    """One seller account of the mix, and the facts its commands are built from."""

    index: int
    campaign_id: str
    prefix: str = "seller"

    @property
    def actor(self) -> dict[str, str]:
        return {"id": f"{self.prefix}-{self.index}", "role": "seller"}

    @property
    def account_id(self) -> str:
        return f"{self.prefix}-acct-{self.index}"

    @property
    def reg_id(self) -> UUID:
        return registration_uuid(self.campaign_id, self.account_id)

    @property
    def fails_criteria(self) -> bool:
        """Every 7th asks for the gold level without the livestream level for it."""
        return self.index % 7 == 3

    def session(self, number: int) -> tuple[datetime, datetime]:
        starts_at = CAMPAIGN_STARTS + timedelta(hours=10 + 3 * number)
        return starts_at, starts_at + timedelta(hours=1)

    def register(self) -> Op:
        starts_at, ends_at = self.session(1)
        fields: dict[str, Any] = {
            "seller_id": self.actor["id"], "account_id": self.account_id,
            "main_category": CATEGORIES[self.index % len(CATEGORIES)],
            "level": "gold" if self.fails_criteria else "standard",
            "profile": {"account_level": 3, "livestream_level": 2},
        }
        payload = {**fields, "campaign_id": self.campaign_id,
                   "sessions": [{"starts_at": iso(starts_at), "ends_at": iso(ends_at)}]}
        return Op(command("register", f"{self.prefix}-register-{self.index}", self.actor, payload),
                  partial(bare_register, campaign_id=self.campaign_id,
                          fields={**fields, "sessions": [(starts_at, ends_at)]}))

    def add_session(self) -> Op:
        starts_at, ends_at = self.session(2)
        payload = {"registration_id": str(self.reg_id), "starts_at": iso(starts_at),
                   "ends_at": iso(ends_at)}
        return Op(command("add_session", f"{self.prefix}-add-{self.index}", self.actor, payload),
                  on_registration(self.reg_id, Registration.add_sessions,
                                  sessions=[(starts_at, ends_at)]))

    def approve(self) -> Op:
        override = "strong sales history" if self.fails_criteria else None
        payload = {"registration_id": str(self.reg_id), "note": "looks good",
                   **({"override_reason": override} if override else {})}
        return Op(command("approve", f"{self.prefix}-approve-{self.index}", REVIEWER, payload),
                  on_registration(self.reg_id, Registration.approve, session_ids=None,
                                  note="looks good", override_reason=override))

    def withdraw(self) -> Op:
        payload = {"registration_id": str(self.reg_id), "session_ids": ["s2"],
                   "reason": "schedule clash"}
        return Op(command("withdraw", f"{self.prefix}-withdraw-{self.index}", self.actor, payload),
                  on_registration(self.reg_id, Registration.withdraw, session_ids=["s2"],
                                  reason="schedule clash"))

    def report_fields(self, number: int) -> dict[str, Any]:
        starts_at, ends_at = self.session(1)
        return {
            "report_id": f"{self.prefix}-report-{self.index}-{number}", "session_id": "s1",
            "period_start": starts_at, "period_end": ends_at, "currency": "USD",
            "gmv": Decimal("1250.50") + number, "orders": 40 + number, "items_sold": 52,
            "buyers": 37, "views": 12_000, "refunds": Decimal("25.00"),
        }

    def report(self, number: int) -> Op:
        report = self.report_fields(number)
        payload = {"registration_id": str(self.reg_id),
                   **{k: iso(v) if isinstance(v, datetime) else str(v)
                      if isinstance(v, Decimal) else v for k, v in report.items()}}
        return Op(command("record_performance", report["report_id"], FEED, payload),
                  on_registration(self.reg_id, Registration.record_performance, report=report))


def campaign_ids(count: int) -> list[str]:
    return [f"bench-live-{k + 1}" for k in range(count)]


def plan_mix(sellers: int, campaigns: int, reports: int, withdraw_every: int) -> list[Phase]:
    """Setup, then the measured phases, in clock order."""
    ids = campaign_ids(campaigns)
    people = [Seller(i, ids[i % campaigns]) for i in range(sellers)]
    return [
        Phase("setup", IN_WINDOW, [create_campaign_op(c) for c in ids]),
        Phase("register", IN_WINDOW, [s.register() for s in people]),
        Phase("add_session", IN_WINDOW, [s.add_session() for s in people]),
        Phase("approve", IN_WINDOW, [s.approve() for s in people]),
        Phase("withdraw", IN_WINDOW,
              [s.withdraw() for s in people if s.index % withdraw_every == 0]),
        Phase("record_performance", AFTER_CAMPAIGN,
              [s.report(n) for n in range(reports) for s in people]),
    ]


def plan_history(history: int) -> list[Phase]:
    seller = Seller(0, "bench-history", prefix="long")
    return [
        Phase("setup", IN_WINDOW,
              [create_campaign_op("bench-history"), seller.register(), seller.approve()]),
        Phase("history", AFTER_CAMPAIGN, [seller.report(n) for n in range(history)]),
    ]


# Stores ------------------------------------------------------------------------------------

class Backend(Protocol):
    name: str

    def url(self, label: str) -> str: ...
    def describe(self) -> str: ...


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def url(self, label: str) -> str:
        path = os.path.join(self.folder, f"{label}.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        return f"sqlite:///{path}"

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} (WAL, file in {self.folder})"


class PostgresBackend:
    """One database, dropped and created again per run; one schema per store."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        self.store = parse_url(url)
        admin = psycopg.conninfo.make_conninfo(self.store.conninfo(), dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            db = sql.Identifier(self.store.dbname)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(db))
            self.version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]

    def url(self, label: str) -> str:
        schema = sql.Identifier(label)
        with psycopg.connect(self.store.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        return f"postgresql://{self.store.user}@{self.store.host}:{self.store.port}/" \
               f"{self.store.dbname}?schema={label}"

    def describe(self) -> str:
        return f"PostgreSQL {self.version} at {self.store.host}:{self.store.port}"


# The command stream ------------------------------------------------------------------------

def shift_times(value: Any, delta: timedelta) -> Any:
    """`value` with every ISO time (…Z) in it moved by `delta`."""
    if isinstance(value, dict):
        return {k: shift_times(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [shift_times(v, delta) for v in value]
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:
            moved = datetime.fromisoformat(value.replace("Z", "+00:00")) + delta
        except ValueError:
            return value
        return iso(moved)
    return value


def shifted(op: Op, delta: timedelta) -> dict[str, Any]:
    return {**op.command, "payload": shift_times(op.command["payload"], delta)}


@dataclass(frozen=True)
class Plan:
    """What every measurement does: the same setup, then the same per-client streams."""

    clients: int
    sellers: int  # at most this many sellers (one token each) in one window
    delta: timedelta = field(default_factory=lambda: timedelta(
        days=(datetime.now(UTC) - IN_WINDOW).days))
    campaigns: int = 3
    ended_per_client: int = 8  # registrations taking each client's reports

    @property
    def live_campaigns(self) -> list[str]:
        return campaign_ids(self.campaigns)

    def seller(self, index: int) -> Seller:
        return Seller(index, self.live_campaigns[index % self.campaigns])

    def ended(self, client: int, k: int) -> Seller:
        return Seller(client * self.ended_per_client + k, ENDED_CAMPAIGN, prefix="ended")

    def actors(self) -> list[TokenActor]:
        people = [TokenActor(self.seller(i).actor["id"], "seller") for i in range(self.sellers)]
        return [*people, TokenActor(REVIEWER["id"], REVIEWER["role"]),
                TokenActor(FEED["id"], FEED["role"])]

    def setup(self, url: str) -> None:
        """Campaigns (live ones moved to today), and the ended campaign's approved
        registrations, written in-process with a fixed clock (not measured)."""
        clock = FixedClock(datetime.now(UTC))
        with Ledger.open(url, clock=clock) as ledger:
            def send(command: dict[str, Any]) -> None:
                result = ledger.send(command)
                if not result["ok"]:
                    raise RuntimeError(f"setup {command['command_id']}: {result['error']}")

            for campaign in self.live_campaigns:
                send(shifted(create_campaign_op(campaign), self.delta))
            clock.set(IN_WINDOW)
            send(create_campaign_op(ENDED_CAMPAIGN).command)
            for c in range(self.clients):
                for k in range(self.ended_per_client):
                    send(self.ended(c, k).register().command)
                    send(self.ended(c, k).approve().command)

    def stream(self, client: int, next_seller: Callable[[], int | None],
               first_report: int = 0) -> Iterator[dict[str, Any]]:
        """One client's commands, one seller at a time, until the sellers run out
        (report numbers from `first_report`, so that a later window sends new ones)."""
        reports = itertools.count(first_report)
        while (index := next_seller()) is not None:
            seller = self.seller(index)
            ops = [seller.register(), seller.add_session(), seller.approve()]
            if index % 5 == 0:
                ops.append(seller.withdraw())
            for op in ops:
                yield shifted(op, self.delta)
            for _ in range(2):
                n = next(reports)
                ended = self.ended(client, n % self.ended_per_client)
                yield ended.report(n // self.ended_per_client).command


class SellerCounter:
    """Hands out seller indexes to the clients; a later window of the same store goes on
    from where the earlier one stopped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self._lock = threading.Lock()
        self.exhausted = False

    def __call__(self) -> int | None:
        with self._lock:
            index = self.taken
            self.taken += 1
        if index >= self.limit:
            self.exhausted = True
            return None
        return index


# The report feed of bench/group.py and bench/send_cpu.py ------------------------------------

FEED_CAMPAIGN = "group-feed"
Json = dict[str, Any]


def feed_setup(registrations: int) -> list[Json]:
    """The feed's campaign and its registrations, approved (at IN_WINDOW)."""
    people = [Seller(i, FEED_CAMPAIGN, prefix="feed") for i in range(registrations)]
    return [create_campaign_op(FEED_CAMPAIGN).command, *(p.register().command for p in people),
            *(p.approve().command for p in people)]


def feed(registrations: int, reports: int) -> Iterator[Json]:
    """`reports` reports (at AFTER_CAMPAIGN) in rounds: every registration's next one."""
    made = 0
    for number in range(-(-reports // registrations)):
        for index in range(registrations):
            if made == reports:
                return
            yield Seller(index, FEED_CAMPAIGN, prefix="feed").report(number).command
            made += 1


def lines(commands: Iterable[Json]) -> Iterator[bytes]:
    for cmd in commands:
        yield json.dumps(cmd).encode() + b"\n"


def set_up(url: str, at: datetime, commands: list[Json]) -> None:
    """Send the untimed setup in-process; every command must be accepted."""
    with Ledger.open(url, clock=FixedClock(at), pool_size=1) as ledger:
        for result in ledger.send_many(commands):
            if not result["ok"]:
                raise RuntimeError(f"setup refused: {result}")
