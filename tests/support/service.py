"""Service test helpers: a client on a real store with a token per role."""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from ledger import Ledger
from ledger.cli import main
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


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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


# A real `ledger serve` process ----------------------------------------------------------

STARTUP = 20.0  # seconds to wait for /healthz: spawning workers is slow on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


@contextmanager
def serving(url: str, log: Path, *options: str) -> Iterator[Server]:
    """The real `ledger serve` (one worker, `options` added) on a free loopback port,
    stopped (its whole process group) at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_NOW"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "--db", url, "serve", "--port", str(port),
             *options], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    running = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_up(running)
        yield running
    finally:
        running.stop()
        if not running.group_is_gone():
            os.killpg(process.pid, signal.SIGKILL)


def timed(conn: http.client.HTTPConnection, method: str, path: str, token: str = "",
          body: Json | None = None) -> tuple[int, float]:
    """(status, seconds) of one request on a keep-alive connection."""
    headers = {"Content-Type": "application/json", **(bearer(token) if token else {})}
    started = time.perf_counter()
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - started


@contextmanager
def hammering(base: str, path: str, token: str, clients: int,
              within: float = 30.0) -> Iterator[list[int]]:
    """`clients` threads, each on its own keep-alive connection, GET `path` again and
    again until the block ends (at most `within` seconds); the block starts once every
    client has a request in flight, and sees the statuses they got so far."""
    stop, statuses = threading.Event(), []
    in_flight = threading.Semaphore(0)
    host, port = base.removeprefix("http://").split(":")

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=within)
        deadline = time.monotonic() + within
        try:
            conn.request("GET", path, headers=bearer(token))
            in_flight.release()
            while True:
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
                if stop.is_set() or time.monotonic() > deadline:
                    return
                conn.request("GET", path, headers=bearer(token))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for _ in threads:
        in_flight.acquire(timeout=within)
    try:
        yield statuses
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=within)


def p99(seconds: list[float]) -> float:
    return sorted(seconds)[math.ceil(0.99 * len(seconds)) - 1]
