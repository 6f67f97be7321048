"""Group commit: many commands decided in input order and committed in one transaction.

`send_group(writer, commands)` gives, command for command, the result the one-command path
(`Ledger.send`) would give in input order (docs/design.md, "Many commands in one
transaction"):

1. each command is admitted (JSON, fields, role) or refused at once;
2. the commands between two `expire_campaign`s form a *run*; `expire_campaign` is never
   grouped: the run before it is committed, then it goes alone through the one-command
   path;
3. a run is decided in order through the same handlers, reading through `GroupLoads`
   (aggregates as the run's earlier commands left them, else the store); every
   `command_id` of the run is looked up once first (stored ones replay); each accepted
   command's events are collected at once, in command order;
4. one `Application.save`: the run's events in command order, the distinct aggregates
   (for the library's snapshots), and one `WritePlan` (every accepted command's row, the
   registration rows, every guard);
5. a conflict with another writer (a version or command_id taken, a guard that no longer
   holds) decides the run again from fresh state, up to `CONFLICT_ATTEMPTS` times, then
   one command at a time; a refused command that left pending events on an aggregate the
   run shares (none does today) sends the run one at a time at once; a store fault is
   waited out as for one command (`Outage`), then `GroupUnavailable` says from which
   command to resend.

No result leaves before its run's transaction commits, so a decision that is retried is
never seen.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from ledger import metrics
from ledger.aggregates.base import Cause, LedgerAggregate, campaign_uuid, registration_uuid
from ledger.clock import Clock
from ledger.commands import schemas as s
from ledger.commands.context import Context, Outcome
from ledger.commands.handlers import handle
from ledger.commands.parse import Command
from ledger.commands.results import (
    Result,
    accepted,
    admit,
    command_row,
    refused,
    replayed,
    reused,
)
from ledger.errors import GroupUnavailable, LedgerError, StoreUnavailable
from ledger.store.application import LedgerApplication
from ledger.store.faults import Outage, StoreErrors
from ledger.store.plan import CommandRow, Guard, RegistrationRow, ReportRow, WritePlan

CONFLICT_ATTEMPTS = 3  # a run decided again after a conflict, then one command at a time
ALONE = frozenset({"expire_campaign"})  # reads the index and writes many: never grouped
KEEP = 4096  # aggregates a stream remembers between its runs (send_many, ledger send)
# (Their state no longer grows with their reports, which `ledger_reports` remembers: a
# budget of events held, 100,000, bounded it while a registration kept every report_id.)

Raw = dict[str, Any] | str | bytes


@dataclass
class GroupStats:
    """How a ledger's runs went: committed in one transaction each, decided again after a
    conflict with another writer, sent one command at a time (conflicts or a refusal that
    left events behind). A single writer never conflicts: `one_at_a_time` stays 0."""

    committed: int = 0
    retried: int = 0
    one_at_a_time: int = 0


class Kept:
    """Aggregates as a stream's runs committed them, the least recently used first; at
    most KEEP of them."""

    def __init__(self) -> None:
        self._aggregates: dict[UUID, LedgerAggregate] = {}

    def __iter__(self) -> Iterator[UUID]:
        return iter(self._aggregates)

    def __len__(self) -> int:
        return len(self._aggregates)

    def take(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, LedgerAggregate]:
        """Those of these ids kept, taken out (a run that does not commit may change
        them: only a committed run puts them back)."""
        taken = {}
        for aggregate_id in aggregate_ids:
            found = self._aggregates.pop(aggregate_id, None)
            if found is not None:
                taken[aggregate_id] = found
        return taken

    def put(self, committed: dict[UUID, LedgerAggregate]) -> None:
        """Keep a committed run's aggregates, the most recently used; forget the least
        recently used while more than KEEP are kept."""
        self.take(committed)
        self._aggregates.update(committed)
        while len(self._aggregates) > KEEP:
            del self._aggregates[next(iter(self._aggregates))]


@dataclass
class Writer:
    """What a group needs of the `Ledger`: its store, its clock, the one-command path
    (`execute`, which retries and replays on its own) for what goes one at a time, and
    where to count how runs went."""

    app: LedgerApplication
    clock: Clock
    execute: Callable[[Command], Result]
    stats: GroupStats = field(default_factory=GroupStats)
    # Aggregates as the stream's runs committed them: a later run of the same stream
    # (`Ledger.group_sender`: `send_many`, `ledger send`, a coalescer's slot) reuses
    # those still at that version in the store (see `GroupLoads.prefetch`).
    kept: Kept = field(default_factory=Kept)


class GroupLoads:
    """What handlers read while a run is decided (`commands.context.Loads`): an aggregate
    the run already loaded or decided on, in its state after the run's earlier commands;
    else the store. Ids prefetched and found missing are answered without a query."""

    def __init__(self, app: LedgerApplication) -> None:
        self.app = app
        self.cached: dict[UUID, LedgerAggregate] = {}
        self.missing: set[UUID] = set()
        self.reports: set[tuple[UUID, str]] = set()  # seen: stored, or decided by the run
        self.asked: set[tuple[UUID, str]] = set()  # looked up in the store already
        # The topic of the last event per aggregate: the run's own, else the store's.
        self.topics: dict[UUID, str | None] = {}
        self.handed: list[LedgerAggregate] = []  # handed to the command being decided

    def prefetch(self, aggregate_ids: set[UUID], kept: Kept) -> None:
        """Load these aggregates together (`LedgerApplication.get_many`). Those `kept`
        from the stream's previous run are reused when the store still holds them at the
        same version (one query for all): as fresh as a load, without decoding again."""
        # Taken out: a run that does not commit may have changed them (its events on
        # them, its version numbers), so only a committed run puts them back.
        reuse = kept.take(aggregate_ids)
        if reuse:
            stored = self.app.store.versions_of(reuse)
            reuse = {i: a for i, a in reuse.items() if stored.get(i) == a.version}
        found = self.app.get_many(aggregate_ids - reuse.keys())
        self.cached.update(reuse)
        self.cached.update(found)
        self.missing |= aggregate_ids - found.keys() - reuse.keys()

    def prefetch_reports(self, pairs: set[tuple[UUID, str]]) -> None:
        """Which of the run's (registration, report_id) pairs are stored: one query."""
        if pairs:
            self.reports |= self.app.store.reports_seen(pairs)
            self.asked |= pairs

    def report_seen(self, registration_id: UUID, report_id: str) -> bool:
        """Stored, or recorded by the run's earlier commands."""
        pair = (registration_id, report_id)
        if pair in self.reports:
            return True
        return pair not in self.asked and self.app.report_seen(registration_id, report_id)

    def get(self, aggregate_id: UUID, version: int | None = None) -> Any:
        """The aggregate as the run left it (at `version`: from the store)."""
        if version is not None:
            return self.app.get(aggregate_id, version)
        aggregate = self.cached.get(aggregate_id)
        if aggregate is None:
            if aggregate_id in self.missing:
                raise AggregateNotFoundError(aggregate_id)
            aggregate = self.app.get(aggregate_id)
            self.cached[aggregate_id] = aggregate
        self.handed.append(aggregate)
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        """Stored, or created by the run."""
        if aggregate_id in self.cached:
            return True
        return aggregate_id not in self.missing and self.app.exists(aggregate_id)

    def last_event_topic(self, aggregate_id: UUID) -> str | None:
        """The topic of the aggregate's last event, the run's own included. The store is
        asked once a run per aggregate (a run of a season's `add_session`s asks about a
        few campaigns, dozens of times): what it answered is checked again under the
        write lock by the `not_expired` guard every command that reads it writes, and a
        run decided again starts from a new `GroupLoads`."""
        if aggregate_id in self.topics:
            return self.topics[aggregate_id]
        found = self.topics[aggregate_id] = self.app.last_event_topic(aggregate_id)
        return found

    def registrations_of(self, campaign_id: str) -> list[str]:
        """Not answered in a group: `expire_campaign`, its only reader, goes alone."""
        raise TypeError("expire_campaign is never decided in a group")

    def keep(self, aggregates: Iterable[LedgerAggregate]) -> None:
        """These aggregates, after an accepted command: later commands see them."""
        for aggregate in aggregates:
            self.cached[aggregate.id] = aggregate
            self.missing.discard(aggregate.id)

    def left_pending(self) -> bool:
        """Did the refused command leave events on an aggregate the run shares?"""
        return any(aggregate.pending_events for aggregate in self.handed)


