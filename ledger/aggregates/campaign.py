"""The Campaign aggregate: the terms sellers register under, and its expiry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.aggregates.base import Cause, LedgerAggregate, LedgerCreated, LedgerEvent, campaign_uuid
from ledger.errors import RuleBroken
from ledger.values import instant_text


class CampaignCreated(LedgerCreated):
    """A campaign was created, with its windows, requirements and levels."""
    campaign_id: str
    name: str
    kind: str
    review_mode: str
    registration_opens_at: datetime
    registration_closes_at: datetime
    starts_at: datetime
    ends_at: datetime
    requirements: dict[str, Any]
    levels: list[dict[str, Any]]
    allow_duplicates: bool
    max_sessions: int

    def apply(self, campaign: Campaign) -> None:
        super().apply(campaign)
        campaign.expired_at = None


class Expired(LedgerEvent):
    """The campaign was expired: final."""

    def apply(self, campaign: Campaign) -> None:
        campaign.expired_at = self.timestamp


class Campaign(LedgerAggregate):
    """A campaign: its windows and rules; it says its status at any instant."""
    campaign_id: str
    name: str
    kind: str
    review_mode: str
    registration_opens_at: datetime
    registration_closes_at: datetime
    starts_at: datetime
    ends_at: datetime
    requirements: dict[str, Any]
    levels: list[dict[str, Any]]
    allow_duplicates: bool
    max_sessions: int
    expired_at: datetime | None

    def __init__(self) -> None:
        """State is set by the created event's `apply`, so that replay builds it too."""

    @classmethod
    def create(cls, by: Cause, **fields: Any) -> Campaign:
        """Fields are already validated (windows ordered) by the command schema."""
        return cls._create(
            CampaignCreated, id=campaign_uuid(fields["campaign_id"]), **by.stamp(), **fields
        )

    # Derived state ------------------------------------------------------------------

    @property
    def public_id(self) -> str:
        return self.campaign_id

    def status(self, now: datetime) -> str:
        if self.expired_at is not None:
            return "expired"
        if now < self.registration_opens_at:
            return "upcoming"
        if now < self.registration_closes_at:
            return "registration_open"
        if now < self.starts_at:
            return "registration_closed"
        if now < self.ends_at:
            return "ongoing"
        return "ended"

    def is_registration_open(self, now: datetime) -> bool:
        return self.status(now) == "registration_open"

    def level(self, code: str) -> dict[str, Any] | None:
        return next((level for level in self.levels if level["code"] == code), None)

    def terms(self) -> dict[str, Any]:
        """What a registration copies into its `Registered` event."""
        return {
            "name": self.name,
            "kind": self.kind,
            "review_mode": self.review_mode,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "allow_duplicates": self.allow_duplicates,
            "max_sessions": self.max_sessions,
            "requirements": dict(self.requirements),
        }

    # Decisions ----------------------------------------------------------------------

    def check_not_expired(self) -> None:
        if self.expired_at is not None:
            raise RuleBroken("invalid_transition",
                             f"campaign {self.campaign_id} is already expired")

    def expire(self, by: Cause) -> None:
        self.check_not_expired()
        if by.at < self.ends_at:
            raise RuleBroken(
                "campaign_not_ended",
                f"campaign {self.campaign_id} ends at {instant_text(self.ends_at)}",
                {"ends_at": instant_text(self.ends_at), "now": instant_text(by.at)},
            )
        self.record(Expired, by)
