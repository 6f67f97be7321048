"""The write plan: what a command writes beside its events, typed from handler to recorder.

A handler decides; its `Outcome` carries a `WritePlan`; `Ledger` adds the command's row
and hands the plan to `Application.save(*aggregates, plan=plan)`, which the library passes
down to our recorder's `_insert_events` inside its insert transaction. There the recorder
writes the plan's rows and checks its guards under the write lock (`recorders.py`). One
keyword, one type: nothing travels as loose keyword arguments read back by string key.

A guard is a fact the command read that must still hold when it writes; a guard that no
longer holds raises `GuardFailed` and the command runs again on fresh state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger.jsontext import compact


@dataclass(frozen=True)
class CommandRow:
    """`ledger_commands`: what makes a resent command a replay."""

    command_id: str
    fingerprint: str
    aggregate_id: str  # the aggregate's UUID, as text
    version: int | None
    result: dict[str, Any]
    recorded_at: datetime

    def values(self) -> tuple[Any, ...]:
        """The row as `ledger_commands` stores it (its columns, in order)."""
        return (self.command_id, self.fingerprint, self.aggregate_id, self.version,
                compact(self.result), self.recorded_at.isoformat())


@dataclass(frozen=True)
class RegistrationRow:
    """`ledger_registrations`: (campaign, account) → registration, read by expiry."""

    registration_id: str
    campaign_id: str
    account_id: str
    seller_id: str


@dataclass(frozen=True)
class ReportRow:
    """`ledger_reports`: a report recorded on a registration (its `PerformanceRecorded`
    event's version), read to tell a report sent again."""

    registration_id: UUID
    report_id: str
    version: int


@dataclass(frozen=True)
class CampaignNotExpired:
    """The campaign's last event is not its `Expired` (a registration or a session must
    not land in a campaign that expired after the command decided)."""

    campaign_id: UUID
    expired_topic: str


@dataclass(frozen=True)
class RegistrationCount:
    """The campaign still has the registrations the command read (expiry against a
    `register` committing between its read and its write)."""

    campaign_id: str
    count: int


@dataclass(frozen=True)
class Unchanged:
    """These aggregates are still at the versions read (registrations an expiry skipped
    because nothing of them was open must not have been reopened meanwhile)."""

    versions: dict[UUID, int]


Guard = CampaignNotExpired | RegistrationCount | Unchanged


class GuardFailed(IntegrityError):
    """What a command read changed before it could write: run it again."""


@dataclass(frozen=True)
class WritePlan:
    """Rows written and guards checked in the same transaction as the events."""

    commands: tuple[CommandRow, ...] = ()  # one per command (many: bench's bulk writer)
    registrations: tuple[RegistrationRow, ...] = ()
    guards: tuple[Guard, ...] = field(default=())
    reports: tuple[ReportRow, ...] = ()

    def with_command(self, command: CommandRow) -> WritePlan:
        return WritePlan((*self.commands, command), self.registrations, self.guards,
                         self.reports)

    @property
    def empty(self) -> bool:
        return (not self.commands and not self.registrations and not self.guards
                and not self.reports)
