"""The Ledger: `Ledger.open(url)`, `ledger.send(command) -> result`, and (from
`LedgerReads`) everything it answers: the one API the CLI, the service and tests use."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Any

from eventsourcing.persistence import IntegrityError

from ledger import group, metrics
from ledger.aggregates.base import Cause
from ledger.audit import chain, integrity
from ledger.audit import seals as sealing
from ledger.clock import Clock, SystemClock
from ledger.commands.context import Context, Outcome
from ledger.commands.handlers import handle
from ledger.commands.parse import Command
from ledger.commands.results import accepted, admit, command_row, refused, replayed
from ledger.errors import Conflict, GroupUnavailable, LedgerError
from ledger.reads import LedgerReads
from ledger.store import tokens
from ledger.store.application import LedgerApplication, open_application
from ledger.store.faults import Fault, Outage, StoreErrors, classify, read_only_folder
from ledger.store.readstore import ReadStore, open_read_store
from ledger.store.tokens import TokenActor, TokenRow
from ledger.store.urls import DEFAULT_URL, check_reachable, parse_url

# What the faces need of the layers below, named here so that they never import the store.
__all__ = ["DEFAULT_URL", "Ledger", "TokenActor", "TokenRow", "refused", "store_fault",
           "token_id"]

MAX_ATTEMPTS = 100


def store_fault(error: BaseException) -> str | None:
    """`store unavailable: ...` when `error` is the store failing (a read that met a lost
    connection, a locked or full database; counted in /metrics); None when it is anything
    else."""
    fault = classify(error)
    if fault is None:
        return None
    metrics.store_fault(fault.cause)
    return f"store unavailable: {fault.describe()}"


token_id = tokens.token_id  # the id `ledger tokens list` shows: the start of the token's hash


class Ledger(LedgerReads):
    """The ledger over one store: commands in, results out, and every read (`LedgerReads`)."""

    def __init__(self, app: LedgerApplication, clock: Clock, url: str,
                 read_store: ReadStore | None = None) -> None:
        self.app = app
        self.clock = clock
        self.url = url
        self.read_store = read_store  # the read models' database, when not the store's
        self.notices: list[str] = []  # what opening did that a user should hear of
        self.group_stats = group.GroupStats()  # how send_group's runs went (see group.py)

    @classmethod
    def open(cls, url: str | None = None, *, clock: Clock | None = None,
             pool_size: int = 5, read_url: str | None = None) -> Ledger:
        """Open (and on first use create) the store at `url` (default sqlite:///ledger.db);
        its read models are kept in `read_url` when given (else beside the events)."""
        store = parse_url(url or DEFAULT_URL)
        reads = parse_url(read_url) if read_url else None
        check_reachable(store)
        notices: list[str] = []
        try:
            app = open_application(store, pool_size=pool_size, notices=notices)
        except StoreErrors as e:
            fault = classify(e)
            if fault is None:
                raise
            if store.backend == "sqlite" and read_only_folder(store.path):
                # In WAL mode SQLite cannot open a file it may not write its -shm beside.
                fault = Fault("read-only", f"{fault.detail}: its file system is read-only")
            raise fault.unavailable() from None
        read_store = None
        if reads is not None:
            try:
                read_store = open_read_store(reads, pool_size=pool_size)
            except BaseException:
                app.close()
                raise
        opened = cls(app, clock or SystemClock(), store.display, read_store)
        opened.notices = notices
        return opened

    def close(self) -> None:
        self.app.close()
        if self.read_store is not None:
            self.read_store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Commands ------------------------------------------------------------------------------

    def send(self, command: dict[str, Any] | str | bytes) -> dict[str, Any]:
        """Execute one command (a dict, or its JSON text) and return its result dict."""
        admitted = admit(command)
        return self._execute(admitted) if isinstance(admitted, Command) else admitted

    def send_group(self, commands: Sequence[dict[str, Any] | str | bytes]
                   ) -> list[dict[str, Any]]:
        """Execute the commands as one group: decided in input order, committed together
        (`ledger/group.py`); each result is the one `send` would give, one at a time in
        this order. `GroupUnavailable` (a `StoreUnavailable`) says from which command to
        resend when the store fails."""
        return self.group_sender()(commands)

    def group_sender(self) -> Callable[[Sequence[dict[str, Any] | str | bytes]],
                                       list[dict[str, Any]]]:
        """`send_group` for one stream of groups sent one after another, from one thread
        (`send_many`, `ledger send`): a group reuses the aggregates the groups before it
        committed while the store still holds them at that version, instead of loading
        and decoding them again (`group.GroupLoads.prefetch`)."""
        writer = group.Writer(self.app, self.clock, self._execute, self.group_stats)
        return partial(group.send_group, writer)

    def send_many(self, commands: Iterable[dict[str, Any] | str | bytes], *,
                  group_size: int = 200) -> Iterator[dict[str, Any]]:
        """Results in input order, `group_size` commands per group (and per transaction);
        only one group is held in memory. A store failure's `GroupUnavailable` counts
        from the first command of `commands`."""
        if group_size < 1:
            raise ValueError("group_size must be at least 1")
        done = 0
        source = iter(commands)
        send = self.group_sender()
        while chunk := list(islice(source, group_size)):
            try:
                results = send(chunk)
            except GroupUnavailable as e:
                raise e.after(done) from None
            done += len(chunk)
            yield from results

    def _execute(self, command: Command) -> dict[str, Any]:
        fingerprint = command.fingerprint()
        outage = Outage()
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self._attempt(command, fingerprint)
            except IntegrityError as e:
                if "ledger_event_hashes" in str(e):
                    # Not a race: writers collide on the events' key, before any hash row.
                    # A hash row is already there for a version whose event is gone.
                    return refused(command.command_id, Conflict(
                        "the aggregate's hash chain already holds the version this command "
                        "would write, but its event is missing: an event was deleted outside "
                        "the ledger (run `ledger audit verify`); nothing was written", {}))
                # Another writer got there first: run again on fresh state (or replay it).
                time.sleep(min(0.2, 0.002 * (attempt + 1)) * random.random())
            except StoreErrors as e:
                # The store failed us. A transient fault (connection lost, database
                # unreachable or locked) is tried again for a few seconds: safe, since if
                # the lost write did commit, its command row replays. A full disk or a
                # read-only database will not change in seconds: the caller hears at once.
                fault = outage.wait(e)
                if fault is not None:
                    raise fault.unavailable(resend=True) from None
        return refused(command.command_id, Conflict(
            f"gave up after {MAX_ATTEMPTS} attempts: too many concurrent writers", {}))

    def _attempt(self, command: Command, fingerprint: str) -> dict[str, Any]:
        # No look-up of command_id first: the command row is written in the same
        # transaction as the events, so a copy of an earlier command cannot commit; it
        # fails (IntegrityError) or is refused, and only then do we look for a replay.
        cause = Cause(actor={"id": command.actor.id, "role": command.actor.role},
                      command_id=command.command_id, at=self.clock.now())
        try:
            outcome = handle(Context(self.app, command, cause))
        except LedgerError as e:
            return self._replay(command, fingerprint) or refused(command.command_id, e)
        try:
            return self._save(command, fingerprint, outcome)
        except IntegrityError:
            replay = self._replay(command, fingerprint)
            if replay is None:
                raise
            return replay

    def _replay(self, command: Command, fingerprint: str) -> dict[str, Any] | None:
        stored = self.app.store.find_command(command.command_id)
        return None if stored is None else replayed(self.app, fingerprint, stored)

    def _save(self, command: Command, fingerprint: str, outcome: Outcome) -> dict[str, Any]:
        result = accepted(command, outcome)
        row = command_row(command, fingerprint, outcome, result, self.clock.now())
        recordings = self.app.save(*outcome.aggregates, plan=outcome.plan.with_command(row))
        position = recordings[-1].notification.id if recordings else None
        return {**result, "position": position}

    # Tamper evidence and tokens -----------------------------------------------------------

    def seal(self, *, progress: chain.Progress | None = None
             ) -> tuple[integrity.Checked, chain.Seal | None]:
        """Verify, then seal (signed with LEDGER_SEAL_KEY if set) only if nothing is found."""
        return integrity.seal(self.app, self.clock.now(), key=sealing.key_from_env(),
                              progress=progress)

    def issue_token(self, actor: TokenActor, at: datetime) -> str:
        """A new bearer token for `actor` (only its SHA-256 is stored)."""
        return tokens.issue(self.app.store, actor, at)

    def token_actor(self, token: str) -> TokenActor | None:
        return tokens.find(self.app.store, token)

    def tokens(self, actor_id: str | None = None) -> list[TokenRow]:
        return tokens.listed(self.app.store, actor_id)

    def revoke_tokens(self, ids: list[str]) -> int:
        return tokens.revoke(self.app.store, ids)
