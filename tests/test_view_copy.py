"""On PostgreSQL, a write of many read-model rows goes by binary COPY into a staging table
of the session, then one upsert from it (`PostgresView.write_rows`); fewer rows go as one
array per column. Both ways must give the same rows, and the staging tables must stay
right through rollbacks and through several writes of one table in a transaction. A
rebuild writes its read models at once, each on its own connection
(`CatchUp._write_all`), and reads its next page while it applies one (`read_ahead`): the
same rows and positions as one thing after the other."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from ledger import Ledger
from ledger.projections.registry import projector
from ledger.projections.tables import Table
from ledger.projections.view import PostgresView
from tests.support.projections import clone_events, new_schema_url, rows_of
from tests.support.scenarios import seasoned

pytestmark = pytest.mark.postgres

SUMS = Table("copy_sums", ("seller_id", "day"), {
    "seller_id": "text", "day": "text", "gmv": "money", "orders": "int", "extra": "json"})


@pytest.fixture(scope="module")
def source(postgres_database: str) -> Iterator[Ledger]:
    with seasoned(new_schema_url(postgres_database), registrations=24) as ledger:
        yield ledger


def rebuilt_rows(source: Ledger, url: str, copy_min_rows: int,
                 parallel_writes: bool = True, read_ahead: bool = True,
                 jobs: int = 1) -> dict[str, object]:
    with clone_events(source.app, url) as clone:
        # (Pages of 10 and several writes in the rebuild.)
        p = projector(clone.app, 10, flush_every=40, jobs=jobs)
        assert isinstance(p.view, PostgresView)
        p.view.copy_min_rows = copy_min_rows
        p.parallel_writes = parallel_writes
        p.read_ahead = read_ahead
        p.rebuild()
        return {"rows": rows_of(p, exact=True),
                "positions": sorted((s["name"], s["position"], s["events_applied"])
                                    for s in p.status())}


def test_a_rebuild_writes_the_same_rows_by_copy_as_by_arrays(
        source: Ledger, postgres_database: str) -> None:
    by_copy = rebuilt_rows(source, new_schema_url(postgres_database), 1)
    by_arrays = rebuilt_rows(source, new_schema_url(postgres_database), 10**9)
    assert by_copy == by_arrays
    rows = by_copy["rows"]
    assert isinstance(rows, dict)
    assert sum(len(found) for found in rows.values()) > 100  # (a season, not nothing)


def test_a_rebuild_writes_the_same_rows_with_its_writes_at_once_as_one_after_the_other(
        source: Ledger, postgres_database: str) -> None:
    at_once = rebuilt_rows(source, new_schema_url(postgres_database), 1, True)
    in_turn = rebuilt_rows(source, new_schema_url(postgres_database), 1, False)
    assert at_once == in_turn


@pytest.fixture
def view(postgres_database: str) -> Iterator[PostgresView]:
    with Ledger.open(new_schema_url(postgres_database), pool_size=1) as ledger:
        p = projector(ledger.app)
        assert isinstance(p.view, PostgresView)
        p.view.create_tables([SUMS])
        p.view.copy_min_rows = 1
        yield p.view


def sums(view: PostgresView) -> list[tuple[object, ...]]:
    rows = view.query(f"SELECT * FROM {view.dialect.q('rm_copy_sums')} ORDER BY seller_id")
    return [(r["seller_id"], r["day"], r["gmv"], r["orders"], r["extra"]) for r in rows]


def row(seller: str, gmv: str, orders: int) -> tuple[object, ...]:
    """A row as `write_rows` takes it (encoded: the JSON column as its text)."""
    return (seller, "2026-11-11", Decimal(gmv), orders, '{"note":"é"}')


def test_a_staging_table_made_by_a_transaction_that_rolled_back_is_made_again(
        view: PostgresView) -> None:
    def write_then_fail() -> None:
        with view._txn() as c:
            view.write_rows(c, SUMS, "rm_copy_sums", [row("s1", "1.50", 1)])
            raise RuntimeError("the transaction fails after the write")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert sums(view) == []  # nothing of it stays
    with view._txn() as c:  # the staging table went with it: made again, no error
        view.write_rows(c, SUMS, "rm_copy_sums", [row("s1", "2.50", 2)])
    with view._txn() as c:  # and kept for the session from then on
        view.write_rows(c, SUMS, "rm_copy_sums", [row("s2", "3.00", 3)])
    assert sums(view) == [("s1", "2026-11-11", Decimal("2.50"), 2, {"note": "é"}),
                          ("s2", "2026-11-11", Decimal("3.00"), 3, {"note": "é"})]


def test_two_writes_of_a_table_in_one_transaction_each_write_their_own_rows(
        view: PostgresView) -> None:
    with view._txn() as c:
        view.write_rows(c, SUMS, "rm_copy_sums", [row("s1", "1.00", 1), row("s2", "2.00", 2)])
        view.write_rows(c, SUMS, "rm_copy_sums", [row("s2", "5.00", 5), row("s3", "3.00", 3)])
    assert sums(view) == [("s1", "2026-11-11", Decimal("1.00"), 1, {"note": "é"}),
                          ("s2", "2026-11-11", Decimal("5.00"), 5, {"note": "é"}),
                          ("s3", "2026-11-11", Decimal("3.00"), 3, {"note": "é"})]
    with view._txn() as c:  # the next transaction starts from an empty staging table
        view.write_rows(c, SUMS, "rm_copy_sums", [row("s4", "4.00", 4)])
    assert [r[0] for r in sums(view)] == ["s1", "s2", "s3", "s4"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_rebuild_reading_its_next_page_ahead_gives_the_rows_of_one_that_does_not(
        source: Ledger, postgres_database: str, jobs: int) -> None:
    ahead = rebuilt_rows(source, new_schema_url(postgres_database), 1, read_ahead=True,
                         jobs=jobs)
    in_turn = rebuilt_rows(source, new_schema_url(postgres_database), 1, read_ahead=False,
                           jobs=jobs)
    assert ahead == in_turn
