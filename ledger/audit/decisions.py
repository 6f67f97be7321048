"""Every review decision with the facts it was made on, and the ones an auditor should see:
both replayed from the event store's notification log, never from a read model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from ledger.aggregates import registration_events as r
from ledger.audit.history import Source
from ledger.audit.times import backwards
from ledger.projections.decisions import decision_row, registration_row, with_session

PAGE = 1000
FACT_EVENTS = (r.Registered, r.SessionAdded, r.Duplicated, r.Approved, r.Rejected)
TOPICS = tuple(get_topic(cls) for cls in FACT_EVENTS)
SPECIFIC = "other"  # a rejection needs a reason code other than this one


@dataclass(slots=True)
class Facts:
    """What the audit keeps per registration (memory grows with registrations, not events):
    the review_decisions read model's row, plus the profile, the campaign's terms at
    registration, and each session's window."""

    row: dict[str, Any]
    profile: dict[str, Any]
    terms: dict[str, Any]
    sessions: dict[str, dict[str, datetime]] = field(default_factory=dict)


@dataclass(frozen=True)
class Filters:
    """Which review decisions to list (every filter given must match)."""
    reviewer: str | None = None
    campaign: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    overrides: bool = False
    auto: bool = False

    def keep(self, row: dict[str, Any]) -> bool:
        return ((self.reviewer is None or row["reviewer_id"] == self.reviewer)
                and self.in_period(row["decided_at"])
                and (not self.overrides or row["override_reason"] is not None)
                and (not self.auto or row["reviewer_role"] == "system"))

    def in_period(self, moment: datetime) -> bool:
        return ((self.since is None or moment >= self.since)
                and (self.until is None or moment < self.until))

    @property
    def decisions_only(self) -> bool:
        """Filters that only a decision can match."""
        return self.reviewer is not None or self.overrides or self.auto


def decisions(ledger: Source, filters: Filters = Filters(), *,
              page: int = PAGE) -> Iterator[dict[str, Any]]:
    """Each Approved/Rejected in store order, with the facts it was made on."""
    facts: dict[str, Facts] = {}
    for aid, event in _fact_events(ledger, page):
        if isinstance(event, r.Registered):
            if filters.campaign is None or event.campaign_id == filters.campaign:
                facts[aid] = Facts(registration_row(event, aid), dict(event.profile),
                                   dict(event.terms))
            continue
        known = facts.get(aid)
        if known is None:
            continue
        if isinstance(event, r.SessionAdded | r.Duplicated):
            known.row = with_session(known.row, event)
            known.sessions[event.session_id] = {"starts_at": event.starts_at,
                                                "ends_at": event.ends_at}
        elif isinstance(event, r.Approved | r.Rejected):
            row = audited(known, event, aid)
            if filters.keep(row):
                yield row


def _fact_events(ledger: Source, page: int) -> Iterator[tuple[str, Any]]:
    """(aggregate id, event) for the events decisions depend on, a page at a time."""
    app, position = ledger.app, 0
    while True:
        notifications = app.recorder.select_notifications(
            position, page, topics=TOPICS, inclusive_of_start=False)
        for notification in notifications:
            yield str(notification.originator_id), app.mapper.to_domain_event(notification)
        if len(notifications) < page:
            return
        position = notifications[-1].id


def audited(known: Facts, event: r.Approved | r.Rejected, aid: str) -> dict[str, Any]:
    """The read model's decision row, plus the facts an auditor checks it against."""
    row = decision_row(known.row, event, aid)
    row.update(
        profile=known.profile,
        requirements=known.terms.get("requirements", {}),
        level_terms=known.terms.get("level"),
        campaign_starts_at=known.terms["starts_at"],
        campaign_ends_at=known.terms["ends_at"],
        sessions=[{"session_id": sid, **known.sessions[sid]} for sid in event.session_ids
                  if sid in known.sessions],
    )
    return row


# Findings ----------------------------------------------------------------------------------

Check = Callable[[dict[str, Any]], dict[str, Any] | None]


def _override(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["decision"] != "approved" or not row["failed_criteria"]:
        return None
    return {"failed_criteria": [c for c in row["eligibility"] if not c["passed"]],
            "override_reason": row["override_reason"]}


def _session_started(row: dict[str, Any]) -> dict[str, Any] | None:
    started = [s for s in row["sessions"] if s["starts_at"] <= row["decided_at"]]
    if not started:
        return None
    return {"decided_at": row["decided_at"], "started_sessions": started}


def _after_campaign_end(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["decided_at"] < row["campaign_ends_at"]:
        return None
    return {"decided_at": row["decided_at"], "campaign_ends_at": row["campaign_ends_at"]}


def _unspecific_rejection(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["decision"] != "rejected" or set(row["reasons"]) - {SPECIFIC}:
        return None
    return {"reasons": row["reasons"], "note": row["note"]}


def _own_registration(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["reviewer_role"] == "system" or row["reviewer_id"] not in (
            row["seller_id"], row["account_id"]):
        return None
    return {"reviewer_id": row["reviewer_id"], "seller_id": row["seller_id"],
            "account_id": row["account_id"]}


FINDINGS: dict[str, tuple[str, Check]] = {
    "override": ("approved although eligibility criteria failed", _override),
    "session_already_started": ("decided on a session that had already started",
                                _session_started),
    "after_campaign_end": ("decided after the campaign ended", _after_campaign_end),
    "rejection_without_specific_reason": ("rejected with no reason code other than `other`",
                                          _unspecific_rejection),
    "own_registration": ("the reviewer decided their own registration", _own_registration),
}


def findings(ledger: Source, filters: Filters = Filters(), *,
             page: int = PAGE) -> Iterator[dict[str, Any]]:
    """One row per finding: which decision (or event), what is wrong with it, and the
    evidence. Decisions first, in store order; then events recorded earlier than the
    version before them (`time_went_backwards`), which --since/--until select by their
    recorded time and the decision-only filters leave out."""
    for row in decisions(ledger, filters, page=page):
        for code, (summary, check) in FINDINGS.items():
            evidence = check(row)
            if evidence is not None:
                yield {"finding": code, "summary": summary,
                       **{k: row[k] for k in DECISION_KEYS}, "evidence": evidence}
    if not filters.decisions_only:
        for row in backwards(ledger, filters.campaign):
            if filters.in_period(row["evidence"]["recorded_at"]):
                yield row


DECISION_KEYS = ("decided_at", "registration_id", "version", "campaign_id", "seller_id",
                 "decision", "session_ids", "reviewer_id", "reviewer_role", "command_id")
