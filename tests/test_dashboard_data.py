"""The dashboard's data path on both backends: the page's own endpoints (who the token is,
the review queue, the live feed) answer what the read models hold, with the API's role
checks; and the package ships the page's files (the chart library with its licence)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.service.dashboard import READ_MODELS
from tests.support.helpers import (
    MANUAL,
    NOW,
    SELLER,
    approve,
    create_campaign,
    hours,
    register,
    reject,
)
from tests.support.service import Api, add_token, bearer, in_process, serving

ROOT = Path(__file__).parents[1]


@pytest.fixture
def api(ledger: Ledger, backend: str, clock: FixedClock) -> Iterator[Api]:
    with in_process(backend, clock, ledger, read_timeout=2.0) as api:
        yield api


def sse_events(api: Api, who: str, until: Any) -> list[tuple[str, Any]]:
    """The live feed's events, read until `until(events)` is true (or the stream ends)."""
    events: list[tuple[str, Any]] = []
    with api.client.stream("GET", "/dashboard/api/changes",
                           headers={"Authorization": f"Bearer {api.tokens[who]}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.removeprefix("data:"))))
                if until(events):
                    break
    return events


def test_the_review_queue_shows_what_waits_how_long_decisions_took_and_the_overrides(
        api: Api, clock: FixedClock) -> None:
    api.accept("operator", create_campaign())
    waiting = str(api.accept("seller", register())["aggregate_id"])
    rejected = str(api.accept("seller", register(account_id="shop-9"))["aggregate_id"])
    overridden = str(api.accept("other_seller", register(
        seller_id="seller-2", account_id="shop-2",
        profile_={"account_level": 1, "livestream_level": 5}))["aggregate_id"])
    clock.set(NOW + hours(2))
    api.accept("reviewer", reject(rejected))
    clock.set(NOW + hours(3))
    last = api.accept("reviewer", approve(overridden, override_reason="top seller last year"))

    body = api.get("reviewer", "/dashboard/api/review", after=last["position"]).json()

    assert body["queue"] == {"total": 1, "campaigns": [{"campaign_id": MANUAL, "under_review": 1}],
                             "registrations": [{"registration_id": waiting, "campaign_id": MANUAL,
                                                "seller_id": SELLER, "account_id": "shop-1",
                                                "sessions_under_review": 2}]}
    assert body["time_to_decide"] == {
        "reviewers": {"decisions": 2, "median": 7200, "p90": 10800, "max": 10800},
        "system": {"decisions": 0, "median": None, "p90": None, "max": None},
        "overrides": 1, "approved": 1, "rejected": 1}
    assert [(o["registration_id"], o["override_reason"], o["failed_criteria"])
            for o in body["overrides"]] == [
        (overridden, "top seller last year", ["min_account_level"])]


def test_a_seller_is_refused_the_review_queue_and_is_told_who_they_are(api: Api) -> None:
    response = api.get("seller", "/dashboard/api/review")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    assert api.get("seller", "/dashboard/api/me").json() == {"id": SELLER, "role": "seller"}
    anonymous = api.client.get("/dashboard/api/me")
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthorized")
    assert api.client.get("/dashboard/api/changes").status_code == 401


def test_the_live_feed_says_where_the_read_models_are_and_when_they_move(
        api: Api, ledger: Ledger) -> None:
    api.accept("operator", create_campaign())
    ledger.projector().catch_up()
    first = sse_events(api, "seller", lambda events: len(events) >= 1)
    positions = ledger.projector().view.positions(READ_MODELS)
    assert first == [("moved", {"position": min(positions.values()),
                                "read_models": positions})]

    head = api.accept("seller", register())["position"]
    api.get("operator", "/v1/campaigns", fresh="true")  # one read model catches up
    ledger.projector().catch_up()  # and then the others, as the follower would
    moved = sse_events(api, "seller", lambda events: events[-1][1]["position"] >= head)
    assert moved[-1] == ("moved", {"position": head, "read_models": dict.fromkeys(
        sorted(READ_MODELS), head)})


def test_the_page_and_its_files_are_served_without_a_token_and_run_only_their_own_code(
        api: Api) -> None:
    page = api.client.get("/dashboard")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<form id="sign-in"' in page.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert {"/dashboard/static/dashboard.js", "/dashboard/static/vendor/uplot/uPlot.iife.min.js",
            "/dashboard/static/vendor/uplot/uPlot.min.css"} <= set(urls)
    for url in [*urls, "/dashboard/static/vendor/uplot/LICENSE"]:  # nothing from elsewhere
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        assert api.client.get(url).status_code == 200, url
    assert api.client.get("/dashboard/static/nothing.js").status_code == 404


def test_the_wheel_ships_the_page_the_chart_library_and_its_licence(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("ledger-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = "ledger/service/static/"
    assert {f"{static}{name}" for name in (
        "dashboard.html", "dashboard.js", "dashboard.css", "vendor/uplot/uPlot.iife.min.js",
        "vendor/uplot/uPlot.min.css", "vendor/uplot/LICENSE")} <= names
    library = zipfile.ZipFile(wheel).read(f"{static}vendor/uplot/uPlot.iife.min.js")
    assert len(library) < 100_000  # tens of KB, not megabytes
    assert b"MIT License" in zipfile.ZipFile(wheel).read(f"{static}vendor/uplot/LICENSE")



def test_an_open_live_feed_does_not_hold_up_stopping_the_server(tmp_path: Path) -> None:
    # The feed never ends by itself for minutes: a stopping worker must end it (SQLite is
    # enough: this is the HTTP layer's behaviour, the same on both backends).
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    token = add_token(url, "operator", "ops")
    with serving(url, tmp_path / "serve.log", "--workers", "2") as server:
        opened = threading.Event()
        ended: list[str] = []

        def listen() -> None:
            try:
                with httpx.stream("GET", f"{server.base}/dashboard/api/changes",
                                  headers=bearer(token), timeout=30) as response:
                    for line in response.iter_lines():
                        if line.startswith("event: moved"):
                            opened.set()
                ended.append("cleanly")
            except httpx.HTTPError as e:
                ended.append(f"{type(e).__name__}: {e}")

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        assert opened.wait(15), "the feed sent no event"
        started = time.monotonic()
        assert server.stop() == 0
        took = time.monotonic() - started
        reader.join(5)
        assert not reader.is_alive(), "the feed's response did not end"
        assert ended == ["cleanly"]  # a whole response: the page simply opens another
    assert took < 8, f"stopping took {took:.1f} s with a feed open"


def hide_tracking(url: str, hidden: bool) -> None:
    """Rename the read models' tracking table away (or back): a store that cannot be read,
    made by the database itself."""
    names = ("tracking", "tracking_hidden") if url.startswith("sqlite") else (
        "ledger_tracking", "ledger_tracking_hidden")
    old, new = names[::-1] if not hidden else names
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            conn.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')
            conn.commit()
        return
    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    with psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(
            sql.Identifier(schema), sql.Identifier(old), sql.Identifier(new)))


def test_the_feed_says_when_the_store_cannot_be_read_and_when_it_can_again(
        api: Api, ledger: Ledger, backend: str) -> None:
    api.accept("operator", create_campaign())
    ledger.projector().catch_up()
    events: list[tuple[str, Any]] = []
    with api.client.stream("GET", "/dashboard/api/changes",
                           headers={"Authorization": f"Bearer {api.tokens['seller']}"}) as feed:
        name = ""
        for line in feed.iter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.removeprefix("data:"))))
                if len(events) == 1:
                    hide_tracking(backend, hidden=True)
                elif name == "unavailable":
                    hide_tracking(backend, hidden=False)
                elif len(events) == 3:
                    break
    assert [name for name, _ in events] == ["moved", "unavailable", "moved"]
    assert events[2][1] == events[0][1]  # nothing moved: it says where things are again
    assert "tracking" in events[1][1]["message"]
