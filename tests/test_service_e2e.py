"""End to end: the real `ledger serve` (two worker processes) on a free loopback port,
spoken to over HTTP, then stopped; no process is left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ledger.cli import main
from tests.helpers import command, create_campaign, iso, profile

STARTUP = 20.0  # seconds to wait for /healthz: spawning workers is slow on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def add_token(url: str, role: str, actor_id: str) -> str:
    result = CliRunner().invoke(main, ["--db", url, "tokens", "add", "--role", role,
                                       "--id", actor_id])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        """SIGINT (Ctrl-C) and wait; kill the whole group if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise

    def group_is_gone(self, within: float = 5.0) -> bool:
        """No running process is left in the server's process group (workers, the
        multiprocessing resource tracker); zombies waiting for init to reap them are gone."""
        deadline = time.monotonic() + within
        while live_members(self.process.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


def live_members(group: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state != "Z":
            found.append(int(stat.parent.name))
    return found


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


def wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"ledger serve exited: {server.log.read_text()}")
        try:
            if httpx.get(f"{server.base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"ledger serve did not answer /healthz in {STARTUP}s: {server.log.read_text()}")


def live_campaign(now: datetime) -> dict[str, object]:
    """A manual campaign open for registration now (the service runs on the real clock)."""
    day = timedelta(days=1)
    return create_campaign(
        "e2e-live", registration_opens_at=iso(now - day), registration_closes_at=iso(now + day),
        starts_at=iso(now + 2 * day), ends_at=iso(now + 3 * day))


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
