"""ledger: an event-sourced ledger for marketplace livestream campaigns."""

from __future__ import annotations

from ledger.clock import Clock, FixedClock, SystemClock
from ledger.errors import GroupUnavailable, LedgerError, StoreUnavailable
from ledger.ledger import Ledger

__all__ = ["Clock", "FixedClock", "GroupUnavailable", "Ledger", "LedgerError",
           "StoreUnavailable", "SystemClock"]
