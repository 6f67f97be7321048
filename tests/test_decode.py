"""Read models decode stored events straight from their bytes (`ledger.projections.decode`):
handlers get what the library's mapper gives (every field, or every field they declare),
and whatever that path does not take on is decoded by the library's mapper. On SQLite and
PostgreSQL, over a season of every command kind."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent, Tracking

from ledger import Ledger
from ledger.aggregates import registration_events as r
from ledger.projections.decode import Decoder, Routes
from ledger.projections.registry import READ_MODELS, projector
from ledger.projections.tables import Batch
from ledger.projections.ytd import REPORT_FIELDS
from tests.conftest import NewUrl
from tests.support.projections import clone_events, rows_elsewhere, rows_of
from tests.support.scenarios import seasoned


@pytest.fixture(scope="module")
def source(new_url: NewUrl) -> Iterator[Ledger]:
    with seasoned(new_url(), registrations=12) as ledger:
        yield ledger


def by_library(ledger: Ledger) -> dict[int, Any]:
    notifications = ledger.app.recorder.select_notifications(0, 10**6)
    return {n.id: ledger.app.mapper.to_domain_event(n) for n in notifications}


def test_every_event_is_decoded_as_the_library_decodes_it_or_its_declared_fields(
        source: Ledger) -> None:
    expected = by_library(source)
    page = projector(source.app).decoder.page(0, 10**6, 10**9)
    assert [d.position for d in page] == sorted(expected)
    reports = 0
    for decoded in page:
        want = expected[decoded.position]
        assert decoded.originator_id == str(want.originator_id)
        if isinstance(want, r.PerformanceRecorded):
            # A fold event: a row for the fold handlers, no object.
            reports += 1
            assert decoded.event is None
            assert decoded.cls is type(want)
            assert decoded.row == (str(want.originator_id),
                                   *[getattr(want, k) for k in REPORT_FIELDS])
            # Money keeps its scale, times their offset (equal is not enough for either).
            assert [str(v) for v in decoded.row[1:]] == [
                str(getattr(want, k)) for k in REPORT_FIELDS]
        else:
            assert type(decoded.event) is type(want)
            assert decoded.row is None
            assert vars(decoded.event) == vars(want)
    assert reports > 10


def test_what_orjson_refuses_is_decoded_by_the_library(source: Ledger) -> None:
    """An integer over 64 bits (valid JSON, refused by orjson) in a stored report."""
    app = source.app
    stored = next(n for n in app.recorder.select_notifications(0, 10**6)
                  if n.topic.endswith(":PerformanceRecorded"))
    state = json.loads(stored.state)
    state["views"] = 2**70
    row = (stored.id, str(stored.originator_id), stored.originator_version, stored.topic,
           json.dumps(state).encode())
    decoder = Decoder(app, projector(app).models)
    folded = decoder.fold(decoder.kind(stored.topic), row)
    library = app.mapper.to_domain_event(StoredEvent(UUID(row[1]), row[2], row[3], row[4]))
    assert folded[REPORT_FIELDS.index("views") + 1] == 2**70
    assert folded == (row[1], *[getattr(library, k) for k in REPORT_FIELDS])


def stored_report(source: Ledger) -> tuple[Any, dict[str, Any]]:
    stored = next(n for n in source.app.recorder.select_notifications(0, 10**6)
                  if n.topic.endswith(":PerformanceRecorded"))
    return stored, json.loads(stored.state)


ODD_REPORTS: dict[str, Callable[[dict[str, Any]], None]] = {
    # Valid JSON the ledger never writes: each must come out as the library's mapper
    # gives it (types and money scale included), never as what a report usually holds.
    "an extra key beside a transcoded amount": lambda s: s["gmv"].update(x=1),
    "an amount as a JSON number": lambda s: s.update(gmv=12.5),
    "a bool for a count": lambda s: s.update(orders=True),
    "a float for a count": lambda s: s.update(views=3.0),
    "a null count": lambda s: s.update(buyers=None),
    "a time tagged as an amount": lambda s: s.update(
        period_start={"_type_": "decimal_str", "_data_": "7.10"}),
    "a count over 64 bits": lambda s: s.update(views=2**70),
    "an amount's scale": lambda s: s.update(refunds={"_type_": "decimal_str",
                                                     "_data_": "10.500"}),
    "keys of a transcoded time in another order": lambda s: s.update(
        period_start={"_data_": "2026-11-11T13:00:00+05:30", "_type_": "datetime_iso"}),
}


@pytest.mark.parametrize("change", ODD_REPORTS, ids=list(ODD_REPORTS))
def test_a_report_the_fast_reader_does_not_take_on_is_decoded_by_the_library(
        source: Ledger, change: str) -> None:
    """The fold reader (msgspec) accepts only what decodes exactly as the library does; the
    rest goes to the library's mapper. Compared by repr: 1 == True and Decimal('1.5') ==
    Decimal('1.50'), but a read model must see what the library sees."""
    app = source.app
    stored, state = stored_report(source)
    ODD_REPORTS[change](state)
    row = (stored.id, str(stored.originator_id), stored.originator_version, stored.topic,
           json.dumps(state).encode())
    decoder = Decoder(app, projector(app).models)
    kind = decoder.kind(stored.topic)
    assert kind.reader is not None  # reports are read by it when they can be
    folded = decoder.fold(kind, row)
    library = app.mapper.to_domain_event(StoredEvent(UUID(row[1]), row[2], row[3], row[4]))
    assert repr(folded) == repr((row[1], *[getattr(library, k) for k in REPORT_FIELDS]))


def test_a_report_whose_fields_the_reader_cannot_take_is_decoded_by_orjson_alike(
        source: Ledger) -> None:
    """Fold events of a class with a field type the msgspec reader does not take are
    parsed by orjson: the same row, types and money scale included."""
    app = source.app
    decoder = Decoder(app, projector(app).models)
    reports = [n for n in app.recorder.select_notifications(0, 10**6)
               if n.topic.endswith(":PerformanceRecorded")]
    kind = replace(decoder.kind(reports[0].topic), reader=None)
    for stored in reports:
        row = (stored.id, str(stored.originator_id), stored.originator_version, stored.topic,
               stored.state)
        library = app.mapper.to_domain_event(stored)
        assert repr(decoder.fold(kind, row)) == repr(
            (row[1], *[getattr(library, k) for k in REPORT_FIELDS]))


def test_rows_built_through_the_library_s_mapper_are_the_same(
        source: Ledger, new_url: NewUrl) -> None:
    """The same store rebuilt with every event decoded by the library's mapper (as a store
    with encrypted events is): the same rows, money scale included."""
    fast = rows_elsewhere(source.app, new_url(), rebuild=True, exact=True)
    with clone_events(source.app, new_url()) as clone:
        p = projector(clone.app, page=50)
        p.decoder.fast = False
        p.rebuild()
        assert rows_of(p, exact=True) == fast
        assert fast == rows_elsewhere(source.app, new_url(), exact=True)  # caught up


def test_a_read_model_never_decodes_events_it_does_not_handle(
        source: Ledger, new_url: NewUrl) -> None:
    """A report whose stored bytes are broken stops the read models that read reports, with
    the library's error, and not one that reads none of them (it counts it as applied)."""
    with clone_events(source.app, new_url()) as clone:
        store = clone.app.store
        broken = next(n.id for n in clone.app.recorder.select_notifications(0, 10**6)
                      if n.topic.endswith(":PerformanceRecorded"))
        with store.writing() as c:
            c.execute(f"UPDATE {store.events_table} SET state = {store.p} "
                      f"WHERE {store.position_column} = {store.p}", (b"{broken", broken))
        p = projector(clone.app)
        p.catch_up(["manage_campaign"])
        status = {s["name"]: s for s in p.status()}["manage_campaign"]
        assert (status["lag"], status["events_applied"]) == (0, p.head())
        with pytest.raises(MapperDeserialisationError, match="PerformanceRecorded"):
            p.catch_up(["ytd_performance"])
        assert p.view.position("ytd_performance") < broken


