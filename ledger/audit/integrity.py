"""`ledger audit verify` in full: the hash chains and seals, then what the chains vouch for
beside them (snapshots, command rows, the registrations index), and the outside anchors
(a kept root, the seal key)."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.audit import chain, rows, seals, snapshots
from ledger.store.application import LedgerApplication


@dataclass
class Checked:
    report: chain.Report
    snapshots: int = 0
    commands: int = 0


def verify(app: LedgerApplication, *, root: bytes | None = None, key: bytes | None = None,
           progress: chain.Progress | None = None) -> Checked:
    """Every check; all findings in `report.findings` (chains first). An aggregate whose
    chain is broken is reported once, by the chain: its snapshots and command rows are
    bound to differ from its events too."""
    store = app.store
    checked = Checked(chain.verify(store, progress=progress))
    findings = checked.report.findings
    broken = {f.aggregate_id for f in findings if f.aggregate_id is not None}
    checked.snapshots, found = snapshots.check_snapshots(app)
    findings.extend(f for f in found if f.aggregate_id not in broken)
    checked.commands, found = rows.check_rows(store)
    findings.extend(f for f in found if f.aggregate_id not in broken)
    if root is not None or key is not None:
        sealed = seals.list_seals(store)
        if key is not None:
            findings.extend(seals.check_signatures(sealed, key))
        if root is not None:
            findings.extend(seals.check_root(store, sealed, root))
    return checked
