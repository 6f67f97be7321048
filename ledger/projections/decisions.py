"""Review decisions: one row per `Approved` or `Rejected`, with the facts it was made on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.aggregates import registration_events as r
from ledger.projections.base import ReadModel, handles
from ledger.projections.tables import Table
from ledger.projections.view import ViewMixin, physical
from ledger.values import jsonable

REGISTRATIONS = Table("decision_registrations", ("aggregate_id",), {
    "aggregate_id": "text", "registration_id": "text", "campaign_id": "text",
    "campaign_name": "text", "seller_id": "text", "account_id": "text",
    "review_mode": "text", "level": "text", "eligibility": "json", "registered_at": "time",
    "submitted": "json"})
DECISIONS = Table("review_decisions", ("aggregate_id", "version"), {
    "aggregate_id": "text", "version": "int", "registration_id": "text",
    "campaign_id": "text", "campaign_name": "text", "seller_id": "text", "account_id": "text",
    "review_mode": "text", "session_ids": "json", "reviewer_id": "text",
    "reviewer_role": "text", "decision": "text", "reasons": "json", "note": "text",
    "override_reason": "text", "eligibility": "json", "failed_criteria": "json",
    "command_id": "text", "submitted_at": "time", "decided_at": "time",
    "seconds_to_decide": "int"})
COPIED = ("registration_id", "campaign_id", "campaign_name", "seller_id", "account_id",
          "review_mode", "eligibility")


class ReviewDecisions(ReadModel):
    """One row per approval or rejection, with the time it took to decide."""
    name = "review_decisions"
    description = "one row per approval or rejection (reviewer or system), with time to decide"
    tables = (REGISTRATIONS, DECISIONS)
    state_tables = (REGISTRATIONS,)

    @handles(r.Registered)
    def on_registered(self, e: r.Registered, aid: str) -> None:
        self.batch.put(REGISTRATIONS, registration_row(e, aid))

    @handles(r.SessionAdded, r.Duplicated)
    def on_session(self, e: r.SessionAdded | r.Duplicated, aid: str) -> None:
        row = self.batch.get(REGISTRATIONS, aid)
        if row is not None:
            self.batch.put(REGISTRATIONS, with_session(row, e))

    @handles(r.Approved, r.Rejected)
    def on_decision(self, e: r.Approved | r.Rejected, aid: str) -> None:
        row = self.batch.get(REGISTRATIONS, aid)
        if row is not None:
            self.batch.append(DECISIONS, decision_row(row, e, aid))


# The rows, as pure functions of the events: `ledger audit decisions` replays the store
# through them too, so the read model and the audit cannot disagree on a decision's facts.

def registration_row(e: r.Registered, aid: str) -> dict[str, Any]:
    """What a later decision needs to know about the registration it decides."""
    return {
        "aggregate_id": aid, "registration_id": e.registration_id,
        "campaign_id": e.campaign_id, "campaign_name": e.terms["name"],
        "seller_id": e.seller_id, "account_id": e.account_id,
        "review_mode": e.terms["review_mode"], "level": e.level,
        "eligibility": e.eligibility, "registered_at": e.timestamp, "submitted": {}}


def with_session(row: dict[str, Any], e: r.SessionAdded | r.Duplicated) -> dict[str, Any]:
    """The row with the session's submission time added."""
    return {**row, "submitted": {**row["submitted"], e.session_id: e.timestamp.isoformat()}}


def decision_row(row: dict[str, Any], e: r.Approved | r.Rejected, aid: str) -> dict[str, Any]:
    """One decision: who decided which sessions, how, on which eligibility, how fast."""
    submitted_at = submitted(row, e.session_ids)
    return {
        **{k: row[k] for k in COPIED},
        "aggregate_id": aid, "version": e.originator_version,
        "session_ids": list(e.session_ids), "reviewer_id": e.actor["id"],
        "reviewer_role": e.actor["role"], "decision": e.new_status,
        "reasons": list(e.reasons) if isinstance(e, r.Rejected) else [],
        "note": e.note,
        "override_reason": e.override_reason if isinstance(e, r.Approved) else None,
        "failed_criteria": [c["criterion"] for c in row["eligibility"] if not c["passed"]],
        "command_id": e.command_id, "submitted_at": submitted_at,
        "decided_at": e.timestamp,
        "seconds_to_decide": int((e.timestamp - submitted_at).total_seconds())}


def submitted(row: dict[str, Any], session_ids: list[str]) -> datetime:
    """When the decided work was submitted: the earliest submission among the decided
    sessions (the longest wait), or the registration itself when it has no sessions."""
    times = [datetime.fromisoformat(row["submitted"][s]) for s in session_ids
             if s in row["submitted"]]
    registered_at: datetime = row["registered_at"]
    return min(times, default=registered_at)


# Queries ---------------------------------------------------------------------------------

def decisions_report(view: ViewMixin, reviewer: str | None = None,
                     campaign_id: str | None = None,
                     overrides_only: bool = False) -> list[dict[str, Any]]:
    """Decisions, oldest first; `reviewer` is an actor id (`system` for auto decisions)."""
    d = view.dialect
    conditions: list[str] = ["1 = 1"]
    params: list[Any] = []
    if reviewer is not None:
        conditions.append(f'"reviewer_id" = {d.p}')
        params.append(reviewer)
    if campaign_id is not None:
        conditions.append(f'"campaign_id" = {d.p}')
        params.append(campaign_id)
    if overrides_only:
        conditions.append('"override_reason" IS NOT NULL')
    rows = view.query(f"SELECT * FROM {d.q(physical(DECISIONS, False))} "
                      f"WHERE {' AND '.join(conditions)}", params)
    decoded = [view.decode_row(DECISIONS, row) for row in rows]
    # Sorted here, not in SQL: SQLite keeps times as text with their own offsets.
    decoded.sort(key=lambda row: (row["decided_at"], row["aggregate_id"], row["version"]))
    return [jsonable(row) for row in decoded]


def time_to_decide(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """How long decisions took (seconds from submission), for people and for the system
    apart: count, median, 90th percentile (nearest rank) and longest; and the overrides."""
    def summary(seconds: list[int]) -> dict[str, Any]:
        ordered = sorted(seconds)
        if not ordered:
            return {"decisions": 0, "median": None, "p90": None, "max": None}
        return {"decisions": len(ordered), "median": nearest_rank(ordered, 50),
                "p90": nearest_rank(ordered, 90), "max": ordered[-1]}

    people = [row["seconds_to_decide"] for row in decisions if row["reviewer_role"] != "system"]
    system = [row["seconds_to_decide"] for row in decisions if row["reviewer_role"] == "system"]
    overrides = [row for row in decisions if row["override_reason"] is not None]
    return {"reviewers": summary(people), "system": summary(system),
            "overrides": len(overrides), "approved": sum(
                1 for row in decisions if row["decision"] == "approved"),
            "rejected": sum(1 for row in decisions if row["decision"] == "rejected")}


def nearest_rank(ordered: list[int], percent: int) -> int:
    """The nearest-rank percentile of sorted values (a value that occurred, not a blend)."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[rank - 1]
