"""Database outage (issue 6): the store goes away under load and comes back.

PostgreSQL: the ledger's connections are terminated (`pg_terminate_backend`, what a
restart or a failover does to a client) and, for a few seconds, new ones are refused
(`ALLOW_CONNECTIONS false`), in a database of this module's own (the run's shared
database is not touched). SQLite: another process holds the file's write lock longer than
the ledger's busy timeout (`LEDGER_SQLITE_BUSY_TIMEOUT`, 1 s here).

While it lasts: `Ledger.send` raises StoreUnavailable (a clear line), `ledger send` exits 2
with one line naming where it stopped, the real service answers 503 `store_unavailable`
with `Retry-After` (and /healthz 200), the projection runner waits. Afterwards the same
Ledger, service and runner recover by themselves, and every command a client was told
was accepted is stored once, with its events, and the hash chains verify.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import httpx
import psycopg
import pytest
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.errors import StoreUnavailable
from ledger.projections.registry import projector
from tests.conftest import POSTGRES_URL, SKIP_POSTGRES
from tests.reliability.test_crash_writes import assert_stored, assert_whole, command_rows
from tests.support.helpers import NOW, Json, create_campaign, iso, live_calendar, register
from tests.support.holders import held_elsewhere
from tests.support.service import Server, add_token, free_port, store_answers, wait_until_up

CAMPAIGN = "outage-live"
LIVE = "outage-live-now"  # a campaign open for registration on the real clock (the service)
SAFE = "sending the same command_id again is safe"
BUSY_TIMEOUT = "1"  # seconds (LEDGER_SQLITE_BUSY_TIMEOUT) for the SQLite cases
Admin = psycopg.Connection[tuple[Any, ...]]


# Stores -----------------------------------------------------------------------------------------

@contextmanager
def dedicated_database() -> Iterator[tuple[str, str]]:
    """A PostgreSQL database of our own (connections to it get refused): (name, store URL)."""
    if SKIP_POSTGRES:
        pytest.skip("LEDGER_TEST_SKIP_POSTGRES=1")
    name = f"ledger_outage_{uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name, urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}",
                                                               query="schema=public"))
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            allow(admin, name)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))


def terminate(admin: Admin, name: str) -> int:
    """Kill every backend of the database but ours; how many."""
    rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    return len(rows)


def allow(admin: Admin, name: str, allowed: bool = True) -> None:
    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.SQL("true" if allowed else "false")))


@contextmanager
def refused(admin: Admin, name: str) -> Iterator[None]:
    """New connections refused and the open ones terminated, until the block ends."""
    allow(admin, name, False)
    try:
        terminate(admin, name)
        yield
    finally:
        allow(admin, name)


def write_locked(path: Path) -> AbstractContextManager[None]:
    """Another process holds the SQLite file's write lock until the block ends."""
    return held_elsewhere("import sqlite3\n"
                          f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
                          "c.execute('BEGIN IMMEDIATE')")


# Clients ----------------------------------------------------------------------------------------

def registration(n: int, prefix: str, campaign: str = CAMPAIGN) -> Json:
    cmd = register(campaign, seller_id=f"seller-{prefix}", account_id=f"{prefix}-{n}",
                   sessions=[{"starts_at": "2026-11-10T01:00:00+00:00",
                              "ends_at": "2026-11-10T02:00:00+00:00"}])
    cmd["command_id"] = f"{prefix}-{n:04d}"
    return cmd


class Background:
    """Work in a thread on a Ledger of its own until the block ends; what it raised fails
    the test at the end of the block."""

    def __init__(self, ledger: Ledger, join_timeout: float) -> None:
        self.ledger, self.join_timeout = ledger, join_timeout
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._guarded, daemon=True)

    def work(self) -> None:
        raise NotImplementedError

    def _guarded(self) -> None:
        try:
            self.work()
        except BaseException as e:  # reported by the test
            self.errors.append(e)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(self.join_timeout)
        self.ledger.close()
        assert not self.thread.is_alive(), f"the {type(self).__name__} thread is stuck"
        assert not self.errors, self.errors


