"""Markets: one ledger across separate PostgreSQL servers (DOMAIN.md "Markets").

The servers are the tests' own (tests/support/servers.py): th's store, vn's store, and a
third server for th's read models and the tokens. Each test gets fresh databases on them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from bench.common import serving
from ledger import Ledger
from ledger.cli import main
from ledger.errors import NotFound
from ledger.markets import load
from ledger.service.markets import create_markets_app
from tests.support.helpers import command, create_campaign, iso, json_lines, live_calendar
from tests.support.servers import Server, servers
from tests.support.service import STARTUP

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[dict[str, Server]]:
    """Three PostgreSQL servers of our own: th, vn, and rm (read models and tokens)."""
    with servers(3) as started:
        yield dict(zip(["th", "vn", "rm"], started, strict=True))


@dataclass
class Deployment:
    """A markets file over fresh databases, and the URLs it names."""

    path: Path
    urls: dict[str, str]

    def cli(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.path), *args], input=input)

    def token(self, role: str, actor_id: str, *markets: str) -> str:
        limit = ["--market", ",".join(markets)] if markets else []
        result = self.cli("tokens", "add", "--role", role, "--id", actor_id, *limit)
        assert result.exit_code == 0, result.output
        return result.stdout.strip()


def deploy(tmp_path: Path, pg: dict[str, Server], *, read_url: bool = True) -> Deployment:
    name = f"l_{uuid4().hex[:10]}"
    urls = {code: pg[code].create_database(name) for code in ("th", "vn")}
    urls["rm"] = pg["rm"].create_database(name)
    urls["tokens"] = pg["rm"].url(name, "schema=tokens")
    th_reads = f'read_url = "{urls["rm"]}"\n' if read_url else ""
    path = tmp_path / "markets.toml"
    path.write_text(f'tokens_url = "{urls["tokens"]}"\n'
                    f'[markets.th]\nurl = "{urls["th"]}"\n{th_reads}'
                    f'[markets.vn]\nurl = "{urls["vn"]}"\n')
    return Deployment(path, urls)


@pytest.fixture
def deployment(tmp_path: Path, pg: dict[str, Server]) -> Deployment:
    return deploy(tmp_path, pg)


# Commands on the real clock (the service never runs on another) ------------------------------

def campaign(campaign_id: str) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    return create_campaign(campaign_id, name=f"Market {campaign_id}", **live_calendar(now))


def window(campaign_cmd: dict[str, Any], hour: int) -> dict[str, str]:
    starts = datetime.fromisoformat(campaign_cmd["payload"]["starts_at"]) + timedelta(hours=hour)
    return {"starts_at": iso(starts), "ends_at": iso(starts + timedelta(minutes=30))}


def registration(campaign_cmd: dict[str, Any], seller_id: str) -> dict[str, Any]:
    return command("register", {"id": seller_id, "role": "seller"}, {
        "campaign_id": campaign_cmd["payload"]["campaign_id"], "seller_id": seller_id,
        "account_id": f"shop-{seller_id}", "main_category": "fashion", "level": "standard",
        "profile": {"account_level": 5, "livestream_level": 5},
        "sessions": [window(campaign_cmd, 0)]})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def has_campaign(url: str, campaign_id: str) -> bool:
    with Ledger.open(url, pool_size=1) as ledger:
        try:
            ledger.campaign(campaign_id)
        except NotFound:
            return False
        return True


# The markets file and --market ------------------------------------------------------------

@pytest.mark.parametrize(("text", "says"), [
    (None, "no markets file"),
    ("[markets.th", "is not valid TOML"),
    ('[markets.TH]\nurl = "sqlite:///a.db"\n', "market code 'TH' is not a lowercase name"),
    ('[markets.th]\nurl = "sqlite:///a.db"\nhost = "x"\n', "unknown key 'host'"),
    ('[markets.th]\nread_url = "sqlite:///a.db"\n', "[markets.th] has no url"),
    ('[markets.th]\nurl = "mysql://x/y"\n', "unsupported database URL"),
    ('colour = "red"\n[markets.th]\nurl = "sqlite:///a.db"\n', "unknown key 'colour'"),
    ('[markets.th]\nurl = "postgresql://h/db?schema=th"\nread_url = "postgresql://h/rm"\n'
     '[markets.vn]\nurl = "postgresql://h/db?schema=vn"\nread_url = "postgresql://h/rm"\n',
     "[markets.vn] read_url is the database (and schema) of [markets.th] read_url"),
])
def test_a_bad_markets_file_is_one_line_naming_what_is_wrong(
        tmp_path: Path, text: str | None, says: str) -> None:
    path = tmp_path / "markets.toml"
    if text is not None:
        path.write_text(text)
    result = CliRunner().invoke(main, ["--config", str(path), "--market", "th", "campaigns"])
    assert result.exit_code == 2
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_market_choice_errors_name_the_known_markets_and_db_with_market_says_why(
        tmp_path: Path) -> None:
    path = tmp_path / "markets.toml"
    path.write_text(f'[markets.th]\nurl = "sqlite:///{tmp_path}/th.db"\n'
                    f'[markets.vn]\nurl = "sqlite:///{tmp_path}/vn.db"\n')
    run = CliRunner().invoke
    unknown = run(main, ["--config", str(path), "--market", "my", "campaigns"])
    assert unknown.exit_code == 2
    assert "unknown market 'my'" in unknown.stderr
    assert "known: th, vn" in unknown.stderr
    unchosen = run(main, ["--config", str(path), "campaigns"])
    assert unchosen.exit_code == 2
    assert "choose one with --market" in unchosen.stderr
    both = run(main, ["--config", str(path), "--market", "th", "--db",
                      f"sqlite:///{tmp_path}/x.db", "campaigns"])
    assert both.exit_code == 2
    assert "--db and --market th both name a store" in both.stderr
    no_tokens = run(main, ["--config", str(path), "tokens", "add", "--role", "operator",
                           "--id", "ops-1"])
    assert no_tokens.exit_code == 2
    assert "names 2 markets but no tokens_url" in no_tokens.stderr
    alone = run(main, ["--market", "th", "campaigns"])
    assert alone.exit_code == 2
    assert "needs the markets file" in alone.stderr
    # --db alone is still a single store, even with LEDGER_CONFIG set
    single = run(main, ["--db", f"sqlite:///{tmp_path}/single.db", "campaigns", "--json"],
                 env={"LEDGER_CONFIG": str(path)})
    assert single.exit_code == 0, single.output
    assert not (tmp_path / "th.db").exists()
    assert not (tmp_path / "vn.db").exists()


@pytest.fixture(params=["sqlite", "postgres"])
def any_deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Deployment:
    """Markets on SQLite files (th's read models in a file of their own), or on servers."""
    if request.param == "postgres":
        return deploy(tmp_path, request.getfixturevalue("pg"))
    urls = {code: f"sqlite:///{tmp_path}/{code}.db" for code in ("th", "vn", "rm")}
    path = tmp_path / "markets.toml"
    path.write_text(f'[markets.th]\nurl = "{urls["th"]}"\nread_url = "{urls["rm"]}"\n'
                    f'[markets.vn]\nurl = "{urls["vn"]}"\n')
    return Deployment(path, urls)


def test_cli_market_sends_shows_queries_and_exports_every_market_in_one_dataset(
        any_deployment: Deployment) -> None:
    d = any_deployment
    for code in ("th", "vn"):
        sent = d.cli("--market", code, "send", "-",
                     input=json_lines_of(campaign(f"sale-{code}")))
        assert sent.exit_code == 0, sent.output
    shown = d.cli("--market", "th", "show", "campaign", "sale-th")
    assert shown.exit_code == 0
    assert '"sale-th"' in shown.stdout
    assert d.cli("--market", "vn", "show", "campaign", "sale-th").exit_code != 0
    listed = d.cli("--market", "vn", "campaigns", "--fresh", "--json")
    assert [c["campaign_id"] for c in json_lines(listed.stdout)] == ["sale-vn"]

    status = d.cli("projections", "status", "--all-markets", "--json")
    assert status.exit_code == 0, status.output
    rows = json_lines(status.stdout)
    assert {(r["market"], r["name"]) for r in rows if r["name"] == "manage_campaign"} == {
        ("th", "manage_campaign"), ("vn", "manage_campaign")}

    exported = d.cli("export", "manage_campaigns", "--all-markets", "--fresh")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert exported.stdout.startswith("market,")
    assert sorted((r["market"], r["campaign_id"]) for r in rows) == [("th", "sale-th"),
                                                                     ("vn", "sale-vn")]
    as_json = d.cli("export", "manage_campaigns", "--all-markets", "--json")
    assert {(r["market"], r["campaign_id"]) for r in json_lines(as_json.stdout)} == {
        ("th", "sale-th"), ("vn", "sale-vn")}


def json_lines_of(*commands: dict[str, Any]) -> str:
    return "".join(json.dumps(c) + "\n" for c in commands)


# Read models on another server ------------------------------------------------------------

def tables_in(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}


def test_read_models_live_on_the_read_server_and_rebuild_and_verify_there(
        deployment: Deployment) -> None:
    d = deployment
    sent = d.cli("--market", "th", "send", "-", input=json_lines_of(campaign("rm-sale")))
    assert sent.exit_code == 0, sent.output
    behind = d.cli("--market", "th", "campaigns", "--json")
    assert "1 event behind" in behind.stderr  # the read database has not seen it yet
    caught = d.cli("--market", "th", "projections", "catch-up")
    assert caught.exit_code == 0, caught.output
    listed = d.cli("--market", "th", "campaigns", "--json")
    assert [c["campaign_id"] for c in json_lines(listed.stdout)] == ["rm-sale"]
    assert listed.stderr == ""

    assert "rm_manage_campaigns" in tables_in(d.urls["rm"])
    assert "ledger_tracking" in tables_in(d.urls["rm"])
    assert not any(t.startswith("rm_") for t in tables_in(d.urls["th"]))
    assert "ledger_events" not in tables_in(d.urls["rm"])  # the events stay on th's server

    status = json_lines(d.cli("--market", "th", "projections", "status", "--json").stdout)
    assert {r["lag"] for r in status} == {0}
    assert {r["head"] for r in status} == {1}
    assert d.cli("--market", "th", "projections", "rebuild").exit_code == 0
    verified = d.cli("--market", "th", "projections", "verify")
    assert verified.exit_code == 0, verified.output


def test_serve_follows_a_market_into_its_read_server(deployment: Deployment) -> None:
    token = deployment.token("operator", "ops-th")
    app = create_markets_app(load(str(deployment.path)), follow=True)
    with TestClient(app) as client:
        sent = client.post("/v1/markets/th/commands", json=campaign("followed"),
                           headers=bearer(token))
        assert sent.status_code == 200, sent.text
        deadline = time.monotonic() + 10
        seen: list[str] = []
        while time.monotonic() < deadline and seen != ["followed"]:
            got = client.get("/v1/markets/th/campaigns", headers=bearer(token))
            seen = [c["campaign_id"] for c in got.json()]
            time.sleep(0.1)
        assert seen == ["followed"]  # no ?fresh: the follower wrote it on the read server
    with psycopg.connect(deployment.urls["rm"]) as conn:
        row = conn.execute("SELECT notification_id FROM ledger_tracking "
                           "WHERE application_name = 'Ledger/manage_campaign'").fetchone()
    assert row == (1,)


# Routing and tokens ------------------------------------------------------------------------

def test_a_command_through_a_markets_path_lands_only_in_that_markets_store(
        deployment: Deployment) -> None:
    token = deployment.token("operator", "ops-all")
    with TestClient(create_markets_app(load(str(deployment.path)))) as client:
        sent = client.post("/v1/markets/th/commands", json=campaign("only-th"),
                           headers=bearer(token))
        assert sent.status_code == 200, sent.text
        assert client.get("/v1/markets/th/campaigns/only-th",
                          headers=bearer(token)).status_code == 200
        other = client.get("/v1/markets/vn/campaigns/only-th", headers=bearer(token))
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"
        unknown = client.post("/v1/markets/my/commands", json=campaign("x"),
                              headers=bearer(token))
        assert unknown.status_code == 404
        assert "markets: th, vn" in unknown.json()[
            "error"]["message"]
        flat = client.post("/v1/commands", json=campaign("x"), headers=bearer(token))
        assert flat.status_code == 404
        assert "/v1/markets/" in flat.json()["error"]["message"]
        assert client.get("/v1/markets/vn/readyz").json()["status"] == "ready"
    assert has_campaign(deployment.urls["th"], "only-th")
    assert not has_campaign(deployment.urls["vn"], "only-th")
    assert not has_campaign(deployment.urls["vn"], "x")


def test_a_token_limited_to_a_market_is_forbidden_in_another_and_writes_nothing(
        deployment: Deployment) -> None:
    th_only = deployment.token("operator", "ops-th", "th")
    everywhere = deployment.token("operator", "ops-all")
    listed = json_lines(deployment.cli("tokens", "list", "--json").stdout)
    assert {r["actor_id"]: r["markets"] for r in listed} == {"ops-th": ["th"],
                                                             "ops-all": None}
    with TestClient(create_markets_app(load(str(deployment.path)))) as client:
        refused = client.post("/v1/markets/vn/commands", json=campaign("nope"),
                              headers=bearer(th_only))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert client.get("/v1/markets/vn/campaigns",
                          headers=bearer(th_only)).status_code == 403
        assert client.post("/v1/markets/th/commands", json=campaign("yes"),
                           headers=bearer(th_only)).status_code == 200
        assert client.post("/v1/markets/vn/commands", json=campaign("all"),
                           headers=bearer(everywhere)).status_code == 200
    assert not has_campaign(deployment.urls["vn"], "nope")
    bad = deployment.cli("tokens", "add", "--role", "operator", "--id", "x", "--market", "uk")
    assert bad.exit_code == 2
    assert "unknown market 'uk'" in bad.stderr


# A real `ledger serve --config`: races, replays, isolation --------------------------------

@pytest.fixture
def served(deployment: Deployment, tmp_path: Path) -> Iterator[tuple[Deployment, str]]:
    with serving("", tmp_path / "serve.log", within=3 * STARTUP, command=lambda port: [
            sys.executable, "-m", "ledger", "--config", str(deployment.path), "serve",
            "--port", str(port), "--workers", "2"]) as server:
        yield deployment, server.base


def test_a_command_sent_many_times_at_once_through_a_market_is_written_once(
        served: tuple[Deployment, str]) -> None:
    d, base = served
    token = d.token("operator", "ops-race")
    once = campaign("raced")
    with httpx.Client(base_url=base, timeout=30) as http, \
            concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: http.post("/v1/markets/th/commands", json=once,
                                                    headers=bearer(token)), range(8)))
    assert [r.status_code for r in results] == [200] * 8
    assert sorted(r.json()["replayed"] for r in results) == [False] + [True] * 7
    with Ledger.open(d.urls["th"], pool_size=1) as th:
        assert len(th.events_of("raced")) == 1


