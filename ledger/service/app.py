"""The FastAPI application: commands, health, the read endpoints (`reads.py`) and the
dashboard (`dashboard.py`).

`create_app(url)` builds it for one store; `from_env()` is the factory uvicorn's worker
processes call (`ledger serve` passes the store in LEDGER_DATABASE_URL).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from ledger import metrics
from ledger.clock import Clock
from ledger.commands.parse import MAX_COMMAND_BYTES
from ledger.errors import LedgerError, StoreUnavailable
from ledger.ledger import DEFAULT_URL, store_fault
from ledger.markets import load as load_markets
from ledger.projections.follower import log as follower_log
from ledger.service import reads, worker_env
from ledger.service.dashboard import add_dashboard
from ledger.service.http import AccessLog, AuthActor, access_logger, read_body, service_of
from ledger.service.metrics import check_scraper
from ledger.service.metrics import render as render_metrics
from ledger.service.models import Accepted, Health, Readiness, Refused, add_command_bodies
from ledger.service.state import READ_TIMEOUT, Service
from ledger.service.status import RETRY_AFTER, ServiceError, error_body, status_of
from ledger.service.worker_env import DEFAULT_MARKET, GROUP_MAX, GROUP_WAIT_MS, READY_MAX_LAG
from ledger.values import jsonable

COMMANDS = "/v1/commands"
BATCH = "/v1/commands:batch"
GROUP_SIZE_HEADER = "X-Ledger-Group-Size"  # how many commands shared this one's transaction
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
HTTP_MESSAGES = {"not_found": "no such path: see /docs for the service's paths",
                 "method_not_allowed": "this path does not take that method: see the Allow "
                                       "header, and /docs"}
REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"model": Refused, "description": text} for code, text in {
        400: "invalid JSON, or a rule the command breaks as sent",
        401: "no token, or an unknown one",
        403: "the token's role may not do this",
        404: "not found", 409: "conflict with the store's state", 413: "body too large",
        422: "validation error", 503: "store unavailable or read model behind"}.items()}


def create_app(url: str, *, clock: Clock | None = None, pool_size: int = 10,
               max_body: int | None = None, read_timeout: float = READ_TIMEOUT,
               follow: bool = False, ready_max_lag: int = READY_MAX_LAG,
               group_wait_ms: float = GROUP_WAIT_MS, group_max: int = GROUP_MAX,
               read_url: str | None = None, market: str | None = None,
               tokens_url: str | None = None, metrics_token: str | None = None) -> FastAPI:
    """The service for the store at `url`; `clock` for tests (the CLI never sets it).
    `follow`: offer to be the store's follower (`ledger serve` does, unless --no-follow).
    `group_wait_ms`, `group_max`: how single commands are coalesced (0: they are not).
    `read_url`: the read models' database, when not the store's; `market`, `tokens_url`:
    one market of a markets file served on /v1 (`serve --market`): tokens are looked up
    where the file keeps them, and refused when limited to other markets (and `market`
    labels this store in /metrics); `metrics_token`: what /metrics wants as a bearer
    (None: loopback clients only)."""
    tokens = None if not tokens_url or tokens_url == url else Service(
        tokens_url, clock=clock, pool_size=2)
    service = Service(url, clock=clock, pool_size=pool_size, read_timeout=read_timeout,
                      follow=follow, ready_max_lag=ready_max_lag, read_url=read_url,
                      market=market, tokens=tokens,
                      group_wait_ms=group_wait_ms, group_max=group_max,
                      max_body=MAX_COMMAND_BYTES if max_body is None else max_body)
    return service_app(service, metrics_token=metrics_token)


def service_app(service: Service, *, lifespan_owner: bool = True,
                access_log: bool = True, metrics_token: str | None = None) -> FastAPI:
    """The FastAPI app over one `Service` (a store's, or a market's). `lifespan_owner`:
    the app starts and closes the service itself; `access_log`: it logs each request (a
    markets app does both for all its markets); `metrics_token`: see `create_app`."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if lifespan_owner:
            service.start()
        yield
        if lifespan_owner:
            await run_in_threadpool(service.close)  # waits for the follower's page
            if service.tokens is not None:
                await run_in_threadpool(service.tokens.close)
            metrics.process_ended()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the installed package
    # (FastAPI's own pages fetch them from a CDN, and are blank without the internet).
    app = FastAPIOffline(title="ledger", version="1", lifespan=lifespan,
                  description="The campaign ledger's commands and read models over HTTP. "
                              "Every request needs `Authorization: Bearer TOKEN` "
                              "(from `ledger tokens add`) except /healthz and /readyz.")
    app.state.service = service
    if access_log:
        app.add_middleware(AccessLog)
    _add_error_handlers(app)
    _add_routes(app)
    _add_metrics(app, metrics_token, service.market or DEFAULT_MARKET)
    app.include_router(reads.router)
    add_dashboard(app)
    _describe_command_bodies(app)
    return app


def from_env() -> ASGIApp:
    """The app for LEDGER_DATABASE_URL (or every market of LEDGER_SERVE_CONFIG), logging
    access lines to stderr (uvicorn factory); following the store unless
    LEDGER_SERVE_FOLLOW=0, ready within LEDGER_READY_MAX_LAG."""
    for logger in (access_logger, follower_log):
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
    config = os.environ.get(worker_env.CONFIG_ENV)
    if config:
        from ledger.service.markets import create_markets_app

        return create_markets_app(load_markets(config), follow=worker_env.follow(),
                                  ready_max_lag=worker_env.ready_max_lag())
    return create_app(os.environ.get("LEDGER_DATABASE_URL", DEFAULT_URL),
                      follow=worker_env.follow(), ready_max_lag=worker_env.ready_max_lag(),
                      group_wait_ms=worker_env.group_wait_ms(),
                      group_max=worker_env.group_max(),
                      read_url=os.environ.get(worker_env.READ_URL_ENV) or None,
                      market=os.environ.get(worker_env.MARKET_ENV) or None,
                      tokens_url=os.environ.get(worker_env.TOKENS_URL_ENV) or None,
                      metrics_token=worker_env.metrics_token())


