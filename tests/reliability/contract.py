"""What DOMAIN.md's Values refuse, written out again independently of ledger/ (a test oracle),
hypothesis strategies for good and bad money and instants, and the list reads that must
still work, and show the data, after any accepted command."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from ledger import Ledger
from ledger.projections.campaign_performance import campaign_performance_report
from ledger.projections.decisions import decisions_report
from ledger.projections.manage import campaign_list, manage_page
from ledger.projections.runner import Projector
from ledger.projections.ytd import ytd_report

# The oracle --------------------------------------------------------------------------------

MONEY = re.compile(r"[0-9]{1,18}(\.[0-9]{1,6})?", re.ASCII)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
END = datetime(2200, 1, 1, tzinfo=UTC)
TIMES = ("starts_at", "ends_at")
# The fields of each command that hold money or an instant ("*": every item of a list).
VALUE_FIELDS: dict[str, list[tuple[str | int, ...]]] = {
    "create_campaign": [(f,) for f in ("registration_opens_at", "registration_closes_at",
                                       *TIMES)],
    "register": [("sessions", "*", f) for f in TIMES],
    "add_session": [(f,) for f in TIMES],
    "duplicate": [(f,) for f in TIMES],
    "record_performance": [(f,) for f in ("period_start", "period_end", "gmv", "refunds")],
}
MONEY_FIELDS = frozenset({"gmv", "refunds"})


def money_ok(value: Any) -> bool:
    return isinstance(value, str) and MONEY.fullmatch(value) is not None


def instant_ok(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    offset = parsed.utcoffset()
    return (offset is not None and offset % timedelta(minutes=1) == timedelta(0)
            and EARLIEST <= parsed < END)


def _found(payload: Any, path: tuple[str | int, ...], at: str = "payload"
           ) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of each field of `payload` at `path` that is present."""
    if not path:
        yield at, payload
        return
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(payload, list):
        for i, item in enumerate(payload):
            yield from _found(item, rest, f"{at}.{i}")
    elif isinstance(payload, dict) and head in payload:
        yield from _found(payload[head], rest, f"{at}.{head}")


def value_fields(doc: Any) -> list[tuple[str, bool, Any]]:
    """(dotted path, is money, value) of each money or instant field present in `doc`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("payload"), dict):
        return []
    paths = VALUE_FIELDS.get(doc["command"], []) if isinstance(doc.get("command"), str) else []
    return [(where, path[-1] in MONEY_FIELDS, value) for path in paths
            for where, value in _found(doc["payload"], path)]


def refused_fields(doc: Any) -> list[str]:
    """The money and instant fields of `doc` that DOMAIN.md's Values refuse."""
    return [where for where, money, value in value_fields(doc)
            if not (money_ok(value) if money else instant_ok(value))]


# Values to put there -----------------------------------------------------------------------

# ASCII, Arabic-Indic, fullwidth, Devanagari digits; signs, exponents, separators, spaces
DIGITS = "".join(chr(c) for start in (0x30, 0x660, 0xFF10, 0x966) for c in range(start, start + 10))
ODD = ".,+-eE _\n\t\u00a0\u066b"
BAD_MONEY = ["١٢٣", "\uff11\uff12\uff13.\uff15\uff10", "100\n", "-0", "-0.00", "+1", "1e3",
             " 1", "1 ", ".5", "5.", "1.0000001", "1" * 19, "", "1_000", "NaN", "Infinity"]
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=7)), timezone(timedelta(hours=-5)),
                         timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])
BAD_INSTANTS = ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+00:00",
                "2200-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2199-12-31T21:00:00-03:00",
                "2026-11-10T10:00:00", "2026-11-10T10:00:00+00:00:30", "2026-11-10",
                "2026-11-10T10:00:00Z\n", "\uff12\uff10\uff12\uff16-11-10T10:00:00Z"]

money_values = st.one_of(
    st.from_regex(r"\A[0-9]{1,18}(\.[0-9]{1,6})?\Z"),
    st.sampled_from(BAD_MONEY),
    st.text(alphabet=DIGITS + ODD, max_size=22),
)
instant_values = st.one_of(
    st.datetimes(datetime(2026, 9, 1), datetime(2027, 1, 1), timezones=ZONES)  # the scene's
    .map(datetime.isoformat),
    st.datetimes(datetime(2000, 1, 2), datetime(2199, 12, 30), timezones=ZONES)
    .map(datetime.isoformat),
    st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=ZONES)
    .map(datetime.isoformat),
    st.sampled_from(BAD_INSTANTS),
)


# The list reads ----------------------------------------------------------------------------

@dataclass
class Reads:
    """Every list read of the read models, as the CLI's queries and the service's list
    endpoints make them (the same functions), after a catch-up."""

    campaigns: list[dict[str, Any]]
    pages: dict[str, list[dict[str, Any]]]  # seller id -> Manage Campaign rows
    years: dict[str, dict[str, Any]]  # seller id -> this year's performance


def read_everything(ledger: Ledger, p: Projector) -> Reads:
    p.catch_up()
    now = ledger.clock.now()
    view = p.view
    campaigns = campaign_list(view, now)
    campaign_list(view, now, open_only=True)
    sellers = [row["seller_id"] for row in view.query(
        f"SELECT DISTINCT seller_id FROM {view.dialect.q('rm_manage_registrations')}")]
    pages = {seller: manage_page(view, seller, now) for seller in sellers}
    decisions_report(view)
    for campaign in campaigns:
        campaign_performance_report(view, campaign["campaign_id"])
    years = {seller: ytd_report(view, seller, now.year) for seller in sellers}
    reads = Reads(campaigns, pages, years)
    json.dumps([reads.campaigns, reads.pages, reads.years])  # printable as JSON
    unreadable = [row for row in [*campaigns, *(r for rows in pages.values() for r in rows)]
                  if "unreadable" in row]
    assert not unreadable, unreadable
    return reads


def assert_shown(reads: Reads, ledger: Ledger, doc: Any, result: dict[str, Any]) -> None:
    """The accepted command's aggregate is in the list reads, as its events say it is."""
    if result["events"] == []:
        return  # a report seen before: nothing changed
    name = doc.get("command") if isinstance(doc, dict) else None
    aggregate = result["aggregate_id"]
    if name == "create_campaign":
        assert aggregate in {c["campaign_id"] for c in reads.campaigns}, reads.campaigns
    elif name in {"register", "add_session", "duplicate"}:
        registration = ledger.registration(aggregate)
        [row] = [r for r in reads.pages.get(registration.seller_id, [])
                 if r["registration_id"] == aggregate]
        assert {s["session_id"] for s in row["sessions"]} == set(registration.sessions)
    elif name == "record_performance":
        seller = ledger.registration(aggregate).seller_id
        currencies = {t["currency"] for t in reads.years[seller]["totals"]}
        assert doc["payload"]["currency"] in currencies, reads.years[seller]
