"""The read side of `Ledger`: state in the `show` shapes, history, as-of, audit, read models.

Both faces (the command line and the service) read through these methods, never through
the store: what "show a campaign" means is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ledger.aggregates.base import campaign_uuid
from ledger.aggregates.campaign import Campaign
from ledger.aggregates.registration import Registration
from ledger.audit import decisions as audit_decisions
from ledger.audit import history as audit_history
from ledger.audit import integrity
from ledger.audit import seals as sealing
from ledger.audit.chain import Progress
from ledger.clock import Clock
from ledger.commands.context import A, Reader, load, visible_to
from ledger.errors import NotFound
from ledger.projections.registry import projector
from ledger.projections.runner import Projector
from ledger.shapes import campaign_state, event_record, registration_state
from ledger.store.application import LedgerApplication
from ledger.store.readstore import ReadStore

if TYPE_CHECKING:  # pyarrow is an extra: imported only when an export runs
    from ledger.exports.eventlog import Summary


class LedgerReads:
    """What the ledger answers without writing: replayed from events, or from read models."""

    app: LedgerApplication
    clock: Clock
    read_store: ReadStore | None  # where the read models are, when not beside the events

    def campaign(self, campaign_id: str, version: int | None = None) -> Campaign:
        return self._load(campaign_uuid(campaign_id), Campaign, f"campaign {campaign_id!r}",
                          version)

    def registration(self, registration_id: str, version: int | None = None, *,
                     reader: Reader | None = None) -> Registration:
        """The registration; as `reader` sees it when given (another seller's is not_found)."""
        try:
            reg_uuid = UUID(registration_id)
        except ValueError:
            raise NotFound(f"registration {registration_id!r} not found") from None
        reg = self._load(reg_uuid, Registration, f"registration {registration_id!r}", version)
        return reg if reader is None else visible_to(reg, registration_id, reader)

    def _load(self, aggregate_id: UUID, kind: type[A], label: str, version: int | None) -> A:
        return load(self.app, aggregate_id, kind, label, version)

    def campaign_state(self, campaign_id: str) -> dict[str, Any]:
        """`ledger show campaign` / `GET /v1/campaigns/{id}`: status now, and registrations."""
        campaign = self.campaign(campaign_id)
        count = len(self.app.store.registrations_of(campaign_id))
        return campaign_state(campaign, self.clock.now(), count)

    def registration_state(self, registration_id: str, *,
                           reader: Reader | None = None) -> dict[str, Any]:
        """`ledger show registration` / `GET /v1/registrations/{id}`, as `reader` sees it."""
        return registration_state(self.registration(registration_id, reader=reader))

    def resolve(self, public_id: str) -> UUID:
        """A registration id (UUID) or a campaign id (slug) → the aggregate's UUID."""
        return audit_history.target(self, public_id).aggregate_id

    def events_of(self, public_id: str) -> list[Any]:
        return list(self.app.events.get(self.resolve(public_id)))

    def event_records(self, public_id: str) -> Iterator[dict[str, Any]]:
        """`ledger events`: each stored event as a record (version, time, type, actor...)."""
        return map(event_record, self.events_of(public_id))

    # The audit: from the event store itself ----------------------------------------------

    def history(self, public_id: str) -> Iterator[dict[str, Any]]:
        return audit_history.history(self, public_id)

    def as_of(self, public_id: str, *, at: datetime | None = None,
              version: int | None = None) -> audit_history.AsOf:
        return audit_history.as_of(self, public_id, at=at, version=version)

    def decisions(self, filters: audit_decisions.Filters) -> Iterator[dict[str, Any]]:
        return audit_decisions.decisions(self, filters)

    def findings(self, filters: audit_decisions.Filters) -> Iterator[dict[str, Any]]:
        return audit_decisions.findings(self, filters)

    def verify(self, *, root: bytes | None = None,
               progress: Progress | None = None) -> integrity.Checked:
        """Every tamper check (`ledger audit verify`), with LEDGER_SEAL_KEY if it is set."""
        return integrity.verify(self.app, root=root, key=sealing.key_from_env(),
                                progress=progress)

    def seals(self) -> list[sealing.SealRow]:
        """The seals, oldest first (`ledger audit seals`)."""
        return sealing.list_seals(self.app.store)

    # Read models ----------------------------------------------------------------------------

    def projector(self) -> Projector:
        """The read models over this store: status, catch-up, rebuild, and their views."""
        return projector(self.app, reads=self.read_store)

    # Exports ----------------------------------------------------------------------------------

    def export_events(self, folder: Path, market: str = "default", *,
                      commit_every: int = 100_000,
                      progress: Callable[[int, int], None] | None = None) -> Summary:
        """The events recorded since the last export into `folder`, as Parquet partitions
        (`ledger export events --format parquet`; needs the `parquet` extra)."""
        from ledger.exports.eventlog import export_events

        return export_events(self, folder, market, commit_every=commit_every,
                             progress=progress)
