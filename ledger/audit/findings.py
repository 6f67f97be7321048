"""What verify reports: a broken link (`Finding`) and the tally of a pass (`Report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class Finding:
    """A broken link: `aggregate_id` (None for a seal itself), the version, what differs.

    `kind`: altered, swapped, gap, unhashed, deleted_event (the chain itself); deleted,
    truncated, rewritten (an aggregate against a seal); seal_altered (a seal's own rows).
    """

    kind: str
    aggregate_id: UUID | None
    version: int | None
    detail: str

    def line(self) -> str:
        if self.aggregate_id is None:
            return f"{self.kind}: {self.detail}"
        return f"aggregate {self.aggregate_id} version {self.version}: {self.kind}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "aggregate_id": str(self.aggregate_id or "") or None,
                "version": self.version, "detail": self.detail}


@dataclass
class Report:
    """The tally of a verify pass: what was read, and every finding."""
    events: int = 0
    aggregates: int = 0
    seals: int = 0
    position: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