def test_concurrent_writers_on_one_registration_in_a_market_lose_no_update(
        served: tuple[Deployment, str]) -> None:
    d, base = served
    operator, seller = d.token("operator", "ops-r"), d.token("seller", "seller-r", "vn")
    created = campaign("busy")
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.post("/v1/markets/vn/commands", json=created,
                         headers=bearer(operator)).status_code == 200
        reg = http.post("/v1/markets/vn/commands", json=registration(created, "seller-r"),
                        headers=bearer(seller)).json()
        assert reg["ok"], reg
        reg_id = reg["aggregate_id"]

        def add(hour: int) -> httpx.Response:
            return http.post("/v1/markets/vn/commands", headers=bearer(seller), json=command(
                "add_session", {"id": "seller-r", "role": "seller"},
                {"registration_id": reg_id, **window(created, hour)}))

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            added = list(pool.map(add, range(1, 13)))
    assert [r.json()["ok"] for r in added] == [True] * 12, [r.text for r in added]
    with Ledger.open(d.urls["vn"], pool_size=1) as vn:
        assert len(vn.registration(reg_id).sessions) == 13
        assert len(vn.events_of(reg_id)) == reg["version"] + 12  # one event per add


def follow_connections(url: str) -> int:
    """The followers of this database: the connections named `ledger follow ...` that
    hold their advisory lock (a candidate's brief try, every second, holds none)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT a.pid) FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND a.datname = current_database() AND a.application_name LIKE 'ledger follow %'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_each_market_has_exactly_one_follower_among_the_workers_on_its_read_database(
        served: tuple[Deployment, str]) -> None:
    d, _ = served  # two workers, each a candidate for every market
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (follow_connections(d.urls["rm"]) != 1
                                           or follow_connections(d.urls["vn"]) != 1):
        time.sleep(0.2)
    time.sleep(2)  # a second candidate would have tried by now (every second)
    assert follow_connections(d.urls["rm"]) == 1  # th's read models are on the rm server
    assert follow_connections(d.urls["vn"]) == 1
    assert follow_connections(d.urls["th"]) == 0  # nothing follows on th's own server


def test_a_market_whose_server_is_down_gets_503_while_another_stays_fast_and_it_recovers(
        served: tuple[Deployment, str], pg: dict[str, Server]) -> None:
    d, base = served
    token = d.token("operator", "ops-iso")
    with httpx.Client(base_url=base, timeout=30) as http:
        for code in ("th", "vn"):  # both markets opened in the workers
            assert http.post(f"/v1/markets/{code}/commands", json=campaign(f"pre-{code}"),
                             headers=bearer(token)).status_code == 200
        pg["th"].stop()
        try:
            started = time.monotonic()
            down = http.post("/v1/markets/th/commands", json=campaign("while-down"),
                             headers=bearer(token))
            took = time.monotonic() - started
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "store_unavailable"
            assert took < 8
            slowest = 0.0
            for i in range(20):
                started = time.monotonic()
                ok = http.post("/v1/markets/vn/commands", json=campaign(f"vn-{i}"),
                               headers=bearer(token))
                slowest = max(slowest, time.monotonic() - started)
                assert ok.status_code == 200, ok.text
                again = http.post("/v1/markets/th/commands", json=campaign(f"th-{i}"),
                                  headers=bearer(token))
                assert again.status_code == 503
            assert slowest < 1.0
            ready = http.get("/readyz").json()
            assert ready["ready"] == ["vn"]
            assert ready["markets"]["th"]["status"] == "store_unavailable"
        finally:
            pg["th"].start()
        deadline = time.monotonic() + 30
        back = None
        while time.monotonic() < deadline:
            back = http.post("/v1/markets/th/commands", json=campaign("after"),
                             headers=bearer(token))
            if back.status_code == 200:
                break
            time.sleep(0.5)
        assert back is not None
        assert back.status_code == 200, back.text
    assert has_campaign(d.urls["th"], "after")
    assert not has_campaign(d.urls["th"], "while-down")


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung database server (what a
    lost host or a full network queue looks like to a client, until its timeout)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_a_market_whose_server_hangs_cannot_take_the_threads_another_market_needs(
        tmp_path: Path, pg: dict[str, Server]) -> None:
    vn = pg["vn"].create_database(f"l_{uuid4().hex[:10]}")
    with silent_server() as port:
        path = tmp_path / "markets.toml"
        path.write_text(f'tokens_url = "{vn}?schema=tokens"\n'
                        f'[markets.th]\nurl = "postgresql://postgres@127.0.0.1:{port}/x"\n'
                        f'[markets.vn]\nurl = "{vn}"\n')
        d = Deployment(path, {"vn": vn})
        token = d.token("operator", "ops-hang")
        with serving("", tmp_path / "serve.log", within=3 * STARTUP, command=lambda p: [
                sys.executable, "-m", "ledger", "--config", str(path), "serve", "--port",
                str(p)]) as server, httpx.Client(base_url=server.base, timeout=60) as http:
            stop = threading.Event()
            th_statuses: list[int] = []

            def hammer_th() -> None:
                with httpx.Client(base_url=server.base, timeout=60) as own:
                    while not stop.is_set():
                        th_statuses.append(own.post("/v1/markets/th/commands",
                                                    json=campaign("hung"),
                                                    headers=bearer(token)).status_code)

            with concurrent.futures.ThreadPoolExecutor(48) as pool:
                for _ in range(48):
                    pool.submit(hammer_th)
                time.sleep(2)  # th's requests pile up on its hung server
                slowest = 0.0
                for i in range(10):
                    started = time.monotonic()
                    ok = http.post("/v1/markets/vn/commands", json=campaign(f"vn-{i}"),
                                   headers=bearer(token))
                    slowest = max(slowest, time.monotonic() - started)
                    assert ok.status_code == 200, ok.text
                stop.set()
    assert slowest < 2.0
    assert th_statuses
    assert set(th_statuses) <= {503}


def test_serve_market_serves_one_market_on_v1_with_the_files_tokens_and_their_limits(
        deployment: Deployment, tmp_path: Path) -> None:
    th, vn_only = deployment.token("operator", "ops-th", "th"), deployment.token(
        "operator", "ops-vn", "vn")
    with serving("", tmp_path / "serve.log", within=3 * STARTUP, command=lambda p: [
            sys.executable, "-m", "ledger", "--config", str(deployment.path), "--market",
            "th", "serve", "--port", str(p)]) as server, \
            httpx.Client(base_url=server.base, timeout=30) as http:
        sent = http.post("/v1/commands", json=campaign("single"), headers=bearer(th))
        assert sent.status_code == 200, sent.text
        refused = http.post("/v1/commands", json=campaign("other"), headers=bearer(vn_only))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
    assert has_campaign(deployment.urls["th"], "single")
    assert not has_campaign(deployment.urls["th"], "other")
