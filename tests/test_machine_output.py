"""One machine interface: the same store content prints the same bytes on SQLite and
PostgreSQL, every instant in UTC with Z, or in the zone --tz / LEDGER_TZ names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger import FixedClock
from ledger.values import parse_instant
from tests.support.helpers import json_lines
from tests.support.machine import (
    AFTER,
    CAMPAIGN,
    CAMPAIGN_FIELDS,
    OPS,
    READS,
    REGISTRATION,
    SCRIPT,
    SELLER,
    build,
    cli,
    instants,
)
from tests.support.projections import new_schema_url
from tests.support.service import in_process


@dataclass(frozen=True)
class Scripted:
    urls: dict[str, str]  # backend → its store, holding the scripted season
    sent: dict[str, list[str]]  # backend → what `ledger send` printed, step by step


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
             ) -> Scripted:
    """The scripted season in a SQLite file and in a PostgreSQL schema."""
    database: str = request.getfixturevalue("postgres_database")
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('machine') / 'ledger.db'}",
            "postgres": new_schema_url(database)}
    return Scripted(urls, {backend: build(url) for backend, url in urls.items()})


@pytest.fixture
def stores(scripted: Scripted) -> dict[str, str]:
    return scripted.urls


def outputs(url: str, *options: str) -> dict[str, str]:
    """What each of READS prints on standard output (each must succeed)."""
    printed = {}
    for args in READS:
        result = cli(url, *options, *args)
        assert result.exit_code == 0, (args, result.output)
        printed[" ".join(args)] = result.stdout
    return printed


@pytest.mark.postgres
def test_the_same_commands_print_the_same_bytes_on_sqlite_and_postgresql(stores):
    sqlite, postgres = outputs(stores["sqlite"]), outputs(stores["postgres"])
    for command, text in sqlite.items():
        assert text == postgres[command], f"`ledger {command}` differs between the backends"
    assert all(sqlite.values()), "a read printed nothing: the scenario does not cover it"


@pytest.mark.postgres
def test_send_prints_the_same_results_and_utc_refusal_details_on_both_backends(scripted):
    assert scripted.sent["sqlite"] == scripted.sent["postgres"]
    refusal = scripted.sent["sqlite"][3]
    assert '"code": "clock_behind"' in refusal
    assert '"last_recorded_at": "2026-10-04T01:00:00Z", "clock": "2026-10-04T00:00:00Z"' in (
        refusal)
    assert "the clock reads 2026-10-04T00:00:00Z" in refusal  # the message says it alike


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_instant_printed_is_utc_with_z_by_default(stores, backend):
    for command, text in outputs(stores[backend]).items():
        printed = instants(text)
        assert all(i.endswith("Z") for i in printed), (command, printed)
    shown = cli(stores[backend], "show", "registration", REGISTRATION).stdout
    assert '"submitted_at": "2026-10-03T03:15:30.250000Z"' in shown  # microseconds kept
    assert '"starts_at": "2026-11-10T13:00:00Z"' in shown  # none when there are none


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["--tz", "LEDGER_TZ"])
def test_tz_asia_bangkok_prints_the_same_instants_at_plus_seven(stores, how):
    url = stores["postgres"]
    options, env = (["--tz", "Asia/Bangkok"], None) if how == "--tz" else (
        [], {"LEDGER_TZ": "Asia/Bangkok"})
    for args in READS:
        utc = cli(url, *args).stdout
        bangkok = cli(url, *options, *args, env=env).stdout
        assert all(i.endswith("+07:00") for i in instants(bangkok)), args
        assert [parse_instant(i) for i in instants(bangkok)] == [
            parse_instant(i) for i in instants(utc)]
    table = cli(url, *options, "campaigns", env=env).stdout
    assert "2026-11-10T07:00:00+07:00" in table


@pytest.mark.parametrize("zone", ["Mars/Olympus", "+07:00", "../etc/passwd", "Asia"])
def test_a_zone_that_is_not_one_is_a_one_line_usage_error(tmp_path: Path, zone: str):
    result = cli(f"sqlite:///{tmp_path / 'none.db'}", "--tz", zone, "campaigns")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: Invalid value for '--tz'")
    assert not (tmp_path / "none.db").exists()  # refused before anything was opened


@pytest.mark.postgres
def test_the_service_prints_the_same_utc_instants_on_both_backends(stores):
    paths = [f"/v1/campaigns/{CAMPAIGN}", f"/v1/campaigns/{CAMPAIGN}/history",
             f"/v1/registrations/{REGISTRATION}", f"/v1/registrations/{REGISTRATION}/history",
             f"/v1/sellers/{SELLER}/registrations?fresh=true", "/v1/campaigns?fresh=true",
             "/v1/decisions?fresh=true"]
    bodies = {}
    for backend, url in stores.items():
        with in_process(url, FixedClock(parse_instant(AFTER))) as api:
            token = _operator_token(url)
            bodies[backend] = [api.client.get(p, headers=token).text for p in paths]
    assert bodies["sqlite"] == bodies["postgres"]
    printed = [i for body in bodies["sqlite"] for i in instants(body)]
    assert printed
    assert all(i.endswith("Z") for i in printed)


def _operator_token(url: str) -> dict[str, str]:
    result = cli(url, "tokens", "add", "--role", "operator", "--id", "ops-read", "--json")
    assert result.exit_code == 0, result.output
    return {"Authorization": f"Bearer {json.loads(result.stdout)['token']}"}


def test_campaigns_are_listed_in_time_order_whatever_offset_they_were_given_in(backend: str):
    # "late" starts at 03:00Z; "early" at 07:00+07:00 = 00:00Z: their texts sort the other way.
    late = {**CAMPAIGN_FIELDS, "campaign_id": "late", "starts_at": "2026-11-10T03:00:00Z"}
    early = {**CAMPAIGN_FIELDS, "campaign_id": "early"}
    commands = [{"command": "create_campaign", "command_id": f"c-{c['campaign_id']}",
                 "actor": OPS, "payload": c} for c in (late, early)]
    sent = cli(backend, "send", "-", now=SCRIPT[0][0],
               input="".join(json.dumps(c) + "\n" for c in commands))
    assert sent.exit_code == 0, sent.output
    listed = cli(backend, "campaigns", "--json", "--fresh")
    assert [row["campaign_id"] for row in json_lines(listed.stdout)] == ["early", "late"]
