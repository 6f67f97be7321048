"""The ledger's errors: one class per error code of DOMAIN.md.

```text
LedgerError (code)                     refusals: a result with ok=false, nothing written
├── InvalidJson            invalid_json
├── ValidationFailed       validation_error   details: [{"field", "message"}...]
├── NotFound               not_found
├── Forbidden              forbidden
├── Conflict               conflict
├── ClockBehind            clock_behind       details: aggregate, aggregate_id, last_recorded_at,
│                                             clock, behind_seconds
└── RuleBroken             a DOMAIN.md rule, its code given per instance:
                           already_exists, registration_closed, already_registered,
                           category_not_allowed, level_not_offered, invalid_transition,
                           duplicates_not_allowed, campaign_ended, override_required,
                           campaign_not_ended, session_outside_campaign, session_in_past,
                           session_overlap, too_many_sessions

StoreUnavailable                       not a refusal: the store cannot be reached
└── GroupUnavailable                   ... while writing many commands: `done` of them
                                       have their final results; resend from the next
```
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from ledger.values import instant_text

RuleCode = Literal[
    "already_exists",
    "registration_closed",
    "already_registered",
    "category_not_allowed",
    "level_not_offered",
    "invalid_transition",
    "duplicates_not_allowed",
    "campaign_ended",
    "override_required",
    "campaign_not_ended",
    "session_outside_campaign",
    "session_in_past",
    "session_overlap",
    "too_many_sessions",
]


class LedgerError(Exception):
    """A refused command: `code` is the DOMAIN.md error code."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: Any = details if details is not None else {}

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidJson(LedgerError):
    """The input is not JSON."""
    code = "invalid_json"


class ValidationFailed(LedgerError):
    """The input is JSON but a field is missing, unknown or wrong."""
    code = "validation_error"

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"{field}: {message}", [{"field": field, "message": message}])


class NotFound(LedgerError):
    """No campaign, registration or session has that id."""
    code = "not_found"


class Forbidden(LedgerError):
    """The actor may not do this."""
    code = "forbidden"


class Conflict(LedgerError):
    """Someone else wrote first (a stale expected version), or holds the lock."""
    code = "conflict"


class ClockBehind(LedgerError):
    """The clock reads earlier than the last event of an aggregate the command writes
    (by more than the skew the ledger absorbs): recording now would make time go back."""

    code = "clock_behind"

    def __init__(self, aggregate: str, aggregate_id: str, last: datetime,
                 clock: datetime) -> None:
        behind = (last - clock).total_seconds()
        super().__init__(
            f"the clock reads {instant_text(clock)}, {behind:g} s before the last event of "
            f"{aggregate} {aggregate_id} (recorded at {instant_text(last)}): recorded times "
            "never go backwards; fix the clock (or --now) and send it again",
            {"aggregate": aggregate, "aggregate_id": aggregate_id,
             "last_recorded_at": instant_text(last), "clock": instant_text(clock),
             "behind_seconds": behind})
        self.last = last
        self.clock = clock


class RuleBroken(LedgerError):
    """A business rule of DOMAIN.md refused the command."""

    def __init__(self, code: RuleCode, message: str, details: Any = None) -> None:
        super().__init__(message, details)
        self.rule_code = code

    def as_error(self) -> dict[str, Any]:
        return {"code": self.rule_code, "message": self.message, "details": self.details}


def first_line(error: BaseException) -> str:
    """An exception as one line, for messages that must not become tracebacks."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class StoreUnavailable(Exception):
    """The event store cannot be reached or opened (a one-line message names it;
    `headline` is its cause alone, without advice on resending)."""

    def __init__(self, message: str, headline: str | None = None) -> None:
        super().__init__(message)
        self.headline = headline or message


class GroupUnavailable(StoreUnavailable):
    """The store failed while a group of commands was written (`Ledger.send_group`,
    `send_many`): the first `done` commands have their final results (stored, refused or
    replayed) and nothing of the others was stored. Resending from command `done + 1` is
    enough; resending them all is safe too (stored commands replay)."""

    def __init__(self, fault: str, done: int) -> None:
        self.fault = fault
        self.done = done
        resend = (f"; the first {done} commands are done, resend from command {done + 1}"
                  " (sending them all again is safe too)" if done
                  else "; sending the same commands again is safe")
        super().__init__(f"{fault}{resend}", fault)

    def after(self, earlier: int) -> GroupUnavailable:
        """The same failure, counted in a stream where `earlier` commands came first."""
        return GroupUnavailable(self.fault, self.done + earlier)
