"""`ledger audit verify` and `ledger audit seal`: tamper evidence over the stored events."""

from __future__ import annotations

from ledger.cli_audit import audit  # noqa: F401