@dataclass
class Decided:
    """A run's decisions, before its commit: final results (refusals, replays of stored
    commands), and what the one transaction writes."""

    results: dict[int, Result] = field(default_factory=dict)
    events: list[DomainEventProtocol[UUID]] = field(default_factory=list)
    aggregates: dict[UUID, LedgerAggregate] = field(default_factory=dict)
    rows: list[CommandRow] = field(default_factory=list)
    registrations: list[RegistrationRow] = field(default_factory=list)
    reports: list[ReportRow] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    # accepted: (input index, result without position, events before it, its events)
    accepted: list[tuple[int, Result, int, int]] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)  # (index, its first's index)
    view_after: dict[UUID, LedgerAggregate] = field(default_factory=dict)  # once committed

    def accept(self, index: int, result: Result, row: CommandRow, outcome: Outcome) -> None:
        """Collect the command's events now, in its order (others, then main)."""
        start = len(self.events)
        for aggregate in outcome.aggregates:
            self.events.extend(aggregate.collect_events())
            self.aggregates[aggregate.id] = aggregate
        self.rows.append(row)
        self.registrations.extend(outcome.plan.registrations)
        self.reports.extend(outcome.plan.reports)
        self.guards.extend(g for g in outcome.plan.guards if g not in self.guards)
        self.accepted.append((index, result, start, len(self.events) - start))

    def commit(self, app: LedgerApplication) -> dict[int, Result]:
        """One `save`: every result of the run, positions filled in."""
        found = dict(self.results)
        if not self.rows:
            return found
        plan = WritePlan(tuple(self.rows), tuple(self.registrations), tuple(self.guards),
                         tuple(self.reports))
        recordings = app.save(*self.events, *self.aggregates.values(), plan=plan)
        for index, result, start, count in self.accepted:
            position = recordings[start + count - 1].notification.id if count else None
            found[index] = {**result, "position": position}
        for index, first in self.copies:
            found[index] = {**found[first], "replayed": True}
        return found


