"""Group commit for single-command requests: `POST /v1/commands` requests that arrive
together at one worker are decided by one `Ledger.send_group` call (one transaction).

How a group forms (per worker process, on its event loop): the first request to arrive
while no group is being decided starts a timer of `wait` seconds (`ledger serve
--group-wait-ms`); the requests that arrive meanwhile join it. The group leaves when the
timer fires or as soon as `most` (`--group-max`) are waiting. At most `in_flight` groups
are decided at a time per worker (the service: 1 on SQLite, 2 on PostgreSQL), each in a
thread of the pool (the event loop goes on serving other requests); the requests that
arrive while they are decided wait, and leave together as soon as one is done, so under
load groups grow by themselves and at rest a request waits `wait` at most.

What each request gets: its own command's result (`send_group` gives one per command, as
one at a time would). A store fault fails the group's transaction as a whole: each of its
requests gets the same `StoreUnavailable` (503, resending is safe), and no other group's.
Any other exception (a bug) is not allowed to fail the other commands: the group's
commands are then decided again one at a time, each getting its own result or error.

A request whose client goes away (its task cancelled) leaves its command in the group:
the command is decided, or not, as a whole with the others, and its result is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from ledger.errors import StoreUnavailable
from ledger.ledger import store_fault

log = logging.getLogger("ledger.service")

Result = dict[str, Any]
Outcome = Result | BaseException  # a command's result, or what deciding it raised


@dataclass
class Waiting:
    """One request's command and the future its request awaits: (result, group size)."""

    command: Any
    future: asyncio.Future[tuple[Result, int]] = field(repr=False)


def is_store_fault(error: BaseException) -> bool:
    """The store failed (the group's transaction as a whole), not the ledger's code."""
    return isinstance(error, StoreUnavailable) or store_fault(error) is not None


class Coalescer:
    """Coalesces the commands of concurrent requests into groups (see the module)."""

    def __init__(self, send_group: Callable[[list[Any]], list[Result]],
                 send_one: Callable[[Any], Result], *, wait: float, most: int,
                 in_flight: int = 1) -> None:
        if wait <= 0 or most < 1 or in_flight < 1:
            raise ValueError("a coalescer needs wait > 0, most >= 1 and in_flight >= 1")
        self.send_group = send_group  # blocking: run in a worker thread
        self.send_one = send_one
        self.wait = wait
        self.most = most
        self.in_flight = in_flight  # groups decided at once (each in its own thread)
        self._pending: list[Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._deciding = 0  # groups being decided now
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, command: Any) -> tuple[Result, int]:
        """The command's result once its group is decided, and the group's size. Raises
        what deciding it raised (StoreUnavailable for the whole group on a store fault)."""
        loop = asyncio.get_running_loop()
        waiting = Waiting(command, loop.create_future())
        # Retrieved even when nobody awaits it any more (the client went away).
        waiting.future.add_done_callback(_retrieve)
        self._pending.append(waiting)
        if len(self._pending) >= self.most:
            self._leave()
        elif self._timer is None and self._deciding < self.in_flight:
            self._timer = loop.call_later(self.wait, self._leave)
        # shield: a cancelled request does not take its command out of a group
        return await asyncio.shield(waiting.future)

    def _leave(self) -> None:
        """The next group leaves now, unless `in_flight` groups are being decided (it
        leaves when one of them is done)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deciding >= self.in_flight or not self._pending:
            return
        group, self._pending = self._pending[:self.most], self._pending[self.most:]
        self._deciding += 1
        task = asyncio.get_running_loop().create_task(self._decide(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decide(self, group: list[Waiting]) -> None:
        try:
            # Not cancelled halfway: anyio lets the thread's call finish before it cancels.
            outcomes: list[Outcome] = await run_in_threadpool(
                self._outcomes, [w.command for w in group])
        except Exception as e:
            outcomes = [e] * len(group)
        except BaseException:  # the loop is shutting down: the requests are cancelled
            self._settle(group, None)
            raise
        self._settle(group, outcomes)

    def _settle(self, group: list[Waiting], outcomes: list[Outcome] | None) -> None:
        """Each request's outcome (None: cancelled); then the next group, if any waits."""
        self._deciding -= 1
        for i, waiting in enumerate(group):
            if waiting.future.done():
                continue
            outcome = None if outcomes is None else outcomes[i]
            if outcome is None:
                waiting.future.cancel()
            elif isinstance(outcome, BaseException):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result((outcome, len(group)))
        if self._pending:  # they waited while this group was decided: they go now
            self._leave()

    def _outcomes(self, commands: list[Any]) -> list[Outcome]:
        """Each command's result (in a worker thread)."""
        try:
            results = self.send_group(commands)
        except Exception as e:
            if is_store_fault(e):
                return [e] * len(commands)
            # Not the store: a command the group path cannot take. The group wrote nothing
            # (one transaction); one at a time, only the command at fault gets the error.
            log.exception("a group of %d commands failed; deciding them one at a time",
                          len(commands))
            return [self._alone(c) for c in commands]
        if len(results) != len(commands):
            raise RuntimeError(f"send_group gave {len(results)} results for "
                               f"{len(commands)} commands")
        return list(results)

    def _alone(self, command: Any) -> Outcome:
        try:
            return self.send_one(command)
        except Exception as e:
            return e


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
