"""Fixtures: a real store per test (a SQLite file; a fresh PostgreSQL schema), a ledger on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from ledger import FixedClock, Ledger
from tests.support.helpers import (
    NOW,
    World,
    approve,
    create_auto_campaign,
    create_campaign,
    register,
    register_auto,
)
from tests.support.projections import new_schema_url, new_sqlite_url

POSTGRES_URL = os.environ.get(
    "LEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SKIP_POSTGRES = os.environ.get("LEDGER_TEST_SKIP_POSTGRES") == "1"


def _with_database(url: str, dbname: str, query: str = "") -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}", query=query))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One fresh database for the whole run (dropped at the end); its URL."""
    if SKIP_POSTGRES:
        pytest.skip("LEDGER_TEST_SKIP_POSTGRES=1")
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is unreachable at {POSTGRES_URL} ({e}); "
                    "set LEDGER_TEST_SKIP_POSTGRES=1 to skip the postgres tests", pytrace=False)
    name = f"ledger_test_{uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(POSTGRES_URL, name)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres_admin(postgres_database: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        yield conn


def _postgres_schema_url(request: pytest.FixtureRequest) -> str:
    database: str = request.getfixturevalue("postgres_database")
    admin: psycopg.Connection[tuple[object, ...]] = request.getfixturevalue("postgres_admin")
    schema = f"s_{uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return _with_database(database, urlsplit(database).path.lstrip("/"), f"schema={schema}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL: a SQLite file, or a new schema in the run's database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return _postgres_schema_url(request)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def ledger(backend: str, clock: FixedClock) -> Iterator[Ledger]:
    with Ledger.open(backend, clock=clock, pool_size=1) as opened:
        yield opened


@pytest.fixture
def world(ledger: Ledger, backend: str, clock: FixedClock) -> World:
    return World(ledger, backend, clock)


# Scenes: a campaign or a registration in a known state -------------------------------------

@pytest.fixture
def manual_campaign(world: World) -> str:
    """The realistic manual campaign, registration open."""
    return str(world.accept(create_campaign())["aggregate_id"])


@pytest.fixture
def auto_campaign(world: World) -> str:
    return str(world.accept(create_auto_campaign())["aggregate_id"])


@pytest.fixture
def registration(world: World, manual_campaign: str) -> str:
    """A manual registration with sessions s1 and s2 under review."""
    return world.register(register(manual_campaign))


@pytest.fixture
def approved_registration(world: World, registration: str) -> str:
    world.accept(approve(registration))
    return registration


@pytest.fixture
def auto_registration(world: World, auto_campaign: str) -> str:
    """An auto registration the system approved."""
    return world.register(register_auto(auto_campaign))


@pytest.fixture
def scene(world: World, manual_campaign: str, auto_campaign: str, registration: str) -> str:
    """Both campaigns exist, and a manual registration has s1, s2 under review."""
    return registration

NewUrl = Callable[[], str]


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_url(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> NewUrl:
    """Makes a fresh, empty store URL each call: a SQLite file, or a new schema."""
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("stores")
        return lambda: new_sqlite_url(directory)
    database: str = request.getfixturevalue("postgres_database")
    return lambda: new_schema_url(database)
