"""Every DOMAIN.md invariant, checked on a store after the fact (issue 6, contention).

`check_invariants(url)` reads the whole store — every event in store order (decoded by the
application's mapper), the `ledger_commands` rows and the `ledger_registrations` index — and
returns one line per broken invariant (empty: all hold):

- versions: each aggregate's events are versions 1..n, in store order;
- time: recorded times never go backwards along an aggregate's versions (DOMAIN.md, Clock);
- campaigns: created once, windows ordered, expired at most once, last, not before `ends_at`;
- registrations: one per (campaign, account) (the id is derived from them, the index holds one
  row each), registered while registration was open and never after the campaign expired;
  session statuses move only along DOMAIN.md's transitions (replayed event by event); no two
  open (under review / approved) sessions overlap; open sessions <= `max_sessions`; session
  rules (inside the period, not in the past, not after the end); approvals of failed
  eligibility carry an `override_reason`; auto decisions follow the criteria; a `report_id`
  counts once, and only on a registration that had an approval; the actors may do what they
  did;
- expiry: a campaign's expiry expires, in the same command, exactly the registrations open
  just before it; afterwards none of its registrations is open or gets a session;
- commands: one row per `command_id`; every event belongs to a stored command; a command's
  events are consecutive in the store, and exactly the names, aggregate and version its
  stored result reports;
- the hash chains verify (`ledger.audit.chain.verify`).

`check_invariants(url, results)` also checks results that clients were given: an accepted
(or replayed) result is the stored one, with the position of its last event; a refused
command wrote nothing.

It reads through the ledger's public pieces only (its application's recorder and mapper, the
audit chain); it never repairs or trusts the aggregates' own checks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from ledger import FixedClock, Ledger
from ledger.aggregates import campaign as c
from ledger.aggregates import registration_events as r
from ledger.aggregates.base import campaign_uuid, registration_uuid
from ledger.audit import chain
from tests.support.helpers import Dump, dump_store

Json = dict[str, Any]
PAGE = 1_000
OPEN = frozenset({"under_review", "approved"})
DECIDERS = frozenset({"reviewer", "operator"})
EXPIRERS = frozenset({"operator", "system"})
REJECT_REASONS = frozenset({"criteria_not_met", "performance_below_threshold",
                            "policy_violation", "incomplete_info", "capacity_full", "other"})


@dataclass(frozen=True)
class Stored:
    """One event as the store holds it: its position (notification id) and decoded event."""

    position: int
    index: int  # its place among all events, in store order
    aggregate_id: UUID
    version: int
    event: Any

    @property
    def name(self) -> str:
        return type(self.event).__name__

    @property
    def where(self) -> str:
        return f"{self.aggregate_id} v{self.version} ({self.name})"


@dataclass
class Session:
    session_id: str
    starts_at: datetime
    ends_at: datetime
    status: str = "under_review"

    def overlaps(self, other: Session) -> bool:
        return self.starts_at < other.ends_at and other.starts_at < self.ends_at


@dataclass
class CampaignState:
    created: Any
    expired_by: str | None = None  # the command_id of its Expired event
    expired_at: int | None = None  # its position
    registrations: list[UUID] = field(default_factory=list)


@dataclass
class RegistrationState:
    registered: Any
    sessions: dict[str, Session] = field(default_factory=dict)
    decision: str | None = None  # auto campaigns
    expired: bool = False
    ever_approved: bool = False
    reports: set[str] = field(default_factory=set)

    @property
    def manual(self) -> bool:
        return bool(self.registered.terms["review_mode"] == "manual")

    @property
    def failed(self) -> list[Any]:
        return [x for x in self.registered.eligibility if not x["passed"]]

    def open_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.status in OPEN]

    def is_open(self) -> bool:
        if self.expired:
            return False
        if self.manual:
            return bool(self.open_sessions())
        return self.decision in (None, "approved")


# Reading the store ----------------------------------------------------------------------------

def stored_events(ledger: Ledger) -> list[Stored]:
    """Every event of the store, in store order, decoded."""
    app, position = ledger.app, 0
    found: list[Stored] = []
    while True:
        page = app.recorder.select_notifications(position, PAGE, inclusive_of_start=False)
        for n in page:
            found.append(Stored(n.id, len(found), UUID(str(n.originator_id)),
                                n.originator_version, app.mapper.to_domain_event(n)))
        if len(page) < PAGE:
            return found
        position = page[-1].id


@dataclass(frozen=True)
class CommandRecord:
    command_id: str
    aggregate_id: UUID
    version: int | None
    result: Json


def command_rows(dump: Dump) -> list[CommandRecord]:
    return [CommandRecord(str(command_id), UUID(str(aggregate_id)), version, json.loads(result))
            for command_id, _, aggregate_id, version, result, _ in dump["ledger_commands"]]


def index_rows(dump: Dump) -> list[tuple[UUID, str, str, str]]:
    return [(UUID(str(rid)), str(cid), str(aid), str(sid))
            for rid, cid, aid, sid in dump["ledger_registrations"]]


# The check ------------------------------------------------------------------------------------

def check_invariants(url: str, results: Iterable[Json] = ()) -> list[str]:
    """One line per broken invariant of the store at `url` (and of `results`, if given)."""
    with Ledger.open(url, clock=FixedClock(datetime(2000, 1, 1, tzinfo=UTC)),
                     pool_size=1) as ledger:
        events = stored_events(ledger)
        dump = dump_store(url)
        checker = Checker(events)
        checker.run()
        checker.check_commands(command_rows(dump), list(results))
        checker.check_index(index_rows(dump))
        report = chain.verify(ledger.app.store)
        checker.problems.extend(f"chain: {f.line()}" for f in report.findings)
        if report.events != len(events):
            checker.problems.append(
                f"chain: verify saw {report.events} events, the store has {len(events)}")
        return checker.problems


class Checker:
    """Walks every event in store order, keeping its own model of each aggregate (never the
    ledger's), and notes what breaks an invariant in `problems`."""

    def __init__(self, events: list[Stored]) -> None:
        self.events = events
        self.problems: list[str] = []
        self.campaigns: dict[str, CampaignState] = {}
        self.registrations: dict[UUID, RegistrationState] = {}
        self.kinds: dict[UUID, str] = {}
        # command_id of each campaign expiry -> the campaign's aggregate id; the
        # registrations open just before that command (taken at its first event), and
        # those it expired.
        self.expiries = {e.event.command_id: e.event.originator_id for e in events
                         if isinstance(e.event, c.Expired)}
        self.open_before: dict[str, set[UUID]] = {}
        self.campaign_ids = {campaign_uuid(e.event.campaign_id): e.event.campaign_id
                             for e in events if isinstance(e.event, c.CampaignCreated)}
        self.expired_by: dict[str, set[UUID]] = defaultdict(set)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    # The walk ------------------------------------------------------------------------------

    def run(self) -> None:
        self.check_versions()
        for stored in self.events:
            event = stored.event
            command_id = getattr(event, "command_id", None)
            if command_id in self.expiries and command_id not in self.open_before:
                cid = self.campaign_ids.get(self.expiries[command_id])
                self.open_before[command_id] = {
                    rid for rid in (self.campaigns[cid].registrations if cid else [])
                    if self.registrations[rid].is_open()}
            if isinstance(event, c.CampaignCreated | c.Expired):
                self.kinds.setdefault(stored.aggregate_id, "campaign")
                self.on_campaign(stored)
            else:
                self.kinds.setdefault(stored.aggregate_id, "registration")
                self.on_registration(stored)
        self.check_expiries()

    def check_versions(self) -> None:
        versions: dict[UUID, list[int]] = defaultdict(list)
        last: dict[UUID, datetime] = {}
        for stored in self.events:
            versions[stored.aggregate_id].append(stored.version)
            at, before = stored.event.timestamp, last.get(stored.aggregate_id)
            if before is not None and at < before:
                self.problem(f"time: {stored.aggregate_id} version {stored.version} was "
                             f"recorded at {at.isoformat()}, before its previous version "
                             f"({before.isoformat()})")
            last[stored.aggregate_id] = at
        for aggregate_id, found in versions.items():
            if found != list(range(1, len(found) + 1)):
                self.problem(f"versions: {aggregate_id} has versions {found} in store order")

    def on_campaign(self, stored: Stored) -> None:
        event = stored.event
        if isinstance(event, c.CampaignCreated):
            if stored.version != 1 or event.campaign_id in self.campaigns:
                self.problem(f"campaign: {event.campaign_id} created again at {stored.where}")
                return
            if stored.aggregate_id != campaign_uuid(event.campaign_id):
                self.problem(f"campaign: {stored.where} is not the id of {event.campaign_id}")
            if not (event.registration_opens_at < event.registration_closes_at
                    <= event.starts_at < event.ends_at):
                self.problem(f"campaign: {event.campaign_id} windows out of order")
            if event.max_sessions < 1:
                self.problem(f"campaign: {event.campaign_id} max_sessions {event.max_sessions}")
            self.campaigns[event.campaign_id] = CampaignState(event)
            return
        state = self._campaign_of(stored)
        if state is None:
            return
        if state.expired_by is not None:
            self.problem(f"expiry: campaign {state.created.campaign_id} expired twice "
                         f"({stored.where})")
            return
        if event.timestamp < state.created.ends_at:
            self.problem(f"expiry: campaign {state.created.campaign_id} expired at "
                         f"{event.timestamp}, before it ends ({state.created.ends_at})")
        if event.actor["role"] not in EXPIRERS:
            self.problem(f"actor: {event.actor} may not expire a campaign ({stored.where})")
        state.expired_by, state.expired_at = event.command_id, stored.position

    def _campaign_of(self, stored: Stored) -> CampaignState | None:
        state = self.campaigns.get(self.campaign_ids.get(stored.aggregate_id, ""))
        if state is None:
            self.problem(f"campaign: {stored.where} has no CampaignCreated before it")
        return state

    def on_registration(self, stored: Stored) -> None:
        event = stored.event
        if isinstance(event, r.Registered):
            self.on_registered(stored)
            return
        reg = self.registrations.get(stored.aggregate_id)
        if reg is None:
            self.problem(f"registration: {stored.where} has no Registered before it")
            return
        campaign = self.campaigns[reg.registered.campaign_id]
        if isinstance(event, r.SessionAdded | r.Duplicated):
            self.on_session(stored, reg, campaign)
        elif isinstance(event, r.Decision):
            self.on_decision(stored, reg)
        elif isinstance(event, r.PerformanceRecorded):
            self.on_report(stored, reg)
        else:
            self.problem(f"registration: unknown event {stored.where}")

    def on_registered(self, stored: Stored) -> None:
        event = stored.event
        rid = stored.aggregate_id
        where = stored.where
        if stored.version != 1 or rid in self.registrations:
            self.problem(f"registration: registered again at {where}")
            return
        campaign = self.campaigns.get(event.campaign_id)
        if campaign is None:
            self.problem(f"registration: {where} for unknown campaign {event.campaign_id}")
            return
        self.registrations[rid] = reg = RegistrationState(event)
        campaign.registrations.append(rid)
        if rid != registration_uuid(event.campaign_id, event.account_id) or \
                event.registration_id != str(rid):
            self.problem(f"one registration per account: {where} is not the registration of "
                         f"({event.campaign_id}, {event.account_id})")
        if campaign.expired_by is not None:
            self.problem(f"after expiry: {where} registered for {event.campaign_id} after the "
                         f"campaign expired (position {stored.position} > {campaign.expired_at})")
        created = campaign.created
        if not created.registration_opens_at <= event.timestamp < created.registration_closes_at:
            self.problem(f"registration: {where} at {event.timestamp}, outside the window")
        if event.actor != {"id": event.seller_id, "role": "seller"}:
            self.problem(f"actor: {event.actor} registered for seller {event.seller_id} "
                         f"({where})")
        for name in ("review_mode", "starts_at", "ends_at", "max_sessions", "allow_duplicates"):
            if event.terms.get(name) != getattr(created, name):
                self.problem(f"registration: {where} copied {name}={event.terms.get(name)!r}, "
                             f"the campaign has {getattr(created, name)!r}")
        for criterion in event.eligibility:
            if criterion["passed"] != (criterion["actual"] >= criterion["required"]):
                self.problem(f"eligibility: {where} criterion {criterion} is evaluated wrong")
        follows = (r.SessionAdded,) if reg.manual else (r.Approved, r.Rejected)
        after = self.events[stored.index + 1:stored.index + 2]
        if not any(isinstance(e.event, follows) and e.aggregate_id == rid
                   and e.event.command_id == event.command_id for e in after):
            self.problem(f"registration: {where} is not followed, in its command, by "
                         f"{' or '.join(f.__name__ for f in follows)}")

    def on_session(self, stored: Stored, reg: RegistrationState,
                   campaign: CampaignState) -> None:
        event, where = stored.event, stored.where
        terms = reg.registered.terms
        if not reg.manual:
            self.problem(f"session: auto registration got a session ({where})")
        if isinstance(event, r.Duplicated):
            if not terms["allow_duplicates"]:
                self.problem(f"session: duplicated though duplicates are not allowed ({where})")
            if event.duplicated_from not in reg.sessions:
                self.problem(f"session: duplicated from unknown {event.duplicated_from} "
                             f"({where})")
        if event.actor != {"id": reg.registered.seller_id, "role": "seller"}:
            self.problem(f"actor: {event.actor} added a session ({where})")
        if campaign.expired_by is not None or reg.expired:
            self.problem(f"after expiry: session {event.session_id} added after the campaign "
                         f"{reg.registered.campaign_id} expired ({where})")
        if event.timestamp >= terms["ends_at"]:
            self.problem(f"session: added after the campaign ended ({where})")
        if event.session_id in reg.sessions:
            self.problem(f"session: {event.session_id} added twice ({where})")
            return
        if not event.starts_at < event.ends_at:
            self.problem(f"session: {event.session_id} ends before it starts ({where})")
        if event.starts_at < terms["starts_at"] or event.ends_at > terms["ends_at"]:
            self.problem(f"session: {event.session_id} outside the campaign ({where})")
        if event.starts_at < event.timestamp:
            self.problem(f"session: {event.session_id} in the past when added ({where})")
        new = Session(event.session_id, event.starts_at, event.ends_at)
        for other in reg.open_sessions():
            if other.overlaps(new):
                self.problem(f"overlap: {stored.aggregate_id} sessions {other.session_id} and "
                             f"{new.session_id} are both open and overlap ({where})")
        reg.sessions[new.session_id] = new
        if len(reg.open_sessions()) > terms["max_sessions"]:
            self.problem(f"max_sessions: {stored.aggregate_id} has {len(reg.open_sessions())} "
                         f"open sessions, at most {terms['max_sessions']} ({where})")

    def on_decision(self, stored: Stored, reg: RegistrationState) -> None:
        event, where = stored.event, stored.where
        if reg.expired:
            self.problem(f"transition: {where} after the registration expired")
            return
        if isinstance(event, r.Expired):
            if event.actor["role"] != "system":
                self.problem(f"actor: {event.actor} expired a registration ({where})")
            if event.command_id not in self.expiries:
                self.problem(f"expiry: {where} is not part of its campaign's expiry")
            self.expired_by[event.command_id].add(stored.aggregate_id)
        elif isinstance(event, r.Withdrawn):
            if event.actor != {"id": reg.registered.seller_id, "role": "seller"}:
                self.problem(f"actor: {event.actor} withdrew ({where})")
        elif event.actor["role"] not in DECIDERS and not (
                event.actor["role"] == "system" and not reg.manual):
            self.problem(f"actor: {event.actor} decided ({where})")
        if reg.manual:
            self.on_session_decision(stored, reg)
        else:
            self.on_auto_decision(stored, reg)
        if isinstance(event, r.Approved):
            reg.ever_approved = True
            if reg.failed and not event.override_reason:
                self.problem(f"override: {where} approved failed criteria "
                             f"{[x['criterion'] for x in reg.failed]} without an override_reason")
        if isinstance(event, r.Rejected) and (
                not event.reasons or not set(event.reasons) <= REJECT_REASONS):
            self.problem(f"reject: {where} has reasons {event.reasons}")
        if isinstance(event, r.Expired):
            reg.expired = True

    def on_session_decision(self, stored: Stored, reg: RegistrationState) -> None:
        event, where = stored.event, stored.where
        ids = list(event.session_ids)
        if not ids and not isinstance(event, r.Expired):
            self.problem(f"transition: {where} names no session")
        if len(set(ids)) != len(ids):
            self.problem(f"transition: {where} names a session twice: {ids}")
        if isinstance(event, r.Expired) and set(ids) != {s.session_id for s in
                                                          reg.open_sessions()}:
            self.problem(f"expiry: {where} expired {ids}, the open sessions were "
                         f"{[s.session_id for s in reg.open_sessions()]}")
        for session_id in ids:
            session = reg.sessions.get(session_id)
            if session is None:
                self.problem(f"transition: {where} names unknown session {session_id}")
                continue
            if not allowed_transition(session, event):
                self.problem(f"transition: {stored.aggregate_id} session {session_id} "
                             f"{session.status} -> {event.new_status} is not allowed ({where})")
            session.status = event.new_status

    def on_auto_decision(self, stored: Stored, reg: RegistrationState) -> None:
        event, where = stored.event, stored.where
        if event.session_ids:
            self.problem(f"transition: auto registration decision names sessions ({where})")
        before, after = reg.decision, event.new_status
        if isinstance(event, r.Approved | r.Rejected):
            ok = (before is None and event.command_id == reg.registered.command_id
                  and event.actor["role"] == "system")
            if isinstance(event, r.Approved) and reg.failed:
                ok = False
            if isinstance(event, r.Rejected) and (not reg.failed
                                                  or event.reasons != ["criteria_not_met"]):
                ok = False
        elif isinstance(event, r.Withdrawn):
            ok = before == "approved" and event.timestamp < reg.registered.terms["starts_at"]
        else:
            ok = before in (None, "approved")
        if not ok:
            self.problem(f"transition: auto registration {before} -> {after} is not allowed "
                         f"({where})")
        reg.decision = after

    def on_report(self, stored: Stored, reg: RegistrationState) -> None:
        event, where = stored.event, stored.where
        terms = reg.registered.terms
        if event.report_id in reg.reports:
            self.problem(f"report: {event.report_id} recorded twice ({where})")
        reg.reports.add(event.report_id)
        if not reg.ever_approved:
            self.problem(f"report: {where} on a registration never approved")
        if event.actor["role"] != "system":
            self.problem(f"actor: {event.actor} recorded performance ({where})")
        if not (event.period_start < event.period_end <= event.timestamp
                and terms["starts_at"] <= event.period_start < terms["ends_at"]):
            self.problem(f"report: {where} period {event.period_start}..{event.period_end}")
        if min(event.orders, event.items_sold, event.buyers, event.views) < 0 or \
                not (event.gmv.is_finite() and event.gmv >= 0) or \
                not (event.refunds.is_finite() and event.refunds >= 0):
            self.problem(f"report: {where} has negative or non-finite amounts")

    def check_expiries(self) -> None:
        for campaign in self.campaigns.values():
            command_id = campaign.expired_by
            if command_id is None:
                continue
            name = campaign.created.campaign_id
            expected = self.open_before.get(command_id, set())
            done = self.expired_by.get(command_id, set())
            for rid in sorted(expected - done):
                self.problem(f"expiry: registration {rid} was open when {name} expired, and was "
                             "not expired with it")
            for rid in sorted(done - expected):
                self.problem(f"expiry: registration {rid} was expired with {name} but was not "
                             "open")
            for rid in campaign.registrations:
                if self.registrations[rid].is_open():
                    self.problem(f"after expiry: registration {rid} of expired campaign {name} "
                                 "is still open")

    # Commands and the index ----------------------------------------------------------------

    def check_commands(self, rows: list[CommandRecord], results: list[Json]) -> None:
        by_id: dict[str, CommandRecord] = {}
        for row in rows:
            if row.command_id in by_id:
                self.problem(f"command: two rows for {row.command_id}")
            by_id[row.command_id] = row
        events_of: dict[str, list[Stored]] = defaultdict(list)
        for stored in self.events:
            events_of[stored.event.command_id].append(stored)
        for command_id in sorted(set(events_of) - set(by_id)):
            self.problem(f"command: events {[s.where for s in events_of[command_id]]} belong "
                         f"to no stored command {command_id}")
        for row in by_id.values():
            self.check_command(row, events_of.get(row.command_id, []))
        for result in results:
            self.check_result(result, by_id, events_of)

    def check_command(self, row: CommandRecord, events: list[Stored]) -> None:
        result, cid = row.result, row.command_id
        if result.get("ok") is not True or result.get("command_id") != cid:
            self.problem(f"command: {cid} stored result {result}")
        names = [s.name for s in events]
        if result.get("events") != names:
            self.problem(f"command: {cid} reported events {result.get('events')}, "
                         f"the store has {names}")
        if [s.index for s in events] != list(range(events[0].index, events[0].index
                                                   + len(events)) if events else []):
            self.problem(f"command: {cid} events are not consecutive in the store")
        if not events:
            return
        last = events[-1]
        if row.aggregate_id != last.aggregate_id:
            self.problem(f"command: {cid} row names aggregate {row.aggregate_id}, its last "
                         f"event is {last.where}")
        if row.version != last.version or result.get("version") != last.version:
            self.problem(f"command: {cid} reported version {result.get('version')} (row "
                         f"{row.version}), its last event is {last.where}")
        reported = str(result.get("aggregate_id"))
        expected = (str(last.aggregate_id) if self.kinds.get(last.aggregate_id) == "registration"
                    else self.campaign_ids.get(last.aggregate_id, "?"))
        if reported != expected:
            self.problem(f"command: {cid} reported aggregate_id {reported}, stored {expected}")

    def check_result(self, result: Json, rows: dict[str, CommandRecord],
                     events_of: dict[str, list[Stored]]) -> None:
        cid = str(result.get("command_id"))
        row = rows.get(cid)
        if result.get("ok") is not True:
            # A refused command wrote nothing; only a reused command_id (refused with
            # `conflict`) may find another command's row under its id.
            code = result.get("error", {}).get("code")
            if row is not None and code != "conflict":
                self.problem(f"result: {cid} was refused ({code}) but has a stored row")
            return
        if row is None:
            self.problem(f"result: {cid} was accepted but has no stored row (lost)")
            return
        told = {k: v for k, v in result.items() if k not in ("replayed", "position")}
        if told != {k: v for k, v in row.result.items() if k != "replayed"}:
            self.problem(f"result: {cid} told {told}, stored {row.result}")
        events = events_of.get(cid, [])
        position = events[-1].position if events else None
        if events and result.get("position") != position:
            self.problem(f"result: {cid} told position {result.get('position')}, its last "
                         f"event is at {position}")

    def check_index(self, rows: list[tuple[UUID, str, str, str]]) -> None:
        seen_pairs: set[tuple[str, str]] = set()
        indexed: set[UUID] = set()
        for rid, campaign_id, account_id, seller_id in rows:
            if (campaign_id, account_id) in seen_pairs:
                self.problem(f"one registration per account: ({campaign_id}, {account_id}) is "
                             "indexed twice")
            seen_pairs.add((campaign_id, account_id))
            indexed.add(rid)
            reg = self.registrations.get(rid)
            if reg is None:
                self.problem(f"index: row {rid} has no registration")
                continue
            got = (reg.registered.campaign_id, reg.registered.account_id,
                   reg.registered.seller_id)
            if got != (campaign_id, account_id, seller_id):
                self.problem(f"index: row {rid} says {(campaign_id, account_id, seller_id)}, "
                             f"the registration {got}")
        for rid in sorted(set(self.registrations) - indexed):
            self.problem(f"index: registration {rid} is not in ledger_registrations")
        accounts: dict[tuple[str, str], list[UUID]] = defaultdict(list)
        for rid, reg in self.registrations.items():
            accounts[(reg.registered.campaign_id, reg.registered.account_id)].append(rid)
        for pair, rids in accounts.items():
            if len(rids) > 1:
                self.problem(f"one registration per account: {pair} has {rids}")


def allowed_transition(session: Session, event: Any) -> bool:
    """DOMAIN.md: under_review -> approved | rejected | withdrawn; approved -> withdrawn
    (before the session starts); under_review | approved -> expired."""
    if isinstance(event, r.Approved | r.Rejected):
        return session.status == "under_review"
    if isinstance(event, r.Withdrawn):
        return session.status == "under_review" or (
            session.status == "approved" and event.timestamp < session.starts_at)
    if isinstance(event, r.Expired):
        return session.status in OPEN
    return False

