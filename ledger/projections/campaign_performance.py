"""Campaign performance: per campaign, sums per currency by hour, day and seller, and its
reviews."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ledger.aggregates import campaign as c
from ledger.aggregates import registration_events as r
from ledger.aggregates.registration import derive_status
from ledger.errors import NotFound
from ledger.projections.base import FoldRows, ReadModel, handles
from ledger.projections.tables import Table
from ledger.projections.view import ViewMixin, physical
from ledger.projections.ytd import MEASURES, REPORT_FIELDS, add_report, fetch, figures, totals
from ledger.values import jsonable

RATE_PLACES = Decimal("0.0001")

CAMPAIGNS = Table("cp_campaigns", ("aggregate_id",), {
    "aggregate_id": "text", "campaign_id": "text", "name": "text", "kind": "text",
    "review_mode": "text", "starts_at": "time", "ends_at": "time", "expired_at": "time"})
REGISTRATIONS = Table("cp_registrations", ("aggregate_id",), {
    "aggregate_id": "text", "registration_id": "text", "campaign_id": "text",
    "seller_id": "text", "account_id": "text", "review_mode": "text", "sessions": "json",
    "decision": "text", "expired": "int", "decided": "int", "ever_approved": "int",
    "status": "text"})
DAYS = Table("cp_days", ("campaign_id", "day", "currency"), {
    "campaign_id": "text", "day": "text", "currency": "text", **MEASURES})
# The hour a report's period starts in, as UTC text (`2026-11-11T13:00:00Z`): truncated in
# the report's own offset, so a +05:30 report's hour is its local hour, then spelt in UTC
# so that the text sorts as the instants do on both backends.
HOURS = Table("cp_hours", ("campaign_id", "hour", "currency"), {
    "campaign_id": "text", "hour": "text", "currency": "text", **MEASURES})
SELLERS = Table("cp_sellers", ("campaign_id", "seller_id", "currency"), {
    "campaign_id": "text", "seller_id": "text", "currency": "text", **MEASURES})


class CampaignPerformance(ReadModel):
    """Per campaign: sums per currency by hour, day and seller, statuses, approval rate."""
    name = "campaign_performance"
    description = ("per campaign: sums per currency by hour, day and seller, statuses, "
                   "approval rate")
    tables = (CAMPAIGNS, REGISTRATIONS, DAYS, HOURS, SELLERS)
    state_tables = (CAMPAIGNS, REGISTRATIONS)
    weight = 4  # handles every performance report (90% of a season's events)
    fold_seeds = (r.Registered,)  # the report fold reads a registration's campaign, seller
    fold_columns = ("campaign_id", "seller_id")

    @handles(c.CampaignCreated)
    def on_campaign_created(self, e: c.CampaignCreated, aid: str) -> None:
        self.batch.put(CAMPAIGNS, {
            "aggregate_id": aid, "campaign_id": e.campaign_id, "name": e.name,
            "kind": e.kind, "review_mode": e.review_mode, "starts_at": e.starts_at,
            "ends_at": e.ends_at, "expired_at": None})

    @handles(c.Expired)
    def on_campaign_expired(self, e: c.Expired, aid: str) -> None:
        row = self.batch.get(CAMPAIGNS, aid)
        if row is not None:
            self.batch.put(CAMPAIGNS, {**row, "expired_at": e.timestamp})

    # (`reads`: a rebuild's helper, which runs this to seed its folds, decodes no more
    # of a registration than this.)
    @handles(r.Registered, reads=("registration_id", "campaign_id", "seller_id",
                                  "account_id", "terms"))
    def on_registered(self, e: r.Registered, aid: str) -> None:
        self.batch.put(REGISTRATIONS, {
            "aggregate_id": aid, "registration_id": e.registration_id,
            "campaign_id": e.campaign_id, "seller_id": e.seller_id, "account_id": e.account_id,
            "review_mode": e.terms["review_mode"], "sessions": {}, "decision": None,
            "expired": 0, "decided": 0, "ever_approved": 0, "status": "under_review"})

    @handles(r.SessionAdded, r.Duplicated)
    def on_session(self, e: r.SessionAdded | r.Duplicated, aid: str) -> None:
        row = self.batch.get(REGISTRATIONS, aid)
        if row is not None:
            self.batch.put(REGISTRATIONS, restatus(
                {**row, "sessions": {**row["sessions"], e.session_id: "under_review"}}))

    @handles(r.Decision)
    def on_decision(self, e: r.Decision, aid: str) -> None:
        row = self.batch.get(REGISTRATIONS, aid)
        if row is None:
            return
        row = {**row, "sessions": {**row["sessions"],
                                   **dict.fromkeys(e.session_ids, e.new_status)}}
        if row["review_mode"] != "manual" and not e.session_ids:
            row["decision"] = e.new_status
        if isinstance(e, r.Expired):
            row["expired"] = 1
        if isinstance(e, r.Approved | r.Rejected):
            row["decided"] = 1
        if isinstance(e, r.Approved):
            row["ever_approved"] = 1
        self.batch.put(REGISTRATIONS, restatus(row))

    @handles(r.PerformanceRecorded, reads=REPORT_FIELDS, fold=True)
    def on_performance(self, reports: FoldRows) -> None:
        get, cells = self.batch.fold_get, self.batch.cells
        starts, sellers = cells["starts"], cells["sellers"]
        for report in reports:
            row = get(REGISTRATIONS, report[0])
            if row is None:
                continue  # a report of a registration this read model never saw
            # Cells per campaign, not per registration: a campaign's registrations report
            # the same hours, so a season's reports fold into a few hundred cells instead
            # of one each, and `settle` has that many rows to add to. The start's offset
            # is part of the key: aware times of one instant are equal, yet each report's
            # day is the one of its own offset.
            campaign, start, currency = row["campaign_id"], report[1], report[2]
            add_report(starts, (campaign, start, start.tzinfo, currency), report)
            add_report(sellers, (campaign, row["seller_id"], currency), report)

    def settle(self) -> None:
        batch = self.batch
        starts, sellers = batch.cells["starts"], batch.cells["sellers"]
        for (campaign, start, _offset, currency), amounts in starts.items():
            # The hour (and so the day) in the report's own offset, as the seller and the
            # campaign team saw it.
            hour = start.replace(minute=0, second=0, microsecond=0)
            batch.add(DAYS, (campaign, hour.date().isoformat(), currency), amounts)
            batch.add(HOURS, (campaign, utc_hour(hour), currency), amounts)
        for key, amounts in sellers.items():
            batch.add(SELLERS, key, amounts)
        starts.clear()
        sellers.clear()


def utc_hour(hour: datetime) -> str:
    """An hour's start as UTC text, the `hour` key of `cp_hours`."""
    return hour.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def restatus(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its status derived again from its sessions and decision."""
    row["status"] = derive_status(row["review_mode"] == "manual", row["sessions"].values(),
                                  row["decision"], bool(row["expired"]))
    return row


# Queries ---------------------------------------------------------------------------------

def approval(registrations: list[dict[str, Any]]) -> dict[str, Any]:
    """Approval rate = registrations ever approved / registrations with a review decision
    (approved or rejected, by a reviewer or by the system); null when none was decided."""
    decided = sum(1 for row in registrations if row["decided"])
    approved = sum(1 for row in registrations if row["ever_approved"])
    if not decided:
        return {"decided": 0, "approved": 0, "approval_rate": None}
    rate = (Decimal(approved) / Decimal(decided)).quantize(RATE_PLACES, ROUND_HALF_EVEN)
    return {"decided": decided, "approved": approved, "approval_rate": str(rate)}


def campaign_performance_report(view: ViewMixin, campaign_id: str) -> dict[str, Any]:
    """The campaign's totals, days, hours, sellers, registrations by status and approval
    rate."""
    where = {"campaign_id": campaign_id}
    campaign = next(iter(fetch(view, CAMPAIGNS, where)), None)
    registrations = fetch(view, REGISTRATIONS, where)
    if campaign is None and not registrations:
        raise NotFound(f"campaign {campaign_id!r} is not in the campaign_performance read "
                       "model (unknown, or not caught up yet: try --fresh)",
                       {"campaign_id": campaign_id})
    days = fetch(view, DAYS, where, ("day", "currency"))
    by_status: dict[str, int] = {}
    for row in registrations:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    about = {k: campaign[k] for k in ("name", "kind", "review_mode", "starts_at", "ends_at",
                                      "expired_at")} if campaign else {}
    return {
        "campaign_id": campaign_id,
        **jsonable(about),
        "totals": totals(days),
        "days": [{"day": row["day"], **figures(row)}
                 for row in days],
        "hours": [{"hour": row["hour"], **figures(row)}
                  for row in fetch(view, HOURS, where, ("hour", "currency"))],
        "sellers": [{"seller_id": row["seller_id"], **figures(row)}
                    for row in fetch(view, SELLERS, where, ("seller_id", "currency"))],
        "registrations": {"total": len(registrations), "by_status": dict(sorted(
            by_status.items()))},
        "approval": approval(registrations),
    }


def under_review(view: ViewMixin, limit: int = 50) -> dict[str, Any]:
    """The review queue: registrations under review now, counted per campaign, and the
    first `limit` of them (by campaign, then registration id) with their sessions waiting."""
    d = view.dialect
    rows = view.query(f"SELECT * FROM {d.q(physical(REGISTRATIONS, False))} "
                      f"WHERE status = {d.p}", ("under_review",))
    waiting = sorted((view.decode_row(REGISTRATIONS, row) for row in rows),
                     key=lambda row: (row["campaign_id"], row["registration_id"]))
    per_campaign: dict[str, int] = {}
    for row in waiting:
        per_campaign[row["campaign_id"]] = per_campaign.get(row["campaign_id"], 0) + 1
    return {
        "total": len(waiting),
        "campaigns": [{"campaign_id": k, "under_review": n}
                      for k, n in sorted(per_campaign.items())],
        "registrations": [
            {k: row[k] for k in ("registration_id", "campaign_id", "seller_id", "account_id")}
            | {"sessions_under_review": sum(1 for s in row["sessions"].values()
                                            if s == "under_review")}
            for row in waiting[:limit]],
    }
