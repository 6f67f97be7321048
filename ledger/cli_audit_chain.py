"""`ledger audit verify` and `ledger audit seal`: tamper evidence over the stored events."""

from __future__ import annotations

import sys
from typing import Any

import click

from ledger.audit import chain
from ledger.cli import Settings, friendly_errors
from ledger.cli_audit import audit
from ledger.cli_read import ProgressBar
from ledger.views import dumps


def _summary(report: chain.Report) -> dict[str, Any]:
    return {"ok": report.clean, "events": report.events, "aggregates": report.aggregates,
            "seals": report.seals, "position": report.position,
            "findings": [f.as_dict() for f in report.findings]}


def _checked(report: chain.Report) -> str:
    return (f"{report.events:,} events of {report.aggregates:,} aggregates up to position "
            f"{report.position:,}, against {report.seals:,} seal(s)")


def _print_findings(report: chain.Report) -> None:
    for finding in report.findings:
        click.echo(finding.line())
    click.echo(f"{len(report.findings):,} broken link(s) in {_checked(report)}", err=True)


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: ok, counts, and the findings (kind, aggregate_id, "
                   "version, detail).")
@click.pass_obj
@friendly_errors
def audit_verify(settings: Settings, as_json: bool) -> None:
    """Prove no stored event was changed, removed, reordered or inserted.

    Every event is chained to the previous event of its aggregate by a SHA-256 hash
    written with it. This recomputes every chain from the store alone, and checks every
    seal (`ledger audit seal`), so that whole aggregates deleted or truncated since a seal
    are found too. Prints one line per aggregate with a broken link (its first one) and
    exits 1; on a clean store prints what was checked and exits 0.

    Kinds: altered, swapped, gap (version missing), unhashed (inserted outside the
    ledger), deleted_event (its hash row remains), deleted / truncated / rewritten
    (against a seal), seal_altered.

    \b
    Example:
      $ ledger audit verify
      aggregate 5f1c...e2 version 3: altered: hash differs: the stored topic or state was changed
    """
    bar = ProgressBar()
    report = chain.verify(settings.ledger().app.store, progress=bar)
    bar.close()
    if as_json:
        click.echo(dumps(_summary(report)))
    elif report.clean:
        click.echo(f"verified {_checked(report)}: nothing altered")
    else:
        _print_findings(report)
    sys.exit(0 if report.clean else 1)


@audit.command("seal")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: ok, seal_id, position, aggregates, events, root (hex).")
@click.pass_obj
@friendly_errors
def audit_seal(settings: Settings, as_json: bool) -> None:
    """Verify the store, then record a checkpoint later `verify` runs check against.

    The seal holds the store position, every aggregate's head (id, version, hash) and a
    Merkle root over those heads. Deleting or truncating a whole aggregate leaves no broken
    link behind; a seal makes it visible. Keep the printed root somewhere else too (a
    ticket, an e-mail): it vouches for the whole store as of the seal. A store where
    `verify` finds anything is not sealed (exit 1).

    \b
    Example:
      $ ledger audit seal
      sealed #4 at position 18,230: 1,204 aggregates, 18,230 events, root 9c2e41...
    """
    ledger = settings.ledger()
    bar = ProgressBar()
    report, sealed = chain.seal(ledger.app.store, ledger.clock.now(), progress=bar)
    bar.close()
    if sealed is None:
        if as_json:
            click.echo(dumps({**_summary(report), "seal_id": None}))
        else:
            _print_findings(report)
            click.echo("not sealed: fix or explain the findings above first", err=True)
        sys.exit(1)
    if as_json:
        click.echo(dumps({"ok": True, "seal_id": sealed.seal_id, "position": sealed.position,
                          "aggregates": sealed.aggregates, "events": sealed.events,
                          "root": sealed.root}))
        return
    click.echo(f"sealed #{sealed.seal_id} at position {sealed.position:,}: "
               f"{sealed.aggregates:,} aggregates, {sealed.events:,} events, "
               f"root {sealed.root}")
