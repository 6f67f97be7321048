"""The real `ledger serve` stays fast for everyone while 50 clients ask for a read model
position far beyond the store's head (each was held for 5 s in a worker thread)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import create_campaign
from tests.support.service import Server, add_token, hammering, p99, serving, timed

CLIENTS = 50


@pytest.fixture
def server(backend: str, tmp_path: Path) -> Iterator[Server]:
    with serving(backend, tmp_path / "serve.log") as running:
        yield running


def test_health_and_commands_stay_fast_while_fifty_clients_ask_beyond_the_head(
    backend: str, server: Server,
) -> None:
    seller, operator = add_token(backend, "seller", "seller-1"), add_token(backend, "operator",
                                                                           "ops-1")
    host, port = server.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    with hammering(server.base, "/v1/campaigns?after=1000000000", seller, CLIENTS) as statuses:
        health = [timed(conn, "GET", "/healthz") for _ in range(30)]
        commands = [timed(conn, "POST", "/v1/commands", operator, create_campaign(f"load-{i}"))
                    for i in range(10)]
    conn.close()
    assert {status for status, _ in health} == {200}
    assert {status for status, _ in commands} == {200}
    assert p99([s for _, s in health]) < 1.0, sorted(s for _, s in health)
    assert p99([s for _, s in commands]) < 2.0, sorted(s for _, s in commands)
    assert set(statuses) == {422}  # refused at once, never waited for
