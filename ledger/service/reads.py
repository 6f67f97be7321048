"""GET endpoints: the read models (`?after=POSITION` or `?fresh=true` waits for a write to
show; headers say how fresh the answer is), and an aggregate's state and history from the
event store itself.

Sellers read only what is theirs (their pages, their registrations); the review and
campaign-wide reads are for the other roles.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ledger.errors import Forbidden, ValidationFailed
from ledger.ledger import TokenActor
from ledger.projections.campaign_performance import campaign_performance_report
from ledger.projections.decisions import decisions_report
from ledger.projections.manage import REGISTRATION_STATUSES, campaign_list, manage_page
from ledger.projections.view import ViewMixin
from ledger.projections.ytd import ytd_report
from ledger.service.http import AuthActor, service_of
from ledger.values import jsonable

router = APIRouter(prefix="/v1", tags=["reads"])
Json = dict[str, Any]


def reader(request: Request, actor: AuthActor) -> TokenActor:
    """The token's actor, once no path or query value holds a NUL character: PostgreSQL
    text cannot, so a read-model query with one would fail (a 500, not the 422 it is)."""
    for key, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if "\x00" in value:
            raise ValidationFailed.field(key, "must not contain the NUL character (U+0000)")
    return actor


Actor = Annotated[TokenActor, Depends(reader)]


After = Annotated[int | None, Query(
    ge=0, description="Wait until the read model has applied this store position (an "
                      "accepted command's `position`); a position beyond the store's head "
                      "is a 422 validation_error at once.")]
Fresh = Annotated[bool, Query(
    description="Wait until the read model has applied everything stored now.")]


# How fresh a read model's answer is: on every read-model endpoint's response.
READ_HEADERS: dict[str, Any] = {
    "Ledger-Read-Model": {"description": "The read model that answered.",
                          "schema": {"type": "string"}},
    "Ledger-Read-Position": {
        "description": "The store position the read model had applied when the request "
                       "read it: the answer includes at least every event up to it.",
        "schema": {"type": "integer"}},
    "Ledger-Store-Head": {"description": "The store's last position, read just after.",
                          "schema": {"type": "integer"}},
    "Ledger-Read-Lag": {
        "description": "Head minus position: events stored that the answer may not show "
                       "yet (0: up to date; use ?after= or ?fresh=true to wait).",
        "schema": {"type": "integer"}},
}
FRESHNESS: dict[int | str, dict[str, Any]] = {200: {"headers": READ_HEADERS}}


def fresh_view(name: str) -> Any:
    """A dependency: the view once read model `name` has reached `?after=` / `?fresh=`,
    with the read model's position and the store's head in the response's headers.

    Async, so the wait is spent on the event loop (see `Service.view`), after the token
    was checked."""
    async def wait(request: Request, response: Response, _: Actor, after: After = None,
                   fresh: Fresh = False) -> ViewMixin:
        service = service_of(request)
        view = await service.view(name, after, fresh)
        position, head = await run_in_threadpool(service.freshness, name)
        request.state.freshness = {
            "Ledger-Read-Model": name, "Ledger-Read-Position": str(position),
            "Ledger-Store-Head": str(head), "Ledger-Read-Lag": str(head - position)}
        response.headers.update(request.state.freshness)  # an error's response: app.py
        return view

    return Depends(wait)


ManageView = Annotated[ViewMixin, fresh_view("manage_campaign")]
CampaignPerformanceView = Annotated[ViewMixin, fresh_view("campaign_performance")]
YtdView = Annotated[ViewMixin, fresh_view("ytd_performance")]
DecisionsView = Annotated[ViewMixin, fresh_view("review_decisions")]


def not_seller(actor: TokenActor, what: str) -> None:
    """`forbidden` for a seller: `what` is for reviewers and admins."""
    if actor.role == "seller":
        raise Forbidden(f"a seller may not read {what}", {"role": actor.role})


def own(actor: TokenActor, seller_id: str) -> None:
    """`forbidden` for a seller reading another seller's pages."""
    if actor.role == "seller" and actor.id != seller_id:
        raise Forbidden(f"seller {actor.id!r} may not read seller {seller_id!r}'s pages")