def send_group(writer: Writer, commands: Sequence[Raw]) -> list[Result]:
    """Each command's result, in input order (see the module's docstring)."""
    results: dict[int, Result] = {}
    run: list[tuple[int, Command]] = []
    for index, raw in enumerate(commands):
        admitted = admit(raw)
        if not isinstance(admitted, Command):
            results[index] = admitted
        elif admitted.name in ALONE:
            results.update(_commit_run(writer, run))
            run = []
            results[index] = _alone(writer, index, admitted)
        else:
            run.append((index, admitted))
    results.update(_commit_run(writer, run))
    return [results[index] for index in range(len(commands))]


def _alone(writer: Writer, index: int, command: Command) -> Result:
    try:
        return writer.execute(command)
    except StoreUnavailable as e:
        raise GroupUnavailable(e.headline, index) from None


def _commit_run(writer: Writer, run: list[tuple[int, Command]]) -> dict[int, Result]:
    if not run:
        return {}
    outage = Outage()
    conflicts = 0
    while conflicts < CONFLICT_ATTEMPTS:
        try:
            decided = _decide(writer, run, writer.kept)
            if decided is None:
                break  # a refusal left events behind: one at a time decides it cleanly
            results = decided.commit(writer.app)
            writer.stats.committed += 1
            metrics.observe_group(len(run))
            writer.kept.put(decided.view_after)
            return results
        except IntegrityError as e:
            if "ledger_event_hashes" in str(e):
                break  # not a race (an event deleted outside the ledger): one at a time says so
            conflicts += 1
            writer.stats.retried += 1
            time.sleep(min(0.2, 0.002 * conflicts) * random.random())
        except StoreErrors as e:
            fault = outage.wait(e)
            if fault is not None:
                raise GroupUnavailable(fault.headline(), run[0][0]) from None
    writer.stats.one_at_a_time += 1
    return {index: _alone(writer, index, command) for index, command in run}


