"""YTD performance: per seller and calendar year, sums per currency by month and campaign."""

from __future__ import annotations

from typing import Any

from ledger.aggregates import registration_events as r
from ledger.projections.base import FoldRows, ReadModel, handles
from ledger.projections.tables import Key, Table
from ledger.projections.view import ViewMixin, physical
from ledger.values import jsonable

# What a performance report adds up. `buyers` and `views` are sums of what each report
# says, not distinct people: a buyer in two reports counts twice.
MEASURES: dict[str, str] = {
    "gmv": "money", "refunds": "money", "orders": "int", "items_sold": "int",
    "buyers": "int", "views": "int", "reports": "int"}

REGISTRATIONS = Table("ytd_registrations", ("aggregate_id",), {
    "aggregate_id": "text", "seller_id": "text", "campaign_id": "text",
    "campaign_name": "text", "campaign_year": "int", "joined": "int"})
MONTHS = Table("ytd_months", ("seller_id", "year", "month", "currency"), {
    "seller_id": "text", "year": "int", "month": "int", "currency": "text", **MEASURES})
CAMPAIGNS = Table("ytd_campaigns", ("seller_id", "year", "campaign_id", "currency"), {
    "seller_id": "text", "year": "int", "campaign_id": "text", "currency": "text", **MEASURES})
JOINED = Table("ytd_joined", ("seller_id", "year", "campaign_id"), {
    "seller_id": "text", "year": "int", "campaign_id": "text", "registrations": "int"})


# What the report fold handlers read of a `PerformanceRecorded` (declared, so that a
# rebuild decodes nothing else of 90% of a season's events), in this order: each report
# reaches them as a row `(aggregate id, *REPORT_FIELDS)`, its amounts at `AMOUNTS`.
REPORT_FIELDS = ("period_start", "currency", "gmv", "refunds", "orders", "items_sold",
                 "buyers", "views")
AMOUNTS = 3  # where a report row's amounts start (in `MEASURES` order, but `reports`)


def add_report(cells: dict[Key, list[Any]], key: Key, report: tuple[Any, ...]) -> None:
    """Add a report's amounts (a report row, see `REPORT_FIELDS`) to the cell at `key`. A
    cell gathers the reports of one key until the next write, where `settle` adds it to
    the sum rows: one addition per report instead of one per sum row. Money stays
    `Decimal`, so the sums are exact whatever the grouping."""
    cell = cells.get(key)
    if cell is None:
        cells[key] = [*report[AMOUNTS:], 1]
        return
    _, _, _, gmv, refunds, orders, items_sold, buyers, views = report
    cell[0] += gmv
    cell[1] += refunds
    cell[2] += orders
    cell[3] += items_sold
    cell[4] += buyers
    cell[5] += views
    cell[6] += 1


