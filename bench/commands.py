"""Command throughput and latency of the ledger, next to the bare `eventsourcing` loop.

For each backend (SQLite, PostgreSQL) the same realistic mix of domain operations runs
twice, each in its own fresh store:

- **ours**: `Ledger.send(command_dict)`: pydantic parsing, role check, idempotency look-up,
  the handler's loads and checks, and the save that writes the events together with the
  `ledger_commands` row;
- **bare**: the library's loop on the same aggregates: `app.repository.get(id)` -> the
  aggregate's decision method -> `app.save(agg)`, on a plain `LedgerApplication` (no
  pydantic, no idempotency row, no role checks, no extra loads).

The mix follows the ledger's clock: inside the registration window, `register` (one session
each), `add_session`, `approve` (all under review; failed criteria approved with an
override reason), `withdraw` (one approved session, every 5th seller); after the campaign,
`record_performance`. Ours and bare run in alternating blocks of `--block` commands, so
that drift in disk flushes and CPU (2 cores here) hits both alike. It prints commands/s
per phase and overall, the time ratio ours/bare (the aim: at most 1.5x), and where each
side's time went (idempotency look-up, aggregate loads, saves, everything else), measured
by timing those calls during the same run.

Then the latency of one command as an aggregate's history grows: one registration takes
`--history` `record_performance` commands; the median latency of the first, middle and
last `--window` commands shows whether snapshots (every 50 events of a Registration) keep
it flat. A bare application without snapshots runs alongside, command by command, as the
control.

    python bench/commands.py                      # both backends, about 2.5 minutes
    python bench/commands.py --quick --json       # a smoke run, JSON on stdout
    python bench/commands.py --backends sqlite --sellers 1000 --rounds 3 --history 0
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from importlib import metadata
from typing import Any, ClassVar, Protocol
from uuid import UUID

import psycopg
from common import (
    AFTER_CAMPAIGN,
    CAMPAIGN_STARTS,
    CATEGORIES,
    IN_WINDOW,
    campaign_command,
    campaign_fields,
    command,
    iso,
    log,
)
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.aggregates.base import Cause, campaign_uuid, registration_uuid
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.store.application import LedgerApplication, library_env
from ledger.store.urls import parse_url

# Scenario ----------------------------------------------------------------------------------

REVIEWER = {"id": "reviewer-1", "role": "reviewer"}
FEED = {"id": "perf-feed", "role": "system"}

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


# Runners -----------------------------------------------------------------------------------

class Meters:
    """Time spent inside wrapped calls, by part. A metered call made inside another one
    (a snapshot's load inside a save) counts in the outer part only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.counting = True
        self._inside = False

    def wrap(self, part: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._inside:
                return call(*args, **kwargs)
            self._inside = True
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self._inside = False
                if self.counting:
                    self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - started
                    self.calls[part] = self.calls.get(part, 0) + 1

        return timed


# What the meters wrap (library calls both sides make, and our idempotency look-up).
PARTS = {
    "lookup": "idempotency look-up",
    "load": "aggregate loads (repository.get)",
    "save": "save (app.save: events [+ our rows])",
}


def meter_app(app: LedgerApplication, meters: Meters) -> None:
    repository = app.repository
    repository.get = meters.wrap("load", repository.get)  # type: ignore[method-assign]
    app.save = meters.wrap("save", app.save)  # type: ignore[method-assign]


class Runner(Protocol):
    def set_time(self, at: datetime) -> None: ...
    def run(self, op: Op) -> None: ...
    def meter(self, meters: Meters) -> None: ...
    def close(self) -> None: ...


class OursRunner:
    """`Ledger.send`, exactly as a backend service would call it."""

    def __init__(self, url: str) -> None:
        self.clock = FixedClock(IN_WINDOW)
        self.ledger = Ledger.open(url, clock=self.clock)

    def set_time(self, at: datetime) -> None:
        self.clock.set(at)

    def run(self, op: Op) -> None:
        result = self.ledger.send(op.command)
        if not result["ok"]:
            raise RuntimeError(f"{op.command['command_id']} refused: {result['error']}")

    def meter(self, meters: Meters) -> None:
        meter_app(self.ledger.app, meters)
        store = self.ledger.app.store
        if hasattr(store, "find_command"):
            store.find_command = meters.wrap("lookup", store.find_command)  # type: ignore[method-assign]

    def close(self) -> None:
        self.ledger.close()


class NoSnapshotApplication(LedgerApplication):
    """The control for the history test: the same application without snapshots."""

    name = "Ledger"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {}


class BareRunner:
    """The library's load-mutate-save loop on a plain application."""

    def __init__(self, url: str, app_class: type[LedgerApplication] = LedgerApplication) -> None:
        self.app = app_class(env=library_env(parse_url(url)))
        self.at = IN_WINDOW

    def set_time(self, at: datetime) -> None:
        self.at = at

    def run(self, op: Op) -> None:
        op.bare(self.app, op.cause(self.at))

    def meter(self, meters: Meters) -> None:
        meter_app(self.app, meters)

    def close(self) -> None:
        self.app.close()


def time_ops(runner: Runner, ops: Sequence[Op]) -> list[float]:
    """Each command's latency (seconds)."""
    latencies: list[float] = []
    for op in ops:
        t0 = time.perf_counter()
        runner.run(op)
        latencies.append(time.perf_counter() - t0)
    return latencies


def time_interleaved(runners: Sequence[Runner], phase: Phase, block: int) -> list[float]:
    """Seconds each runner spent on the phase, run in alternating blocks of commands.

    Disk flushes and CPU contention drift over seconds; alternating blocks (and which
    side goes first) spreads that drift evenly over ours and bare.
    """
    for runner in runners:
        runner.set_time(phase.at)
    totals = [0.0] * len(runners)
    for k, start in enumerate(range(0, len(phase.ops), block)):
        chunk = phase.ops[start:start + block]
        order = list(range(len(runners)))
        for side in order[k % len(order):] + order[:k % len(order)]:
            totals[side] += sum(time_ops(runners[side], chunk))
    return totals


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


@contextmanager
def opened(runner: Runner) -> Iterator[Runner]:
    try:
        yield runner
    finally:
        runner.close()


# Measurements ------------------------------------------------------------------------------

@dataclass
class PhaseFigures:
    backend: str
    phase: str
    commands: int
    ours_seconds: float
    bare_seconds: float
    ours_per_s: float = field(init=False)
    bare_per_s: float = field(init=False)
    ratio: float = field(init=False)  # ours time / bare time

    def __post_init__(self) -> None:
        self.ours_per_s = self.commands / self.ours_seconds
        self.bare_per_s = self.commands / self.bare_seconds
        self.ratio = self.ours_seconds / self.bare_seconds


@dataclass
class HistoryFigures:
    backend: str
    variant: str
    windows: dict[str, float]  # "1-50" -> median latency, ms
    growth: float  # last window / first window


@dataclass
class Part:
    """Where one side's time per command went, for one part of the work."""

    backend: str
    part: str
    ours_ms: float
    bare_ms: float
    ours_calls: float | None = None  # per command
    bare_calls: float | None = None
    extra_ms: float = field(init=False)

    def __post_init__(self) -> None:
        self.extra_ms = self.ours_ms - self.bare_ms


def run_mix(backend: Backend, phases: list[Phase], block: int,
            rounds: int) -> tuple[list[PhaseFigures], list[Part]]:
    """The mix `rounds` times, each round in fresh stores, ours and bare in alternating
    blocks; times summed by phase, and split into parts by the meters."""
    seconds: dict[str, list[float]] = {p.name: [0.0, 0.0] for p in phases[1:]}
    meters = [Meters(), Meters()]
    with ExitStack() as stack:
        for r in range(rounds):
            ours = OursRunner(backend.url(f"mix_ours_{r}"))
            bare = BareRunner(backend.url(f"mix_bare_{r}"))
            runners: list[Runner] = [stack.enter_context(opened(ours)),
                                     stack.enter_context(opened(bare))]
            for runner, meter in zip(runners, meters, strict=True):
                runner.meter(meter)
            for phase in phases:
                for meter in meters:
                    meter.counting = phase.name in seconds
                spent = time_interleaved(runners, phase, block)
                if phase.name in seconds:
                    seconds[phase.name] = [a + b for a, b in zip(seconds[phase.name], spent,
                                                                 strict=True)]
            for meter in meters:
                meter.counting = False
            check_same_versions(ours.ledger.app, bare.app, phases)
    figures = [PhaseFigures(backend.name, p.name, rounds * len(p.ops), *seconds[p.name])
               for p in phases[1:]]
    total = PhaseFigures(backend.name, "all", sum(f.commands for f in figures),
                         sum(f.ours_seconds for f in figures), sum(f.bare_seconds for f in figures))
    return [*figures, total], split(backend.name, total, meters)


def check_same_versions(ours: LedgerApplication, bare: LedgerApplication,
                        phases: Sequence[Phase]) -> None:
    """Both sides did the same operations: every registration ends at the same version."""
    ops = next(p for p in phases if p.name == "add_session").ops
    for reg_id in {UUID(op.command["payload"]["registration_id"]) for op in ops}:
        versions: list[int] = [app.repository.get(reg_id).version for app in (ours, bare)]
        if versions[0] != versions[1]:
            raise RuntimeError(f"registration {reg_id}: ours at {versions[0]}, bare at "
                               f"{versions[1]}: the two sides did not do the same operations")


def split(backend: str, total: PhaseFigures, meters: Sequence[Meters]) -> list[Part]:
    """Per command: the metered parts of each side, and the rest of its time."""
    n = total.commands
    ours, bare = meters

    def part(label: str, key: str) -> Part:
        return Part(backend, label, 1000 * ours.seconds.get(key, 0.0) / n,
                    1000 * bare.seconds.get(key, 0.0) / n,
                    ours.calls.get(key, 0) / n, bare.calls.get(key, 0) / n)

    parts = [part(label, key) for key, label in PARTS.items()]
    rest = [1000 * side_s / n - sum(getattr(p, f"{side}_ms") for p in parts)
            for side, side_s in (("ours", total.ours_seconds), ("bare", total.bare_seconds))]
    return [*parts, Part(backend, "everything else", *rest),
            Part(backend, "total", 1000 * total.ours_seconds / n, 1000 * total.bare_seconds / n)]


def latency_windows(latencies: Sequence[float], width: int) -> dict[str, float]:
    """Median (ms) of the first, middle and last `width` commands."""
    n = len(latencies)
    width = max(1, min(width, n // 3))
    starts = [0, n // 2 - width, n - width]
    return {f"{s + 1}-{s + width}": 1000 * statistics.median(latencies[s:s + width])
            for s in starts}


HISTORY_VARIANTS: dict[str, Callable[[str], Runner]] = {
    "ours": OursRunner,
    "bare": BareRunner,
    "bare, no snapshots": partial(BareRunner, app_class=NoSnapshotApplication),
}


def run_history(backend: Backend, phases: list[Phase], width: int) -> list[HistoryFigures]:
    """The three variants in their own stores, command by command in turn."""
    with ExitStack() as stack:
        runners = [stack.enter_context(opened(make(backend.url(f"history_{n}"))))
                   for n, make in enumerate(HISTORY_VARIANTS.values())]
        for phase in phases:
            for runner in runners:
                runner.set_time(phase.at)
            latencies: list[list[float]] = [[] for _ in runners]
            for op in phase.ops:
                for runner, series in zip(runners, latencies, strict=True):
                    series += time_ops(runner, [op])
    figures = []
    for label, series in zip(HISTORY_VARIANTS, latencies, strict=True):
        windows = latency_windows(series, width)
        values = list(windows.values())
        figures.append(HistoryFigures(backend.name, label, windows, values[-1] / values[0]))
    return figures


def profile_ours(backend: Backend, phases: list[Phase], top: int) -> str:
    """cProfile of `Ledger.send` over the whole mix: where our time goes."""
    profiler = cProfile.Profile()
    with opened(OursRunner(backend.url("profile_ours"))) as ours:
        for phase in phases:
            ours.set_time(phase.at)
            profiler.runcall(time_ops, ours, phase.ops)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# Output ------------------------------------------------------------------------------------

def machine(backends: Sequence[Backend]) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "eventsourcing": metadata.version("eventsourcing"),
        "stores": [b.describe() for b in backends],
    }


def mix_table(figures: Sequence[PhaseFigures]) -> str:
    lines = [f"{'backend':<9} {'phase':<19} {'cmds':>6} {'ours cmd/s':>11} "
             f"{'bare cmd/s':>11} {'ours/bare':>10}"]
    for f in figures:
        lines.append(f"{f.backend:<9} {f.phase:<19} {f.commands:>6} {f.ours_per_s:>11.0f} "
                     f"{f.bare_per_s:>11.0f} {f.ratio:>9.2f}x")
    return "\n".join(lines)


def history_table(figures: Sequence[HistoryFigures]) -> str:
    names = list(figures[0].windows) if figures else []
    head = "".join(f"{'#' + n:>12}" for n in names)
    lines = [f"{'backend':<9} {'variant':<19}{head} {'last/first':>11}"]
    for f in figures:
        cells = "".join(f"{v:>9.2f} ms" for v in f.windows.values())
        lines.append(f"{f.backend:<9} {f.variant:<19}{cells} {f.growth:>10.2f}x")
    return "\n".join(lines)


def parts_table(parts: Sequence[Part]) -> str:
    def calls(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else ""

    lines = [f"{'backend':<9} {'part (per command)':<38} {'ours ms':>8} {'bare ms':>8} "
             f"{'extra ms':>9} {'calls ours/bare':>16}"]
    for p in parts:
        both = f"{calls(p.ours_calls)} / {calls(p.bare_calls)}" if p.ours_calls is not None else ""
        lines.append(f"{p.backend:<9} {p.part:<38} {p.ours_ms:>8.2f} {p.bare_ms:>8.2f} "
                     f"{p.extra_ms:>+9.2f} {both:>16}")
    return "\n".join(lines)


def verdict(mix: Sequence[PhaseFigures], aim: float) -> str:
    overall = [f for f in mix if f.phase == "all"]
    parts = [f"{f.backend} {f.ratio:.2f}x ({'ok' if f.ratio <= aim else 'above aim'})"
             for f in overall]
    return f"ours/bare over the whole mix (aim <= {aim}x): " + ", ".join(parts)


# Command line ------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (default: both)")
    parser.add_argument("--sellers", type=int, default=300, help="sellers in the mix (300)")
    parser.add_argument("--campaigns", type=int, default=3, help="campaigns they join (3)")
    parser.add_argument("--reports", type=int, default=2,
                        help="record_performance commands per seller (2)")
    parser.add_argument("--withdraw-every", type=int, default=5,
                        help="every Nth seller withdraws a session (5)")
    parser.add_argument("--history", type=int, default=1000,
                        help="commands on one registration for the latency test, 0: skip (1000)")
    parser.add_argument("--window", type=int, default=50,
                        help="commands per latency window (50)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the mix this many times (fresh stores), sum by phase (1)")
    parser.add_argument("--block", type=int, default=20,
                        help="commands per block when alternating ours and bare (20)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke run (60 sellers, history 300)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/ledger_bench",
                        help="PostgreSQL database to DROP and create again for the run")
    parser.add_argument("--sqlite-dir", default=None,
                        help="folder for the SQLite files (default: a temporary folder)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also cProfile ours over the mix, print the top N functions")
    parser.add_argument("--aim", type=float, default=1.5, help="target ours/bare ratio (1.5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.quick:
        args.sellers, args.history = min(args.sellers, 60), min(args.history, 300)
    return args


def make_backends(names: str, pg_url: str, folder: str) -> list[Backend]:
    backends: list[Backend] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name == "sqlite":
            backends.append(SQLiteBackend(folder))
        elif name in ("postgres", "postgresql"):
            backends.append(PostgresBackend(pg_url))
        else:
            raise SystemExit(f"unknown backend {name!r}: use sqlite, postgres")
    return backends


@dataclass
class Report:
    machine: dict[str, Any]
    config: dict[str, Any]
    mix: list[PhaseFigures] = field(default_factory=list)
    history: list[HistoryFigures] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)


def run(args: argparse.Namespace, folder: str) -> Report:
    backends = make_backends(args.backends, args.pg_url, folder)
    mix = plan_mix(args.sellers, args.campaigns, args.reports, args.withdraw_every)
    history = plan_history(args.history)
    report = Report(machine(backends), dict(vars(args)))
    for backend in backends:
        log(f"{backend.name}: mix of {sum(len(p.ops) for p in mix[1:])} commands, "
            f"ours and bare, {args.rounds} round(s)")
        mix_figures, parts = run_mix(backend, mix, args.block, args.rounds)
        report.mix += mix_figures
        report.parts += parts
        if args.history >= 3:
            log(f"{backend.name}: {args.history} commands on one registration, three variants")
            report.history += run_history(backend, history, args.window)
        if args.profile:
            report.profiles[backend.name] = profile_ours(backend, mix, args.profile)
    return report


def print_report(report: Report, aim: float) -> None:
    info = report.machine
    print(f"{info['date']}  {info['cpus']} CPUs  {info['platform']}  Python {info['python']}  "
          f"eventsourcing {info['eventsourcing']}")
    for store in info["stores"]:
        print(f"  {store}")
    print("\nCommands per second (ours = Ledger.send; bare = get -> decide -> save)\n")
    print(mix_table(report.mix))
    print(f"\n{verdict(report.mix, aim)}")
    print("\nWhere the time goes, per command of the mix (measured in the same run)\n")
    print(parts_table(report.parts))
    if report.history:
        print("\nLatency of one record_performance as a registration's history grows (median)\n")
        print(history_table(report.history))
    for name, text in report.profiles.items():
        print(f"\ncProfile of ours over the mix on {name}:\n{text}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.sqlite_dir or tempfile.mkdtemp(prefix="ledger-bench-")
    try:
        report = run(args, folder)
    finally:
        if args.sqlite_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(asdict(report), indent=2, default=str))
    else:
        print_report(report, args.aim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