def test_the_library_s_entry_point_folds_reports_as_a_rebuild_does(source: Ledger) -> None:
    """`process_event` (the library's `Projection` entry point) hands a fold handler the
    event as a one-row run: every event of a season applied through it leaves the same
    cells and rows as the decoded page applied as catch-up and rebuild apply it."""
    app = source.app
    events = [app.mapper.to_domain_event(n)
              for n in app.recorder.select_notifications(0, 10**6)]
    page = projector(app).decoder.page(0, 10**6, 10**9)
    folds = [cls for cls in READ_MODELS.values() if cls.fold_state() is not None]
    assert folds
    for cls in folds:
        one, other = cls(None), cls(None)  # type: ignore[arg-type]  # no view: no writes
        for model in (one, other):
            model.batch = Batch(model.tables, complete=True, fold=model.fold_state())
        for event in events:
            one.process_event(event, Tracking("test", 0))
        routes = Routes([other])
        for decoded in page:
            if decoded.row is not None:
                routes.fold(decoded.cls, [decoded.row])
            elif decoded.event is not None:
                routes.apply(decoded.event, decoded.originator_id)
        assert any(one.batch.cells.values())
        assert repr(dict(one.batch.cells)) == repr(dict(other.batch.cells))
        assert one.batch.rows == other.batch.rows
