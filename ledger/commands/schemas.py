"""Command schemas: the envelope, and one frozen pydantic payload model per command."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from ledger.commands.types import (
    Category,
    Count,
    Currency,
    Flag,
    Id,
    Instant,
    Level,
    Money,
    Note,
    RegistrationId,
    Slug,
    Text,
)

Role = Literal["seller", "reviewer", "operator", "system"]
ReasonCode = Literal[
    "criteria_not_met", "performance_below_threshold", "policy_violation",
    "incomplete_info", "capacity_full", "other",
]


class Model(BaseModel):
    """Base of every command schema: immutable, no unknown fields."""
    model_config = ConfigDict(frozen=True, extra="forbid")


class Actor(Model):
    """Who sends the command."""
    id: Id
    role: Role


class Envelope(Model):
    """What every command carries around its payload."""
    command: str
    command_id: Id
    actor: Actor
    expected_version: Count | None = None
    payload: dict[str, Any]


# Campaigns ---------------------------------------------------------------------------------

class Requirements(Model):
    """What a seller must have to register for a campaign."""
    min_account_level: Level | None = None
    min_livestream_level: Level | None = None
    categories: list[Category] = Field(default_factory=list, max_length=200)


class LevelOffer(Model):
    """A level a campaign offers, and what it gives."""
    code: Id
    name: Text
    benefits: list[Text] | Text | None = None
    min_livestream_level: Level | None = None


class CreateCampaign(Model):
    """Create a campaign."""
    campaign_id: Slug
    name: Text
    kind: Literal["live", "short_video"]
    review_mode: Literal["manual", "auto"]
    registration_opens_at: Instant
    registration_closes_at: Instant
    starts_at: Instant
    ends_at: Instant
    requirements: Requirements = Requirements()
    levels: list[LevelOffer] = Field(default_factory=list, max_length=50)
    allow_duplicates: Flag = False
    max_sessions: Annotated[StrictInt, Field(ge=1, le=1000)] = 100

    @model_validator(mode="after")
    def windows_are_ordered(self) -> CreateCampaign:
        order = ["registration_opens_at", "registration_closes_at", "starts_at", "ends_at"]
        times = [getattr(self, name) for name in order]
        if not (times[0] < times[1] <= times[2] < times[3]):
            raise ValueError(
                "windows must be ordered: registration_opens_at < registration_closes_at"
                " <= starts_at < ends_at"
            )
        codes = [level.code for level in self.levels]
        if len(set(codes)) != len(codes):
            raise ValueError("level codes must be unique")
        if self.review_mode == "manual" and not self.levels:
            raise ValueError("a manual campaign offers at least one level")
        if self.review_mode == "auto" and self.levels:
            raise ValueError("levels are offered in manual campaigns only")
        return self


class ExpireCampaign(Model):
    """Expire a campaign that has ended, and its open registrations."""
    campaign_id: Slug


# Registrations -----------------------------------------------------------------------------

class Profile(Model):
    """A seller's levels when registering."""
    account_level: Level
    livestream_level: Level


class Window(Model):
    """A session's start and end."""
    starts_at: Instant
    ends_at: Instant


class Register(Model):
    """Register a seller's account for a campaign."""
    campaign_id: Slug
    seller_id: Id
    account_id: Id
    main_category: Category
    level: Id | None = None
    profile: Profile
    sessions: list[Window] = Field(default_factory=list, max_length=1000)


class AddSession(Model):
    """Add a session to a registration."""
    registration_id: RegistrationId
    starts_at: Instant
    ends_at: Instant


class Duplicate(Model):
    """Duplicate a session at another time."""
    registration_id: RegistrationId
    session_id: Id
    starts_at: Instant
    ends_at: Instant


class Withdraw(Model):
    """Withdraw sessions of a registration."""
    registration_id: RegistrationId
    session_ids: list[Id] | None = Field(default=None, max_length=1000)
    reason: Note | None = None


class Approve(Model):
    """Approve sessions of a registration."""
    registration_id: RegistrationId
    session_ids: list[Id] | None = Field(default=None, max_length=1000)
    note: Note | None = None
    override_reason: Note | None = None


class Reject(Model):
    """Reject sessions of a registration, with reason codes."""
    registration_id: RegistrationId
    session_ids: list[Id] | None = Field(default=None, max_length=1000)
    reasons: list[ReasonCode] = Field(min_length=1, max_length=6)
    note: Note | None = None


class RecordPerformance(Model):
    """Record a registration's performance over a period."""
    registration_id: RegistrationId
    report_id: Id
    session_id: Id | None = None
    period_start: Instant
    period_end: Instant
    currency: Currency
    gmv: Money
    orders: Count
    items_sold: Count
    buyers: Count
    views: Count
    refunds: Money


PAYLOADS: dict[str, type[Model]] = {
    "create_campaign": CreateCampaign,
    "register": Register,
    "add_session": AddSession,
    "duplicate": Duplicate,
    "withdraw": Withdraw,
    "approve": Approve,
    "reject": Reject,
    "expire_campaign": ExpireCampaign,
    "record_performance": RecordPerformance,
}

ROLES: dict[str, frozenset[str]] = {
    "create_campaign": frozenset({"operator"}),
    "expire_campaign": frozenset({"operator", "system"}),
    "approve": frozenset({"operator", "reviewer"}),
    "reject": frozenset({"operator", "reviewer"}),
    "register": frozenset({"seller"}),
    "add_session": frozenset({"seller"}),
    "duplicate": frozenset({"seller"}),
    "withdraw": frozenset({"seller"}),
    "record_performance": frozenset({"system"}),
}
