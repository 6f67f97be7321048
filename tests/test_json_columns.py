"""A read model's JSON column holds the JSON value `json.dumps(value, default=str)` gives.

The column is written with orjson (`ledger.projections.tables._json_dump`, faster), which
must give the same JSON value for anything a read model puts there: times and amounts as
`str` gives them, tuples as lists, and whatever orjson refuses (a key that is not a
string, an integer past 64 bits, a lone surrogate) written by `json.dumps` as before.
Only the text may differ, and only in how non-ASCII characters are spelled."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.projections.tables import _json_dump


def library(value: Any) -> str:
    """What the column held before orjson wrote it."""
    return json.dumps(value, default=str, separators=(",", ":"))


class Label(str):
    """A `str` subclass: passed through to `str`, as `json.dumps` writes its text."""


@dataclass
class Point:
    x: int


offsets = st.sampled_from([UTC, timezone(timedelta(hours=7)),
                           timezone(timedelta(hours=-3, minutes=-30))])
times = st.builds(lambda t, tz: t.replace(tzinfo=tz),
                  st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
                  offsets)
amounts = st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10**12,
                      max_value=10**12)
scalars = (st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80)
           | st.text(max_size=20) | times | amounts | st.dates() | st.uuids()
           | st.builds(Label, st.text(max_size=5)))
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(values)
def test_a_json_column_holds_the_value_json_dumps_wrote(value: Any) -> None:
    written = _json_dump(value)
    assert json.loads(written) == json.loads(library(value))
    if written.isascii():  # the text itself differs only in how non-ASCII is spelled
        assert written == library(value)


def test_what_orjson_refuses_is_written_by_json_dumps_as_before() -> None:
    for value in ({1: "a", "b": 2},            # a key that is not a string
                  {"n": 2**70},                # an integer past 64 bits
                  ["\ud800"],                  # a lone surrogate: not UTF-8
                  {Label("k"): 1}):            # a str subclass as a key
        assert _json_dump(value) == library(value)


def test_times_amounts_and_objects_are_written_as_str_gives_them() -> None:
    moment = datetime(2026, 11, 11, 20, 0, tzinfo=timezone(timedelta(hours=7)))
    value = {"at": moment, "day": date(2026, 11, 11), "gmv": Decimal("12.50"),
             "id": UUID("12345678-1234-5678-1234-567812345678"), "point": Point(3),
             "set": {1}, "title": "Mega LIVE é"}
    assert json.loads(_json_dump(value)) == {
        "at": "2026-11-11 20:00:00+07:00", "day": "2026-11-11", "gmv": "12.50",
        "id": "12345678-1234-5678-1234-567812345678", "point": "Point(x=3)", "set": "{1}",
        "title": "Mega LIVE é"}
