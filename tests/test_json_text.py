"""JSON written by orjson (`ledger.jsontext`) is what the `json` module wrote before.

- A read model's JSON column (`ledger.projections.tables._json_dump`) holds the JSON value
  `json.dumps(value, default=str)` gives: times and amounts as `str` gives them, tuples as
  lists, and whatever orjson refuses (a key that is not a string, an integer past 64
  bits, a lone surrogate) written by `json.dumps` as before. Only the text may differ,
  and only in how non-ASCII characters are spelled.
- A command's fingerprint hashes `canonical(body)`: the very text of `json.dumps(body,
  sort_keys=True, separators=(",", ":"))`, byte for byte, or a command sent again after
  an upgrade would no longer be told from a reused command_id.
- An event's stored state (`FastTranscoder.encode`) is the library's `JSONTranscoder`
  bytes exactly: UUIDs inside a value (a snapshot's), floats and unregistered types go
  the library's way, and an encoding it refuses is refused alike."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import FixedClock, Ledger
from ledger.commands.parse import parse_command
from ledger.jsontext import canonical
from ledger.projections.tables import _json_dump
from ledger.store.application import FastTranscoder, SessionAsDict
from tests.support.helpers import NOW, create_campaign, register


def library(value: Any) -> str:
    """What the column held before orjson wrote it."""
    return json.dumps(value, default=str, separators=(",", ":"))


class Label(str):
    """A `str` subclass: passed through to `str`, as `json.dumps` writes its text."""


@dataclass
class Point:
    x: int


def nested(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists, tuples and string-keyed dicts of `leaves`, nested."""
    return st.recursive(
        leaves,
        lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=12)


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
values = nested(scalars)


@settings(max_examples=400, deadline=None)
@given(values)
def test_a_json_column_holds_the_value_json_dumps_wrote(value: Any) -> None:
    written = _json_dump(value)
    assert json.loads(written) == json.loads(library(value))
    if written.isascii() and "\x7f" not in written:  # the text differs only in how
        assert written == library(value)  # non-ASCII (and DEL, which json escapes) is spelled


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


def test_delete_is_escaped_by_json_and_kept_by_orjson_as_the_same_value() -> None:
    assert library("\x7f") == '"\\u007f"'
    assert json.loads(_json_dump("\x7f")) == "\x7f"


# The fingerprint's canonical text -----------------------------------------------------------

plain_scalars = (st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80)
                 | st.text(max_size=20) | st.sampled_from(["\x7f", "\x00\x1f\b\f\n\r\t", "é", "/"])
                 | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e-7, 2e-5])
                 | st.builds(Label, st.text(max_size=5)))
plain_values = nested(plain_scalars)