class Load(Background):
    """A thread sending registrations one after another on its own Ledger. A command that
    meets StoreUnavailable is sent again (same command_id) until it goes through, as the
    error says a client may. `reported`: every accepted result, as the client saw it."""

    def __init__(self, url: str) -> None:
        super().__init__(Ledger.open(url, clock=FixedClock(NOW), pool_size=2), 60)
        self.reported: dict[str, Json] = {}
        self.unavailable: list[str] = []

    def work(self) -> None:
        n = 0
        while not self.stop.is_set():
            cmd = registration(n, "load")
            try:
                result = self.ledger.send(cmd)
            except StoreUnavailable as e:
                self.unavailable.append(str(e))
                time.sleep(0.2)
                continue
            assert result["ok"], result
            self.reported[cmd["command_id"]] = result
            n += 1

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        target = len(self.reported) + count
        while len(self.reported) < target:
            assert time.monotonic() < deadline, f"the load is stuck: {self.unavailable[-3:]}"
            assert not self.errors, self.errors
            time.sleep(0.05)


class Follower(Background):
    """The projection runner (`Projector.run`) in a thread, on its own Ledger."""

    def __init__(self, url: str) -> None:
        super().__init__(Ledger.open(url, pool_size=2), 30)
        self.projector = projector(self.ledger.app)

    def work(self) -> None:
        self.projector.run(interval=0.05, should_stop=self.stop.is_set)

    def caught_up(self, head: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        view = self.projector.view
        while True:
            assert not self.errors, self.errors
            positions = {m.name: view.position(m.name) for m in self.projector.models}
            if all(p >= head for p in positions.values()):
                return
            assert time.monotonic() < deadline, f"the runner did not catch up: {positions}"
            time.sleep(0.1)


def cli(url: str, *args: str, stdin: str = "", env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", "--db", url, "--now", NOW.isoformat(),
                           *args], input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def assert_one_line_unavailable(stderr: str, *words: str, resend: bool = True) -> str:
    """One `Error: store unavailable: ...` line; a command's says resending is safe (a
    read's does not: there is nothing to resend)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    line = lines[0]
    assert line.startswith("Error: store unavailable: "), line
    assert (SAFE in line or "sending them again is safe" in line) == resend, line
    for word in words:
        assert word in line, line
    return line


@contextmanager
def serve(url: str, tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """The real `ledger serve` (one worker) on a free port, stopped at the end."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    environ = {k: v for k, v in os.environ.items() if k != "LEDGER_NOW"} | (env or {})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "--db", url, "serve", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=environ, start_new_session=True)
    running = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_up(running)
        yield running
    finally:
        try:
            running.stop()
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def live_campaign() -> Json:
    return create_campaign(LIVE, **live_calendar())


def live_registration(n: int) -> Json:
    starts = datetime.now(UTC) + timedelta(days=2, hours=1)
    cmd = registration(n, "svc", LIVE)
    cmd["payload"]["sessions"] = [{"starts_at": iso(starts),
                                   "ends_at": iso(starts + timedelta(hours=1))}]
    return cmd


class Service:
    """An HTTP client of the real service, as the seller `seller-svc`."""

    def __init__(self, server: Server, url: str) -> None:
        self.token = add_token(url, "seller", "seller-svc")
        self.http = httpx.Client(base_url=server.base, timeout=60)

    def send(self, cmd: Json) -> httpx.Response:
        return self.http.post("/v1/commands", json=cmd,
                              headers={"Authorization": f"Bearer {self.token}"})

    def assert_unavailable(self, cmd: Json) -> None:
        response = self.send(cmd)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "store_unavailable", response.text
        assert int(response.headers["Retry-After"]) > 0
        assert self.http.get("/healthz").status_code == 200


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def head_of(url: str) -> int:
    with Ledger.open(url, pool_size=1) as ledger:
        return ledger.app.recorder.max_notification_id() or 0


def assert_all_whole(url: str, reported: dict[str, Json]) -> dict[str, Json]:
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        commands = assert_whole(url, ledger)
    assert_stored(reported, commands)
    return commands


class StoppedSend:
    """`ledger send` of many lines, started before an outage: `started()` once it has
    printed a few results, `finish()` after the outage began: its printed results and
    its stderr (it must exit 2)."""

    def __init__(self, url: str, commands: list[Json], env: dict[str, str] | None = None,
                 ) -> None:
        self.path = Path(f"/tmp/outage-{uuid4().hex[:8]}.jsonl")
        self.path.write_text("".join(json.dumps(c) + "\n" for c in commands))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "--db", url, "--now", NOW.isoformat(), "send",
             str(self.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        assert self.process.stdout is not None
        self.printed = [json.loads(self.process.stdout.readline()) for _ in range(3)]

    def finish(self) -> tuple[list[Json], str]:
        try:
            assert self.process.stdout is not None
            assert self.process.stderr is not None
            self.printed.extend(json.loads(line) for line in self.process.stdout)
            err = self.process.stderr.read()
            assert self.process.wait(60) == 2, err
            return self.printed, err
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.path.unlink()


def assert_printed_are_stored(printed: list[Json], stderr: str, commands: list[Json],
                              stored: dict[str, Json]) -> int:
    """The results printed are stored, each as printed; of the lines not printed, only
    the one it stopped at may be stored too (its commit may have landed as the
    connection died). The index it stopped at."""
    assert printed
    assert all(r["ok"] and not r["replayed"] for r in printed), printed
    assert [r["command_id"] for r in printed] == [c["command_id"] for c in
                                                  commands[:len(printed)]]
    for result in printed:
        assert result["events"] == stored[result["command_id"]]["events"]
    stop = len(printed)
    assert f"stopped at line {stop + 1}:" in stderr, stderr
    assert f"the {stop} results printed before it stand" in stderr, stderr
    unprinted = {c["command_id"] for c in commands[stop + 1:]}
    assert not unprinted & set(stored), "a command after the stop was stored"
    return stop


# PostgreSQL -------------------------------------------------------------------------------------

@pytest.mark.postgres
def test_postgres_outage_under_load(tmp_path: Path) -> None:
    with dedicated_database() as (name, url), \
            psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        ledger = Ledger.open(url, clock=FixedClock(NOW), pool_size=2)
        try:
            assert ledger.send(create_campaign(CAMPAIGN))["ok"]
            assert ledger.send(live_campaign())["ok"]
            with serve(url, tmp_path) as server, Load(url) as load, Follower(url) as follower:
                service = Service(server, url)
                assert service.send(live_registration(0)).status_code == 200
                load.wait_for(5)

                # Connections terminated, new ones allowed (a restart that is over at once,
                # a pooler failing over): nobody notices beyond a retry.
                for _ in range(3):
                    assert terminate(admin, name) > 0
                    load.wait_for(3)
                assert ledger.send(registration(0, "direct"))["ok"]
                assert service.send(live_registration(1)).status_code == 200
                assert not load.unavailable, load.unavailable

                # Then an outage of several seconds: terminated, new connections refused.
                cli_commands = [registration(n, "cli") for n in range(400)]
                stopped = StoppedSend(url, cli_commands)
                with refused(admin, name), ThreadPoolExecutor(4) as pool:
                    def direct() -> None:
                        started = time.monotonic()
                        with pytest.raises(StoreUnavailable) as raised:
                            ledger.send(registration(1, "direct"))
                        assert time.monotonic() - started < 15
                        message = str(raised.value)
                        assert message.startswith("store unavailable: the database cannot be "
                                                  "reached"), message
                        assert "not currently accepting connections" in message
                        assert SAFE in message
                        assert "\n" not in message

                    def at_open() -> None:
                        sent = cli(url, "send", "-", stdin=json.dumps(registration(1, "cli2")))
                        assert sent.returncode == 2, sent.stderr
                        assert_one_line_unavailable(sent.stderr, "not currently accepting")

                    def read() -> None:
                        shown = cli(url, "show", "campaign", CAMPAIGN)
                        assert shown.returncode == 2, shown.stderr
                        assert_one_line_unavailable(shown.stderr, "not currently accepting",
                                                    resend=False)

                    checks = [pool.submit(direct), pool.submit(at_open), pool.submit(read),
                              pool.submit(service.assert_unavailable, live_registration(2)),
                              pool.submit(stopped.finish)]
                    printed, err = checks[-1].result()
                    for check in checks[:-1]:
                        check.result()
                    wait_until(lambda: bool(load.unavailable), 20, "the load never noticed")

                # Back: the same Ledger, service and runner carry on, nothing restarted
                # (the service once its probe of the database, every half second, finds
                # it back: as a health check would, wait for /readyz).
                assert ledger.send(registration(1, "direct"))["ok"]
                store_answers(server.base)
                response = service.send(live_registration(2))
                assert response.status_code == 200, response.text
                load.wait_for(5)
                load.stop.set()
                load.thread.join(30)
                stored = command_rows(url)
                stop = assert_printed_are_stored(printed, err, cli_commands, stored)
                again = cli(url, "send", "-", stdin="".join(json.dumps(c) + "\n"
                                                            for c in cli_commands))
                assert again.returncode == 0, again.stderr
                resent = [json.loads(line) for line in again.stdout.splitlines()]
                assert [r["replayed"] for r in resent[:stop]] == [True] * stop
                assert not any(r["replayed"] for r in resent[stop + 1:])
                follower.caught_up(head_of(url))
            assert_all_whole(url, {**load.reported, **{r["command_id"]: r for r in resent}})
        finally:
            ledger.close()


# SQLite -----------------------------------------------------------------------------------------

@pytest.fixture
def busy_timeout(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A short busy timeout, for this process's Ledgers and for the child processes."""
    monkeypatch.setenv("LEDGER_SQLITE_BUSY_TIMEOUT", BUSY_TIMEOUT)
    return {"LEDGER_SQLITE_BUSY_TIMEOUT": BUSY_TIMEOUT}


def test_sqlite_write_lock_held_by_another_process(tmp_path: Path,
                                                   busy_timeout: dict[str, str]) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    ledger = Ledger.open(url, clock=FixedClock(NOW), pool_size=1)
    try:
        assert ledger.send(create_campaign(CAMPAIGN))["ok"]
        assert ledger.send(live_campaign())["ok"]
        with serve(url, tmp_path, busy_timeout) as server, Follower(url) as follower:
            service = Service(server, url)
            assert service.send(live_registration(0)).status_code == 200
            cli_commands = [registration(n, "cli") for n in range(1500)]
            stopped = StoppedSend(url, cli_commands, busy_timeout)
            with write_locked(path), ThreadPoolExecutor(4) as pool:
                def direct() -> None:
                    with pytest.raises(StoreUnavailable) as raised:
                        ledger.send(registration(0, "direct"))
                    message = str(raised.value)
                    assert message.startswith("store unavailable: another process holds the "
                                              "database's write lock"), message
                    assert SAFE in message
                    assert "\n" not in message

                def blocked() -> None:
                    sent = cli(url, "send", "-", stdin=json.dumps(registration(0, "cli2")),
                               env=busy_timeout)
                    assert sent.returncode == 2, sent.stderr
                    assert_one_line_unavailable(sent.stderr, "write lock")

                def reads() -> None:  # reads do not need the lock
                    shown = cli(url, "show", "campaign", CAMPAIGN)
                    assert shown.returncode == 0, shown.stderr

                checks = [pool.submit(direct), pool.submit(blocked), pool.submit(reads),
                          pool.submit(service.assert_unavailable, live_registration(1)),
                          pool.submit(stopped.finish)]
                printed, err = checks[-1].result()
                for check in checks[:-1]:
                    check.result()

            assert ledger.send(registration(0, "direct"))["ok"]
            assert cli(url, "send", "-", stdin=json.dumps(registration(0, "cli2")),
                       env=busy_timeout).returncode == 0
            response = service.send(live_registration(1))
            assert response.status_code == 200, response.text
            stored = command_rows(url)
            stop = assert_printed_are_stored(printed, err, cli_commands, stored)
            again = cli(url, "send", "-", stdin="".join(json.dumps(c) + "\n"
                                                        for c in cli_commands))
            assert again.returncode == 0, again.stderr
            resent = [json.loads(line) for line in again.stdout.splitlines()]
            assert [r["replayed"] for r in resent[:stop]] == [True] * stop
            follower.caught_up(head_of(url))
        commands = assert_all_whole(url, {r["command_id"]: r for r in resent})
        assert len([c for c in commands if c.startswith("cli-")]) == len(cli_commands)
    finally:
        ledger.close()

