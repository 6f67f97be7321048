"""Service test helpers: a client on a real store with a token per role."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bench import common

# The server and HTTP helpers the tests import from here are the benchmarks' own.
from bench.common import Server as Server
from bench.common import add_token as add_token
from bench.common import bearer as bearer
from bench.common import free_port as free_port
from bench.common import hammering as hammering
from bench.common import p99 as p99
from bench.common import timed as timed
from ledger import Ledger
from ledger.clock import Clock
from ledger.service.app import create_app
from ledger.store import tokens
from ledger.store.tokens import TokenActor
from tests.support.helpers import NOW, OPERATOR, REVIEWER, SELLER, SYSTEM, Json

ACTORS: dict[str, Json] = {
    "operator": OPERATOR, "reviewer": REVIEWER, "system": SYSTEM,
    "seller": {"id": SELLER, "role": "seller"},
    "other_seller": {"id": "seller-2", "role": "seller"},
}


def issue_tokens(ledger: Ledger) -> dict[str, str]:
    """A token for each of ACTORS, by key."""
    return {key: tokens.issue(ledger.app.store, TokenActor(a["id"], a["role"]), NOW)
            for key, a in ACTORS.items()}


@dataclass
class Api:
    """A TestClient and the tokens of every actor: `api.send("seller", command)`."""

    client: TestClient
    tokens: dict[str, str]

    def send(self, who: str, command: Json | list[Json]) -> Any:
        path = "/v1/commands:batch" if isinstance(command, list) else "/v1/commands"
        return self.client.post(path, json=command, headers=bearer(self.tokens[who]))

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params or None, headers=bearer(self.tokens[who]))

    def accept(self, who: str, command: Json) -> Json:
        response = self.send(who, command)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        assert body["ok"] is True
        return body


# A real `ledger serve` process: started as the benchmarks start theirs (bench/common.py)

STARTUP = 20.0  # seconds to wait for /healthz: spawning workers is slow on a busy machine


@contextmanager
def in_process(url: str, clock: Clock, tokens_from: Ledger | None = None, *,
               pool_size: int = 2, read_timeout: float = 2.0, **options: Any) -> Iterator[Api]:
    """`ledger serve`'s app in this process (FastAPI's TestClient runs its lifespan) on the
    store at `url`; with a token per actor of ACTORS if `tokens_from` is given. `options`:
    more of `create_app`'s (it does not follow the store unless `follow=True`)."""
    app = create_app(url, clock=clock, pool_size=pool_size, read_timeout=read_timeout,
                     **options)
    with TestClient(app) as client:
        yield Api(client, issue_tokens(tokens_from) if tokens_from is not None else {})


def wait_until_up(server: Server) -> None:
    """Return once the server answers /healthz; fail the test (with its log) if it never does."""
    try:
        server.wait_until_up(STARTUP)
    except RuntimeError as error:
        pytest.fail(str(error))


@contextmanager
def serving(url: str, log: Path, *options: str) -> Iterator[Server]:
    """The real `ledger serve` (one worker, `options` added) on a free loopback port,
    stopped (its whole process group) at the end."""
    with common.serving(url, log, *options, within=STARTUP) as running:
        yield running


def store_answers(base: str, within: float = 10.0) -> None:
    """Wait, as a load balancer's health check would, until the server reaches its store
    again after an outage (`/readyz` no longer `store_unavailable`). While the store was
    down the server fails requests at once and probes it every half second (so a request
    in the half second after it came back may still get 503 with Retry-After)."""
    deadline = time.monotonic() + within
    with httpx.Client(base_url=base, timeout=10) as client:
        while True:
            body = client.get("/readyz").json()
            if (body.get("error") or {}).get("code") != "store_unavailable":
                return
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