def sorted_text(value: Any) -> str:
    """What `Command.fingerprint` hashed before orjson."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@settings(max_examples=500, deadline=None)
@given(plain_values)
def test_canonical_text_is_json_dumps_sorted_to_the_byte(value: Any) -> None:
    assert canonical(value) == sorted_text(value)


def test_canonical_text_of_what_orjson_spells_otherwise_is_json_dumps() -> None:
    for value in ({"b": 1e-7, "a": 0.1}, {"n": 2**70}, {"k": "\x7f"}, {"k": "Mega LIVE é"},
                  {"z": {"y": [1, "\u2028"]}}, {2: "a", 1: "b"}, {"e": "\x00\x1f"}):
        assert canonical(value) == sorted_text(value)


REPORT = {"command": "record_performance", "command_id": "r-1",
          "actor": {"id": "feed", "role": "system"},
          "payload": {"registration_id": "746b2d17-51a2-5e00-80d3-777c4df715dc",
                      "report_id": "r-1", "period_start": "2026-11-11T10:00:00+07:00",
                      "period_end": "2026-11-11T11:00:00+07:00", "currency": "THB",
                      "gmv": "12345.67", "orders": 12, "items_sold": 30, "buyers": 10,
                      "views": 1000, "refunds": "0.50"}}
WITHDRAWAL = {"command": "withdraw", "command_id": "c-1",
              "actor": {"id": "s-1", "role": "seller"},
              "payload": {"registration_id": "746b2d17-51a2-5e00-80d3-777c4df715dc",
                          "reason": "Toko tutup sementara — libur Lebaran"}}


@pytest.mark.parametrize(("command", "stored"), [
    # As the ledger stored them before orjson (computed by 343908e's `json.dumps`): an
    # ASCII body (orjson's text) and one with non-ASCII text (`json`'s escapes).
    (REPORT, "a72c7ef9175dc657fb4f87257281a0c862b94b1c330cb275151a29c5911fd9d6"),
    (WITHDRAWAL, "0c15b12afe4a659b7cec37e645c3d42c977abc9520d7856d957cf30c4a90681b"),
])
def test_a_fingerprint_is_the_one_stored_before(command: dict[str, Any], stored: str) -> None:
    """A command sent again after the upgrade must match the fingerprint stored with it,
    or it would be refused as a reused command_id."""
    assert parse_command(command).fingerprint() == stored


# An event's stored state ---------------------------------------------------------------------

def transcoders() -> tuple[JSONTranscoder, FastTranscoder]:
    made = JSONTranscoder(), FastTranscoder()
    for transcoder in made:
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), SessionAsDict()):
            transcoder.register(transcoding)
    return made


state_scalars = (st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80)
                 | st.text(max_size=20) | times | amounts | st.uuids() | st.dates()
                 | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e-7, 2e-5])
                 | st.builds(Label, st.text(max_size=5)))
states = st.dictionaries(st.text(max_size=8), nested(state_scalars), max_size=6)


def encoded(transcoder: JSONTranscoder, state: Any) -> bytes | type[Exception]:
    try:
        return transcoder.encode(state)
    except (TranscodingNotRegisteredError, UnicodeEncodeError, TypeError, ValueError) as e:
        return type(e)


@settings(max_examples=500, deadline=None)
@given(states)
def test_an_event_state_is_stored_as_the_library_stores_it(state: dict[str, Any]) -> None:
    library_transcoder, fast = transcoders()
    stored = encoded(fast, state)
    assert stored == encoded(library_transcoder, state)
    if isinstance(stored, bytes):
        assert fast.decode(stored) == library_transcoder.decode(stored)


def test_a_report_and_a_snapshot_are_stored_as_the_library_stores_them() -> None:
    library_transcoder, fast = transcoders()
    moment = datetime(2026, 11, 11, 20, 0, tzinfo=timezone(timedelta(hours=7)))
    report = {"timestamp": moment, "cause": {"actor": {"id": "feed", "role": "system"},
                                             "command_id": "r-1", "at": moment},
              "report_id": "r-1", "session_id": None, "currency": "IDR",
              "gmv": Decimal("12345.67"), "orders": 12, "refunds": Decimal("0"),
              "class_version": 2}
    snapshot = {"timestamp": moment, "state": {
        "_id": UUID("746b2d17-51a2-5e00-80d3-777c4df715dc"), "_version": 3,
        "history": [{"at": moment, "by": "Toko é"}]}}
    for state in (report, snapshot):
        assert fast.encode(state) == library_transcoder.encode(state)
    assert b'"_type_":"uuid_hex"' in fast.encode(snapshot)


def test_the_ledger_stores_events_with_the_fast_transcoder(tmp_path: Path) -> None:
    """A store opened by the ledger writes through `FastTranscoder`, and each stored state
    is the library's encoding of the event it decodes to."""
    with Ledger.open(f"sqlite:///{tmp_path}/s.db", clock=FixedClock(NOW)) as ledger:
        assert type(ledger.app.mapper.transcoder) is FastTranscoder
        results = ledger.send_many([create_campaign(), register()])
        assert [r["ok"] for r in results] == [True, True], results
        library_transcoder, _ = transcoders()
        stored = ledger.app.recorder.select_notifications(0, 10)
        assert stored
        for notification in stored:
            event = ledger.app.mapper.to_domain_event(notification)
            state = dict(vars(event))
            del state["originator_id"], state["originator_version"]
            if (version := getattr(type(event), "class_version", 1)) > 1:
                state["class_version"] = version
            assert notification.state == library_transcoder.encode(state)
