"""`ledger audit verify`, `seal` and `seals`: tamper evidence over the stored events."""

from __future__ import annotations

import sys
from typing import Any

import click

from ledger.audit import chain, integrity, seals
from ledger.console.options import Settings, friendly_errors, json_option
from ledger.console.printing import Progress


def _summary(report: chain.Report, checked: integrity.Checked | None = None
             ) -> dict[str, Any]:
    extra: dict[str, Any] = {} if checked is None else {
        "snapshots": checked.snapshots, "commands": checked.commands}
    if checked is not None and checked.signatures is not None:
        extra |= {"signed_seals": checked.signatures.signed,
                  "seals_before_signing": checked.signatures.predating}
    if checked is not None:
        extra["notes"] = checked.notes
    return {"ok": report.clean, "events": report.events, "aggregates": report.aggregates,
            "seals": report.seals, **extra, "position": report.position,
            "findings": [f.as_dict() for f in report.findings]}


def _checked(report: chain.Report, checked: integrity.Checked | None = None) -> str:
    extra = "" if checked is None else (f", {checked.snapshots:,} snapshot(s) and "
                                        f"{checked.commands:,} command row(s)")
    signed = "" if checked is None or checked.signatures is None else (
        f" ({checked.signatures.signed:,} checked by signature, "
        f"{checked.signatures.predating:,} made before signing began)")
    return (f"{report.events:,} events of {report.aggregates:,} aggregates up to position "
            f"{report.position:,}{extra}, against {report.seals:,} seal(s){signed}")


def _print_findings(report: chain.Report, checked: integrity.Checked | None = None) -> None:
    for finding in report.findings:
        click.echo(finding.line())
    click.echo(f"{len(report.findings):,} finding(s) in {_checked(report, checked)}", err=True)


def _print_notes(checked: integrity.Checked) -> None:
    for note in checked.notes:
        click.echo(f"note: {note}", err=True)


