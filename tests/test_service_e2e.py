"""End to end: the real `ledger serve` (two worker processes) on a free loopback port,
spoken to over HTTP, then stopped; no process is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.helpers import command, create_campaign, iso, live_calendar, profile
from tests.support.service import Server, add_token, free_port, wait_until_up


@pytest.fixture
def server(backend: str, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_NOW"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "--db", backend, "serve", "--port", str(port),
             "--workers", "2"], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    running = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_up(running)
        yield running
    finally:
        running.stop()
        if not running.group_is_gone():
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("a worker process outlived `ledger serve`")


def live_campaign(now: datetime) -> dict[str, object]:
    """A manual campaign open for registration now (the service runs on the real clock)."""
    return create_campaign("e2e-live", **live_calendar(now))


def test_the_real_server_takes_commands_over_http_and_stops_cleanly(
    backend: str, server: Server,
) -> None:
    tokens = {role: add_token(backend, role, actor)
              for role, actor in (("operator", "ops-e2e"), ("seller", "seller-e2e"),
                                  ("reviewer", "rev-e2e"))}
    now = datetime.now(UTC)
    register = command("register", {"id": "seller-e2e", "role": "seller"}, {
        "campaign_id": "e2e-live", "seller_id": "seller-e2e", "account_id": "shop-e2e",
        "main_category": "fashion", "level": "standard", "profile": profile(),
        "sessions": [{"starts_at": iso(now + timedelta(days=2, hours=1)),
                      "ends_at": iso(now + timedelta(days=2, hours=2))}]})

    with httpx.Client(base_url=server.base, timeout=10) as http:
        def send(role: str, body: object, path: str = "/v1/commands") -> httpx.Response:
            return http.post(path, json=body, headers={"Authorization": f"Bearer {tokens[role]}"})

        assert send("operator", live_campaign(now)).status_code == 200
        registered = send("seller", register)
        assert registered.status_code == 200, registered.text
        assert send("seller", register).json()["replayed"] is True
        registration = registered.json()["aggregate_id"]
        approve = command("approve", {"id": "x", "role": "reviewer"},
                          {"registration_id": registration})
        results = send("reviewer", [approve, approve], "/v1/commands:batch").json()
        assert [r["replayed"] for r in results] == [False, True]
        page = http.get("/v1/sellers/seller-e2e/registrations",
                        params={"after": results[0]["position"]},
                        headers={"Authorization": f"Bearer {tokens['seller']}"})
        assert [r["status"] for r in page.json()] == ["approved"]
        assert http.post("/v1/commands", json=approve).status_code == 401

    assert server.stop() == 0
    access = [json.loads(line) for line in server.log.read_text().splitlines()
              if line.startswith("{")]
    assert {"ops-e2e", "seller-e2e", "rev-e2e"} <= {a["actor_id"] for a in access}
    assert not any(token in server.log.read_text() for token in tokens.values())
