"""One bad read-model row cannot break a list read: a campaign or registration row holding a
time outside the ledger's range (an older ledger accepted `9999-12-31T23:59:59-05:00`, which
PostgreSQL keeps as year 10000) or an edited cell is reported in its place, and the other
rows are shown: `ledger campaigns`, `ledger manage`, `GET /v1/campaigns` and
`GET /v1/sellers/{id}/registrations`, on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from ledger.cli import main
from ledger.projections.registry import projector
from ledger.projections.view import ViewMixin
from tests.support.helpers import AUTO, MANUAL, NOW, SELLER, World, json_lines, register
from tests.support.service import Api, in_process

FAR_FUTURE = "9999-12-31T23:59:59-05:00"


@pytest.fixture
def view(world: World, scene: str) -> ViewMixin:
    """The read models caught up with the scene: both campaigns, a manual registration."""
    p = projector(world.ledger.app)
    p.catch_up()
    return p.view


def edit(view: ViewMixin, table: str, column: str, value: str, key: str, where: str) -> None:
    """Change one stored cell, as an older ledger or a hand edit left it."""
    d = view.dialect
    cast = {"postgres": {"ends_at": "TIMESTAMPTZ", "campaign_ends_at": "TIMESTAMPTZ",
                         "sessions": "JSONB"}}.get(d.backend, {}).get(column)
    mark = f"CAST({d.p} AS {cast})" if cast else d.p
    changed = view.query(f'UPDATE {d.q(table)} SET "{column}" = {mark} WHERE "{key}" = {d.p} '
                         f'RETURNING "{key}"', (value, where))
    assert len(changed) == 1


@pytest.fixture
def bad_campaign(view: ViewMixin) -> str:
    edit(view, "rm_manage_campaigns", "ends_at", FAR_FUTURE, "campaign_id", AUTO)
    return AUTO


@pytest.fixture
def bad_registration(world: World, view: ViewMixin) -> str:
    """The seller's second registration (in the auto campaign) reads well; the manual one's
    campaign end is out of range."""
    world.register(register(AUTO, level=None, sessions=[], account_id="shop-2"))
    projector(world.ledger.app).catch_up()
    edit(view, "rm_manage_registrations", "campaign_ends_at", FAR_FUTURE, "campaign_id", MANUAL)
    return MANUAL


def cli(world: World, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", world.url, "--now", NOW.isoformat(), *args])
    return result.exit_code, result.stdout, result.stderr


def test_ledger_campaigns_shows_the_readable_campaigns_and_warns_of_the_bad_one(
    world: World, bad_campaign: str
) -> None:
    code, out, err = cli(world, "campaigns")
    assert code == 0, err
    assert MANUAL in out
    assert bad_campaign not in out
    assert f"warning: campaign '{bad_campaign}' cannot be read" in err
    assert "ends_at" in err


def test_ledger_campaigns_json_marks_the_bad_campaign_unreadable(
    world: World, bad_campaign: str
) -> None:
    code, out, _ = cli(world, "campaigns", "--json")
    assert code == 0
    rows = {row["campaign_id"]: row for row in json_lines(out)}
    assert rows[MANUAL]["status"] == "registration_open"
    assert set(rows[bad_campaign]) == {"campaign_id", "unreadable"}
    assert rows[bad_campaign]["unreadable"].startswith("ends_at: ")


def test_ledger_manage_shows_the_sellers_readable_rows_and_warns_of_the_bad_one(
    world: World, bad_registration: str
) -> None:
    code, out, err = cli(world, "manage", "--seller", SELLER, "--json")
    assert code == 0, err
    rows = {row["campaign_id"]: row for row in json_lines(out)}
    assert rows[AUTO]["status"] == "approved"
    assert rows[bad_registration]["unreadable"].startswith("campaign_ends_at: ")
    assert "warning: registration " in err
    code, out, err = cli(world, "manage", "--seller", SELLER)
    assert (code, out.count("Flash short-video week")) == (0, 1)
    assert "11.11 Mega LIVE Sale" not in out


def test_a_registration_whose_sessions_cell_was_edited_is_reported_not_fatal(
    world: World, view: ViewMixin
) -> None:
    edit(view, "rm_manage_registrations", "sessions", '[{"oops": 1}]', "campaign_id", MANUAL)
    code, out, err = cli(world, "manage", "--seller", SELLER, "--json")
    assert code == 0, err
    [row] = json_lines(out)
    assert row["campaign_id"] == MANUAL
    assert "unreadable" in row


@pytest.fixture
def api(world: World) -> Iterator[Api]:
    with in_process(world.url, world.clock, world.ledger, pool_size=1) as api:
        yield api


def test_the_service_lists_campaigns_with_the_bad_one_marked_unreadable(
    api: Api, bad_campaign: str
) -> None:
    response = api.get("operator", "/v1/campaigns")
    assert response.status_code == 200, response.text
    rows = {row["campaign_id"]: row for row in response.json()}
    assert rows[MANUAL]["status"] == "registration_open"
    assert rows[bad_campaign]["unreadable"].startswith("ends_at: ")


def test_the_service_lists_a_sellers_registrations_with_the_bad_one_marked_unreadable(
    api: Api, bad_registration: str
) -> None:
    response = api.get("seller", f"/v1/sellers/{SELLER}/registrations")
    assert response.status_code == 200, response.text
    rows = {row["campaign_id"]: row for row in response.json()}
    assert rows[AUTO]["actions"] == ["withdraw"]
    assert set(rows[bad_registration]) == {"registration_id", "campaign_id", "unreadable"}
