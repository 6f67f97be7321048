"""`ledger projections verify`: a read model edited behind the ledger's back is found, by
key; verifying touches neither the live tables nor their positions, leaves nothing behind
(also when interrupted or killed), and works while the read models move or are behind.

Every test runs on SQLite and PostgreSQL, over a season of every command kind.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ledger import Ledger
from ledger.cli import main
from ledger.projections.lock import lease
from ledger.projections.registry import READ_MODELS, projector
from ledger.projections.runner import Projector
from ledger.projections.tables import Table
from ledger.projections.verify import verify
from ledger.projections.view import VERIFY, physical
from tests.support.helpers import dump_store
from tests.support.projections import clone_events, copy_events, event_count, store_tables
from tests.support.scenarios import seasoned

NewUrl = Callable[[], str]
Store = tuple[str, Ledger]


@pytest.fixture(scope="module")
def source(new_url: NewUrl) -> Iterator[Ledger]:
    with seasoned(new_url(), registrations=12) as ledger:
        yield ledger


@pytest.fixture
def store(source: Ledger, new_url: NewUrl) -> Iterator[Store]:
    """A copy of the season with its read models caught up to the head."""
    url = new_url()
    with clone_events(source.app, url) as ledger:
        projector(ledger.app).catch_up()
        yield url, ledger


def run_verify(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", url, "projections", "verify", *args])


def aside_leftovers(p: Projector) -> set[str]:
    """Aside tables and tracking rows of a verify."""
    tables = {t for t in store_tables(p) if t.endswith("__verify")}
    return tables | {m.name for m in p.models if p.view.position(m.name, shadow=True)}


def leave_leftovers(ledger: Ledger) -> None:
    """What a verify killed with SIGKILL (no `finally`) leaves: half-built aside tables."""
    killed = projector(ledger.app)
    killed.view.aside = VERIFY
    for model in killed.models:
        killed.view.create_tables(model.tables, shadow=True)
    killed.catch_up(shadow=True, until=30)


# Edits made behind the ledger's back, as an analyst with SQL access could --------------------

# Per read model: a table, and a change of one column that a user would rely on.
CHANGES: dict[str, tuple[str, str, str]] = {
    "manage_campaign": ("manage_registrations", "status",
                        "CASE WHEN status = 'approved' THEN 'rejected' ELSE 'approved' END"),
    # The same amount with one more zero: the scale is part of the money.
    "ytd_performance": ("ytd_months", "gmv", "CAST(CAST(gmv AS TEXT) || '0' AS {money})"),
    "campaign_performance": ("cp_sellers", "orders", "orders + 1"),
    "review_decisions": ("review_decisions", "decision",
                         "CASE WHEN decision = 'approved' THEN 'rejected' ELSE 'approved' END"),
}


def table_of(name: str) -> Table:
    return next(t for t in READ_MODELS[name].tables if t.name == CHANGES[name][0])


def where(p: Projector, table: Table, key: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    return (" AND ".join(f'"{k}" = {p.view.dialect.p}' for k in key), tuple(key.values()))


def tamper(p: Projector, name: str) -> dict[str, dict[str, Any]]:
    """Change one row, delete another and forge a third (a copy under a new key) in one
    table of read model `name`; the keys of each, by kind of difference."""
    table, (_, column, change) = table_of(name), CHANGES[name]
    live, d = p.view.dialect.q(physical(table, False)), p.view.dialect
    keys = ", ".join(f'"{k}"' for k in table.keys)
    dotted = f'CAST("{column}" AS TEXT) LIKE {d.p}'  # a fraction, for a scale to change
    rows = p.view.query(f'SELECT {keys} FROM {live} WHERE "{column}" IS NOT NULL '
                        f"ORDER BY {dotted} DESC, {keys} LIMIT 3", ("%.%",))
    changed, missing, forged = (dict(row) for row in rows)
    cond, args = where(p, table, changed)
    p.view.query(f"UPDATE {live} SET \"{column}\" = "
                 f"{change.format(money=d.sql_type('money'))} WHERE {cond} RETURNING 1", args)
    cond, args = where(p, table, missing)
    p.view.query(f"DELETE FROM {live} WHERE {cond} RETURNING 1", args)
    first = table.keys[0]
    columns = ", ".join(f"'forged-' || \"{c}\"" if c == first else f'"{c}"'
                        for c in table.all_columns)
    cond, args = where(p, table, forged)
    p.view.query(f"INSERT INTO {live} SELECT {columns} FROM {live} WHERE {cond} RETURNING 1",
                 args)
    return {"changed": changed, "missing": missing,
            "extra": {**forged, first: f"forged-{forged[first]}"}}


def shown(key: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in key.items())


# The tests ---------------------------------------------------------------------------------

def test_read_models_that_nobody_edited_verify_and_nothing_in_the_store_changes(
    store: Store,
) -> None:
    url, ledger = store
    before = dump_store(url)
    result = run_verify(url)
    assert result.exit_code == 0, result.output
    head = projector(ledger.app).head()
    assert result.stdout.splitlines()[-1] == f"all 4 read models match (position {head:,})"
    assert dump_store(url) == before  # live rows, positions, status: all as they were


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_row_changed_deleted_or_forged_in_a_read_model_is_named_by_its_key(
    store: Store, name: str
) -> None:
    url, ledger = store
    p = projector(ledger.app)
    keys = tamper(p, name)
    before = dump_store(url)

    result = run_verify(url)

    assert result.exit_code == 1, result.output
    out = result.stdout
    assert f"{name}: 3 rows differ" in out
    assert f"rm_{CHANGES[name][0]}: 1 missing, 1 extra, 1 changed" in out
    for kind, key in keys.items():
        assert f"{kind:<8} {shown(key)}" in out, (kind, out)
    assert out.splitlines()[-1].startswith("1 of 4 read models differ")
    assert dump_store(url) == before  # verify repairs nothing and leaves nothing behind


def test_money_is_compared_with_its_scale_and_json_names_the_columns(store: Store) -> None:
    url, ledger = store
    keys = tamper(projector(ledger.app), "ytd_performance")
    result = run_verify(url, "ytd_performance", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["match"] is False
    [model] = report["read_models"]
    [months] = [t for t in model["tables"] if t["table"] == "rm_ytd_months"]
    assert (months["missing"], months["extra"], months["changed"]) == (1, 1, 1)
    [changed] = [row for row in months["rows"] if row["kind"] == "changed"]
    assert changed["key"] == keys["changed"]
    gmv = changed["columns"]["gmv"]
    assert gmv["live"] == gmv["rebuilt"] + "0"  # the same amount, another scale
    assert set(changed["columns"]) == {"gmv"}


def test_the_output_is_bounded_and_counts_every_difference(store: Store) -> None:
    url, ledger = store
    p = projector(ledger.app)
    live = p.view.dialect.q("rm_manage_registrations")
    total = len(p.view.query(f"DELETE FROM {live} RETURNING 1"))
    result = run_verify(url, "manage_campaign", "--limit", "2")
    assert result.exit_code == 1
    assert f"rm_manage_registrations: {total} missing" in result.stdout
    assert result.stdout.count("    missing ") == 2
    assert f"... and {total - 2} more" in result.stdout


def test_a_read_model_behind_the_head_is_verified_at_its_own_position(
    source: Ledger, new_url: NewUrl
) -> None:
    url = new_url()
    with clone_events(source.app, url) as ledger:
        p = projector(ledger.app)
        behind = event_count(ledger.app) - 20
        p.catch_up(until=behind)
        before = dump_store(url)
        result = run_verify(url)
        assert result.exit_code == 0, result.output
        assert f"all 4 read models match (position {behind:,}; the store's head is " \
               f"{p.head():,}" in result.stdout
        assert dump_store(url) == before  # not caught up by verifying
        tamper(p, "review_decisions")
        assert run_verify(url).exit_code == 1


def test_a_follower_moving_the_read_models_during_a_verify_is_not_a_difference(
    source: Ledger, new_url: NewUrl
) -> None:
    url = new_url()
    with clone_events(source.app, url, upto=event_count(source.app) // 2) as ledger:
        projector(ledger.app).catch_up()
        half = projector(ledger.app).head()
        copy_events(source.app, ledger.app, after=half)
        calls: list[int] = []

        def follower_and_rebuild(position: int, stop: int) -> None:
            # While the aside tables are built to the old position, the live ones move
            # on (a follower) and are swapped for new ones (a rebuild).
            calls.append(position)
            if len(calls) == 1:
                projector(ledger.app).catch_up(["manage_campaign"])
                projector(ledger.app).rebuild(["review_decisions"])

        verdicts = verify(projector(ledger.app, page=10), progress=follower_and_rebuild)
        p = projector(ledger.app)
        assert len(calls) > 1, "the aside tables took a few pages"
        assert all(v.differences == 0 for v in verdicts), verdicts
        at = {v.name: v.position for v in verdicts}
        assert at == {"manage_campaign": p.head(), "review_decisions": p.head(),
                      "ytd_performance": half, "campaign_performance": half}
        assert aside_leftovers(p) == set()
        assert not {t for t in store_tables(p) if t.endswith("__new")}


class Interrupted(Exception):
    pass


def test_an_interrupted_verify_drops_its_tables_and_a_killed_one_s_leftovers_break_nothing(
    store: Store,
) -> None:
    url, ledger = store
    p = projector(ledger.app, page=10)

    def ctrl_c(position: int, stop: int) -> None:
        raise Interrupted

    before = dump_store(url)
    with pytest.raises(Interrupted):
        verify(p, progress=ctrl_c)
    assert dump_store(url) == before

    leave_leftovers(ledger)
    assert aside_leftovers(p)
    assert run_verify(url).exit_code == 0
    assert aside_leftovers(p) == set()

    leave_leftovers(ledger)
    projector(ledger.app).rebuild()
    assert run_verify(url).exit_code == 0
    assert aside_leftovers(p) == set()


def test_a_second_verify_at_the_same_time_is_refused_in_one_line_naming_the_first(
        store: Store) -> None:
    url, ledger = store
    with lease(ledger.app, VERIFY) as first:
        assert first.held
        result = run_verify(url)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith("Error: another `ledger projections verify` is running on this "
                           f"store (pid {os.getpid()} on {socket.gethostname()}")
    assert line.endswith("); try again when it has finished")
    assert run_verify(url).exit_code == 0
