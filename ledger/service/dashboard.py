"""The live dashboard at /dashboard: one page, its static files, and the JSON it needs
beyond the /v1 reads (who the token is, the review queue, the live feed).

The page is a shell with no data in it: every figure comes from a JSON endpoint called
with the same bearer token and the same role checks as the API (the token is typed into
the page and kept in the tab's sessionStorage; see docs/design.md, "The live dashboard").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ledger.projections.campaign_performance import under_review
from ledger.projections.decisions import decisions_report, time_to_decide
from ledger.service.changes import Changes
from ledger.service.http import AuthActor, service_of
from ledger.service.protocol import ENDLESS
from ledger.service.reads import After, Fresh, not_seller

STATIC = Path(__file__).parent / "static"
READ_MODELS = ("manage_campaign", "ytd_performance", "campaign_performance",
               "review_decisions")
# The page runs only its own files: a script injected into a figure could read the token.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache"}

(FEED,) = ENDLESS  # the live feed: ended by the protocol when a worker stops
router = APIRouter(tags=["dashboard"])


def add_dashboard(app: FastAPI) -> None:
    """The page, its files under /dashboard/static, its endpoints, and the live feed."""
    service = app.state.service
    app.state.changes = Changes(lambda: service.projector().view.positions(READ_MODELS))
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.include_router(router)


@router.get("/dashboard", include_in_schema=False)
def page() -> FileResponse:
    """The dashboard's page (no data in it: it asks for a token, then for JSON)."""
    return FileResponse(STATIC / "dashboard.html", headers=PAGE_HEADERS)


@router.get("/dashboard/", include_in_schema=False)
def page_slash() -> RedirectResponse:
    """`/dashboard/` is `/dashboard`."""
    return RedirectResponse("/dashboard")


@router.get("/dashboard/api/me")
def me(actor: AuthActor) -> dict[str, str]:
    """The token's actor: which views the page offers (a seller sees only their own)."""
    return {"id": actor.id, "role": actor.role}


@router.get("/dashboard/api/review")
async def review(request: Request, actor: AuthActor, after: After = None,
                 fresh: Fresh = False) -> dict[str, Any]:
    """The review queue: registrations under review (per campaign, and the first 50),
    how long decisions took, and the latest overrides. Not for sellers. `?after=` and
    `?fresh=true` wait as on the /v1 reads."""
    not_seller(actor, "the review queue")
    service = service_of(request)
    queue_view = await service.view("campaign_performance", after, fresh)
    decisions_view = await service.view("review_decisions", after, fresh)

    def read() -> dict[str, Any]:
        decided = decisions_report(decisions_view)
        overrides = [row for row in decided if row["override_reason"] is not None]
        return {"queue": under_review(queue_view), "time_to_decide": time_to_decide(decided),
                "overrides": overrides[-10:][::-1]}

    return await run_in_threadpool(read)


@router.get(FEED, include_in_schema=False)
async def changes(request: Request, actor: AuthActor) -> StreamingResponse:
    """Server-sent events: `moved` when the read models' positions move (the page then
    fetches again). Read with fetch() and the bearer header, so no token is in a URL."""
    feed: Changes = request.app.state.changes
    return StreamingResponse(feed.stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
