"""A command's result dict, built one way for the one-command path and the group path.

- `admit`: JSON text or a dict → a `Command`, or at once its refusal (`invalid_json`,
  `validation_error`, `forbidden`);
- `accepted` / `command_row`: an accepted command's result and the `ledger_commands` row
  that makes a resent copy replay it;
- `replayed`: what a stored command row answers to a command with the same id (its
  result, `replayed: true`; or `conflict` when the body differs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.commands.context import Outcome
from ledger.commands.parse import (
    Command,
    command_id_of,
    load_json,
    may_hold_nul,
    parse_command,
)
from ledger.commands.schemas import ROLES
from ledger.errors import Conflict, Forbidden, LedgerError
from ledger.store.application import LedgerApplication
from ledger.store.plan import CommandRow

Result = dict[str, Any]


def refused(command_id: str | None, error: LedgerError) -> Result:
    """A refusal: `ok: false` and the error's code, message and details."""
    return {"ok": False, "command_id": command_id, "error": error.as_error()}


def admit(command: dict[str, Any] | str | bytes) -> Command | Result:
    """The parsed command if its JSON, fields and actor's role are right, else its refusal."""
    data: Any = command
    nul_free = False
    try:
        if isinstance(command, str | bytes):
            data = load_json(command)
            nul_free = not may_hold_nul(command)
        parsed = parse_command(data, nul_free=nul_free)
        if parsed.actor.role not in ROLES[parsed.name]:
            raise Forbidden(f"a {parsed.actor.role} may not {parsed.name}",
                            {"role": parsed.actor.role, "allowed": sorted(ROLES[parsed.name])})
    except LedgerError as e:
        return refused(command_id_of(data), e)
    return parsed


def accepted(command: Command, outcome: Outcome) -> Result:
    """The result of an accepted command (before its events are collected), no position."""
    return {
        "ok": True,
        "command_id": command.command_id,
        "aggregate_id": outcome.aggregate_id,
        "version": outcome.main.version,
        "events": outcome.event_names(),
        "replayed": False,
    }


def command_row(command: Command, fingerprint: str, outcome: Outcome, result: Result,
                at: datetime) -> CommandRow:
    """The `ledger_commands` row written with the command's events."""
    return CommandRow(command_id=command.command_id, fingerprint=fingerprint,
                      aggregate_id=str(outcome.main.id), version=outcome.main.version,
                      result=result, recorded_at=at)


def reused(command_id: str) -> Result:
    """`conflict`: the command_id was already used for a different command."""
    return refused(command_id, Conflict(
        f"command_id {command_id!r} was already used for a different command",
        {"command_id": command_id, "reason": "command_id_reused"}))


def replayed(app: LedgerApplication, fingerprint: str, stored: CommandRow) -> Result:
    """The stored result with `replayed: true` (its position looked up), or `conflict`
    when the stored command's body differs."""
    if stored.fingerprint != fingerprint:
        return reused(stored.command_id)
    position = None
    if stored.version is not None and stored.result.get("events"):
        position = app.store.position_of(stored.aggregate_id, stored.version)
    return {**stored.result, "replayed": True, "position": position}
