"""Manage Campaign: a row per registration for the seller's page, and the campaigns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.aggregates import campaign as c
from ledger.aggregates import registration_events as r
from ledger.aggregates.registration import derive_status
from ledger.projections.base import ReadModel, handles
from ledger.projections.rows import listed
from ledger.projections.tables import Table
from ledger.projections.view import ViewMixin
from ledger.values import jsonable

REGISTRATIONS = Table("manage_registrations", ("aggregate_id",), {
    "aggregate_id": "text", "registration_id": "text", "seller_id": "text",
    "account_id": "text", "campaign_id": "text", "campaign_name": "text", "kind": "text",
    "review_mode": "text", "campaign_starts_at": "time", "campaign_ends_at": "time",
    "allow_duplicates": "int", "main_category": "text", "level": "text", "status": "text",
    "sessions": "json", "decision": "text", "expired": "int", "submitted_at": "time",
    "decided_at": "time", "last_decision": "text", "last_reasons": "json", "last_note": "text",
    "updated_at": "time", "version": "int"})
CAMPAIGNS = Table("manage_campaigns", ("aggregate_id",), {
    "aggregate_id": "text", "campaign_id": "text", "name": "text", "kind": "text",
    "review_mode": "text", "registration_opens_at": "time", "registration_closes_at": "time",
    "starts_at": "time", "ends_at": "time", "allow_duplicates": "int", "max_sessions": "int",
    "requirements": "json", "levels": "json", "expired_at": "time"})


class ManageCampaign(ReadModel):
    """A row per registration (the seller's Manage Campaign page) and per campaign."""
    name = "manage_campaign"
    description = "a row per registration (the seller's Manage Campaign page) and campaigns"
    tables = (REGISTRATIONS, CAMPAIGNS)
    state_tables = (REGISTRATIONS, CAMPAIGNS)

    @handles(c.CampaignCreated)
    def on_campaign_created(self, e: c.CampaignCreated, aid: str) -> None:
        self.batch.put(CAMPAIGNS, {
            "aggregate_id": aid, "campaign_id": e.campaign_id, "name": e.name,
            "kind": e.kind, "review_mode": e.review_mode,
            "registration_opens_at": e.registration_opens_at,
            "registration_closes_at": e.registration_closes_at, "starts_at": e.starts_at,
            "ends_at": e.ends_at, "allow_duplicates": int(e.allow_duplicates),
            "max_sessions": e.max_sessions, "requirements": e.requirements, "levels": e.levels,
            "expired_at": None})

    @handles(c.Expired)
    def on_campaign_expired(self, e: c.Expired, aid: str) -> None:
        row = self.batch.get(CAMPAIGNS, aid)
        if row is not None:
            self.batch.put(CAMPAIGNS, {**row, "expired_at": e.timestamp})

    @handles(r.Registered)
    def on_registered(self, e: r.Registered, aid: str) -> None:
        terms = e.terms
        self.batch.put(REGISTRATIONS, {
            "aggregate_id": aid, "registration_id": e.registration_id,
            "seller_id": e.seller_id, "account_id": e.account_id, "campaign_id": e.campaign_id,
            "campaign_name": terms["name"], "kind": terms["kind"],
            "review_mode": terms["review_mode"], "campaign_starts_at": terms["starts_at"],
            "campaign_ends_at": terms["ends_at"],
            "allow_duplicates": int(terms["allow_duplicates"]),
            "main_category": e.main_category, "level": e.level, "status": "under_review",
            "sessions": [], "decision": None, "expired": 0, "submitted_at": e.timestamp,
            "decided_at": None, "last_decision": None, "last_reasons": None, "last_note": None,
            "updated_at": e.timestamp, "version": e.originator_version})

    @handles(r.SessionAdded)
    def on_session_added(self, e: r.SessionAdded, aid: str) -> None:
        self._add_session(e, aid, None)

    @handles(r.Duplicated)
    def on_duplicated(self, e: r.Duplicated, aid: str) -> None:
        self._add_session(e, aid, e.duplicated_from)

    def _add_session(self, e: Any, aid: str, duplicated_from: str | None) -> None:
        row = self._row(e, aid)
        if row is not None:
            row["sessions"] = [*row["sessions"], {
                "session_id": e.session_id, "starts_at": e.starts_at.isoformat(),
                "ends_at": e.ends_at.isoformat(), "status": "under_review",
                "duplicated_from": duplicated_from}]
            self._put(row)

    @handles(r.Decision)
    def on_decision(self, e: r.Decision, aid: str) -> None:
        row = self._row(e, aid)
        if row is None:
            return
        chosen = set(e.session_ids)
        row["sessions"] = [{**s, "status": e.new_status} if s["session_id"] in chosen else s
                           for s in row["sessions"]]
        if row["review_mode"] != "manual" and not e.session_ids:
            row["decision"] = e.new_status
        if isinstance(e, r.Expired):
            row["expired"] = 1
        if isinstance(e, r.Approved | r.Rejected):
            row["decided_at"] = e.timestamp
            row["last_decision"] = e.new_status
            row["last_reasons"] = list(getattr(e, "reasons", []) or [])
            row["last_note"] = e.note
        self._put(row)

    def _row(self, e: Any, aid: str) -> dict[str, Any] | None:
        """A copy of the registration's row, stamped with this event (None: unknown)."""
        row = self.batch.get(REGISTRATIONS, aid)
        if row is None:
            return None
        return {**row, "updated_at": e.timestamp, "version": e.originator_version}

    def _put(self, row: dict[str, Any]) -> None:
        row["status"] = derive_status(row["review_mode"] == "manual",
                                      [s["status"] for s in row["sessions"]],
                                      row["decision"], bool(row["expired"]))
        self.batch.put(REGISTRATIONS, row)


# Queries: the seller's Manage Campaign page and the campaign list --------------------------

REGISTRATION_STATUSES = ("under_review", "approved", "rejected", "withdrawn", "expired")


def actions_open(row: dict[str, Any], now: datetime) -> list[str]:
    """What the seller can do on this registration now (computed at query time)."""
    if row["expired"] or now >= row["campaign_ends_at"]:
        return []
    if row["review_mode"] != "manual":
        approved = row["decision"] == "approved" and now < row["campaign_starts_at"]
        return ["withdraw"] if approved else []
    statuses = [(s["status"], datetime.fromisoformat(s["starts_at"])) for s in row["sessions"]]
    actions = []
    if any(status == "under_review" for status, _ in statuses):
        actions.append("cancel")
    if any(status == "approved" and now < starts for status, starts in statuses):
        actions.append("withdraw")
    if row["allow_duplicates"] and statuses:
        actions.append("duplicate")
    return actions


def manage_page(view: ViewMixin, seller_id: str, now: datetime, *, status: str | None = None,
                campaign_id: str | None = None) -> list[dict[str, Any]]:
    """The seller's rows; one that cannot be read is `{registration_id, campaign_id,
    "unreadable": why}` in its place (see rows.py)."""
    d = view.dialect
    sql = f"SELECT * FROM {d.q('rm_manage_registrations')} WHERE seller_id = {d.p}"
    params: list[Any] = [seller_id]
    if status is not None:
        sql += f" AND status = {d.p}"
        params.append(status)
    if campaign_id is not None:
        sql += f" AND campaign_id = {d.p}"
        params.append(campaign_id)
    return listed(view, REGISTRATIONS,
                  sql + " ORDER BY campaign_starts_at DESC, campaign_id, account_id", params,
                  lambda row: _page_row(row, now), ("registration_id", "campaign_id"))


def _page_row(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    page: dict[str, Any] = jsonable({
        "registration_id": row["registration_id"], "campaign_id": row["campaign_id"],
        "campaign_name": row["campaign_name"], "kind": row["kind"],
        "review_mode": row["review_mode"], "starts_at": row["campaign_starts_at"],
        "ends_at": row["campaign_ends_at"], "account_id": row["account_id"],
        "status": row["status"], "sessions": row["sessions"],
        "submitted_at": row["submitted_at"], "decided_at": row["decided_at"],
        "last_decision": row["last_decision"], "last_reasons": row["last_reasons"] or [],
        "actions": actions_open(row, now)})
    return page


def campaign_list(view: ViewMixin, now: datetime, *, open_only: bool = False
                  ) -> list[dict[str, Any]]:
    """The campaigns; one that cannot be read is `{campaign_id, "unreadable": why}` in its
    place, also with `open_only` (whether it is open cannot be told)."""
    return listed(view, CAMPAIGNS, f"SELECT * FROM {view.dialect.q('rm_manage_campaigns')} "
                  "ORDER BY starts_at, campaign_id", (),
                  lambda row: _campaign_row(row, now, open_only), ("campaign_id",))


def _campaign_row(row: dict[str, Any], now: datetime, open_only: bool
                  ) -> dict[str, Any] | None:
    status = campaign_status(row, now)
    if open_only and status != "registration_open":
        return None
    listed_row: dict[str, Any] = jsonable({
        "campaign_id": row["campaign_id"], "name": row["name"], "kind": row["kind"],
        "review_mode": row["review_mode"], "status": status,
        "registration_opens_at": row["registration_opens_at"],
        "registration_closes_at": row["registration_closes_at"],
        "starts_at": row["starts_at"], "ends_at": row["ends_at"],
        "allow_duplicates": bool(row["allow_duplicates"]),
        "requirements": row["requirements"], "levels": row["levels"]})
    return listed_row


def campaign_status(row: dict[str, Any], now: datetime) -> str:
    """DOMAIN.md's campaign status, from the stored windows and the caller's clock."""
    if row["expired_at"] is not None:
        return "expired"
    for status, edge in (("upcoming", "registration_opens_at"),
                         ("registration_open", "registration_closes_at"),
                         ("registration_closed", "starts_at"), ("ongoing", "ends_at")):
        if now < row[edge]:
            return status
    return "ended"

