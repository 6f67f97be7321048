"""LIVE sessions of a registration, and the rules a new session must meet."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.errors import RuleBroken, ValidationFailed
from ledger.values import instant_text

OPEN_STATUSES = frozenset({"under_review", "approved"})


@dataclass
class Session:
    """One livestream session of a registration, and its review status."""
    session_id: str
    starts_at: datetime
    ends_at: datetime
    status: str = "under_review"
    duplicated_from: str | None = None
    main_category: str | None = None
    level: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        # Half-open intervals [start, end): touching end to start is not an overlap.
        return self.starts_at < ends_at and starts_at < self.ends_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "status": self.status,
            "duplicated_from": self.duplicated_from,
        }


def check_new_sessions(
    new: list[tuple[datetime, datetime]],
    existing: Iterable[Session],
    *,
    period: tuple[datetime, datetime],
    max_sessions: int,
    now: datetime,
) -> None:
    """DOMAIN.md's session rules, for sessions added together in one command."""
    open_sessions = [s for s in existing if s.is_open]
    accepted: list[Session] = []
    for index, (starts_at, ends_at) in enumerate(new):
        if not starts_at < ends_at:
            raise ValidationFailed.field(
                f"sessions[{index}].ends_at" if len(new) > 1 else "ends_at",
                "must be after starts_at",
            )
        if starts_at < period[0] or ends_at > period[1]:
            raise RuleBroken(
                "session_outside_campaign",
                f"session {instant_text(starts_at)}..{instant_text(ends_at)} is outside the "
                f"campaign period {period[0].isoformat()}..{period[1].isoformat()}",
                {"campaign_starts_at": period[0].isoformat(),
                 "campaign_ends_at": period[1].isoformat()},
            )
        if starts_at < now:
            raise RuleBroken(
                "session_in_past",
                f"session starts at {instant_text(starts_at)}, before now ({instant_text(now)})",
                {"starts_at": instant_text(starts_at), "now": instant_text(now)},
            )
        clash = next((s for s in open_sessions + accepted if s.overlaps(starts_at, ends_at)), None)
        if clash is not None:
            raise RuleBroken(
                "session_overlap",
                f"session overlaps {clash.session_id}"
                f"{' of this command' if clash in accepted else ''} "
                f"({instant_text(clash.starts_at)}..{instant_text(clash.ends_at)})",
                {"overlaps": clash.session_id},
            )
        # A session of this same command has no id yet: name it by its place in it.
        accepted.append(Session(session_id=f"sessions[{index}]", starts_at=starts_at,
                                ends_at=ends_at))
    if len(open_sessions) + len(accepted) > max_sessions:
        raise RuleBroken(
            "too_many_sessions",
            f"at most {max_sessions} sessions may be under review or approved "
            f"(has {len(open_sessions)}, adding {len(accepted)})",
            {"max_sessions": max_sessions, "open_sessions": len(open_sessions)},
        )
