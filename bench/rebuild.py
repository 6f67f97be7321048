"""Read-model rebuild and catch-up, measured against the floor of reading the store.

For each backend (SQLite, PostgreSQL) the script builds a synthetic season: campaigns
staggered through the year (two thirds manual review, one third auto), thousands of
registrations with sessions, added sessions, duplicates, approvals (some with overrides,
some partial), rejections, withdrawals, campaign expiry, and ~90% `PerformanceRecorded`
reports arriving after each campaign. The domain methods (`Campaign.create`,
`Registration.register`, `approve`, `record_performance`, ...) make the events in memory;
the library's mapper turns them into stored events, which are recorded directly in large
batches (SQLite: `recorder.insert_events`, 5,000 events a transaction; PostgreSQL: `COPY`
into the events table under the library's table lock: the library's own insert path runs
at ~8,000 events/s here, COPY at ~45,000). Registration index rows and snapshots (every 50
events of a Registration, as the application would take them) are written too.

Then, in child processes (so that generation does not pollute peak RSS), it times:

- (a) the floor: `select_notifications` pages of 1,000 and `mapper.to_domain_event` each,
  nothing else;
- (b) `projector(app).rebuild()` of every read model in the registry, whatever it holds at
  run time (exactly what `ledger projections rebuild` runs),

on a 100k-event store and on a 1M-event store, and prints events/s, the ratio (b)/(a)
(the aim: at least 0.5) and the peak RSS of each child (the aim: flat as the store grows).

Last, on the big store, the catch-up lag: writer processes send `record_performance`
commands through `Ledger.send` at `--rate` commands/s (default 500) for `--duration`
seconds while another process runs `Projector.run`; it prints the rate reached, the
position lag (head minus projected position, sampled every 50 ms) and the time lag (from a
command's commit to the moment its position is projected): p50 / p99 / max.

    python bench/rebuild.py                      # 100k and 1M, both backends (25-40 min
                                                 # while rebuilds run at 1-2k events/s)
    python bench/rebuild.py --quick              # 100k only, both backends (~3 min)
    python bench/rebuild.py --backends sqlite --events 300000 --json
    python bench/rebuild.py --generate-only --quick --small 3000 --sqlite-dir /tmp/s
                                                 # a small store of each backend, kept;
                                                 # `ledger audit verify` passes on each
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing
import os
import random
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from common import (
    Progress,
    add_store_options,
    emit,
    environment,
    in_child,
    iso,
    log,
    peak_rss_mb,
    store_plan,
)
from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.aggregates.base import Cause, LedgerCreated, LedgerEvent, registration_uuid
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.projections.registry import READ_MODELS, default_jobs, projector
from ledger.store import copying, hashing
from ledger.store.application import SNAPSHOT_INTERVAL, LedgerApplication
from ledger.store.plan import CommandRow, RegistrationRow, WritePlan

PAGE = 1000
BATCH = 5000  # stored events per generation transaction
SEASON_STARTS = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CAMPAIGN_EVERY = timedelta(days=21)  # one campaign opens every three weeks
CATEGORIES = ("fashion", "beauty", "home")
OPERATOR = {"id": "ops-1", "role": "operator"}
REVIEWER = {"id": "reviewer-1", "role": "reviewer"}
FEED = {"id": "perf-feed", "role": "system"}
SIZES_MB = 1024.0  # ru_maxrss is in KiB on Linux


def cause(actor: dict[str, str], command_id: str, at: datetime) -> Cause:
    return Cause(actor={"id": actor["id"], "role": actor["role"]}, command_id=command_id, at=at)


# The season ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CampaignPlan:
    index: int
    manual: bool
    registrations: int
    expire: bool  # the last campaigns of the season are not expired yet

    @cached_property
    def campaign_id(self) -> str:
        return f"season-{self.index + 1:02d}"

    @cached_property
    def opens(self) -> datetime:
        return SEASON_STARTS + self.index * CAMPAIGN_EVERY

    @cached_property
    def closes(self) -> datetime:
        return self.opens + timedelta(days=14)

    @cached_property
    def starts(self) -> datetime:
        return self.closes + timedelta(days=5)

    @cached_property
    def ends(self) -> datetime:
        return self.starts + timedelta(days=2)

    @cached_property
    def expires_at(self) -> datetime:
        return self.ends + timedelta(days=15)

    def fields(self) -> dict[str, Any]:
        auto_reqs = {"min_account_level": 2, "min_livestream_level": 1,
                     "categories": list(CATEGORIES)}
        return {
            "campaign_id": self.campaign_id, "name": f"Season LIVE {self.index + 1}",
            "kind": "live", "review_mode": "manual" if self.manual else "auto",
            "registration_opens_at": self.opens, "registration_closes_at": self.closes,
            "starts_at": self.starts, "ends_at": self.ends, "requirements": auto_reqs,
            "levels": [
                {"code": "standard", "name": "Standard", "benefits": ["campaign badge"],
                 "min_livestream_level": 1},
                {"code": "gold", "name": "Gold", "benefits": ["homepage banner"],
                 "min_livestream_level": 3},
            ] if self.manual else [],
            "allow_duplicates": True, "max_sessions": 10,
        }

    def slot(self, number: int) -> tuple[datetime, datetime]:
        """Session slot `number` (1-based): one hour, three hours apart."""
        starts_at = self.starts + timedelta(hours=7 + 3 * number)
        return starts_at, starts_at + timedelta(hours=1)


@dataclass(frozen=True)
class RegScript:
    """What happens to registration `index` of a campaign, decided from the index alone,
    so the number of events is known before any is made."""

    campaign: CampaignPlan
    index: int

    @property
    def fails_criteria(self) -> bool:
        return self.index % 7 == 3

    @property
    def account_id(self) -> str:
        return f"acct-{self.index:05d}"

    @property
    def seller_id(self) -> str:
        return f"seller-{self.index:05d}"  # the same sellers come back campaign after campaign

    def by(self, action: str, at: datetime) -> Cause:
        """The seller's command `action` (an id unique in the season: a command row each)."""
        return cause({"id": self.seller_id, "role": "seller"},
                     f"{action}-{self.campaign.campaign_id}-{self.index}", at)

    @property
    def add_session(self) -> bool:
        return self.campaign.manual and self.index % 3 == 0

    @property
    def duplicate(self) -> bool:
        return self.campaign.manual and self.index % 5 == 0

    @property
    def sessions(self) -> int:
        return 1 + int(self.add_session) + int(self.duplicate) if self.campaign.manual else 0

    @property
    def decision(self) -> str:
        """approve | reject | partial (approve s1, reject the rest) | none (left open)."""
        if not self.campaign.manual:
            return "reject" if self.fails_criteria else "approve"
        if self.index % 10 == 7:
            return "reject"
        if self.index % 20 == 9:
            return "none"
        if self.index % 10 == 8 and self.sessions > 1:
            return "partial"
        return "approve"

    @property
    def withdraw(self) -> bool:
        """Manual: withdraw the approved s2; auto: withdraw the whole registration."""
        if self.decision != "approve":
            return False
        if self.campaign.manual:
            return self.index % 12 == 6 and self.add_session
        return self.index % 25 == 11

    @property
    def reports(self) -> bool:
        return self.decision in ("approve", "partial") and not (
            self.withdraw and not self.campaign.manual)

    @property
    def open_at_expiry(self) -> bool:
        if not self.campaign.manual:
            return self.decision == "approve" and not self.withdraw
        return self.decision != "reject"  # an approved or under-review session is open

    def events(self) -> int:
        """Events before reports: Registered, sessions, decisions, withdrawal, expiry."""
        count = 1 + self.sessions
        count += {"approve": 1, "reject": 1, "partial": 2, "none": 0}[self.decision]
        count += int(self.withdraw)
        count += int(self.campaign.expire and self.open_at_expiry)
        return count


