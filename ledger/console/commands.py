"""`ledger send`, `ledger show campaign|registration` and `ledger events`: the write side's
commands and the state replayed from events."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import click

from ledger.console.groups import Groups, Read, progress, watched
from ledger.console.options import Settings, friendly_errors, json_option
from ledger.console.streams import OutputFailed, reader_gone
from ledger.errors import GroupUnavailable, InvalidJson, StoreUnavailable
from ledger.ledger import refused

GROUP_SIZE = 200  # commands per transaction unless --group-size says otherwise
GROUP_WAIT_MS = 50  # how long a group waits for more input before it is run


@click.command()
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--group-size", type=click.IntRange(1, 10_000), default=GROUP_SIZE,
              show_default=True, metavar="N",
              help="Commit up to N commands in one transaction (faster; results are the "
                   "same as one at a time). 1: one transaction per command.")
@click.option("--group-wait-ms", type=click.IntRange(0, 60_000), default=GROUP_WAIT_MS,
              show_default=True, metavar="MS",
              help="When the input pauses (a pipe from another program), run the commands "
                   "that have come after waiting at most MS milliseconds for more.")
@json_option("Accepted for uniformity: the results are always JSON Lines.")
@click.pass_obj
@friendly_errors
def send(settings: Settings, source: BinaryIO, group_size: int, group_wait_ms: int,
         as_json: bool) -> None:
    """Execute commands: JSON Lines (one per line), or pretty-printed JSON commands.

    Reads SOURCE (a file, or - for standard input) and prints one JSON result per
    command, in input order, as soon as it is known. Commands are committed in groups
    (--group-size) with the results each would get sent one at a time; when the input
    pauses, what has come is run after --group-wait-ms, so a program can write a
    command, read its result, then write the next. A refusal also names its input
    `line`. On a terminal, a large file shows a progress bar on stderr while the results
    go to a file or a pipe.

    Exit status: 0 all accepted, 1 any refused, 2 unusable input (a line that is not
    JSON, not UTF-8 or not a valid command), the store unavailable, or the results
    cannot be written (one `Error:` line names the input line to send again from;
    sending the same input again is safe: what was stored comes back as replays).

    \b
    Examples:
      ledger send season.jsonl > results.jsonl
      ledger send --group-size 1 - < commands.jsonl     # one transaction per command
      echo '{"command": "expire_campaign", "command_id": "exp-1111",
             "actor": {"id": "ops-1", "role": "operator"},
             "payload": {"campaign_id": "1111-mega-live"}}' | ledger send -
    """
    try:
        ledger = settings.ledger()
    except StoreUnavailable as e:
        raise StoreUnavailable(f"{e}; no command was run, sending them again is safe") from None
    worst, done = 0, 0
    send_group = ledger.group_sender()  # one stream: a group reuses what the last committed
    with progress(source, watched(as_json)) as advance:
        for group in Groups(source, group_size, group_wait_ms / 1000):
            first = group[0].document.line
            if reader_gone(sys.stdout):  # `| head` has read enough: run nothing more
                raise OutputFailed("its reader closed the pipe", "the results",
                                   _not_run(first, done))
            results = _run(send_group, group, done)
            try:
                settings.printer.lines(results, together=True)
            except OutputFailed as e:
                where = _not_printed(first, group[-1].document.line)
                raise e.stopped("the results", where) from None
            for result in results:
                if not result["ok"]:
                    unusable = result["error"]["code"] in ("invalid_json", "validation_error")
                    worst = max(worst, 2 if unusable else 1)
            done += len(group)
            advance(group[-1].offset, done)
    sys.exit(worst)


def _run(send_group: Callable[[list[str]], list[dict[str, Any]]], group: list[Read],
         printed: int) -> list[dict[str, Any]]:
    """The group's results in input order, each refusal with its input line named.

    Unreadable lines (not UTF-8, too long) are refused here; the others go to the store
    as one group. If the store is unavailable, the error names the line to send again
    from.
    """
    texts = [read.document.text for read in group if read.document.unreadable is None]
    try:
        decided = iter(send_group(texts) if texts else [])
    except StoreUnavailable as e:
        raise _stopped(e, group, printed) from None
    results = []
    for read in group:
        document = read.document
        result = (next(decided) if document.unreadable is None
                  else refused(None, InvalidJson(document.unreadable)))
        results.append(result if result["ok"] else {**result, "line": document.line})
    return results


def _stopped(error: StoreUnavailable, group: list[Read], printed: int) -> StoreUnavailable:
    """The outage, told with the input line to send again from.

    Nothing of the group is stored, unless the error says (`done`, as the group writer's
    `GroupUnavailable` does) that its first commands were finished before the store
    failed: stored or refused, their results not printed.
    """
    done = error.done if isinstance(error, GroupUnavailable) else 0
    headline = error.headline
    if not printed and not done:  # nothing of the input is stored
        return StoreUnavailable(f"{headline}; no command was run, sending them again is safe")
    readable = [read.document.line for read in group if read.document.unreadable is None]
    first, line = group[0].document.line, readable[min(done, len(readable) - 1)]
    cause = headline if done else str(error)
    results = f"the {printed} result{'s' if printed != 1 else ''} printed before"
    told = (f"{results} it stand" if line == first else
            f"{results} line {first} stand, and lines {first} to {line - 1} ran but their "
            "results were not printed")
    return StoreUnavailable(f"{cause} (stopped at line {line}: {told}; send from line {line} "
                            "again)")


def _not_printed(line: int, last: int) -> str:
    if line == last:
        ran, unprinted = "it and the lines before it were run", "its result was"
    else:
        ran = f"the lines up to line {last} (its group) were run"
        unprinted = f"the results from line {line} on were"
    return (f"stopped at input line {line}: {ran} and what they wrote is stored, but "
            f"{unprinted} not printed; no later line was run (sending the same input again "
            "is safe: stored commands come back as replays)")


def _not_run(line: int, done: int) -> str:
    return (f"stopped before input line {line}: {done} command"
            f"{'s were' if done != 1 else ' was'} run and the results written; nothing from "
            f"line {line} on was run")


@click.group()
def show() -> None:
    """Show the current state of a campaign or a registration: one JSON document."""


@show.command("campaign")
@click.argument("campaign_id")
@json_option("Accepted for uniformity: the state is always one JSON document.")
@click.pass_obj
@friendly_errors
def show_campaign(settings: Settings, campaign_id: str, as_json: bool) -> None:
    """Show a campaign: status (from the clock), windows, requirements, levels, version.

    Example: ledger show campaign 1111-mega-live
    """
    settings.printer.document(settings.ledger().campaign_state(campaign_id))


@show.command("registration")
@click.argument("registration_id")
@json_option("Accepted for uniformity: the state is always one JSON document.")
@click.pass_obj
@friendly_errors
def show_registration(settings: Settings, registration_id: str, as_json: bool) -> None:
    """Show a registration: status, sessions, eligibility, decisions, version.

    Example: ledger show registration 1b4e28ba-2fa1-51d2-883f-0016d3cca427
    """
    settings.printer.document(settings.ledger().registration_state(registration_id))


@click.command()
@click.argument("aggregate_id")
@json_option("JSON Lines: one object per event, with its data.")
@click.pass_obj
@friendly_errors
def events(settings: Settings, aggregate_id: str, as_json: bool) -> None:
    """List the stored events of a campaign (by its id) or registration (by its UUID).

    In order, with version, recorded time, type, actor and command_id.

    Example: ledger events 1111-mega-live --json
    """
    for event in settings.ledger().event_records(aggregate_id):
        record = settings.printer.json(event)
        if as_json:
            settings.printer.lines([record])
        else:
            actor = f"{record['actor']['role']}:{record['actor']['id']}"
            click.echo(f"v{record['version']:<4} {record['recorded_at']}  {record['type']:<20} "
                       f"{actor:<24} {record['command_id']}")
