"""Several `ledger serve` processes on one PostgreSQL store keep the core's guarantees.

Two real servers (`python -m ledger serve --workers 2`, on their own free loopback ports)
share one fresh PostgreSQL schema; client threads (httpx), spread across the servers and
released together, race commands at them: idempotency by `command_id`, one registration
per account, the overlap rule, and no lost updates. The servers run for the whole module
and are stopped (SIGINT, then kill) with every worker process.

PostgreSQL only: several servers on several machines share a PostgreSQL store; a SQLite
store is a file on one machine (its races between processes are in test_concurrency.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import combinations
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from ledger import FixedClock, Ledger
from ledger.store import tokens
from ledger.store.tokens import TokenActor
from tests.support.helpers import (
    OPERATOR,
    SYSTEM,
    Json,
    add_session,
    create_auto_campaign,
    create_campaign,
    duplicate,
    iso,
    live_calendar,
    record_performance,
    register,
    register_auto,
    seller,
)
from tests.support.projections import new_schema_url
from tests.support.service import Server, bearer, free_port, wait_until_up

pytestmark = pytest.mark.postgres

SERVERS = 2
CLIENTS = 8  # threads, client i on server i % SERVERS
SELLERS = [f"seller-{i}" for i in range(CLIENTS)]
DAY = timedelta(days=1)


@dataclass
class Cluster:
    """The servers on one store, a token per actor id, and a Ledger on the store itself
    (for setting up scenes at a chosen time, and for reading the events back)."""

    servers: list[Server]
    tokens: dict[str, str]
    ledger: Ledger
    clock: FixedClock

    def setup(self, command: Json, at: datetime | None = None) -> Json:
        self.clock.set(at or datetime.now(UTC))
        result = self.ledger.send(command)
        assert result["ok"], result
        return result

    def event_names(self, public_id: str) -> list[str]:
        return [type(e).__name__ for e in self.ledger.events_of(public_id)]


def launch(url: str, log: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_NOW"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "--db", url, "serve", "--port", str(port),
             "--workers", "2"], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    return Server(f"http://127.0.0.1:{port}", process, log)


def shut_down(servers: list[Server]) -> list[str]:
    """Stop every server (each one even if another fails); what went wrong."""
    problems = []
    for server in servers:
        try:
            code = server.stop()
            if code != 0:
                problems.append(f"{server.base} exited {code}: {server.log.read_text()[-2000:]}")
        except subprocess.TimeoutExpired:
            problems.append(f"{server.base} did not stop on SIGINT (killed)")
        if not server.group_is_gone():
            os.killpg(server.process.pid, signal.SIGKILL)
            problems.append(f"a worker process of {server.base} outlived it (killed)")
    return problems


@pytest.fixture(scope="module")
def cluster(postgres_database: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    url = new_schema_url(postgres_database)
    clock = FixedClock(datetime.now(UTC))
    actors = [OPERATOR, SYSTEM, *(seller(s) for s in SELLERS)]
    with Ledger.open(url, clock=clock, pool_size=2) as ledger:  # the store exists first
        issued = {a["id"]: tokens.issue(ledger.app.store, TokenActor(a["id"], a["role"]),
                                        clock.now()) for a in actors}
        logs = tmp_path_factory.mktemp("servers")
        servers = [launch(url, logs / f"serve-{i}.log") for i in range(SERVERS)]
        try:
            for server in servers:
                wait_until_up(server)
            yield Cluster(servers, issued, ledger, clock)
        finally:
            problems = shut_down(servers)
    assert not problems, problems


# Racing clients -----------------------------------------------------------------------------

Request = tuple[str, list[Json]]  # the actor id whose token is used, the commands in order


def race(cluster: Cluster, requests: list[Request]) -> list[list[httpx.Response]]:
    """Client i sends its commands, one after the other, to server i % SERVERS; the clients
    start together (connections already open). Each client's responses, in order."""
    barrier = threading.Barrier(len(requests))

    def client(i: int, who: str, commands: list[Json]) -> list[httpx.Response]:
        server = cluster.servers[i % len(cluster.servers)]
        headers = bearer(cluster.tokens[who])
        with httpx.Client(base_url=server.base, timeout=30, headers=headers) as http:
            assert http.get("/healthz").status_code == 200
            barrier.wait(30)
            return [http.post("/v1/commands", json=c) for c in commands]

    with ThreadPoolExecutor(len(requests)) as pool:
        running = [pool.submit(client, i, who, commands)
                   for i, (who, commands) in enumerate(requests)]
        return [r.result() for r in running]


def race_one_each(cluster: Cluster, requests: list[tuple[str, Json]]) -> list[Json]:
    """One command per client, all at once: the result bodies (asserted JSON)."""
    responses = race(cluster, [(who, [c]) for who, c in requests])
    return [body_of(r[0]) for r in responses]


def body_of(response: httpx.Response) -> Json:
    assert response.status_code < 500, response.text
    body: Json = response.json()
    assert response.status_code == (200 if body["ok"] else response.status_code)
    return body


def outcomes(results: list[Json]) -> Counter[str]:
    return Counter("ok" if r["ok"] else r["error"]["code"] for r in results)


# Scenes ------------------------------------------------------------------------------------

def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


@pytest.fixture
def live_campaign(cluster: Cluster) -> str:
    """A manual campaign open for registration now (the servers run on the real clock);
    its LIVE period starts in two days."""
    cmd = create_campaign(unique("live"), **live_calendar(live_days=3))
    return str(cluster.setup(cmd)["aggregate_id"])