@dataclass
class Season:
    campaigns: list[CampaignPlan]
    reports: dict[str, int]  # campaign id -> PerformanceRecorded events
    events: int

    @classmethod
    def plan(cls, events: int, campaigns: int, per_registration: int) -> Season:
        """Registrations ~ events / per_registration, shared out over the campaigns; the
        reports fill the rest, in proportion to each campaign's reporting registrations."""
        registrations = max(campaigns * 20, events // per_registration)
        plans = [CampaignPlan(k, manual=k % 3 != 2,
                              registrations=registrations // campaigns + (k < registrations
                                                                          % campaigns),
                              expire=k < campaigns - 2) for k in range(campaigns)]
        fixed = sum(1 + int(c.expire) + sum(RegScript(c, i).events()
                                            for i in range(c.registrations)) for c in plans)
        reporting = {c.campaign_id: sum(RegScript(c, i).reports for i in range(c.registrations))
                     for c in plans}
        budget = max(0, events - fixed)
        total = sum(reporting.values())
        reports = {cid: budget * n // total for cid, n in reporting.items()}
        reports[plans[-1].campaign_id] += budget - sum(reports.values())
        return cls(plans, reports, fixed + budget)


# Generation: domain methods in memory, stored events recorded in batches ---------------------

@dataclass
class Written:
    """What one action changed: aggregates (their pending events) and index rows."""

    aggregates: list[Campaign | Registration]
    registrations: list[RegistrationRow] = field(default_factory=list)


Action = Callable[[], Written]


@dataclass
class GenBatch:
    events: list[StoredEvent] = field(default_factory=list)
    registrations: list[RegistrationRow] = field(default_factory=list)
    snapshots: list[StoredEvent] = field(default_factory=list)
    commands: list[CommandRow] = field(default_factory=list)


def command_row(aggregates: Sequence[Campaign | Registration]) -> CommandRow:
    """The row `Ledger.send` stores for the command whose pending events these are (the
    last aggregate is the command's own, its events stored last): a resend replays it,
    and `ledger audit verify` checks it against the events."""
    main = aggregates[-1]
    events = [e for agg in aggregates for e in agg.pending_events
              if isinstance(e, LedgerCreated | LedgerEvent)]
    public = main.campaign_id if isinstance(main, Campaign) else main.registration_id
    result = {"ok": True, "command_id": events[0].command_id, "aggregate_id": public,
              "version": main.version, "events": [type(e).__name__ for e in events],
              "replayed": False}
    return CommandRow(command_id=events[0].command_id, fingerprint="bench",
                      aggregate_id=str(main.id), version=main.version, result=result,
                      recorded_at=events[0].timestamp)


class Generator:
    """Plays the season in clock order (campaigns overlap: one's reports arrive while the
    next takes registrations) and yields batches of stored events."""

    def __init__(self, season: Season, mapper: Mapper[UUID], seed: int = 7) -> None:
        self.season = season
        self.mapper = mapper
        self.seed = seed
        self.campaigns: dict[str, Campaign] = {}
        self.regs: dict[str, dict[int, Registration]] = {}
        self.topics: Counter[str] = Counter()

    def stream(self, plan: CampaignPlan) -> Iterator[tuple[datetime, int, Action]]:
        seq = plan.index * 10_000_000
        setup: list[tuple[datetime, int, Action]] = []
        setup.append((plan.opens - timedelta(days=7), seq, lambda: self.create(plan)))
        span = plan.closes - plan.opens - timedelta(days=1)
        for i in range(plan.registrations):
            script = RegScript(plan, i)
            at = plan.opens + span * i / max(1, plan.registrations)
            steps: list[tuple[timedelta, Callable[[RegScript, datetime], Written]]] = [
                (timedelta(0), self.register)]
            if script.add_session:
                steps.append((timedelta(hours=2), self.add_session))
            if script.duplicate:
                steps.append((timedelta(hours=3), self.duplicate))
            if plan.manual and script.decision != "none":
                steps.append((timedelta(days=1), self.decide))
            if script.withdraw:
                steps.append((timedelta(days=2), self.withdraw))
            for offset, step in steps:
                seq += 1
                setup.append((at + offset, seq, self._bind(step, script, at + offset)))
        setup.sort(key=lambda item: (item[0], item[1]))
        yield from setup
        yield from self.report_stream(plan, seq)
        if plan.expire:
            yield (plan.expires_at, seq + 9_000_000, lambda: self.expire(plan))

    @staticmethod
    def _bind(step: Callable[[RegScript, datetime], Written], script: RegScript,
              at: datetime) -> Action:
        return lambda: step(script, at)

    def report_stream(self, plan: CampaignPlan,
                      seq: int) -> Iterator[tuple[datetime, int, Action]]:
        """Round after round over the reporting registrations (shuffled, like a feed),
        spread over the two weeks after the campaign ends."""
        quota = self.season.reports[plan.campaign_id]
        reporting = [i for i in range(plan.registrations) if RegScript(plan, i).reports]
        if not reporting or not quota:
            return
        random.Random(self.seed + plan.index).shuffle(reporting)
        window = timedelta(days=14)
        for n in range(quota):
            index = reporting[n % len(reporting)]
            number = n // len(reporting)
            at = plan.ends + timedelta(hours=1) + window * n / quota
            yield (at, seq + 1 + n, self._bind_report(plan, index, number, at))

    def _bind_report(self, plan: CampaignPlan, index: int, number: int,
                     at: datetime) -> Action:
        return lambda: self.report(plan, index, number, at)

    # Actions (the same domain methods the command handlers call) --------------------------

    def create(self, plan: CampaignPlan) -> Written:
        campaign = Campaign.create(cause(OPERATOR, f"create-{plan.campaign_id}",
                                         plan.opens - timedelta(days=7)), **plan.fields())
        self.campaigns[plan.campaign_id] = campaign
        self.regs[plan.campaign_id] = {}
        return Written([campaign])

    def register(self, s: RegScript, at: datetime) -> Written:
        plan = s.campaign
        profile = {"account_level": 3, "livestream_level": 2}
        if not plan.manual and s.fails_criteria:
            profile = {"account_level": 1, "livestream_level": 2}
        reg = Registration.register(
            self.campaigns[plan.campaign_id], seller_id=s.seller_id, account_id=s.account_id,
            main_category=CATEGORIES[s.index % len(CATEGORIES)],
            level=("gold" if s.fails_criteria else "standard") if plan.manual else None,
            profile=profile, sessions=[plan.slot(1)] if plan.manual else [],
            by=cause({"id": s.seller_id, "role": "seller"},
                     f"{plan.campaign_id}-register-{s.index}", at))
        self.regs[plan.campaign_id][s.index] = reg
        return Written([reg], [RegistrationRow(reg.registration_id, plan.campaign_id,
                                               s.account_id, s.seller_id)])

    def _reg(self, s: RegScript) -> Registration:
        return self.regs[s.campaign.campaign_id][s.index]

    def add_session(self, s: RegScript, at: datetime) -> Written:
        reg = self._reg(s)
        reg.add_sessions([s.campaign.slot(2)], s.by("add", at))
        return Written([reg])

    def duplicate(self, s: RegScript, at: datetime) -> Written:
        reg = self._reg(s)
        starts_at, ends_at = s.campaign.slot(4)
        reg.duplicate("s1", starts_at, ends_at, s.by("dup", at))
        return Written([reg])

    def decide(self, s: RegScript, at: datetime) -> Written:
        reg = self._reg(s)
        by = cause(REVIEWER, f"decide-{s.campaign.campaign_id}-{s.index}", at)
        if s.decision == "reject":
            reg.reject(None, ["content_policy"], "does not meet the content policy", by)
        elif s.decision == "partial":
            override = "strong sales history" if s.fails_criteria else None
            reg.approve(["s1"], "first slot only", override, by)
            reg.reject(None, ["schedule_full"], None, by)
        else:
            override = "strong sales history" if s.fails_criteria else None
            reg.approve(None, "looks good", override, by)
        return Written([reg])

    def withdraw(self, s: RegScript, at: datetime) -> Written:
        reg = self._reg(s)
        reg.withdraw(["s2"] if s.campaign.manual else None, "schedule clash", s.by("wd", at))
        return Written([reg])

    def report(self, plan: CampaignPlan, index: int, number: int, at: datetime) -> Written:
        reg = self.regs[plan.campaign_id][index]
        starts_at = plan.starts + timedelta(hours=(number * 5 + index) % 46)
        report_id = f"{plan.campaign_id}-r{index}-{number}"
        reg.record_performance({
            "report_id": report_id, "session_id": "s1" if plan.manual else None,
            "period_start": starts_at, "period_end": starts_at + timedelta(hours=1),
            "currency": "USD", "gmv": Decimal(1000 + (index * 37 + number * 11) % 5000) / 4,
            "orders": 10 + (index + number) % 90, "items_sold": 12 + (index + number) % 120,
            "buyers": 8 + (index + 2 * number) % 80, "views": 1000 + (index * number) % 50_000,
            "refunds": Decimal((index + number) % 200) / 4,
        }, cause(FEED, report_id, at))
        return Written([reg])

    def expire(self, plan: CampaignPlan) -> Written:
        """What `expire_campaign` does: the campaign, and every open registration."""
        at = plan.expires_at
        campaign = self.campaigns.pop(plan.campaign_id)
        by = cause(OPERATOR, f"expire-{plan.campaign_id}", at)
        campaign.expire(by)
        touched: list[Campaign | Registration] = []
        for reg in self.regs.pop(plan.campaign_id).values():
            if reg.is_open():
                reg.expire(by.as_system())
                touched.append(reg)
        return Written([*touched, campaign])  # the campaign last, as the handler saves it

    # Batches ------------------------------------------------------------------------------

    def batches(self, size: int = BATCH) -> Iterator[GenBatch]:
        streams = [self.stream(plan) for plan in self.season.campaigns]
        batch = GenBatch()
        for _at, _seq, action in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            written = action()
            batch.commands.append(command_row(written.aggregates))
            for agg in written.aggregates:
                snapshot = False
                for event in agg.collect_events():
                    batch.events.append(self.mapper.to_stored_event(event))
                    self.topics[type(event).__qualname__] += 1
                    snapshot = snapshot or (isinstance(agg, Registration)
                                            and event.originator_version % SNAPSHOT_INTERVAL == 0)
                if snapshot:
                    snapshot_class = type(agg).Snapshot
                    batch.snapshots.append(self.mapper.to_stored_event(snapshot_class.take(agg)))
            batch.registrations.extend(written.registrations)
            if len(batch.events) >= size:
                yield batch
                batch = GenBatch()
        if batch.events:
            yield batch


# Stores ---------------------------------------------------------------------------------------

class Sink:
    """Records generated batches into one store."""

    url: str

    def write(self, batch: GenBatch) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteSink(Sink):
    """`insert_events` of our recorder: its `_insert_events` writes the index rows and the
    hash rows (`ledger_event_hashes`, chained to the heads it reads back) in the same
    transaction, exactly as a save does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ledger = Ledger.open(url)
        self.app = self.ledger.app

    def write(self, batch: GenBatch) -> None:
        self.app.recorder.insert_events(batch.events, plan=WritePlan(
            commands=tuple(batch.commands), registrations=tuple(batch.registrations)))
        if batch.snapshots:
            assert self.app.snapshots is not None
            self.app.snapshots.recorder.insert_events(batch.snapshots)

    def close(self) -> None:
        self.ledger.close()


class PostgresSink(Sink):
    """COPY under the library's table lock (notification ids follow the batch order).

    COPY bypasses our recorder, so the sink writes, in the same transaction, what a save
    writes beside the events: the hash rows (`ledger.store.hashing.link`, chained to the
    heads it keeps per aggregate, one 32-byte hash each), the command rows
    (`CommandRow.values`), the index rows, and each snapshot's hash row
    (`hashing.snapshot_hash`, keyed when LEDGER_SEAL_KEY is set, as the recorder does)."""

    def __init__(self, url: str, conninfo: str, schema: str) -> None:
        self.url = url
        self.ledger = Ledger.open(url)  # creates the tables
        self.app = self.ledger.app
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.schema = schema
        assert self.app.snapshots is not None
        self.events_table = self.app.recorder.events_table_name  # type: ignore[attr-defined]
        self.snapshots_table = self.app.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
        self.heads: dict[UUID, bytes] = {}  # each aggregate's last hash, for `link`
        self.key = hashing.key_from_env()

    def _copy(self, cur: psycopg.Cursor[Any], table: str, columns: Sequence[str],
              rows: Iterable[Sequence[Any]], types: Sequence[str]) -> None:
        """COPY rows in, in binary, as a group's save does (`ledger.store.copying`)."""
        copying.copy_rows(cur, sql.SQL("{}.{}").format(sql.Identifier(self.schema),
                                                       sql.Identifier(table)),
                          columns, types, rows)

    def write(self, batch: GenBatch) -> None:
        columns, types = copying.EVENT_COLUMNS[:4], copying.EVENT_TYPES[:4]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(sql.SQL("LOCK TABLE {}.{} IN EXCLUSIVE MODE").format(
                sql.Identifier(self.schema), sql.Identifier(self.events_table)))
            self._copy(cur, self.events_table, columns, copying.stored_values(batch.events),
                       types)
            links = self._links(batch)
            self._copy(cur, hashing.EVENT_HASHES, hashing.HASH_COLUMNS, links,
                       copying.HASH_TYPES)
            self._copy(cur, "ledger_commands", copying.COMMAND_COLUMNS,
                       map(copying.command_values, batch.commands), copying.COMMAND_TYPES)
            if batch.registrations:
                self._copy(cur, "ledger_registrations", copying.REGISTRATION_COLUMNS,
                           map(copying.registration_values, batch.registrations),
                           copying.REGISTRATION_TYPES)
            if batch.snapshots:
                self._copy(cur, self.snapshots_table, columns,
                           copying.stored_values(batch.snapshots), types)
                self._copy(cur, hashing.SNAPSHOT_HASHES, hashing.HASH_COLUMNS,
                           self._snapshot_hashes(batch.snapshots, links), copying.HASH_TYPES)

    def _snapshot_hashes(self, snapshots: list[StoredEvent], links: list[hashing.Link]
                         ) -> Iterator[hashing.Link]:
        """Each snapshot's hash row, tied to its event's hash (in the same batch: the
        generator snapshots a registration as the event of that version is made)."""
        digests = {(oid, version): digest for oid, version, digest in links}
        for snapshot in snapshots:
            oid = hashing.as_uuid(snapshot.originator_id)
            version = snapshot.originator_version
            yield oid, version, hashing.snapshot_hash(
                digests[oid, version], oid, version, snapshot.topic, snapshot.state,
                key=self.key)

    def _links(self, batch: GenBatch) -> list[hashing.Link]:
        heads = self.heads
        previous: dict[UUID, bytes] = {}
        for event in batch.events:
            oid = event.originator_id
            key = oid if isinstance(oid, UUID) else UUID(oid)
            if event.originator_version > 1 and key in heads:
                previous[key] = heads[key]
        rows = hashing.link(batch.events, previous)
        for oid, _version, digest in rows:
            heads[oid] = digest
        return rows

    def close(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(self.schema),
                                                         sql.Identifier(self.events_table)))
        self.conn.close()
        self.ledger.close()


