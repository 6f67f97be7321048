"""What can happen to a registration: its events, and how each one changes its state."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ledger.aggregates.base import LedgerCreated, LedgerEvent
from ledger.aggregates.sessions import Session

if TYPE_CHECKING:
    from ledger.aggregates.registration import Registration


class Registered(LedgerCreated):
    """The application, with the campaign terms it was made under (`terms`)."""

    registration_id: str
    campaign_id: str
    seller_id: str
    account_id: str
    main_category: str
    level: str | None
    profile: dict[str, Any]
    eligibility: list[dict[str, Any]]
    terms: dict[str, Any]

    def apply(self, reg: Registration) -> None:
        super().apply(reg)
        reg.sessions = {}
        reg.decision = None
        reg.expired = False
        reg.ever_approved = False
        reg.decisions = []
        reg.reports = 0


class SessionAdded(LedgerEvent):
    """A session was added to a registration."""
    session_id: str
    starts_at: datetime
    ends_at: datetime

    def apply(self, reg: Registration) -> None:
        reg.sessions[self.session_id] = Session(
            self.session_id, self.starts_at, self.ends_at,
            main_category=reg.main_category, level=reg.level,
        )


class Duplicated(LedgerEvent):
    """A session was duplicated into a new session under review."""
    session_id: str
    duplicated_from: str
    starts_at: datetime
    ends_at: datetime
    main_category: str | None
    level: str | None

    def apply(self, reg: Registration) -> None:
        reg.sessions[self.session_id] = Session(
            self.session_id, self.starts_at, self.ends_at, duplicated_from=self.duplicated_from,
            main_category=self.main_category, level=self.level,
        )


class Decision(LedgerEvent):
    """Base of the events that move sessions (or an auto registration) to a new status."""

    new_status = ""
    session_ids: list[str]

    def apply(self, reg: Registration) -> None:
        for session_id in self.session_ids:
            reg.sessions[session_id].status = self.new_status
        if not reg.is_manual and not self.session_ids:
            reg.decision = self.new_status

    def record_decision(self, reg: Registration, **extra: Any) -> None:
        reg.decisions.append({
            "decision": self.new_status, "session_ids": list(self.session_ids),
            "actor": dict(self.actor), "command_id": self.command_id,
            "at": self.timestamp.isoformat(), **extra,
        })


class Withdrawn(Decision):
    """Sessions were withdrawn."""
    new_status = "withdrawn"
    reason: str | None

    def apply(self, reg: Registration) -> None:
        super().apply(reg)
        self.record_decision(reg, reason=self.reason)


class Approved(Decision):
    """Sessions were approved (by a reviewer, or by the system in auto review)."""
    new_status = "approved"
    note: str | None
    override_reason: str | None

    def apply(self, reg: Registration) -> None:
        super().apply(reg)
        reg.ever_approved = True
        self.record_decision(reg, note=self.note, override_reason=self.override_reason)


class Rejected(Decision):
    """Sessions were rejected, with reason codes."""
    new_status = "rejected"
    reasons: list[str]
    note: str | None

    def apply(self, reg: Registration) -> None:
        super().apply(reg)
        self.record_decision(reg, reasons=list(self.reasons), note=self.note)


class Expired(Decision):
    """The campaign was expired while this registration was open."""

    new_status = "expired"

    def apply(self, reg: Registration) -> None:
        super().apply(reg)
        reg.expired = True


class PerformanceRecorded(LedgerEvent):
    """A performance report was recorded: one period's figures in one currency."""
    report_id: str
    session_id: str | None
    period_start: datetime
    period_end: datetime
    currency: str
    gmv: Decimal
    orders: int
    items_sold: int
    buyers: int
    views: int
    refunds: Decimal

    # v2 added `refunds`: a v1 report (written before feeds reported refunds) upcasts to
    # refunds of 0, so stores written by an older ledger still replay (see
    # tests/fixtures/README.md for the v1 fixture store).
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.setdefault("refunds", Decimal("0"))

    def apply(self, reg: Registration) -> None:
        reg.reports += 1
