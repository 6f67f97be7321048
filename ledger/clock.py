"""The ledger's injectable clock: every rule and every event timestamp reads it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from ledger import values

# How far the clock may read before an aggregate's last event (clock skew between hosts)
# and the command still be accepted: it is then decided and recorded at that event's time.
SKEW = timedelta(seconds=5)


class Clock(Protocol):
    """Anything that tells the time (timezone-aware)."""
    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still (for `--now`, scripted scenarios and replays)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("the clock needs a timezone-aware time")
        self.at = at

    def now(self) -> datetime:
        return self.at

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("the clock needs a timezone-aware time")
        self.at = at


def parse_instant(text: str) -> datetime:
    """A time given on the command line (`--now`, `--at`, ...): an instant as DOMAIN.md's
    Values define it (a zone, inside the ledger's range), around spaces; ValueError if not."""
    return values.parse_instant(text.strip())