class YtdPerformance(ReadModel):
    """Per seller and calendar year: sums per currency, by month and by campaign."""
    name = "ytd_performance"
    description = "per seller and calendar year: sums per currency, by month and by campaign"
    tables = (REGISTRATIONS, MONTHS, CAMPAIGNS, JOINED)
    state_tables = (REGISTRATIONS,)
    weight = 4  # handles every performance report (90% of a season's events)
    fold_seeds = (r.Registered,)  # `settle` reads the registration's seller and campaign
    fold_columns = ("seller_id", "campaign_id")

    # (`reads`: as campaign_performance's, for a rebuild's helper.)
    @handles(r.Registered, reads=("seller_id", "campaign_id", "terms"))
    def on_registered(self, e: r.Registered, aid: str) -> None:
        self.batch.put(REGISTRATIONS, {
            "aggregate_id": aid, "seller_id": e.seller_id,
            "campaign_id": e.campaign_id, "campaign_name": e.terms["name"],
            "campaign_year": e.terms["starts_at"].year, "joined": 0})

    @handles(r.Approved)
    def on_approved(self, e: r.Approved, aid: str) -> None:
        row = self.batch.get(REGISTRATIONS, aid)
        if row is None or row["joined"]:
            return  # a registration joins its campaign once, at its first approval
        self.batch.put(REGISTRATIONS, {**row, "joined": 1})
        self.batch.add(JOINED, (row["seller_id"], row["campaign_year"], row["campaign_id"]),
                       (1,))

    @handles(r.PerformanceRecorded, reads=REPORT_FIELDS, fold=True)
    def on_performance(self, reports: FoldRows) -> None:
        get, cells = self.batch.fold_get, self.batch.cells["months"]
        for report in reports:
            aid, start, currency = report[0], report[1], report[2]
            if get(REGISTRATIONS, aid) is None:
                continue  # a report stored before its registration (no command stores one)
            # The calendar of the report's own offset: a report starting
            # 2026-12-31T23:00+07:00 belongs to December 2026 for the seller who sent it,
            # whatever UTC says.
            add_report(cells, (aid, start.year, start.month, currency), report)

    def settle(self) -> None:
        batch = self.batch
        cells = batch.cells["months"]
        for (aid, year, month, currency), amounts in cells.items():
            row = batch.get(REGISTRATIONS, aid)
            if row is None:
                continue  # a report of a registration this read model never saw
            seller = row["seller_id"]
            batch.add(MONTHS, (seller, year, month, currency), amounts)
            batch.add(CAMPAIGNS, (seller, year, row["campaign_id"], currency), amounts)
        cells.clear()


# Queries ---------------------------------------------------------------------------------

def fetch(view: ViewMixin, table: Table, where: dict[str, Any],
          order: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows of `table` whose columns equal `where`, decoded to Python values."""
    d = view.dialect
    conditions = " AND ".join(f'"{column}" = {d.p}' for column in where) or "1 = 1"
    quoted = ", ".join(f'"{column}"' for column in order)
    order_by = f" ORDER BY {quoted}" if order else ""
    rows = view.query(f"SELECT * FROM {d.q(physical(table, False))} WHERE {conditions}"
                      f"{order_by}", [d.to_db(table.kind(c), v) for c, v in where.items()])
    return [view.dialect.decode(table, row) for row in rows]


def figures(row: dict[str, Any]) -> dict[str, Any]:
    """A sum row's currency and measures, JSON-able (money as decimal strings)."""
    return {"currency": row["currency"], **{m: jsonable(row[m]) for m in MEASURES}}


def totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sum rows per currency (exact: the measures are `Decimal` and int), JSON-able.

    Totals are not stored: a seller's year is the sum of its months, a campaign's the sum
    of its days (tens of rows), and a report then updates two sum rows per read model,
    not three."""
    summed: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = summed.setdefault(row["currency"], dict.fromkeys(MEASURES, 0))
        for m in MEASURES:
            if row[m] is not None:
                total[m] = total[m] + row[m]
    return [figures({"currency": currency, **summed[currency]}) for currency in sorted(summed)]


def ytd_report(view: ViewMixin, seller_id: str, year: int) -> dict[str, Any]:
    """The seller's year: totals per currency, campaigns joined, months, campaigns."""
    where = {"seller_id": seller_id, "year": year}
    names = {row["campaign_id"]: row["campaign_name"]
             for row in fetch(view, REGISTRATIONS, {"seller_id": seller_id})}
    joined = fetch(view, JOINED, where, ("campaign_id",))
    months = fetch(view, MONTHS, where, ("month", "currency"))
    return {
        "seller_id": seller_id,
        "year": year,
        "totals": totals(months),
        "campaigns_joined": len(joined),
        "joined": [{"campaign_id": row["campaign_id"],
                    "campaign_name": names.get(row["campaign_id"]),
                    "registrations": row["registrations"]} for row in joined],
        "months": [{"month": row["month"], **figures(row)}
                   for row in months],
        "campaigns": [{"campaign_id": row["campaign_id"],
                       "campaign_name": names.get(row["campaign_id"]), **figures(row)}
                      for row in fetch(view, CAMPAIGNS, where, ("campaign_id", "currency"))],
    }
