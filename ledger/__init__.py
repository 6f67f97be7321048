"""ledger: an event-sourced ledger for marketplace livestream campaigns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.clock import Clock, FixedClock, SystemClock
from ledger.errors import GroupUnavailable, LedgerError, StoreUnavailable

if TYPE_CHECKING:
    from ledger.ledger import Ledger

__all__ = ["Clock", "FixedClock", "GroupUnavailable", "Ledger", "LedgerError",
           "StoreUnavailable", "SystemClock"]


def __getattr__(name: str) -> Any:
    # The facade is imported when asked for, not with every module of the package: a
    # rebuild's helper process (`ledger.projections.share`) needs the store and the read
    # models only, and starts in half the time.
    if name == "Ledger":
        from ledger.ledger import Ledger

        return Ledger
    raise AttributeError(f"module 'ledger' has no attribute {name!r}")
