"""One short handler per command: load, decide on the aggregate, return what to save."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from ledger.aggregates import campaign as campaign_events
from ledger.aggregates.base import campaign_uuid, registration_uuid
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.commands import schemas as s
from ledger.commands.context import Context, Outcome, load
from ledger.errors import Forbidden, RuleBroken
from ledger.store.plan import (
    CampaignNotExpired,
    RegistrationCount,
    RegistrationRow,
    ReportRow,
    Unchanged,
    WritePlan,
)

EXPIRED_TOPIC = get_topic(campaign_events.Expired)


def not_expired(campaign_id: UUID) -> CampaignNotExpired:
    """Checked under the write lock: the campaign did not expire since the command read it."""
    return CampaignNotExpired(campaign_id, EXPIRED_TOPIC)


def create_campaign(p: s.CreateCampaign, ctx: Context) -> Outcome:
    """Create a campaign; refused when its id is taken."""
    if ctx.app.exists(campaign_uuid(p.campaign_id)):
        raise RuleBroken("already_exists", f"campaign {p.campaign_id!r} already exists")
    ctx.expect_new()
    fields = p.model_dump(mode="python")
    fields["requirements"] = p.requirements.model_dump()
    return Outcome(p.campaign_id, Campaign.create(ctx.cause, **fields))


def register(p: s.Register, ctx: Context) -> Outcome:
    """Register a seller's account for a campaign, with its first sessions."""
    if p.seller_id != ctx.command.actor.id:
        raise Forbidden(f"seller {ctx.command.actor.id!r} cannot register for {p.seller_id!r}")
    campaign = ctx.campaign(p.campaign_id)
    reg_id = registration_uuid(p.campaign_id, p.account_id)
    if ctx.app.exists(reg_id):
        raise RuleBroken("already_registered",
                         f"account {p.account_id!r} is already registered for {p.campaign_id!r}",
                         {"registration_id": str(reg_id)})
    ctx.expect_new()
    reg = Registration.register(
        campaign, seller_id=p.seller_id, account_id=p.account_id,
        main_category=p.main_category, level=p.level, profile=p.profile.model_dump(),
        sessions=[(w.starts_at, w.ends_at) for w in p.sessions], by=ctx.cause,
    )
    row = RegistrationRow(reg.registration_id, p.campaign_id, p.account_id, p.seller_id)
    return Outcome(reg.registration_id, reg, plan=WritePlan(
        registrations=(row,), guards=(not_expired(campaign_uuid(p.campaign_id)),)))


def add_session(p: s.AddSession, ctx: Context) -> Outcome:
    """Add a session to a registration, while its campaign has not expired."""
    reg = ctx.registration(p.registration_id)
    _check_campaign_not_expired(reg, ctx)
    reg.add_sessions([(p.starts_at, p.ends_at)], ctx.cause)
    return Outcome(p.registration_id, reg,
                   plan=WritePlan(guards=(not_expired(campaign_uuid(reg.campaign_id)),)))


def duplicate(p: s.Duplicate, ctx: Context) -> Outcome:
    """Duplicate a session into a new one under review, while the campaign has not expired."""
    reg = ctx.registration(p.registration_id)
    _check_campaign_not_expired(reg, ctx)
    reg.duplicate(p.session_id, p.starts_at, p.ends_at, ctx.cause)
    return Outcome(p.registration_id, reg,
                   plan=WritePlan(guards=(not_expired(campaign_uuid(reg.campaign_id)),)))


def _check_campaign_not_expired(reg: Registration, ctx: Context) -> None:
    # A registration with no open session was not expired with its campaign; it must not
    # take new sessions afterwards either, whatever the clock says.
    if ctx.app.last_event_topic(campaign_uuid(reg.campaign_id)) == EXPIRED_TOPIC:
        raise RuleBroken("campaign_ended", f"campaign {reg.campaign_id!r} has been expired")


def withdraw(p: s.Withdraw, ctx: Context) -> Outcome:
    """Withdraw sessions (all withdrawable when none are named)."""
    reg = ctx.registration(p.registration_id)
    reg.withdraw(p.session_ids, p.reason, ctx.cause)
    return Outcome(p.registration_id, reg)


def approve(p: s.Approve, ctx: Context) -> Outcome:
    """Approve sessions (all under review when none are named)."""
    reg = ctx.registration(p.registration_id)
    reg.approve(p.session_ids, p.note, p.override_reason, ctx.cause)
    return Outcome(p.registration_id, reg)


def reject(p: s.Reject, ctx: Context) -> Outcome:
    """Reject sessions with reason codes (all under review when none are named)."""
    reg = ctx.registration(p.registration_id)
    reg.reject(p.session_ids, p.reasons, p.note, ctx.cause)
    return Outcome(p.registration_id, reg)


def expire_campaign(p: s.ExpireCampaign, ctx: Context) -> Outcome:
    """Campaign `Expired` and every open registration's `Expired`, in one transaction."""
    campaign = ctx.campaign(p.campaign_id)
    ctx.expect_version(campaign)
    campaign.check_not_expired()
    ctx.writes(campaign)
    ids = ctx.app.registrations_of(p.campaign_id)
    expiring: list[Registration] = []
    skipped: dict[UUID, int] = {}
    for reg_id in ids:
        reg = load(ctx.app, UUID(reg_id), Registration, "registration")
        if reg.is_open():
            ctx.writes(reg)
            expiring.append(reg)
        else:
            skipped[reg.id] = reg.version
    # Decided only now, at the time of the latest of all it writes (see Context.writes).
    campaign.expire(ctx.cause)
    for reg in expiring:
        reg.expire(ctx.cause.as_system())
    return Outcome(p.campaign_id, campaign, others=list(expiring), plan=WritePlan(
        guards=(RegistrationCount(p.campaign_id, len(ids)), Unchanged(skipped))))


def record_performance(p: s.RecordPerformance, ctx: Context) -> Outcome:
    """Record a performance report for a registration."""
    reg = ctx.registration(p.registration_id)
    if ctx.app.report_seen(reg.id, p.report_id):
        return Outcome(p.registration_id, reg)  # seen before: accepted, nothing changes
    report = p.model_dump(exclude={"registration_id"})
    reg.record_performance(report, ctx.cause)
    return Outcome(p.registration_id, reg,
                   plan=WritePlan(reports=(ReportRow(reg.id, p.report_id, reg.version),)))


Handler = Callable[[Any, Context], Outcome]

HANDLERS: dict[str, Handler] = {
    "create_campaign": create_campaign,
    "register": register,
    "add_session": add_session,
    "duplicate": duplicate,
    "withdraw": withdraw,
    "approve": approve,
    "reject": reject,
    "expire_campaign": expire_campaign,
    "record_performance": record_performance,
}


def handle(ctx: Context) -> Outcome:
    """Run the handler registered for the command's name."""
    return HANDLERS[ctx.command.name](ctx.command.payload, ctx)