@dataclass
class Store:
    backend: str
    label: str  # "100k" | "1M" | ...
    url: str
    events: int = 0
    generate_seconds: float = 0.0
    bytes: int = 0


def size_label(events: int) -> str:
    if events % 1_000_000 == 0:
        return f"{events // 1_000_000}M"
    if events % 1000 == 0:
        return f"{events // 1000}k"
    return str(events)


def pg_conninfo(base: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(base, dbname=dbname)


def reset_postgres(base_url: str) -> None:
    """Drop and create the bench database (autocommit)."""
    dbname = base_url.rsplit("/", 1)[1]
    admin = base_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def make_stores(args: argparse.Namespace, backends: Sequence[str], sizes: Sequence[int],
                sqlite_dir: Path) -> list[list[Store]]:
    """One store per size, written to every backend from one pass of the generator."""
    out: list[list[Store]] = []
    if "postgres" in backends:
        reset_postgres(args.pg_url)
    for size in sizes:
        label = size_label(size)
        season = Season.plan(size, args.campaigns, args.events_per_registration)
        sinks: list[Sink] = []
        stores: list[Store] = []
        for backend in backends:
            if backend == "sqlite":
                path = sqlite_dir / f"rebuild-{label}.db"
                url = f"sqlite:///{path}"
                sinks.append(SQLiteSink(url))
            else:
                schema = f"store_{label.lower()}"
                with psycopg.connect(args.pg_url, autocommit=True) as conn:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                url = f"{args.pg_url}?schema={schema}"
                sinks.append(PostgresSink(url, args.pg_url, schema))
            stores.append(Store(backend, label, url))
        started = time.perf_counter()
        written = 0
        topics: Counter[str] = Counter()
        waited = [0.0]
        for batch in generate_in_child(season, topics, waited):
            for sink in sinks:
                sink.write(batch)
            written += len(batch.events)
            if args.verbose:
                print(f"  generating {label}: {written:,} events", file=sys.stderr, end="\r")
        elapsed = time.perf_counter() - started
        for sink in sinks:
            sink.close()
        for store in stores:
            store.events = head_of(store.url)
            store.generate_seconds = elapsed
            store.bytes = store_bytes(store)
            if store.events != season.events:
                raise RuntimeError(f"{store.backend} {label}: {store.events} events recorded, "
                                   f"{season.events} planned")
        log(f"generated {label}: {written:,} events in {elapsed:.1f} s "
            f"({written / elapsed:,.0f} events/s into {', '.join(backends)}; the writer waited "
            f"{waited[0]:.0f} s for the generator); mix: "
            + ", ".join(f"{k} {v / written:.1%}" for k, v in topics.most_common()), args)
        out.append(stores)
    return out


def _produce(season: Season, queue: Any) -> None:
    """The generator's process: domain methods and mapping on one core, while the parent
    writes the previous batches on the other."""
    app = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    generator = Generator(season, app.mapper)
    for batch in generator.batches():
        queue.put(batch)
    queue.put(dict(generator.topics))


def generate_in_child(season: Season, topics: Counter[str],
                      waited: list[float]) -> Iterator[GenBatch]:
    """Batches from a generator process; `waited[0]` accumulates the seconds the writer
    spent waiting for the generator (near the total: generation is the bottleneck)."""
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue(maxsize=8)
    child = spawn.Process(target=_produce, args=(season, queue), daemon=True)
    child.start()
    try:
        while True:
            started = time.perf_counter()
            item = queue.get(timeout=600)
            waited[0] += time.perf_counter() - started
            if isinstance(item, dict):
                topics.update(item)
                return
            yield item
    finally:
        child.join(timeout=10)
        if child.exitcode not in (0, None):
            raise RuntimeError(f"the generator failed (exit code {child.exitcode})")


def head_of(url: str) -> int:
    with Ledger.open(url) as ledger:
        return int(ledger.app.recorder.max_notification_id() or 0)


def store_bytes(store: Store) -> int:
    if store.backend == "sqlite":
        path = Path(store.url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    base, schema = store.url.split("?schema=")
    with psycopg.connect(base) as conn:
        row = conn.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN "
                           "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                           "AND c.relkind = 'r'", (schema,)).fetchone()
    return int(row[0] or 0) if row else 0


# Measurements (each in a fresh child process) ------------------------------------------------

def measure_floor(url: str) -> dict[str, Any]:
    """(a): read every stored event, a page at a time, and decode it; nothing else."""
    load = os.getloadavg()[0]
    with Ledger.open(url) as ledger:
        app = ledger.app
        started = time.perf_counter()
        start, count = 0, 0
        while True:
            page = app.recorder.select_notifications(start, limit=PAGE,
                                                     inclusive_of_start=False)
            if not page:
                break
            for notification in page:
                app.mapper.to_domain_event(notification)
            count += len(page)
            start = page[-1].id
        seconds = time.perf_counter() - started
    return {"events": count, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "load": load}


def measure_rebuild(url: str, jobs: int) -> dict[str, Any]:
    """(b): rebuild every read model of the registry, as `ledger projections rebuild
    --jobs JOBS` does (its default: `default_jobs()`)."""
    progress = Progress()
    load = os.getloadavg()[0]
    with Ledger.open(url) as ledger:
        started = time.perf_counter()
        p = projector(ledger.app, jobs=jobs)
        count = p.rebuild(progress=progress)
        seconds = time.perf_counter() - started
        status = p.status()
    # Helpers are this process's children: the peak of any one process counts.
    helpers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / SIZES_MB
    return {"events": count, "seconds": seconds, "peak_rss_mb": max(peak_rss_mb(), helpers),
            "rss_mb_by_position": progress.samples, "read_models": list(READ_MODELS), "jobs": jobs,
            "lag_after": {s["name"]: s["lag"] for s in status}, "load": load}


# Catch-up lag -----------------------------------------------------------------------------------

def projector_loop(url: str, stop: Any, ready: Any, interval: float) -> dict[str, Any]:
    """`Projector.run`, recording when each projected position was reached."""
    with Ledger.open(url) as ledger:
        p = projector(ledger.app)
        p.catch_up()
        names = [m.name for m in p.models]

        def projected() -> int:
            return min(p.view.position(name) for name in names)

        marks: list[tuple[float, int]] = [(time.time(), projected())]
        ready.set()
        p.run(interval=interval, should_stop=stop.is_set,
              on_advance=lambda _position: marks.append((time.time(), projected())))
    return {"marks": marks, "peak_rss_mb": peak_rss_mb()}


def writer_loop(url: str, at: datetime, targets: list[tuple[str, str | None, str, int]],
                rate: float, t0: float, duration: float, tag: str) -> dict[str, Any]:
    """Send record_performance commands at `rate`/s from wall time `t0` for `duration` s.
    Open loop: the k-th command is due at t0 + k/rate; a late writer sends at once, and
    stops at t0 + duration whatever it sent."""
    commits: list[tuple[float, int]] = []
    refused: Counter[str] = Counter()
    with Ledger.open(url, clock=FixedClock(at)) as ledger:
        k = 0
        while True:
            due = t0 + k / rate
            if due >= t0 + duration or time.time() >= t0 + duration:
                break
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            reg_id, session_id, starts, number = targets[k % len(targets)]
            period_start = datetime.fromisoformat(starts)
            report_id = f"{tag}-{k}"
            result = ledger.send({
                "command": "record_performance", "command_id": report_id, "actor": FEED,
                "payload": {"registration_id": reg_id, "report_id": report_id,
                            "session_id": session_id, "period_start": iso(period_start),
                            "period_end": iso(period_start + timedelta(hours=1)),
                            "currency": "USD", "gmv": f"{100 + number % 900}.25",
                            "orders": 3, "items_sold": 4, "buyers": 3, "views": 500,
                            "refunds": "0.00"}})
            if result["ok"]:
                commits.append((time.time(), int(result["position"])))
            else:
                refused[result["error"]["code"]] += 1
            k += 1
    return {"commits": commits, "refused": dict(refused)}


def lag_targets(season: Season, writers: int) -> tuple[datetime, list[list[tuple[str, str | None,
                                                                                str, int]]]]:
    """Approved registrations of the last campaign (not expired), dealt to the writers."""
    plan = season.campaigns[-1]
    rows = [(str(registration_uuid(plan.campaign_id, RegScript(plan, i).account_id)),
             "s1" if plan.manual else None,
             (plan.starts + timedelta(hours=i % 46)).isoformat(), i)
            for i in range(plan.registrations) if RegScript(plan, i).reports]
    return plan.ends + timedelta(days=30), [rows[w::writers] for w in range(writers)]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure_lag(store: Store, season: Season, rate: float, duration: float, writers: int,
                interval: float) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    manager = spawn.Manager()
    stop, ready = manager.Event(), manager.Event()
    at, targets = lag_targets(season, writers)
    with ProcessPoolExecutor(writers + 1, mp_context=spawn) as pool:
        projecting = pool.submit(projector_loop, store.url, stop, ready, interval)
        if not ready.wait(600):
            raise RuntimeError("the projector did not start")
        head_before = head_of(store.url)
        t0 = time.time() + 3.0  # the writers open their stores first
        tag = f"lag-{store.backend}-{int(t0)}"
        jobs = [pool.submit(writer_loop, store.url, at, targets[w], rate / writers, t0,
                            duration, f"{tag}-w{w}") for w in range(writers)]
        results = [job.result() for job in jobs]
        writers_done = time.time()
        commits = sorted(c for r in results for c in r["commits"])
        final = max((pos for _t, pos in commits), default=head_before)
        # Let the projector reach the last position, then stop it.
        with Ledger.open(store.url) as ledger:
            watcher = projector(ledger.app)
            deadline = writers_done + 120
            while time.time() < deadline:
                if all(s["position"] >= final for s in watcher.status()):
                    break
                time.sleep(0.05)
        stop.set()
        proj = projecting.result()
    manager.shutdown()
    marks: list[tuple[float, int]] = proj["marks"]

    def projected_at(t: float) -> int:
        best = marks[0][1]
        for when, pos in marks:
            if when > t:
                break
            best = pos
        return best

    # Time lag: from a command's commit to the first mark at or past its position.
    time_lags: list[float] = []
    j = 0
    by_position = sorted(commits, key=lambda c: c[1])
    for t_commit, pos in by_position:
        while j < len(marks) and marks[j][1] < pos:
            j += 1
        if j < len(marks):
            time_lags.append(max(0.0, marks[j][0] - t_commit))
    # Position lag: head (the last commit so far) minus the projected position, every 50 ms.
    position_lags: list[float] = []
    t_end = max((t for t, _ in commits), default=t0)
    t, k, head = t0, 0, head_before
    while t <= t_end:
        while k < len(commits) and commits[k][0] <= t:
            head = max(head, commits[k][1])
            k += 1
        position_lags.append(max(0, head - projected_at(t)))
        t += 0.05
    sent = len(commits)
    span = duration
    drained = next((when for when, pos in marks if pos >= final), float("nan")) - writers_done
    return {
        "backend": store.backend, "store": store.label, "writers": writers,
        "target_rate": rate, "duration_s": duration, "commands": sent,
        "refused": {k: v for r in results for k, v in r["refused"].items()},
        "rate_reached": sent / span if span > 0 else 0.0,
        "position_lag": {"p50": percentile(position_lags, 0.5),
                         "p99": percentile(position_lags, 0.99),
                         "max": max(position_lags, default=0)},
        "time_lag_s": {"p50": percentile(time_lags, 0.5), "p99": percentile(time_lags, 0.99),
                       "max": max(time_lags, default=float("nan"))},
        "catch_ups": len(marks) - 1, "drain_after_writers_s": drained,
        "projector_peak_rss_mb": proj["peak_rss_mb"], "poll_interval_s": interval,
    }


# Report -----------------------------------------------------------------------------------------

def print_report(report: dict[str, Any]) -> None:
    print()
    print(f"Read models in the registry: {', '.join(report['read_models'])}")
    print()
    print("Rebuild vs floor (events/s; peak RSS of each child process; 1-minute load average "
          "when the floor / rebuild started, on this machine's "
          f"{report['environment']['cpus']} CPUs)")
    print()
    head = (f"{'backend':<9} {'store':>5} {'events':>10} {'floor ev/s':>11} "
            f"{'rebuild ev/s':>13} {'(b)/(a)':>8} {'jobs':>4} {'1 process ev/s':>15} "
            f"{'(b1)/(a)':>9} {'RSS floor':>10} {'RSS rebuild':>12} {'RSS 1 proc':>11} "
            f"{'load':>14}")
    print(head)
    for row in report["rebuild"]:
        load = "/".join(f"{x:.1f}" for x in row["load_1min"])
        print(f"{row['backend']:<9} {row['store']:>5} {row['events']:>10,} "
              f"{row['floor_eps']:>11,.0f} {row['rebuild_eps']:>13,.0f} "
              f"{row['ratio']:>7.2f}x {row['jobs']:>4} {row['rebuild_1_eps']:>15,.0f} "
              f"{row['ratio_1']:>8.2f}x {row['floor_rss_mb']:>8.0f}MB "
              f"{row['rebuild_rss_mb']:>10.0f}MB {row['rebuild_1_rss_mb']:>9.0f}MB {load:>14}")
    print("\n(b): `ledger projections rebuild` (its default --jobs); (b1): the same in one "
          "process. RSS: the peak of any one process.")
    aim = report["aim_ratio"]
    verdicts = [f"{r['backend']} {r['store']} {r['ratio']:.2f} "
                f"({'ok' if r['ratio'] >= aim else 'short'})" for r in report["rebuild"]]
    print(f"\n(b)/(a), aim >= {aim}: " + "; ".join(verdicts))
    for backend in sorted({r["backend"] for r in report["rebuild"]}):
        rows = [r for r in report["rebuild"] if r["backend"] == backend]
        if len(rows) > 1:
            print(f"peak RSS of the rebuild, {backend}: "
                  + " -> ".join(f"{r['rebuild_rss_mb']:.0f} MB at {r['store']}" for r in rows))
    if report["lag"]:
        print()
        print("Catch-up lag while writers send record_performance through Ledger.send "
              "(Projector.run in another process)")
        print()
        print(f"{'backend':<9} {'store':>5} {'writers':>7} {'target/s':>8} {'reached/s':>9} "
              f"{'cmds':>6} {'pos lag p50/p99/max':>20} {'time lag s p50/p99/max':>23} "
              f"{'drain s':>7}")
        for lag in report["lag"]:
            pl, tl = lag["position_lag"], lag["time_lag_s"]
            print(f"{lag['backend']:<9} {lag['store']:>5} {lag['writers']:>7} "
                  f"{lag['target_rate']:>8.0f} {lag['rate_reached']:>9.0f} {lag['commands']:>6} "
                  f"{pl['p50']:>6.0f}/{pl['p99']:>5.0f}/{pl['max']:>6.0f} "
                  f"{tl['p50']:>7.2f}/{tl['p99']:>6.2f}/{tl['max']:>6.2f} "
                  f"{lag['drain_after_writers_s']:>7.2f}")
            if lag["refused"]:
                print(f"  refused: {lag['refused']}")
        print("\ntime lag aim < 1 s: " + "; ".join(
            f"{lag['backend']} p99 {lag['time_lag_s']['p99']:.2f} s "
            f"({'ok' if lag['time_lag_s']['p99'] < 1 else 'over'})" for lag in report["lag"]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_store_options(parser, "ledger_rebuild_bench",
                      "the small store's events, for RSS vs size (0: skip)")
    parser.add_argument("--rate", type=float, default=500.0, help="writer commands/s")
    parser.add_argument("--duration", type=float, default=20.0, help="writer seconds")
    parser.add_argument("--writers", default="sqlite=2,postgres=3",
                        help="writer processes per backend")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="Projector.run poll interval when idle (its default 0.2)")
    parser.add_argument("--no-lag", action="store_true", help="skip the catch-up lag run")
    parser.add_argument("--aim", type=float, default=0.5)
    parser.add_argument("--generate-only", action="store_true",
                        help="make the stores, print their URLs, keep them, measure nothing "
                             "(e.g. --generate-only --quick --small 3000 --sqlite-dir DIR)")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="processes for (b), as `ledger projections rebuild --jobs` "
                             f"(default here: {default_jobs()}); (b1) always uses one")
    args = parser.parse_args(argv)

    backends, sizes, tmp = store_plan(args, "rebuild-")
    writers = {k: int(v) for k, v in (item.split("=") for item in args.writers.split(","))}
    report: dict[str, Any] = {"environment": environment(), "aim_ratio": args.aim,
                              "command": " ".join(["python", "bench/rebuild.py",
                                                   *(argv if argv is not None else sys.argv[1:])]),
                              "rebuild": [], "lag": [], "read_models": [], "stores": []}
    try:
        stores = make_stores(args, backends, sizes, tmp)
        for stores_of_size in stores:
            for store in stores_of_size:
                report["stores"].append(asdict(store))
        if args.generate_only:
            for store in report["stores"]:
                print(f"{store['backend']} {store['label']}: {store['events']:,} events at "
                      f"{store['url']}")
            return 0
        for backend in backends:
            for stores_of_size in stores:
                store = next(s for s in stores_of_size if s.backend == backend)
                floor = in_child(measure_floor, store.url)
                single = in_child(measure_rebuild, store.url, 1)
                rebuild = (in_child(measure_rebuild, store.url, args.jobs) if args.jobs > 1
                           else single)
                if floor["events"] != store.events or rebuild["events"] != store.events:
                    raise RuntimeError(f"read {floor['events']} / rebuilt {rebuild['events']} "
                                       f"of {store.events} events")
                report["read_models"] = rebuild["read_models"]
                row = {
                    "backend": backend, "store": store.label, "events": store.events,
                    "store_mb": store.bytes / 2**20, "generate_s": store.generate_seconds,
                    "floor_s": floor["seconds"], "rebuild_s": rebuild["seconds"],
                    "floor_eps": store.events / floor["seconds"],
                    "rebuild_eps": store.events / rebuild["seconds"],
                    "ratio": floor["seconds"] / rebuild["seconds"],
                    "jobs": rebuild["jobs"],
                    "rebuild_1_eps": store.events / single["seconds"],
                    "ratio_1": floor["seconds"] / single["seconds"],
                    "rebuild_1_rss_mb": single["peak_rss_mb"],
                    "floor_rss_mb": floor["peak_rss_mb"],
                    "rebuild_rss_mb": rebuild["peak_rss_mb"],
                    "rebuild_rss_mb_by_position": rebuild["rss_mb_by_position"],
                    "lag_after_rebuild": rebuild["lag_after"],
                    "load_1min": [floor["load"], single["load"], rebuild["load"]],
                }
                report["rebuild"].append(row)
                log(f"{backend} {store.label}: floor {row['floor_eps']:,.0f} ev/s, "
                    f"rebuild {row['rebuild_eps']:,.0f} ev/s, ratio {row['ratio']:.2f}, "
                    f"RSS {row['floor_rss_mb']:.0f} / {row['rebuild_rss_mb']:.0f} MB", args)
            if not args.no_lag:
                store = next(s for s in stores[-1] if s.backend == backend)
                season = Season.plan(sizes[-1], args.campaigns, args.events_per_registration)
                lag = measure_lag(store, season, args.rate, args.duration,
                                  writers.get(backend, 2), args.interval)
                report["lag"].append(lag)
                log(f"{backend} lag: {lag['rate_reached']:.0f} cmd/s reached, time lag "
                    f"p50 {lag['time_lag_s']['p50']:.2f} s p99 {lag['time_lag_s']['p99']:.2f} s",
                    args)
    finally:
        if not args.sqlite_dir and not args.generate_only:
            shutil.rmtree(tmp, ignore_errors=True)
    emit(args, report, print_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
