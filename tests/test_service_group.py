"""Group commit in `ledger serve` (issue 14): single-command requests arriving together are
decided in one `send_group`, and every client still gets what it would get alone.

The real `ledger serve` (one worker, default --group-wait-ms / --group-max) on a real
store, SQLite file and PostgreSQL schema; client threads (httpx, each with its own
keep-alive connection) are released together and each sends its own commands one request
at a time, with the token of each command's actor. The same commands are then sent one at
a time, in-process, to a fresh store of the same backend, in an order the server's answers
allow (who won a race first): every answer (status and body, `position` aside) and the
stored commands and events must be the same. Groups must really have formed
(`X-Ledger-Group-Size` > 1 on some answers). And while the store is down, coalesced
requests get 503 `store_unavailable` with Retry-After; afterwards every command is whole
or absent, and sending them all again is safe.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from ledger import FixedClock, Ledger
from ledger.aggregates.base import registration_uuid
from ledger.service.status import status_of
from ledger.store import tokens
from ledger.store.tokens import TokenActor
from tests.conftest import POSTGRES_URL, NewUrl
from tests.reliability.test_crash_writes import assert_whole, command_rows
from tests.reliability.test_outage import dedicated_database, refused, write_locked
from tests.support.helpers import (
    OPERATOR,
    REVIEWER,
    Json,
    add_session,
    approve,
    command,
    iso,
    live_calendar,
)
from tests.support.helpers import campaign_fields as realistic_campaign
from tests.support.helpers import register as register_command
from tests.support.helpers import withdraw as withdraw_command
from tests.support.service import bearer, in_process, serving, store_answers

CLIENTS = 16
LIVE = "group-live"  # a campaign open for registration on the real clock (the service's)
DAY = timedelta(days=1)
GROUP_HEADER = "X-Ledger-Group-Size"


def live_campaign(campaign_id: str, now: datetime, command_id: str | None = None) -> Json:
    fields = {**realistic_campaign(campaign_id), **live_calendar(now)}
    created = command("create_campaign", OPERATOR, fields)
    if command_id is not None:
        created["command_id"] = command_id
    return created


def seller_of(client: int) -> str:
    return f"group-seller-{client}"


def window(now: datetime, hour: int) -> Json:
    starts = now + 2 * DAY + timedelta(hours=hour)
    return {"starts_at": iso(starts), "ends_at": iso(starts + timedelta(hours=1))}


def register(client: int, now: datetime, account: str | None = None, **fields: Any) -> Json:
    return register_command(LIVE, seller_id=seller_of(client),
                            account_id=account or f"group-shop-{client}",
                            sessions=[window(now, 1)], **fields)


def registration_id(account: str) -> str:
    return str(registration_uuid(LIVE, account))


def stream(client: int, now: datetime) -> list[Json]:
    """One client's commands, in order: accepted, refused by a rule, replays, a reused
    command_id, the one-registration-per-account race, several on one aggregate."""
    mine = register(client, now)
    reg = registration_id(f"group-shop-{client}")
    reused = live_campaign(f"group-reused-{client}", now, command_id="group-reused")
    commands = [
        mine,
        register(client, now, account=f"group-other-{client}", main_category="garden"),
        live_campaign("group-shared", now, command_id="group-shared"),  # same for all
        reused,  # same command_id, another body: one is accepted, the others reused
        register(client, now, account="group-contested"),  # one account, 16 sellers
        add_session(reg, window(now, 3 + client % 4), seller_id=seller_of(client)),
        add_session(registration_id(f"group-nobody-{client}"), window(now, 5),
                    seller_id=seller_of(client)),  # not_found
        mine,  # a replay of the first
    ]
    if client % 3 == 0:
        commands.append(withdraw_command(reg, seller_id=seller_of(client)))
    return commands


@dataclass
class Scene:
    url: str
    now: datetime
    tokens: dict[str, str]  # actor id -> token


def set_up(url: str) -> Scene:
    """The live campaign and a token for every actor, written in-process."""
    now = datetime.now(UTC)
    with Ledger.open(url, clock=FixedClock(now), pool_size=1) as ledger:
        assert ledger.send(live_campaign(LIVE, now, command_id="group-live"))["ok"]
        actors = [TokenActor(OPERATOR["id"], OPERATOR["role"]),
                  TokenActor(REVIEWER["id"], REVIEWER["role"]),
                  *(TokenActor(seller_of(c), "seller") for c in range(CLIENTS))]
        issued = {a.id: tokens.issue(ledger.app.store, a, now) for a in actors}
    return Scene(url, now, issued)


def race(base: str, scene: Scene, streams: list[list[Json]]) -> list[list[httpx.Response]]:
    """Each client sends its stream, one request after the other, all clients released
    together (connections open); their responses."""
    barrier = threading.Barrier(len(streams))

    def client(commands: list[Json]) -> list[httpx.Response]:
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/healthz").status_code == 200
            barrier.wait(60)
            return [http.post("/v1/commands", json=c,
                              headers=bearer(scene.tokens[c["actor"]["id"]]))
                    for c in commands]

    with ThreadPoolExecutor(len(streams)) as pool:
        return list(pool.map(client, streams))


def without_position(body: Json) -> Json:
    return {k: v for k, v in body.items() if k != "position"}


def one_at_a_time(url: str, scene: Scene, order: list[tuple[int, int]],
                  streams: list[list[Json]]) -> dict[tuple[int, int], Json]:
    """The commands sent one at a time in `order` ((client, step)), each with its
    actor as the service would set it: (client, step) -> result."""
    results = {}
    with Ledger.open(url, clock=FixedClock(scene.now + timedelta(seconds=1)),
                     pool_size=1) as ledger:
        assert ledger.send(live_campaign(LIVE, scene.now, command_id="group-live"))["ok"]
        for client, step in order:
            results[(client, step)] = ledger.send(streams[client][step])
    return results


def events_by_aggregate(url: str) -> dict[UUID, list[tuple[str, int, str]]]:
    """Per aggregate: each event's name, version and actor id."""
    with Ledger.open(url, pool_size=1) as ledger:
        ids = {n.originator_id for n in ledger.app.recorder.select_notifications(0, 10**6)}
        return {UUID(str(oid)): [(type(e).__name__, e.originator_version, e.actor["id"])
                                 for e in ledger.app.events.get(oid)] for oid in ids}


