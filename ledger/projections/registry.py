"""The read models, by name, and the projector that runs them over a ledger's store."""

from __future__ import annotations

import os

from ledger.projections.base import ReadModel
from ledger.projections.campaign_performance import CampaignPerformance
from ledger.projections.catchup import FLUSH_EVERY, PAGE, REBUILD_PAGE, WORKING_SET
from ledger.projections.decisions import ReviewDecisions
from ledger.projections.manage import ManageCampaign
from ledger.projections.runner import Projector
from ledger.projections.ytd import YtdPerformance
from ledger.store.application import LedgerApplication
from ledger.store.readstore import ReadStore

READ_MODELS: dict[str, type[ReadModel]] = {
    ManageCampaign.name: ManageCampaign,
    YtdPerformance.name: YtdPerformance,
    CampaignPerformance.name: CampaignPerformance,
    ReviewDecisions.name: ReviewDecisions,
}


def projector(app: LedgerApplication, page: int | None = None, *,
              flush_every: int | None = None, working_set: int = WORKING_SET,
              jobs: int | None = None, reads: ReadStore | None = None) -> Projector:
    """A projector over every read model. `page`, if given, sizes catch-up and rebuild
    pages, and a rebuild then writes every page unless `flush_every` says otherwise.
    `jobs`: processes a rebuild uses (default 1; the CLI's default is `default_jobs()`).
    `reads`: the database of the read models, when not the store's (a market's read_url)."""
    if page is None:
        return Projector(app, list(READ_MODELS.values()), page=PAGE, rebuild_page=REBUILD_PAGE,
                         flush_every=flush_every or FLUSH_EVERY, working_set=working_set,
                         jobs=jobs or 1, reads=reads)
    return Projector(app, list(READ_MODELS.values()), page=page, flush_every=flush_every,
                     working_set=working_set, jobs=jobs or 1, reads=reads)


def default_jobs() -> int:
    """Two processes when two CPUs are free, else one. The second process folds the
    performance reports of the chunks of the store it takes (`ledger.projections.share`);
    it only pays on a CPU nobody else is using."""
    cpus = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(2, cpus - round(busy)))
