"""Request plumbing: the bearer token's actor, the body size limit, the JSON access log."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger import metrics
from ledger.ledger import TokenActor
from ledger.service.state import Service
from ledger.service.status import ServiceError

access_logger = logging.getLogger("ledger.access")


def service_of(request: Request) -> Service:
    """The worker's `Service`, kept on the FastAPI app."""
    service: Service = request.app.state.service
    return service


async def authenticate(request: Request) -> TokenActor:
    """The actor of the request's bearer token (a FastAPI dependency); 401 without one.

    A token this worker has seen lately is answered from memory, on the event loop; only
    a new one is looked up in the store (in the thread pool: psycopg and sqlite3 block)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ServiceError(401, "unauthorized",
                           "send Authorization: Bearer TOKEN (make one with `ledger tokens add`)")
    service = service_of(request)
    actor = service.known_actor(token) or await run_in_threadpool(service.actor, token)
    if actor is None:
        raise ServiceError(401, "unauthorized", "unknown token")
    request.state.actor_id = actor.id
    if not actor.allows(service.market):
        raise ServiceError(403, "forbidden", f"this token is not for market "
                           f"{service.market!r} (only {', '.join(actor.markets or ())})",
                           {"market": service.market, "markets": list(actor.markets or ())})
    return actor


AuthActor = Annotated[TokenActor, Depends(authenticate)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = ServiceError(413, "body_too_large", f"request bodies are limited to {limit} "
                             "bytes; send several commands in smaller batches",
                             {"limit": limit})
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class AccessLog:
    """One JSON line per request: method, path, status, latency, command, actor id, and
    `group`: how many commands shared the command's transaction (coalesced requests).

    The endpoints put `command`, `actor_id` and `group` in the request's state; the token
    itself is never read here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.IN_FLIGHT.dec()
            access_logger.info(json.dumps({
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "method": scope["method"], "path": scope["path"], "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "command": state.get("command"), "actor_id": state.get("actor_id"),
                **({"group": state["group"]} if state.get("group") else {}),
            }))
