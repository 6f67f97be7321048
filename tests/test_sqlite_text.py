"""SQLite keeps times and amounts of read models as text (`ledger.projections.tables._iso`):
times as fixed-width UTC text to the microsecond, so that they sort as instants do; the
text of a time is kept for reuse (equal instants have one text), an amount's never (equal
amounts of another scale are other text)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from ledger.projections import tables
from ledger.projections.tables import _iso


def test_a_time_is_written_as_utc_text_to_the_microsecond_whatever_its_offset() -> None:
    local = datetime(2026, 11, 11, 7, 0, tzinfo=timezone(timedelta(hours=7)))
    assert _iso(local) == "2026-11-11T00:00:00.000000+00:00"
    assert _iso(datetime(2026, 11, 11, 0, 0, tzinfo=UTC)) == "2026-11-11T00:00:00.000000+00:00"
    assert _iso(local.replace(microsecond=5)) == "2026-11-11T00:00:00.000005+00:00"


def test_amounts_keep_their_own_text_even_when_equal() -> None:
    assert _iso(Decimal("1.50")) == "1.50"
    assert _iso(Decimal("1.5")) == "1.5"
    assert _iso(Decimal("1.50")) == "1.50"


def test_the_kept_texts_are_bounded_and_stay_right_when_cleared() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-3)))
    for minute in range(tables.ISO_CACHE + 10):
        moment = start + timedelta(minutes=minute)
        assert _iso(moment) == moment.astimezone(UTC).isoformat(timespec="microseconds")
    assert len(tables._ISO_TEXTS) <= tables.ISO_CACHE
