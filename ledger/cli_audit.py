"""`ledger audit ...`: replay history, state as of a moment, decisions, tamper evidence."""

from __future__ import annotations

from ledger.cli import main


@main.group()
def audit() -> None:
    """Audit from the event store itself (never from read models that may lag)."""


from ledger import cli_audit_chain  # noqa: E402, F401  (verify, seal)
