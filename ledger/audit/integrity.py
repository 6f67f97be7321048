"""`ledger audit verify` in full: the hash chains and seals, then what the chains vouch for
beside them (snapshots, command rows, the registrations index), and the outside anchors
(a kept root, the seal key). `ledger audit seal` runs the same checks before sealing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ledger.audit import chain, rows, seals, snapshots
from ledger.store.application import LedgerApplication


@dataclass
class Checked:
    """A verify pass over the chains and everything beside them (snapshots, commands, seals)."""
    report: chain.Report
    snapshots: int = 0
    unkeyed_snapshots: int = 0  # equal to their events, hashed before the key was set
    commands: int = 0
    signatures: seals.Signatures | None = None  # with the key
    notes: list[str] = field(default_factory=list)


def verify(app: LedgerApplication, *, root: bytes | None = None, key: bytes | None = None,
           progress: chain.Progress | None = None) -> Checked:
    """Every check; all findings in `report.findings` (chains first)."""
    checked = Checked(chain.verify(app.store, progress=progress))
    _beside(app, checked, key)
    if root is not None:
        sealed = seals.list_seals(app.store)
        checked.report.findings.extend(seals.check_root(app.store, sealed, root))
    return checked


def seal(app: LedgerApplication, now: datetime, *, key: bytes | None = None,
         progress: chain.Progress | None = None) -> tuple[Checked, chain.Seal | None]:
    """Seal (signed with `key`) only if every check `verify` runs finds nothing."""
    checked = Checked(chain.Report())

    def beside(report: chain.Report) -> None:
        checked.report = report
        _beside(app, checked, key)

    _, sealed = chain.seal(app.store, now, progress=progress,
                           sign=None if key is None else seals.signer(key), beside=beside)
    return checked, sealed


def _beside(app: LedgerApplication, checked: Checked, key: bytes | None) -> None:
    """The checks after the chains'. An aggregate whose chain is broken is reported once,
    by the chain: its snapshots and command rows are bound to differ from its events too."""
    findings = checked.report.findings
    broken = {f.aggregate_id for f in findings if f.aggregate_id is not None}
    found = snapshots.check_snapshots(app, key)
    checked.snapshots, checked.unkeyed_snapshots = found.checked, found.unkeyed
    findings.extend(f for f in found.findings if f.aggregate_id not in broken)
    checked.commands, commands = rows.check_rows(app.store)
    findings.extend(f for f in commands if f.aggregate_id not in broken)
    if key is not None:
        checked.signatures = seals.check_signatures(seals.list_seals(app.store), key)
        findings.extend(checked.signatures.findings)
        if checked.signatures.note is not None:
            checked.notes.append(checked.signatures.note)
    if checked.unkeyed_snapshots:
        checked.notes.append(
            f"{checked.unkeyed_snapshots} snapshot(s) agree with their events but were hashed "
            "before LEDGER_SEAL_KEY was set: loads replay those aggregates' events instead")
