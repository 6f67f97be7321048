"""PostgreSQL URLs reach psycopg whole: sslmode, options, application_name, host lists; a
missing schema is created and the user told."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
import pytest

from ledger import FixedClock, Ledger
from ledger.errors import StoreUnavailable
from tests.support.helpers import NOW, create_campaign

pytestmark = pytest.mark.postgres


def url_with(database: str, query: str) -> str:
    return urlunsplit(urlsplit(database)._replace(query=query))


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", "--db", url, "--now", NOW.isoformat(),
                           *args], capture_output=True, text=True, timeout=60)


def test_sslmode_require_reaches_psycopg_and_fails_in_one_line_on_a_server_without_ssl(
        postgres_database: str) -> None:
    schema = f"u_{uuid4().hex[:10]}"
    refused = cli(url_with(postgres_database, f"schema={schema}&sslmode=require"),
                  "show", "campaign", "x")
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("Error: store unavailable: cannot reach PostgreSQL at 127.0.0.1"), line
    assert "SSL" in line, line
    allowed = cli(url_with(postgres_database, f"schema={schema}&sslmode=disable"),
                  "show", "campaign", "x")
    assert allowed.returncode == 1, allowed.stderr  # reached the store: not_found
    assert "not_found" in allowed.stderr


def test_application_name_and_options_reach_every_pooled_connection(
        postgres_database: str, postgres_admin: psycopg.Connection[tuple[object, ...]]) -> None:
    name = f"ledger-test-{uuid4().hex[:8]}"
    schema = f"u_{uuid4().hex[:10]}"
    url = url_with(postgres_database, f"schema={schema}&application_name={name}"
                                      "&options=-c%20statement_timeout%3D4321")
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert ledger.send(create_campaign())["ok"]
        seen = postgres_admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (name,)).fetchone()
        assert seen is not None
        assert seen[0] >= 1
        with ledger.app.factory.datastore.get_connection() as conn:
            setting = conn.execute("SHOW statement_timeout").fetchone()
        assert setting is not None
        assert setting["statement_timeout"] == "4321ms"


def test_a_host_list_in_the_query_is_honoured(postgres_database: str) -> None:
    schema = f"u_{uuid4().hex[:10]}"
    parts = urlsplit(postgres_database)
    url = urlunsplit(parts._replace(netloc=f"{parts.username}@",
                                    query=f"host=127.0.0.1,127.0.0.1&port={parts.port or 5432}"
                                          f"&schema={schema}"))
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert ledger.send(create_campaign())["ok"]
    shown = cli(url, "show", "campaign", "mega-1111-live")
    assert shown.returncode == 0, shown.stderr


def test_a_missing_schema_is_created_and_the_user_told_once(
        postgres_database: str, postgres_admin: psycopg.Connection[tuple[object, ...]]) -> None:
    schema = f"new_{uuid4().hex[:10]}"
    url = url_with(postgres_database, f"schema={schema}")
    first = cli(url, "campaigns")
    assert first.returncode == 0, first.stderr
    assert f"created schema '{schema}'" in first.stderr
    exists = postgres_admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                    (schema,)).fetchone()
    assert exists is not None
    second = cli(url, "campaigns")
    assert second.returncode == 0, second.stderr
    assert "created schema" not in second.stderr


def test_an_unknown_url_parameter_is_one_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match='invalid URI query parameter: "sslmodee"'):
        Ledger.open("postgresql://postgres@127.0.0.1:5432/x?sslmodee=require")
