"""`ledger demo` never destroys a store: its own file by default, a given one only with --reset."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.cli import main
from tests.support.helpers import NOW, create_campaign, dump_store
from tests.support.projections import new_schema_url


def demo(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args])
    return result.exit_code, result.stdout, result.stderr


def test_demo_leaves_the_users_ledger_db_alone_and_can_run_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    with Ledger.open("sqlite:///ledger.db", clock=FixedClock(NOW)) as ledger:
        assert ledger.send(create_campaign())["ok"]
    before = dump_store("sqlite:///ledger.db")
    code, out, err = demo("demo")
    assert code == 0, err
    assert out.splitlines()[0] == "store: sqlite:///ledger-demo.db"
    assert "ledger --db sqlite:///ledger-demo.db campaigns" in out.splitlines()[-1]
    code, out, err = demo("demo")  # the README's command, run again
    assert code == 0, err
    assert out.splitlines()[0].startswith("cleared sqlite:///ledger-demo.db: ")
    assert "(from an earlier demo)" in out.splitlines()[0]
    assert dump_store("sqlite:///ledger.db") == before


def test_demo_refuses_a_given_store_that_holds_events_in_one_line(backend: str) -> None:
    with Ledger.open(backend, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert ledger.send(create_campaign())["ok"]
    before = dump_store(backend)
    code, out, err = demo("--db", backend, "demo")
    assert code == 1
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("Error: conflict: "), line
    assert "already holds 1 events" in line
    assert "--reset" in line
    assert dump_store(backend) == before


@pytest.mark.postgres
def test_demo_reset_drops_only_the_ledgers_own_tables(postgres_database: str) -> None:
    backend = new_schema_url(postgres_database)
    with Ledger.open(backend, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert ledger.send(create_campaign())["ok"]
    schema = backend.rsplit("schema=", 1)[1]
    plain = backend.split("?", 1)[0]
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.orders (id int)").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("INSERT INTO {}.orders VALUES (7)").format(sql.Identifier(schema)))
    code, out, err = demo("--db", backend, "demo", "--reset")
    assert code == 0, err
    assert "1 events deleted (--reset)" in out.splitlines()[0]
    assert dump_store(backend)["orders"] == [(7,)]
    code, out, err = demo("--db", backend, "show", "campaign", "mega-1111-live")
    assert code == 1
    assert "not_found" in err  # the old campaign went with the reset