# Every client gets what it would get alone -------------------------------------------------

def test_concurrent_single_commands_are_grouped_and_each_gets_its_result_alone(
        new_url: NewUrl, tmp_path: Path) -> None:
    url, reference = new_url(), new_url()
    scene = set_up(url)
    streams = [stream(c, scene.now) for c in range(CLIENTS)]
    with serving(url, tmp_path / "serve.log") as server:
        answers = race(server.base, scene, streams)

    # Groups formed: some answers shared their transaction with others.
    sizes = [int(r.headers[GROUP_HEADER]) for rs in answers for r in rs]
    assert max(sizes) > 1, sizes
    assert all(1 <= s <= 200 for s in sizes)
    logged = (tmp_path / "serve.log").read_text()
    assert '"group": ' in logged

    # Who won each race, from the server's answers: that one goes first one at a time.
    def winner(step: int) -> int:
        won = [c for c in range(CLIENTS) if answers[c][step].status_code == 200
               and not answers[c][step].json()["replayed"]]
        assert len(won) == 1, [answers[c][step].json() for c in range(CLIENTS)]
        return won[0]

    order: list[tuple[int, int]] = []
    for step in range(max(len(s) for s in streams)):
        clients = [c for c in range(CLIENTS) if step < len(streams[c])]
        if step in (2, 3, 4):  # the shared command, the reused id, the contested account
            first = winner(step)
            clients = [first, *(c for c in clients if c != first)]
        order += [(c, step) for c in clients]
    alone = one_at_a_time(reference, scene, order, streams)

    codes = set()
    for client, step in order:
        response, expected = answers[client][step], alone[(client, step)]
        assert response.status_code == status_of(expected), (client, step, response.text)
        assert without_position(response.json()) == without_position(expected), (client, step)
        codes.add(expected["error"]["code"] if not expected["ok"] else
                  "replayed" if expected["replayed"] else "accepted")
        if expected["ok"] and expected["events"] and not expected["replayed"]:
            assert isinstance(response.json()["position"], int)
    assert codes == {"accepted", "replayed", "category_not_allowed", "conflict",
                     "already_registered", "not_found"}
    reused = [answers[c][3].json() for c in range(CLIENTS) if answers[c][3].status_code == 409]
    assert {r["error"]["details"]["reason"] for r in reused} == {"command_id_reused"}

    # The store holds what one at a time holds: the same command rows, the same events
    # (names, versions, and each one's actor: its own request's token), whole.
    with Ledger.open(url, pool_size=1) as ledger:
        assert_whole(url, ledger)
    assert command_rows(url) == command_rows(reference)
    stored = events_by_aggregate(url)
    assert stored == events_by_aggregate(reference)
    for client in range(CLIENTS):
        mine = UUID(registration_id(f"group-shop-{client}"))
        assert {actor for _, _, actor in stored[mine]} == {seller_of(client)}


