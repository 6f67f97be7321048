"""The synthetic season store that bench/rebuild.py and bench/verify.py measure: its plan,
its generator, the bulk writers of each backend, and the floor both compare against.

A season: campaigns staggered through the year (two thirds manual review, one third auto),
thousands of registrations with sessions, added sessions, duplicates, approvals (some with
overrides, some partial), rejections, withdrawals, campaign expiry, and ~90%
`PerformanceRecorded` reports arriving after each campaign. The domain methods
(`Campaign.create`, `Registration.register`, `approve`, `record_performance`, ...) make the
events in memory; the library's mapper turns them into stored events, which are recorded
directly in large batches (SQLite: `recorder.insert_events`, 5,000 events a transaction;
PostgreSQL: `COPY` into the events table under the library's table lock: the library's own
insert path runs at ~8,000 events/s here, COPY at ~45,000). Registration index rows and
snapshots (every 50 events of a Registration, as the application would take them) are
written too, and every event's hash row, chained as a save chains them, so the stores pass
`ledger audit verify`.

The floor (`measure_floor`): the library's `select_notifications` in pages of 1,000 and
`mapper.to_domain_event` of each event, nothing else, in one process.

Scripts import it as `season` (their folder is on the path). It imports `common` and
nothing else of bench's.
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from common import CATEGORIES, FEED, OPERATOR, REVIEWER, cpu_seconds, log, peak_rss_mb
from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import sql

from ledger import Ledger
from ledger.aggregates.base import Cause, LedgerCreated, LedgerEvent
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.store import copying, hashing
from ledger.store.application import SNAPSHOT_INTERVAL, LedgerApplication
from ledger.store.plan import CommandRow, RegistrationRow, ReportRow, WritePlan

PAGE = 1000
BATCH = 5000  # stored events per generation transaction
SEASON_STARTS = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CAMPAIGN_EVERY = timedelta(days=21)  # one campaign opens every three weeks




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
    reports: list[ReportRow] = field(default_factory=list)


Action = Callable[[], Written]


@dataclass
class GenBatch:
    events: list[StoredEvent] = field(default_factory=list)
    registrations: list[RegistrationRow] = field(default_factory=list)
    reports: list[ReportRow] = field(default_factory=list)
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
        return Written([reg], reports=[ReportRow(reg.id, report_id, reg.version)])

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
            batch.reports.extend(written.reports)
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
            commands=tuple(batch.commands), registrations=tuple(batch.registrations),
            reports=tuple(batch.reports)))
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
            if batch.reports:
                self._copy(cur, "ledger_reports", copying.REPORT_COLUMNS,
                           ((r.registration_id, r.report_id, r.version) for r in batch.reports),
                           copying.REPORT_TYPES)
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


def existing_stores(args: argparse.Namespace, backends: Sequence[str], sizes: Sequence[int],
                    sqlite_dir: Path) -> list[list[Store]]:
    """The stores an earlier `--generate-only` run with the same options left, as they are
    (generating 1M events takes minutes; measuring them again should not)."""
    out: list[list[Store]] = []
    # The database's URL, also as `--generate-only` printed it (with its store's schema).
    database = args.pg_url.split("?", 1)[0]
    for size in sizes:
        label = size_label(size)
        stores = [Store(b, label, f"sqlite:///{sqlite_dir / f'rebuild-{label}.db'}"
                        if b == "sqlite" else f"{database}?schema=store_{label.lower()}")
                  for b in backends]
        for store in stores:
            store.events = head_of(store.url)
            store.bytes = store_bytes(store)
            if store.events != Season.plan(size, args.campaigns,
                                           args.events_per_registration).events:
                raise RuntimeError(f"{store.url} holds {store.events} events, not the "
                                   f"{label} season: generate it with --generate-only")
        out.append(stores)
    return out


def make_stores(args: argparse.Namespace, backends: Sequence[str], sizes: Sequence[int],
                sqlite_dir: Path) -> list[list[Store]]:
    """One store per size, written to every backend from one pass of the generator."""
    if getattr(args, "existing", False):
        return existing_stores(args, backends, sizes, sqlite_dir)
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
        started, cpu = time.perf_counter(), cpu_seconds()
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
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"events": count, "seconds": seconds, "cpu_seconds": cpu,
            "peak_rss_mb": peak_rss_mb(), "load": load}
