"""`ledger projections status|catch-up|run|rebuild|verify`: the read models' lifecycle."""

from __future__ import annotations

import signal
import sys
import threading
import time

import click

from ledger.console.options import Settings, friendly_errors, json_option, read_model_names
from ledger.console.printing import Progress
from ledger.console.projections_verify import projections_verify
from ledger.errors import StoreUnavailable
from ledger.projections.registry import READ_MODELS, default_jobs


@click.group()
def projections() -> None:
    """Read models: status, catch up, follow new events, rebuild from the first event."""


@projections.command("status")
@json_option("JSON Lines: one object per read model.")
@click.option("--all-markets", is_flag=True,
              help="Every market of --config, a `market` column first; a market whose store "
                   "does not answer is one line on stderr (exit 2 at the end).")
@click.pass_obj
@friendly_errors
def projections_status(settings: Settings, as_json: bool, all_markets: bool) -> None:
    """Each read model's position, the store's head, the lag, when it last advanced.

    \b
    Examples:
      ledger projections status
      ledger --config markets.toml --market th projections status
      ledger --config markets.toml projections status --all-markets
    """
    columns = ["name", "position", "head", "lag", "last_advanced_at", "skipped_unknown",
               "rebuild_in_progress"]
    failed = False
    if all_markets:
        report = []
        for market in settings.all_markets():
            try:
                rows = market.projector().status()
            except StoreUnavailable as e:
                click.echo(f"Error: market {market.market_code}: {e}", err=True)
                failed = True
                continue
            report += [{"market": market.market_code, **row} for row in rows]
        columns.insert(0, "market")
    else:
        report = settings.projector().status()
    if as_json:
        settings.printer.lines(report)
    else:
        settings.printer.table(report, columns)
    if failed:
        sys.exit(2)


@projections.command("catch-up")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@json_option("One JSON document: read_models, events, seconds, position.")
@click.pass_obj
@friendly_errors
def projections_catch_up(settings: Settings, names: tuple[str, ...], as_json: bool) -> None:
    """Apply every event recorded since each read model's position, then exit.

    \b
    Examples:
      ledger projections catch-up manage_campaign
      ledger projections catch-up --json
    """
    chosen = read_model_names(names)
    p = settings.projector()
    started = time.monotonic()
    with Progress() as bar:
        done = p.catch_up(chosen, progress=bar)
    took = time.monotonic() - started
    if as_json:
        settings.printer.document({"read_models": chosen or list(READ_MODELS), "events": done,
                                   "seconds": round(took, 3), "position": p.head()})
        return
    click.echo(f"caught up {done:,} events in {took:.1f}s; position {p.head():,}")


@projections.command("run")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--interval", default=0.2, show_default=True, help="Seconds between polls.")
@json_option("JSON Lines on stdout as it goes: {\"advanced_to\": P} each time the read "
             "models advance, {\"stopped_at\": P} when stopped.")
@click.pass_obj
@friendly_errors
def projections_run(settings: Settings, names: tuple[str, ...], interval: float,
                    as_json: bool) -> None:
    """Keep the read models current until interrupted (Ctrl-C or SIGTERM stops cleanly).

    Each page is written with its position in one transaction, so stopping at any moment
    loses nothing; the next run carries on where this one stopped. Stopped, it prints
    the position reached and exits 0.

    \b
    Examples:
      ledger projections run
      ledger projections run --json | jq .advanced_to
    """
    chosen = read_model_names(names)
    p = settings.projector()
    click.echo(f"following {settings.ledger().url} (Ctrl-C to stop)", err=True)

    def say(key: str, position: int) -> None:
        if as_json:
            settings.printer.lines([{key: position}])
        else:
            click.echo(f"{key.replace('_', ' ')} position {position:,}", err=True)

    # Ctrl-C or SIGTERM (a service manager's stop) asks the runner to stop between pages;
    # an exception raised wherever the signal lands could leave the store's connection
    # pool holding its writer (and the status read below would then wait for it). A
    # second signal interrupts at once; each page is one transaction either way.
    stop = threading.Event()

    def ask_to_stop(_signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        p.run(chosen, interval=interval, should_stop=stop.is_set,
              on_advance=lambda at: say("advanced_to", at))
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one more while finishing: no traceback
    reached = min(row["position"] for row in p.status()
                  if chosen is None or row["name"] in chosen)
    say("stopped_at", reached)


@projections.command("rebuild")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--restart", is_flag=True,
              help="Throw away an interrupted rebuild instead of resuming it.")
@click.option("--jobs", type=click.IntRange(1, 8), default=None,
              help="Processes to rebuild with: the others fold performance reports "
                   "alongside this one (or, when the read models chosen read no reports, "
                   "each takes a group of read models) [default: 2 when two CPUs are "
                   "free (1-minute load average), else 1].")
@click.option("--wait", is_flag=True,
              help="If another rebuild of this store is running, wait for it to end "
                   "(default: stop at once, naming it).")
@json_option("One JSON document: read_models, events, seconds, events_per_second, position.")
@click.pass_obj
@friendly_errors
def projections_rebuild(settings: Settings, names: tuple[str, ...], restart: bool,
                        jobs: int | None, wait: bool, as_json: bool) -> None:
    """Rebuild read models from the first event, then swap them in atomically.

    Readers keep seeing the old tables until the new ones are complete. An interrupted
    rebuild leaves the old tables in place; running it again resumes it (in one
    process). With two free CPUs a second process adds up the performance reports of
    the parts of the store it takes, while this one applies everything else. One
    rebuild at a time per store: another one running is named in one line (or waited
    for, with --wait).

    Example: ledger projections rebuild ytd_performance
    """
    chosen = read_model_names(names)
    p = settings.projector()
    started = time.monotonic()
    with Progress() as bar:
        done = p.rebuild(chosen, restart=restart, progress=bar, jobs=jobs or default_jobs(),
                         wait=wait)
    took = time.monotonic() - started
    rate = done / took if took else 0
    if as_json:
        settings.printer.document({"read_models": chosen or list(READ_MODELS), "events": done,
                                   "seconds": round(took, 3), "events_per_second": round(rate),
                                   "position": p.head()})
        return
    click.echo(f"rebuilt {', '.join(chosen or READ_MODELS)}: {done:,} events in {took:.1f}s "
               f"({rate:,.0f} events/s); position {p.head():,}")


projections.add_command(projections_verify)