@router.get("/campaigns", responses=FRESHNESS)
def campaigns(request: Request, actor: Actor, view: ManageView,
              open_only: Annotated[bool, Query(alias="open")] = False) -> list[Json]:
    """The campaigns with their status now; `?open=true`: only those open for registration."""
    service = service_of(request)
    return campaign_list(view, service.clock.now(),
                         open_only=open_only)


@router.get("/campaigns/{campaign_id}")
def campaign(request: Request, actor: Actor, campaign_id: str) -> Json:
    """A campaign's current state, replayed from the event store (as `ledger show`)."""
    return service_of(request).ledger().campaign_state(campaign_id)


@router.get("/campaigns/{campaign_id}/performance", responses=FRESHNESS)
def campaign_performance(request: Request, actor: Actor, view: CampaignPerformanceView,
                         campaign_id: str) -> Json:
    """Totals, per day, per seller, registrations by status, approval rate."""
    not_seller(actor, "a campaign's performance")
    report: Json = jsonable(campaign_performance_report(view, campaign_id))
    return report


@router.get("/campaigns/{campaign_id}/history")
def campaign_history(request: Request, actor: Actor, campaign_id: str) -> list[Json]:
    """Every stored event of the campaign, in order (as `ledger audit history`)."""
    not_seller(actor, "a campaign's history")
    return list(service_of(request).ledger().history(campaign_id))


@router.get("/registrations/{registration_id}")
def registration(request: Request, actor: Actor, registration_id: str) -> Json:
    """A registration's current state, replayed from the event store (as `ledger show`)."""
    return service_of(request).ledger().registration_state(registration_id, reader=actor)


@router.get("/registrations/{registration_id}/history")
def registration_history(request: Request, actor: Actor, registration_id: str) -> list[Json]:
    """Every stored event of the registration, in order (as `ledger audit history`)."""
    ledger = service_of(request).ledger()
    ledger.registration(registration_id, reader=actor)  # another seller's is not_found
    return list(ledger.history(registration_id))


@router.get("/sellers/{seller_id}/registrations", responses=FRESHNESS)
def manage(request: Request, actor: Actor, view: ManageView, seller_id: str,
           status: Annotated[str | None, Query(
               description=f"One of: {', '.join(REGISTRATION_STATUSES)}.")] = None,
           campaign_id: Annotated[str | None, Query(alias="campaign")] = None) -> list[Json]:
    """The seller's Manage Campaign page: registrations, sessions, actions open now."""
    own(actor, seller_id)
    if status is not None and status not in REGISTRATION_STATUSES:
        raise ValidationFailed.field("status", f"one of: {', '.join(REGISTRATION_STATUSES)}")
    service = service_of(request)
    return manage_page(view, seller_id,
                       service.clock.now(), status=status, campaign_id=campaign_id)


@router.get("/sellers/{seller_id}/performance/{year}", responses=FRESHNESS)
def ytd(request: Request, actor: Actor, view: YtdView, seller_id: str,
        year: Annotated[int, Path(ge=2000, le=2100)]) -> Json:
    """A seller's year: totals per currency, campaigns joined, per month, per campaign."""
    own(actor, seller_id)
    report: Json = jsonable(ytd_report(view, seller_id, year))
    return report


@router.get("/decisions", responses=FRESHNESS)
def decisions(request: Request, actor: Actor, view: DecisionsView,
              reviewer: str | None = None,
              campaign_id: Annotated[str | None, Query(alias="campaign")] = None,
              overrides: bool = False) -> list[Json]:
    """Review decisions, oldest first: who decided what, on which facts, how fast."""
    not_seller(actor, "review decisions")
    return decisions_report(view, reviewer,
                            campaign_id, overrides)
