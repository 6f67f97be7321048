"""Every market of a markets file in one app (`ledger serve --config FILE`).

`/v1/markets/{code}/...` goes to the market's own app (the same paths as a single store's
`/v1/...`, built by `service_app` over the market's `Service`), with the prefix taken off:
`/v1/markets/th/commands` is th's `/v1/commands`, `/v1/markets/th/readyz` its `/readyz`.
Each market has its own Service: its own pools (on its store, and on its read database),
opened on first use, its own follower candidate, its own remembered tokens; tokens are
looked up in the file's `tokens_url` by a Service of their own. Nothing is shared between
markets but the process, the event loop and the thread pool, so one market's store being
down cannot block another's requests: its connections fail in its own pool, and once
`MAX_IN_FLIGHT` of its requests are in this worker and the oldest has waited over `SLOW`
seconds (or twice as many are in, however fast), more are 503 `overloaded` at once, so
that a slow or dead store cannot take every thread of the pool.

`/healthz` is the process; `/readyz` lists every market's readiness (200 while at least
one market is ready: a load balancer must not take every market away for one).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ledger.clock import Clock
from ledger.markets import Markets
from ledger.service import worker_env
from ledger.service.app import service_app
from ledger.service.http import AccessLog
from ledger.service.models import Health
from ledger.service.state import READ_TIMEOUT, Service
from ledger.service.status import RETRY_AFTER, error_body
from ledger.service.worker_env import READY_MAX_LAG

PREFIX = re.compile(r"/v1/markets/([^/]+)(/.*)?")
MAX_IN_FLIGHT = 16  # a market's slow requests in one worker at once (the thread pool has 40)
SLOW = 0.5  # seconds: a market whose oldest request in flight is older is slow
READY_WAIT = 3.0  # seconds /readyz waits for a market's answer


class MarketRoutes:
    """ASGI middleware: a market's path to the market's app, its prefix taken off."""

    def __init__(self, app: ASGIApp, markets: dict[str, ASGIApp],
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.app = app
        self.markets = markets
        self.max_in_flight = max_in_flight
        self.in_flight = dict.fromkeys(markets, 0)
        self.started: dict[str, dict[int, float]] = {code: {} for code in markets}

    def refuse(self, code: str) -> bool:
        """Whether a market's next request is turned away: it has `max_in_flight` in this
        worker and the oldest has taken over `SLOW` seconds (its store hangs, or is
        overloaded), or it has twice that many however fast they are. A busy but healthy
        market's requests finish in milliseconds and pass."""
        count = self.in_flight[code]
        if count < self.max_in_flight:
            return False
        oldest = min(self.started[code].values(), default=time.monotonic())
        return count >= 2 * self.max_in_flight or time.monotonic() - oldest > SLOW

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PREFIX.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        code, rest = match.group(1), match.group(2) or "/"
        target = self.markets.get(code)
        if target is None:
            await respond(send, 404, error_body(
                "not_found", f"no market {code!r} here; markets: {', '.join(self.markets)}",
                {"market": code, "markets": list(self.markets)}))
            return
        if self.refuse(code):
            await respond(send, 503, error_body(
                "overloaded", f"market {code} has {self.in_flight[code]} requests in flight "
                "in this worker (is its store slow or down?); try again",
                {"market": code}), retry=True)
            return
        inner = rest if rest in ("/healthz", "/readyz") else "/v1" + rest
        # The same state dict: the access log (outside) sees the command and actor.
        routed = {**scope, "path": inner, "raw_path": inner.encode(),
                  "state": scope.setdefault("state", {})}
        self.in_flight[code] += 1
        ticket = id(routed)
        self.started[code][ticket] = time.monotonic()
        try:
            await target(routed, receive, send)
        finally:
            self.in_flight[code] -= 1
            del self.started[code][ticket]


async def respond(send: Send, status: int, body: dict[str, Any], *, retry: bool = False) -> None:
    """Send a JSON response straight from the middleware."""
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data))
                                                        .encode())]
    if retry:
        headers.append((b"retry-after", RETRY_AFTER.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def market_services(config: Markets, *, clock: Clock | None = None, pool_size: int = 10,
                    read_timeout: float = READ_TIMEOUT, follow: bool = False,
                    ready_max_lag: int = READY_MAX_LAG) -> tuple[dict[str, Service], Service]:
    """A Service per market (nothing opened yet), and the one the tokens are kept in."""
    tokens = Service(config.token_store(), clock=clock, pool_size=2)
    services = {m.code: Service(m.url, read_url=m.read_url, market=m.code, tokens=tokens,
                                clock=clock, pool_size=pool_size, read_timeout=read_timeout,
                                follow=follow, ready_max_lag=ready_max_lag,
                                group_wait_ms=worker_env.group_wait_ms(),
                                group_max=worker_env.group_max())
                for m in config.markets.values()}
    return services, tokens


def create_markets_app(config: Markets, *, clock: Clock | None = None, pool_size: int = 10,
                       read_timeout: float = READ_TIMEOUT, follow: bool = False,
                       ready_max_lag: int = READY_MAX_LAG,
                       max_in_flight: int = MAX_IN_FLIGHT) -> FastAPI:
    """The service for every market of `config` (see the module's docstring)."""
    services, tokens = market_services(config, clock=clock, pool_size=pool_size,
                                       read_timeout=read_timeout, follow=follow,
                                       ready_max_lag=ready_max_lag)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for service in services.values():
            service.start()
        yield
        for service in [*services.values(), tokens]:
            await run_in_threadpool(service.close)

    app = FastAPI(title="ledger (markets)", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, description="Each market's API is under "
                  "/v1/markets/{code}/ (see a market's /v1/markets/{code}/openapi.json).")
    app.state.services = services

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up (it touches no store)."""
        return {"status": "up"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Each market's readiness; 503 only when no market is ready."""
        answers = await asyncio.gather(*(readiness(code, s) for code, s in services.items()))
        body = dict(zip(services, answers, strict=True))
        ready = [code for code, answer in body.items() if answer["status"] == "ready"]
        return JSONResponse({"status": "ready" if ready else "unavailable",
                             "ready": ready, "markets": body},
                            status_code=200 if ready else 503,
                            headers=None if ready else {"Retry-After": RETRY_AFTER})

    @app.exception_handler(404)
    async def no_path(_: Any, __: Any) -> JSONResponse:
        return JSONResponse(error_body(
            "not_found", "no such path: this server serves markets "
            f"{', '.join(services)} under /v1/markets/{{code}}/ (e.g. /v1/markets/"
            f"{next(iter(services))}/commands)"), status_code=404)

    apps: dict[str, ASGIApp] = {code: service_app(s, lifespan_owner=False, access_log=False)
                                for code, s in services.items()}
    app.add_middleware(MarketRoutes, markets=apps, max_in_flight=max_in_flight)
    app.add_middleware(AccessLog)
    return app


async def readiness(code: str, service: Service) -> dict[str, Any]:
    """A market's /readyz body, or why it has none (its store down, or too slow)."""
    try:
        _, body = await asyncio.wait_for(run_in_threadpool(service.readiness), READY_WAIT)
    except TimeoutError:
        return {"status": "store_unavailable", "message": f"market {code} did not answer "
                f"within {READY_WAIT:g} s"}
    except Exception as e:  # the store's fault, said in one line (as its own /readyz does)
        return {"status": "store_unavailable",
                "message": str(e).splitlines()[0] if str(e) else type(e).__name__}
    return body