def _add_routes(app: FastAPI) -> None:
    @app.post(COMMANDS, response_model=Accepted, responses=REFUSALS, tags=["commands"])
    async def send_command(request: Request,
                           actor: AuthActor) -> JSONResponse:
        """Execute one DOMAIN.md command as the token's actor; 200 accepted or replayed.

        Commands arriving together may share one transaction (`ledger serve
        --group-wait-ms`, `--group-max`); each still gets its own result, as if alone.
        `X-Ledger-Group-Size` says how many shared it."""
        service = service_of(request)
        body = await read_body(request, service.max_body)
        name, result, size = await service.send(body, actor)
        request.state.command = name
        request.state.group = size
        return JSONResponse(jsonable(result), status_code=status_of(result),
                            headers={GROUP_SIZE_HEADER: str(size)} if size else None)

    @app.post(BATCH, response_model=list[Accepted | Refused], responses=REFUSALS,
              tags=["commands"])
    async def send_batch(request: Request,
                         actor: AuthActor) -> JSONResponse:
        """Execute up to 500 commands in order, in groups of up to `--group-max` (200) per
        transaction; one result each, exactly as one at a time (200 even when some are
        refused: look at each result's `ok`). On 503 `store_unavailable`, `details.results`
        holds the results of the groups committed before it; resending the batch is safe."""
        service = service_of(request)
        body = await read_body(request, service.max_body)
        request.state.command = "batch"
        results = await run_in_threadpool(service.send_batch, body, actor)
        return JSONResponse(jsonable(results))

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up (it does not touch the store, nor wait for a worker thread)."""
        return {"status": "up"}

    @app.get("/readyz", response_model=Readiness, responses={503: {
        "model": Readiness | Refused,
        "description": "A read model is more than `max_lag` events behind (`status` behind, "
                       "`lagging` names it), or the store is unreachable (an error body)"}},
             tags=["operations"])
    def readyz(request: Request) -> JSONResponse:
        """Ready: the store is reachable and every read model is within `max_lag` events
        (`ledger serve --ready-max-lag`) of the store's head; each one's position and lag."""
        ready, body = service_of(request).readiness()
        return JSONResponse(body, status_code=200 if ready else 503,
                            headers=None if ready else {"Retry-After": RETRY_AFTER})


def _add_metrics(app: FastAPI, token: str | None, market: str) -> None:
    @app.get("/metrics", response_class=Response, tags=["operations"], responses={
        200: {"content": {metrics.CONTENT_TYPE_LATEST: {}},
              "description": "Prometheus' text exposition format"},
        401: {"model": Refused, "description": "a metrics token is set and was not sent"},
        403: {"model": Refused, "description": "no metrics token is set and the client is "
                                               "not on loopback"}})
    def metrics_page(request: Request) -> Response:
        """Commands by name and outcome, their latency, group sizes, store faults, open
        connections and requests in flight (every worker), and each read model's lag now.
        Bearer: the metrics token (`ledger serve --metrics-token`), not an actor's token;
        without one set, loopback clients only."""
        check_scraper(request, token)
        return Response(render_metrics(service_of(request), market),
                        media_type=metrics.CONTENT_TYPE_LATEST)


def _add_error_handlers(app: FastAPI) -> None:
    def respond(error: ServiceError, request: Request | None = None) -> JSONResponse:
        headers = ({"WWW-Authenticate": "Bearer"} if error.status == 401 else
                   {"Retry-After": RETRY_AFTER} if error.status == 503 else {})
        if request is not None:  # a read model's refusal ("not in the read model") says how
            headers.update(getattr(request.state, "freshness", {}))  # fresh it was, too
        return JSONResponse(jsonable(error.body()), status_code=error.status,
                            headers=headers or None)

    async def service_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, ServiceError)
        return respond(e, request)

    async def ledger_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, LedgerError)
        return respond(ServiceError.of(e), request)

    async def unavailable(_: Request, e: Exception) -> JSONResponse:
        if isinstance(e, StoreUnavailable):
            return respond(ServiceError(503, "store_unavailable", str(e)))
        fault = store_fault(e)
        if fault is None:  # not the store's fault: a bug, a 500 with its traceback logged
            raise e
        return respond(ServiceError(503, "store_unavailable", fault))

    async def invalid_request(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        details = [{"field": ".".join(str(p) for p in item["loc"]), "message": item["msg"]}
                   for item in e.errors()]
        fields = ", ".join(d["field"] for d in details[:5])
        return JSONResponse(error_body("validation_error", f"invalid request: {fields}",
                                       details), status_code=422)

    async def http_error(_: Request, e: Exception) -> JSONResponse:
        # Starlette's own refusals (no such path, method not allowed) in the service's shape.
        assert isinstance(e, HTTPException)
        code = HTTP_CODES.get(e.status_code, "http_error")
        return JSONResponse(error_body(code, HTTP_MESSAGES.get(code, str(e.detail))),
                            status_code=e.status_code, headers=e.headers)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(LedgerError, ledger_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for kind in (StoreUnavailable, PersistenceError, psycopg.Error, sqlite3.Error):
        app.add_exception_handler(kind, unavailable)


def _describe_command_bodies(app: FastAPI) -> None:
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_command_bodies(default(), COMMANDS, BATCH)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

