"""`ledger serve` keeps its read models current by itself, with one follower per store
among all its workers (elected by the store's `follow` lock, which dies with its holder),
and `--no-follow` leaves that to `ledger projections run`. Both backends."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest

from ledger import FixedClock, Ledger
from ledger.projections.follower import Follower
from ledger.projections.lock import FOLLOW, LOCK_CLASS, REBUILD, VERIFY, lease, lock_path
from ledger.projections.registry import projector
from tests.support.helpers import NOW, create_campaign
from tests.support.service import Server, add_token, serving
from tests.test_projections_run import wait_for


def wait(condition: Callable[[], object], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def follow_holder(url: str) -> int | None:
    """The pid of the process holding the store's follow lock (None: nobody), read from
    the database's lock table, or by trying the lock file; the count is asserted to be 1."""
    if url.startswith("sqlite"):
        path = lock_path(url.removeprefix("sqlite:///"), FOLLOW)
        if not os.path.exists(path):
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Held. Its holder writes its text just after taking the lock (truncate, then
            # write): read until the pid is there.
            deadline = time.monotonic() + 5
            while len(text := os.pread(fd, 200, 0).decode().split()) < 2 \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
            return int(text[1])
        else:
            return None
        finally:
            os.close(fd)
    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    with psycopg.connect(parts._replace(query="").geturl(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s "
            "AND l.objid = hashtext(%s)::oid AND l.objsubid = 2",
            (LOCK_CLASS, f"{schema}/{FOLLOW}")).fetchall()
    assert len(rows) <= 1
    return int(rows[0][0].split()[3]) if rows else None


def workers(server: Server) -> set[int]:
    """The pids of the server's uvicorn workers (its live spawned children; not the
    multiprocessing resource tracker)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if (int(fields[1]) == server.process.pid and fields[0] != "Z"
                and b"spawn_main" in command):
            found.add(int(stat.parent.name))
    return found


# In one process: two candidates ----------------------------------------------------------------

@pytest.fixture
def candidates(ledger: Ledger) -> Iterator[list[Follower]]:
    """Two candidates on the test's store, as two workers would be (each lock attempt is a
    connection or a file description of its own, so they exclude each other as processes do)."""
    with ExitStack() as stack:
        found = []
        for _ in range(2):
            follower = Follower(lambda: projector(ledger.app), every=0.2, poll=0.05)
            stack.callback(follower.stop)
            follower.start()
            found.append(follower)
        yield found


def leaders(candidates: list[Follower]) -> list[Follower]:
    return [c for c in candidates if c.leading.is_set()]


def test_of_two_candidates_exactly_one_follows_and_another_takes_over_when_it_stops(
        ledger: Ledger, candidates: list[Follower]) -> None:
    assert wait(lambda: len(leaders(candidates)) == 1, within=5)
    time.sleep(0.5)  # several rounds of tries: still one
    [first] = leaders(candidates)
    position = ledger.send(create_campaign())["position"]
    view = projector(ledger.app).view
    assert wait(lambda: view.position("manage_campaign") == position, within=2)

    first.stop()
    assert wait(lambda: leaders(candidates) not in ([], [first]), within=3)
    [second] = leaders(candidates)
    assert second is not first
    position = ledger.send(create_campaign("second-campaign"))["position"]
    assert wait(lambda: view.position("review_decisions") == position, within=2)


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_follower_whose_lock_connection_is_cut_stops_and_one_follows_again(
        backend: str, ledger: Ledger, candidates: list[Follower],
        request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> None:
    admin: psycopg.Connection[tuple[object, ...]] = request.getfixturevalue("postgres_admin")
    assert wait(lambda: len(leaders(candidates)) == 1, within=5)
    schema = parse_qs(urlsplit(backend).query)["schema"][0]
    cut = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND "
        "granted AND classid = %s AND objid = hashtext(%s)::oid",
        (LOCK_CLASS, f"{schema}/{FOLLOW}")).fetchall()
    assert cut == [(True,)]
    # The holder notices (within a second) and stops; one of them takes the lock again.
    assert wait(lambda: "lost the follow lock" in caplog.text, within=3)
    assert wait(lambda: len(leaders(candidates)) == 1, within=3)
    position = ledger.send(create_campaign())["position"]
    view = projector(ledger.app).view
    assert wait(lambda: view.position("manage_campaign") == position, within=2)


def test_each_purpose_has_its_own_lock_and_a_held_one_names_its_holder(
        ledger: Ledger) -> None:
    with lease(ledger.app, FOLLOW) as mine:
        assert mine.held
        with lease(ledger.app, REBUILD) as rebuild, lease(ledger.app, VERIFY) as verify:
            assert (rebuild.held, verify.held) == (True, True)  # following blocks neither
        with lease(ledger.app, FOLLOW) as theirs:
            assert not theirs.held
            assert theirs.holder is not None
            assert theirs.holder.startswith(f"pid {os.getpid()} on {socket.gethostname()}")
    with lease(ledger.app, FOLLOW) as again:
        assert again.held  # given back at the end of the block


# The real server ------------------------------------------------------------------------------

def campaigns(http: httpx.Client, token: str) -> httpx.Response:
    return http.get("/v1/campaigns", headers={"Authorization": f"Bearer {token}"})


def shown_within(http: httpx.Client, token: str, campaign_id: str, within: float) -> bool:
    """The campaign appears in a plain GET (no ?after=, no ?fresh=) within `within` s."""
    return wait(lambda: campaign_id in {c["campaign_id"] for c in campaigns(http, token).json()},
                within)


def test_serve_with_two_workers_follows_with_one_of_them_and_another_takes_over_on_kill(
        backend: str, tmp_path: Path) -> None:
    token = add_token(backend, "operator", "ops-follow")
    with serving(backend, tmp_path / "serve.log", "--workers", "2") as server, \
            httpx.Client(base_url=server.base, timeout=10) as http:
        assert wait_for(lambda: len(workers(server)) == 2 and follow_holder(backend)
                        in workers(server), timeout=30), server.log.read_text()
        holder = follow_holder(backend)
        sent = http.post("/v1/commands", json=create_campaign("live-follow"),
                         headers={"Authorization": f"Bearer {token}"})
        assert sent.status_code == 200, sent.text
        assert shown_within(http, token, "live-follow", within=2)
        assert campaigns(http, token).headers["Ledger-Read-Lag"] == "0"

        assert holder is not None
        os.kill(holder, signal.SIGKILL)
        assert wait_for(lambda: follow_holder(backend) not in (None, holder), timeout=15), \
            server.log.read_text()
        assert follow_holder(backend) in workers(server)
        sent = http.post("/v1/commands", json=create_campaign("after-kill"),
                         headers={"Authorization": f"Bearer {token}"})
        assert sent.status_code == 200, sent.text
        assert shown_within(http, token, "after-kill", within=2)
    assert server.process.returncode == 0
    assert "Traceback" not in server.log.read_text()
    assert follow_holder(backend) is None  # given back on shutdown


def test_serve_no_follow_leaves_the_read_models_behind_and_readyz_says_so(
        backend: str, tmp_path: Path) -> None:
    token = add_token(backend, "operator", "ops-nofollow")
    with serving(backend, tmp_path / "serve.log", "--no-follow",
                 "--ready-max-lag", "0") as server, \
            httpx.Client(base_url=server.base, timeout=10) as http:
        sent = http.post("/v1/commands", json=create_campaign("unfollowed"),
                         headers={"Authorization": f"Bearer {token}"})
        assert sent.status_code == 200, sent.text
        assert not shown_within(http, token, "unfollowed", within=1.5)
        assert follow_holder(backend) is None
        assert campaigns(http, token).headers["Ledger-Read-Lag"] == str(
            sent.json()["position"])
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert "manage_campaign" in ready.json()["lagging"]
        with Ledger.open(backend, clock=FixedClock(NOW)) as ledger:
            projector(ledger.app).catch_up()  # as `ledger projections run` would
        assert http.get("/readyz").status_code == 200