def window(campaign_hour: float, length: float = 1) -> Json:
    """A session window `campaign_hour` hours after a live campaign starts."""
    starts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + 2 * DAY + \
        timedelta(hours=1 + campaign_hour)
    return {"starts_at": iso(starts), "ends_at": iso(starts + timedelta(hours=length))}


@pytest.fixture
def live_registration(cluster: Cluster, live_campaign: str) -> str:
    """A manual registration of seller-0 with sessions s1 and s2 under review."""
    cmd = register(live_campaign, seller_id=SELLERS[0], account_id=unique("shop"),
                   sessions=[window(0), window(2)])
    return str(cluster.setup(cmd)["aggregate_id"])


# What must hold ----------------------------------------------------------------------------

def test_one_command_sent_to_every_server_at_once_is_written_once(
    cluster: Cluster, live_registration: str,
) -> None:
    cmd = add_session(live_registration, window(10), seller_id=SELLERS[0])
    results = race_one_each(cluster, [(SELLERS[0], cmd)] * CLIENTS)
    assert sorted(r["replayed"] for r in results) == [False] + [True] * (CLIENTS - 1)
    first = next(r for r in results if not r["replayed"])
    assert all(r == {**first, "replayed": r["replayed"]} for r in results)
    assert cluster.event_names(live_registration).count("SessionAdded") == 3


def test_one_account_registered_at_once_through_every_server_is_registered_once(
    cluster: Cluster, live_campaign: str,
) -> None:
    account = unique("shop")
    requests = [(s, register(live_campaign, seller_id=s, account_id=account,
                             sessions=[window(0)])) for s in SELLERS]
    results = race_one_each(cluster, requests)
    assert outcomes(results) == {"ok": 1, "already_registered": CLIENTS - 1}
    winner = next(r for r in results if r["ok"])
    assert all(r["error"]["details"]["registration_id"] == winner["aggregate_id"]
               for r in results if not r["ok"])


def test_overlapping_sessions_sent_at_once_through_every_server_admit_exactly_one(
    cluster: Cluster, live_registration: str,
) -> None:
    windows = [window(20 + 0.25 * i, 3) for i in range(CLIENTS)]  # every pair overlaps
    requests = [(SELLERS[0], add_session(live_registration, w, seller_id=SELLERS[0]) if i % 2
                 else duplicate(live_registration, "s1", w, seller_id=SELLERS[0]))
                for i, w in enumerate(windows)]
    results = race_one_each(cluster, requests)
    assert outcomes(results) == {"ok": 1, "session_overlap": CLIENTS - 1}
    sessions = cluster.ledger.registration(live_registration).sessions.values()
    kept = [s for s in sessions if s.status in ("under_review", "approved")]
    assert len(kept) == 3
    for a, b in combinations(kept, 2):
        assert a.ends_at <= b.starts_at or b.ends_at <= a.starts_at, (a, b)


REPORTS = 8  # per client, sent one after the other


def test_performance_reported_by_many_clients_through_every_server_is_never_lost(
    cluster: Cluster,
) -> None:
    now = datetime.now(UTC)
    started = now - 5 * DAY  # the campaign is on: reports of past periods are accepted
    campaign = unique("flash")
    cluster.setup(create_auto_campaign(
        campaign, registration_opens_at=iso(now - 10 * DAY),
        registration_closes_at=iso(now - 6 * DAY), starts_at=iso(started),
        ends_at=iso(now + 5 * DAY)), at=now - 8 * DAY)
    registration = str(cluster.setup(register_auto(
        campaign, seller_id=SELLERS[1], account_id=unique("shop")), at=now - 8 * DAY
    )["aggregate_id"])
    assert cluster.event_names(registration)[-1] == "Approved"

    def report(report_id: str, n: int) -> Json:
        period = (started + timedelta(minutes=n), started + timedelta(minutes=n + 1))
        return record_performance(registration, report_id=report_id, period=period,
                                  gmv="10.25", refunds="0.50", orders=1)

    # Each client's own reports, and one report every client sends (its own command_id).
    requests = [(SYSTEM["id"], [report(f"r-{i}-{j}", i * REPORTS + j) for j in range(REPORTS)]
                 + [report("r-shared", 0)]) for i in range(CLIENTS)]
    results = [body_of(r) for responses in race(cluster, requests) for r in responses]
    assert outcomes(results) == {"ok": CLIENTS * (REPORTS + 1)}
    # The shared report: recorded once, then accepted without a change.
    assert sum(r["events"] == [] for r in results) == CLIENTS - 1
    recorded = CLIENTS * REPORTS + 1
    assert cluster.event_names(registration).count("PerformanceRecorded") == recorded

    totals = read_totals(cluster, campaign)
    assert (Decimal(totals["gmv"]), Decimal(totals["refunds"]), totals["orders"]) == \
        (Decimal("10.25") * recorded, Decimal("0.50") * recorded, recorded)


def read_totals(cluster: Cluster, campaign: str) -> Any:
    """The campaign's performance totals, read fresh from every server: all agree."""
    found = []
    for server in cluster.servers:
        response = httpx.get(f"{server.base}/v1/campaigns/{campaign}/performance",
                             params={"fresh": "true"}, timeout=30,
                             headers=bearer(cluster.tokens[OPERATOR["id"]]))
        assert response.status_code == 200, response.text
        found.append(response.json()["totals"])
    assert all(f == found[0] for f in found)
    [totals] = found[0]
    return totals