# A store outage during coalesced requests ----------------------------------------------------

def outage_store(backend: str, tmp_path: Path) -> AbstractContextManager[
        tuple[str, Callable[[], AbstractContextManager[None]]]]:
    """(the store's URL, a context manager during which it is down)."""
    from contextlib import contextmanager

    @contextmanager
    def postgres() -> Iterator[tuple[str, Callable[[], AbstractContextManager[None]]]]:
        with dedicated_database() as (name, url), \
                psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            yield url, lambda: refused(admin, name)

    @contextmanager
    def sqlite() -> Iterator[tuple[str, Callable[[], AbstractContextManager[None]]]]:
        path = tmp_path / "outage.db"
        yield f"sqlite:///{path}", lambda: write_locked(path)

    return postgres() if backend == "postgres" else sqlite()


def test_a_group_sees_what_another_writer_did_after_the_groups_before_it(
        new_url: NewUrl, tmp_path: Path) -> None:
    """Each group in flight keeps the aggregates its groups committed, for the next
    group, and reuses one only while the store still holds it at that version: a session
    another writer added between two requests is there for the next request."""
    url = new_url()
    scene = set_up(url)
    reg = registration_id("group-shop-0")
    with serving(url, tmp_path / "serve.log") as server, \
            httpx.Client(base_url=server.base, timeout=60) as http:
        def post(cmd: Json) -> httpx.Response:
            return http.post("/v1/commands", json=cmd,
                             headers=bearer(scene.tokens[cmd["actor"]["id"]]))

        assert post(register(0, scene.now)).json()["ok"]  # s1
        assert post(add_session(reg, window(scene.now, 3), seller_id=seller_of(0))).json()[
            "ok"]  # s2: the group's aggregate, kept
        with Ledger.open(url, pool_size=1) as other:  # s3, by another writer
            added = other.send(add_session(reg, window(scene.now, 5), seller_id=seller_of(0)))
            assert added["ok"], added
        approved = post(approve(reg, ["s3"]))
        assert approved.status_code == 200, approved.text
        assert approved.json()["version"] == added["version"] + 1
    with Ledger.open(url, pool_size=1) as ledger:
        assert ledger.registration(reg).sessions["s3"].status == "approved"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_a_store_outage_answers_503_to_the_grouped_requests_and_resending_is_safe(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_SQLITE_BUSY_TIMEOUT", "1")  # the server's too (SQLite)
    with outage_store(backend, tmp_path) as (url, down):
        scene = set_up(url)
        warm = [[register(c, scene.now, account=f"group-warm-{c}")] for c in range(CLIENTS)]
        during = [[register(c, scene.now)] for c in range(CLIENTS)]
        with serving(url, tmp_path / "serve.log") as server:
            first = race(server.base, scene, warm)  # the worker knows every token now
            assert all(r.status_code == 200 for rs in first for r in rs)
            with down(), ThreadPoolExecutor(1) as pool, \
                    httpx.Client(base_url=server.base, timeout=30) as probe:
                racing = pool.submit(race, server.base, scene, during)
                # While a group waits on the store (seconds), the event loop still answers.
                slowest = 0.0
                while not racing.done():
                    began = time.monotonic()
                    assert probe.get("/healthz").status_code == 200
                    slowest = max(slowest, time.monotonic() - began)
                    time.sleep(0.05)
                answers = racing.result()
                assert slowest < 2.0, slowest
            for (response,) in answers:
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "store_unavailable"
                assert "again is safe" in response.json()["error"]["message"]
                assert int(response.headers["Retry-After"]) > 0

            # Nothing half-written: each command whole or absent.
            with Ledger.open(url, pool_size=1) as ledger:
                assert_whole(url, ledger)
            # Sending them all again is safe: each accepted once, or a replay of itself.
            store_answers(server.base)
            again = race(server.base, scene, during)
            for client, (response,) in enumerate(again):
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["aggregate_id"] == registration_id(f"group-shop-{client}")
            twice = race(server.base, scene, during)
            assert all(r.json()["replayed"] for rs in twice for r in rs)
        with Ledger.open(url, pool_size=1) as ledger:
            rows = assert_whole(url, ledger)
        assert {c[0]["command_id"] for c in during} <= rows.keys()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_a_batch_commits_in_groups_and_an_outage_midway_reports_the_committed_groups(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_SQLITE_BUSY_TIMEOUT", "1")  # the server's too (SQLite)
    group = 50
    with outage_store(backend, tmp_path) as (url, down):
        scene = set_up(url)
        batch = [register(0, scene.now, account=f"group-batch-{i}") for i in range(500)]
        with serving(url, tmp_path / "serve.log", "--group-max", str(group)) as server, \
                httpx.Client(base_url=server.base, timeout=120,
                             headers=bearer(scene.tokens[seller_of(0)])) as http, \
                ThreadPoolExecutor(1) as pool:
            sending = pool.submit(http.post, "/v1/commands:batch", json=batch)
            deadline = time.monotonic() + 60
            while len(command_rows(url)) < 1 + group + 10:  # the campaign, a group and more
                assert not sending.done(), "the batch ended before the outage began"
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with down():
                response = sending.result(timeout=120)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "store_unavailable"
            assert int(response.headers["Retry-After"]) > 0
            done = response.json()["error"]["details"]["results"]
            assert done
            assert len(done) % group == 0, len(done)  # whole groups only
            assert [r["command_id"] for r in done] == [c["command_id"] for c in
                                                       batch[:len(done)]]
            assert all(r["ok"] and not r["replayed"] for r in done)
            with Ledger.open(url, pool_size=1) as ledger:
                assert_whole(url, ledger)  # each command whole or absent

            store_answers(server.base)
            again = http.post("/v1/commands:batch", json=batch)
            assert again.status_code == 200, again.text
            results = again.json()
            assert all(r["ok"] for r in results)
            assert [r["replayed"] for r in results[:len(done)]] == [True] * len(done)
        with Ledger.open(url, pool_size=1) as ledger:
            rows = assert_whole(url, ledger)
        assert {c["command_id"] for c in batch} <= rows.keys()


def test_a_client_that_goes_away_leaves_its_command_whole_or_absent(
        new_url: NewUrl, tmp_path: Path) -> None:
    url = new_url()
    scene = set_up(url)
    commands = [register(c, scene.now, account=f"group-gone-{c}") for c in range(CLIENTS)]
    with serving(url, tmp_path / "serve.log") as server:
        host, port = server.base.removeprefix("http://").split(":")
        # Every token known to the worker first (so the requests below wait in groups only).
        race(server.base, scene, [[register(c, scene.now, account=f"group-seen-{c}")]
                                  for c in range(CLIENTS)])
        sockets = []
        for command_ in commands:
            body = json.dumps(command_).encode()
            head = (f"POST /v1/commands HTTP/1.1\r\nHost: {host}\r\n"
                    f"Authorization: Bearer {scene.tokens[command_['actor']['id']]}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
            sock = socket.create_connection((host, int(port)))
            sock.sendall(head.encode() + body)
            sockets.append(sock)
        for sock in sockets:  # gone before any answer could come
            sock.close()
        # The same commands again, on the same worker: they queue behind whatever group
        # the vanished requests joined, so each answer here comes after it was decided.
        resent = race(server.base, scene, [[c] for c in commands])
        assert all(r.status_code == 200 for rs in resent for r in rs), resent
        # Each one was decided although nobody waited for its answer: now a replay.
        assert [r.json()["replayed"] for rs in resent for r in rs] == [True] * CLIENTS
        with Ledger.open(url, pool_size=1) as ledger:
            rows = assert_whole(url, ledger)  # each command whole, none twice
        assert {c["command_id"] for c in commands} <= rows.keys()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


@pytest.mark.parametrize(("options", "header"), [({}, "1"), ({"group_wait_ms": 0}, None),
                                                 ({"group_max": 0}, None)])
def test_a_lone_command_is_a_group_of_one_and_either_bound_0_turns_grouping_off(
        backend: str, options: dict[str, float], header: str | None) -> None:
    scene = set_up(backend)
    command_ = register(0, scene.now)
    with in_process(backend, FixedClock(scene.now), **options) as api:
        response = api.client.post("/v1/commands", json=command_,
                                   headers=bearer(scene.tokens[seller_of(0)]))
    assert response.status_code == 200, response.text
    assert response.headers.get(GROUP_HEADER) == header
    assert response.json()["ok"] is True