def _decide(writer: Writer, run: list[tuple[int, Command]], kept: Kept) -> Decided | None:
    app = writer.app
    view = GroupLoads(app)
    ids, reports = _reads(command for _, command in run)
    view.prefetch(ids, kept)
    view.prefetch_reports(reports)
    stored = app.store.find_commands([command.command_id for _, command in run])
    decided = Decided()
    firsts: dict[str, tuple[str, int]] = {}  # command_id accepted in this run: body, index
    for index, command in run:
        fingerprint = command.fingerprint()
        if command.command_id in stored:
            decided.results[index] = replayed(app, fingerprint, stored[command.command_id])
        elif command.command_id in firsts:
            first_fingerprint, first = firsts[command.command_id]
            if first_fingerprint == fingerprint:
                decided.copies.append((index, first))
            else:
                decided.results[index] = reused(command.command_id)
        elif _decide_one(writer, view, decided, index, command, fingerprint):
            firsts[command.command_id] = (fingerprint, index)
        elif view.left_pending():
            return None
    decided.view_after = view.cached
    return decided


def _decide_one(writer: Writer, view: GroupLoads, decided: Decided, index: int,
                command: Command, fingerprint: str) -> bool:
    """Decide a command through its handler, on the run's view: accepted (its events
    collected, its aggregates kept for the next commands) or refused (its result noted)."""
    cause = Cause(actor={"id": command.actor.id, "role": command.actor.role},
                  command_id=command.command_id, at=writer.clock.now())
    view.handed.clear()
    try:
        outcome = handle(Context(view, command, cause))
    except LedgerError as e:
        decided.results[index] = refused(command.command_id, e)
        return False
    result = accepted(command, outcome)
    row = command_row(command, fingerprint, outcome, result, writer.clock.now())
    decided.accept(index, result, row, outcome)
    view.keep(outcome.aggregates)
    view.reports.update((r.registration_id, r.report_id) for r in outcome.plan.reports)
    view.topics.update(_last_topics(decided))
    return True


def _last_topics(decided: Decided) -> dict[UUID, str]:
    """Per aggregate, the topic of the last event the last accepted command decided."""
    _, _, start, count = decided.accepted[-1]
    return {event.originator_id: get_topic(type(event))
            for event in decided.events[start:start + count]}


def _reads(commands: Iterable[Command]) -> tuple[set[UUID], set[tuple[UUID, str]]]:
    """What the commands will read, as far as their payloads tell: the aggregates, and the
    (registration, report_id) pairs their reports carry."""
    ids: set[UUID] = set()
    reports: set[tuple[UUID, str]] = set()
    for command in commands:
        p = command.payload
        if isinstance(p, s.CreateCampaign):
            ids.add(campaign_uuid(p.campaign_id))
        elif isinstance(p, s.Register):
            ids.update((campaign_uuid(p.campaign_id),
                        registration_uuid(p.campaign_id, p.account_id)))
        elif (registration_id := getattr(p, "registration_id", None)) is not None:
            try:
                reg_id = UUID(str(registration_id))
            except ValueError:
                continue  # the handler refuses it (not_found), as one at a time
            ids.add(reg_id)
            if isinstance(p, s.RecordPerformance):
                reports.add((reg_id, p.report_id))
    return ids, reports