def _root(_: click.Context, __: click.Parameter, value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        root = bytes.fromhex(value.strip())
    except ValueError:
        root = b""
    if len(root) != 32:
        raise click.BadParameter("must be a seal's root: 64 hex digits, as `ledger audit "
                                 "seal` printed it")
    return root


@click.command("verify")
@click.option("--root", "root", metavar="HEX", callback=_root,
              help="Also check the store against this seal root, kept outside the database "
                   "(as `ledger audit seal` printed it): the seal must still exist, unchanged.")
@json_option("One JSON document: ok, counts, and the findings (kind, aggregate_id, "
             "version, detail).")
@click.pass_obj
@friendly_errors
def audit_verify(settings: Settings, root: bytes | None, as_json: bool) -> None:
    """Prove no stored event was changed, removed, reordered or inserted.

    Every event is chained to the previous event of its aggregate by a SHA-256 hash
    written with it. This recomputes every chain from the store alone, and checks every
    seal (`ledger audit seal`), so that whole aggregates deleted or truncated since a seal
    are found too. It also re-derives every snapshot from the events, and checks that
    every command row (what a resent command is answered with) and the registrations
    index agree with the events. With LEDGER_SEAL_KEY set, every seal's signature is
    checked; unsigned seals older than the first signed one were made before signing
    began and are counted, not reported. Prints one line per finding and exits 1; on a
    clean store prints what was checked and exits 0. Notes (stderr) say what is clean
    but worth knowing: e.g. the key is set but no seal is signed yet.

    Kinds: altered, swapped, gap (version missing), unhashed (inserted outside the
    ledger), deleted_event (its hash row remains), deleted / truncated / rewritten
    (against a seal), seal_altered, snapshot_altered, command_altered, command_missing,
    index_altered, seal_forged, seal_unsigned (with the key), root_not_found (--root).

    \b
    Examples:
      $ ledger audit verify
      aggregate 5f1c...e2 version 3: altered: hash differs: the stored topic or state was changed
      $ ledger audit verify --root 9c2e41...   # the root you kept from `ledger audit seal`
    """
    with Progress() as bar:
        checked = settings.ledger().verify(root=root, progress=bar)
    report = checked.report
    if as_json:
        settings.printer.document(_summary(report, checked))
    elif report.clean:
        click.echo(f"verified {_checked(report, checked)}: nothing altered")
    else:
        _print_findings(report, checked)
    if not as_json:
        _print_notes(checked)
    sys.exit(0 if report.clean else 1)


@click.command("seal")
@json_option("One JSON document: ok, seal_id, position, aggregates, events, root (hex), "
             "signed.")
@click.pass_obj
@friendly_errors
def audit_seal(settings: Settings, as_json: bool) -> None:
    """Verify the store, then record a checkpoint later `verify` runs check against.

    The seal holds the store position, every aggregate's head (id, version, hash) and a
    Merkle root over those heads. Deleting or truncating a whole aggregate leaves no broken
    link behind; a seal makes it visible. The seal lives in the database it vouches for:
    keep the printed root somewhere else too (a ticket, an e-mail), and check against it
    with `ledger audit verify --root HEX`. With LEDGER_SEAL_KEY set (a secret kept outside
    the database) the seal is signed (HMAC-SHA256), and `verify` with the key then finds a
    seal forged or changed by anyone without it. A store where `verify` finds anything is
    not sealed (exit 1): `seal` runs every check `verify` runs (chains, seals,
    snapshots, command rows, the registrations index, signatures with the key).

    \b
    Example:
      $ LEDGER_SEAL_KEY=... ledger audit seal
      sealed #4 at position 18,230: 1,204 aggregates, 18,230 events, signed
      root 9c2e41...
    """
    key = seals.key_from_env()  # only to say whether the seal is signed
    with Progress() as bar:
        checked, sealed = settings.ledger().seal(progress=bar)
    if sealed is None:
        if as_json:
            settings.printer.document({**_summary(checked.report, checked), "seal_id": None})
        else:
            _print_findings(checked.report, checked)
            click.echo("not sealed: fix or explain the findings above first", err=True)
        sys.exit(1)
    if as_json:
        settings.printer.document({
            "ok": True, "seal_id": sealed.seal_id, "position": sealed.position,
            "aggregates": sealed.aggregates, "events": sealed.events, "root": sealed.root,
            "signed": key is not None})
        return
    click.echo(f"sealed #{sealed.seal_id} at position {sealed.position:,}: "
               f"{sealed.aggregates:,} aggregates, {sealed.events:,} events, "
               f"{'signed' if key else 'not signed (LEDGER_SEAL_KEY is not set)'}")
    click.echo(f"root {sealed.root}")
    click.echo("Keep this root outside the database (a ticket, an e-mail); later, "
               f"`ledger audit verify --root {sealed.root}` checks the store against it.",
               err=True)


@click.command("seals")
@json_option("JSON Lines: one object per seal (seal_id, sealed_at, position, "
             "aggregates, events, root, signed).")
@click.pass_obj
@friendly_errors
def audit_seals(settings: Settings, as_json: bool) -> None:
    """List the seals, oldest first: id, time, store position, counts, root, signed.

    Whether a signature is valid is checked by `ledger audit verify` with LEDGER_SEAL_KEY.

    \b
    Example:
      $ ledger audit seals
      seal_id  sealed_at             position  aggregates  events  signed  root
      1        2026-10-05T09:30:00Z  18230     1204        18230   yes     9c2e41...
    """
    rows = [row.as_dict() for row in settings.ledger().seals()]
    if as_json:
        settings.printer.lines(rows)
        return
    for row in rows:
        row["signed"] = "yes" if row["signed"] else "no"
    settings.printer.table(rows, ["seal_id", "sealed_at", "position", "aggregates", "events",
                                  "signed", "root"])
