"""The Registration aggregate: one seller account's application to one campaign."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from ledger.aggregates.base import Cause, LedgerAggregate, registration_uuid
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration_events import (
    Approved,
    Duplicated,
    Expired,
    PerformanceRecorded,
    Registered,
    Rejected,
    SessionAdded,
    Withdrawn,
)
from ledger.aggregates.sessions import Session, check_new_sessions
from ledger.errors import NotFound, RuleBroken, ValidationFailed
from ledger.values import instant_text

UNDER_REVIEW = {"under_review"}


class Registration(LedgerAggregate):
    """Its state, the status derived from it, and the decisions that change it."""

    registration_id: str
    campaign_id: str
    seller_id: str
    account_id: str
    main_category: str
    level: str | None
    profile: dict[str, Any]
    eligibility: list[dict[str, Any]]
    terms: dict[str, Any]
    sessions: dict[str, Session]
    decision: str | None  # auto campaigns: the registration's own status
    expired: bool
    ever_approved: bool
    decisions: list[dict[str, Any]]
    reports: int  # recorded; which report_ids, `ledger_reports` holds (docs/design.md)

    # v2: `reports` (a count) replaced `report_ids` (every report_id recorded, which made
    # the state, its loads and its snapshots grow with the history). A snapshot taken by
    # v1 upcasts to the count when loaded.
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["reports"] = len(state.pop("report_ids", None) or ())

    def __init__(self) -> None:
        """State is set by the created event's `apply`, so that replay builds it too."""

    @property
    def is_manual(self) -> bool:
        return bool(self.terms["review_mode"] == "manual")

    @property
    def failed_criteria(self) -> list[dict[str, Any]]:
        return [c for c in self.eligibility if not c["passed"]]

    def status(self) -> str:
        return derive_status(self.is_manual, [s.status for s in self.sessions.values()],
                             self.decision, self.expired)

    def is_open(self) -> bool:
        """Would `expire_campaign` expire it?"""
        if self.expired:
            return False
        if self.is_manual:
            return any(s.is_open for s in self.sessions.values())
        return self.decision in (None, "approved")

    def next_session_id(self) -> str:
        return f"s{len(self.sessions) + 1}"

    def sessions_in(self, statuses: set[str]) -> list[Session]:
        return [s for s in self.sessions.values() if s.status in statuses]

    @classmethod
    def register(
        cls,
        campaign: Campaign,
        *,
        seller_id: str,
        account_id: str,
        main_category: str,
        level: str | None,
        profile: dict[str, Any],
        sessions: Sequence[tuple[datetime, datetime]],
        by: Cause,
    ) -> Registration:
        """Registered (+ SessionAdded each, manual) or + Approved/Rejected by system (auto)."""
        check_can_register(campaign, main_category, level, sessions, by.at)
        chosen = campaign.level(level) if level is not None else None
        reg_id = registration_uuid(campaign.campaign_id, account_id)
        reg = cls._create(
            Registered, id=reg_id, **by.stamp(),
            registration_id=str(reg_id), campaign_id=campaign.campaign_id, seller_id=seller_id,
            account_id=account_id, main_category=main_category, level=level, profile=profile,
            eligibility=evaluate_eligibility(campaign.requirements, chosen, profile),
            terms={**campaign.terms(), "level": chosen},
        )
        if reg.is_manual:
            reg.add_sessions(sessions, by)
        elif reg.failed_criteria:
            reg.record(Rejected, by.as_system(), session_ids=[],
                       reasons=["criteria_not_met"], note=None)
        else:
            reg.record(Approved, by.as_system(), session_ids=[], note=None, override_reason=None)
        return reg

    # Sessions ------------------------------------------------------------------------

    def add_sessions(self, sessions: Sequence[tuple[datetime, datetime]], by: Cause) -> None:
        self._check_sessions_can_change(by.at)
        self._check_session_rules(sessions, by.at)
        for starts_at, ends_at in sessions:
            self.record(SessionAdded, by, session_id=self.next_session_id(),
                        starts_at=starts_at, ends_at=ends_at)

    def duplicate(self, session_id: str, starts_at: datetime, ends_at: datetime, by: Cause) -> None:
        if not self.terms["allow_duplicates"]:
            raise RuleBroken("duplicates_not_allowed", "this campaign does not allow duplicates")
        self._check_sessions_can_change(by.at)
        source = self._session(session_id)
        self._check_session_rules([(starts_at, ends_at)], by.at)
        self.record(Duplicated, by, session_id=self.next_session_id(), duplicated_from=session_id,
                    starts_at=starts_at, ends_at=ends_at,
                    main_category=source.main_category, level=source.level)

    def _check_sessions_can_change(self, now: datetime) -> None:
        if not self.is_manual:
            raise RuleBroken("invalid_transition", "auto-review campaigns take no sessions")
        if self.expired or now >= self.terms["ends_at"]:
            raise RuleBroken("campaign_ended", "the campaign has ended",
                             {"ends_at": instant_text(self.terms["ends_at"])})

    def _check_session_rules(self, sessions: Sequence[tuple[datetime, datetime]],
                             now: datetime) -> None:
        check_new_sessions(list(sessions), self.sessions.values(),
                           period=(self.terms["starts_at"], self.terms["ends_at"]),
                           max_sessions=self.terms["max_sessions"], now=now)

    def _session(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise NotFound(f"registration has no session {session_id!r}",
                           {"session_id": session_id}) from None

    # Decisions -----------------------------------------------------------------------

    def withdraw(self, session_ids: Sequence[str] | None, reason: str | None, by: Cause) -> None:
        if not self.is_manual:
            if session_ids:
                raise ValidationFailed.field("session_ids", "auto registrations have no sessions")
            if self.decision != "approved" or self.expired or by.at >= self.terms["starts_at"]:
                raise RuleBroken("invalid_transition",
                                 "an auto registration is withdrawn only while approved "
                                 "and before the campaign starts", {"status": self.status()})
            self.record(Withdrawn, by, session_ids=[], reason=reason)
            return
        if session_ids:
            for session_id in session_ids:
                session = self._session(session_id)
                if not self._withdrawable(session, by.at):
                    raise RuleBroken("invalid_transition",
                                     f"session {session_id} is {session.status}"
                                     + (" and has started" if session.status == "approved" else ""),
                                     {"session_id": session_id, "status": session.status})
            chosen = list(dict.fromkeys(session_ids))
        else:
            chosen = [s.session_id for s in self.sessions.values() if self._withdrawable(s, by.at)]
            if not chosen:
                raise RuleBroken("invalid_transition", "no session can be withdrawn",
                                 {"status": self.status()})
        self.record(Withdrawn, by, session_ids=chosen, reason=reason)

    @staticmethod
    def _withdrawable(session: Session, now: datetime) -> bool:
        return session.status == "under_review" or (
            session.status == "approved" and now < session.starts_at
        )

    def _under_review(self, session_ids: Sequence[str] | None, verb: str) -> list[str]:
        if not self.is_manual:
            raise RuleBroken("invalid_transition",
                             f"auto registrations are decided by the system ({self.status()})",
                             {"status": self.status()})
        if session_ids is None or len(session_ids) == 0:
            chosen = [s.session_id for s in self.sessions_in(UNDER_REVIEW)]
            if not chosen:
                raise RuleBroken("invalid_transition", f"no session is under review to {verb}",
                                 {"status": self.status()})
            return chosen
        for session_id in session_ids:
            session = self._session(session_id)
            if session.status != "under_review":
                raise RuleBroken("invalid_transition",
                                 f"session {session_id} is {session.status}, not under review",
                                 {"session_id": session_id, "status": session.status})
        return list(dict.fromkeys(session_ids))

    def approve(self, session_ids: Sequence[str] | None, note: str | None,
                override_reason: str | None, by: Cause) -> None:
        chosen = self._under_review(session_ids, "approve")
        failed = self.failed_criteria
        if failed and not override_reason:
            raise RuleBroken("override_required",
                             "eligibility criteria failed: approving needs an override_reason",
                             {"failed_criteria": failed})
        self.record(Approved, by, session_ids=chosen, note=note,
                    override_reason=override_reason if failed else override_reason or None)

    def reject(self, session_ids: Sequence[str] | None, reasons: Sequence[str],
               note: str | None, by: Cause) -> None:
        chosen = self._under_review(session_ids, "reject")
        self.record(Rejected, by, session_ids=chosen, reasons=list(reasons), note=note)

    def expire(self, by: Cause) -> None:
        """Called by expire_campaign for each open registration."""
        open_ids = [s.session_id for s in self.sessions.values() if s.is_open]
        self.record(Expired, by, session_ids=open_ids)

    def record_performance(self, report: dict[str, Any], by: Cause) -> None:
        """Record a report (whether its report_id was recorded before, the caller has asked
        `ledger_reports`: `commands.handlers.record_performance`)."""
        if not self.ever_approved:
            raise RuleBroken("invalid_transition",
                             "performance is recorded only for approved registrations",
                             {"status": self.status()})
        if report.get("session_id") is not None:
            self._session(report["session_id"])
        start, end = report["period_start"], report["period_end"]
        if not start < end:
            raise ValidationFailed.field("period_end", "must be after period_start")
        if not self.terms["starts_at"] <= start < self.terms["ends_at"]:
            raise ValidationFailed.field("period_start", "must fall inside the campaign period")
        if end > by.at:
            raise ValidationFailed.field("period_end", "must not be in the future")
        self.record(PerformanceRecorded, by, **report)


def derive_status(manual: bool, session_statuses: Iterable[str], decision: str | None,
                  expired: bool) -> str:
    """DOMAIN.md's derived registration status, in its order (read models use it too)."""
    if expired:
        return "expired"
    if not manual:
        return decision or "under_review"
    statuses = set(session_statuses)
    for status in ("under_review", "approved", "rejected"):
        if status in statuses:
            return status
    return "withdrawn"


def evaluate_eligibility(
    requirements: dict[str, Any], level: dict[str, Any] | None, profile: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each criterion the campaign (and the chosen level) sets, against the seller's profile."""
    checks: list[tuple[str, Any, Any]] = [
        ("min_account_level", requirements.get("min_account_level"), profile["account_level"]),
        ("min_livestream_level", requirements.get("min_livestream_level"),
         profile["livestream_level"]),
    ]
    if level is not None:
        checks.append(
            ("level_min_livestream_level", level.get("min_livestream_level"),
             profile["livestream_level"])
        )
    return [
        {"criterion": name, "required": required, "actual": actual, "passed": actual >= required}
        for name, required, actual in checks
        if required is not None
    ]


def check_can_register(campaign: Campaign, main_category: str, level: str | None,
                       sessions: Sequence[tuple[datetime, datetime]], now: datetime) -> None:
    """Refuse (RuleBroken) a registration for `campaign` that breaks a rule now."""
    if not campaign.is_registration_open(now):
        raise RuleBroken("registration_closed",
                         f"registration for {campaign.campaign_id} is {campaign.status(now)}",
                         {"registration_opens_at": instant_text(campaign.registration_opens_at),
                          "registration_closes_at": instant_text(campaign.registration_closes_at),
                          "status": campaign.status(now)})
    allowed = campaign.requirements.get("categories") or []
    if allowed and main_category not in allowed:
        raise RuleBroken("category_not_allowed", f"category {main_category!r} is not allowed",
                         {"allowed": allowed})
    if campaign.review_mode == "manual":
        if level is None:
            raise ValidationFailed.field("payload.level", "required for manual campaigns")
        if campaign.level(level) is None:
            raise RuleBroken("level_not_offered", f"level {level!r} is not offered",
                             {"offered": [lvl["code"] for lvl in campaign.levels]})
        if not sessions:
            raise ValidationFailed.field("payload.sessions",
                                         "manual campaigns need at least one session")
    elif level is not None or sessions:
        field = "payload.level" if level is not None else "payload.sessions"
        raise ValidationFailed.field(field, "auto-review campaigns take no level or sessions")
