"""What one service process holds: its Ledger (a pool on the store), its projector, and
the ways a request uses them. Opened lazily, so the process starts (and `/healthz`
answers) while the store is still unreachable."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from ledger import metrics
from ledger.clock import Clock, SystemClock
from ledger.commands.parse import MAX_COMMAND_BYTES, load_json
from ledger.commands.schemas import ROLES
from ledger.errors import InvalidJson, StoreUnavailable, ValidationFailed
from ledger.ledger import Ledger, TokenActor, refused
from ledger.projections.follower import Follower
from ledger.projections.runner import Projector
from ledger.projections.view import ViewMixin
from ledger.service.coalesce import Coalescer
from ledger.service.models import MAX_BATCH
from ledger.service.status import ServiceError
from ledger.service.worker_env import GROUP_MAX, GROUP_WAIT_MS, READY_MAX_LAG

GroupSender = Callable[[Sequence[Any]], list[dict[str, Any]]]  # Ledger.group_sender()

READ_TIMEOUT = 5.0  # seconds a read waits for its read model to reach ?after=
FIRST_PAUSE, LAST_PAUSE = 0.005, 0.1  # seconds between a waiting read's checks (doubling)


def with_actor(data: Any, actor: TokenActor) -> Any:
    """The command with the token's actor in place of whatever the body said."""
    return {**data, "actor": actor.as_actor()} if isinstance(data, dict) else data


def store_unavailable(error: BaseException) -> ServiceError:
    """503 `store_unavailable`, naming the cause."""
    return ServiceError(503, "store_unavailable", str(error))


TOKEN_TTL = 60.0  # seconds a worker trusts a token it has looked up
REOPEN_AFTER = 1.0  # seconds a failed open of the store is answered from memory


class Service:
    """One store's share of a process (a market's, or the single store's): its Ledger,
    projector, follower candidate and remembered tokens.

    `read_url`: the read models' database when not the store's; `market`: the market it
    serves (tokens limited to other markets are refused); `tokens`: the Service whose store
    keeps the tokens, when not this one (a markets file's `tokens_url`)."""

    def __init__(self, url: str, *, clock: Clock | None = None, pool_size: int = 10,
                 max_body: int = MAX_COMMAND_BYTES, read_timeout: float = READ_TIMEOUT,
                 follow: bool = False, ready_max_lag: int = READY_MAX_LAG,
                 group_wait_ms: float = GROUP_WAIT_MS, group_max: int = GROUP_MAX,
                 read_url: str | None = None, market: str | None = None,
                 tokens: Service | None = None) -> None:
        self.url = url
        self.read_url = read_url
        self.market = market
        self.tokens = tokens
        self.clock = clock or SystemClock()
        self.pool_size = pool_size
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.ready_max_lag = ready_max_lag
        # A candidate for the store's one follower (see projections/follower.py).
        self.follower = Follower(lambda: self.ledger().projector()) if follow else None
        self._ledger: Ledger | None = None
        self._projector: Projector | None = None
        self._opening = threading.Lock()
        self._failed: tuple[float, str] | None = None  # (until when, why) the last open failed
        # A Projector's read models keep working sets in memory while catching up: one
        # catch-up at a time in this process (other processes are kept out by the view's
        # compare-and-set on the tracking position).
        self._catching_up = threading.Lock()
        self._actors: dict[str, tuple[float, TokenActor]] = {}
        # Single-command requests arriving together go to one send_group (coalesce.py);
        # either bound 0: each request is its own transaction, as before. Groups decided
        # at once per worker: SQLite has one writer, so one; on PostgreSQL a second group
        # is decided while the first one commits (measured: servebatch-bench.md).
        self.group_max = group_max
        # One group writer per group in flight, taken by the thread deciding a group and
        # put back after: a group reuses the aggregates its slot's earlier groups committed
        # while the store still holds them at that version (group.GroupLoads.prefetch).
        self._senders: queue.SimpleQueue[GroupSender] = queue.SimpleQueue()
        self.coalescer = Coalescer(
            self._send_group,
            lambda command: self.ledger().send(command),
            wait=group_wait_ms / 1000, most=group_max,
            in_flight=1 if url.startswith("sqlite") else 2,
        ) if group_wait_ms > 0 and group_max > 0 else None

    def _send_group(self, commands: list[Any]) -> list[dict[str, Any]]:
        """One coalesced group, through a writer no other thread is using (at most one
        per group in flight is ever made; each keeps what its groups committed)."""
        ledger = self.ledger()
        try:
            send = self._senders.get_nowait()
        except queue.Empty:
            send = ledger.group_sender()
        try:
            return send(commands)
        finally:
            self._senders.put(send)

    def ledger(self) -> Ledger:
        """The store's Ledger, opened on first use. An open that failed is remembered for
        `REOPEN_AFTER` seconds: the requests meanwhile are 503 at once, instead of each
        waiting out the connect timeout of a store that does not answer (in turn, behind
        the lock, each holding a thread)."""
        opened = self._ledger
        if opened is not None:
            return opened
        with self._opening:
            if self._ledger is None:
                failed = self._failed
                if failed is not None and time.monotonic() < failed[0]:
                    raise StoreUnavailable(failed[1])
                try:
                    self._ledger = Ledger.open(self.url, clock=self.clock,
                                               pool_size=self.pool_size, read_url=self.read_url)
                except StoreUnavailable as e:
                    self._failed = (time.monotonic() + REOPEN_AFTER, str(e))
                    raise
                self._failed = None
            return self._ledger

    def projector(self) -> Projector:
        ledger = self.ledger()
        with self._opening:
            if self._projector is None:
                self._projector = ledger.projector()
            return self._projector

    def start(self) -> None:
        if self.follower is not None:
            self.follower.start()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()  # before the pools it uses are closed
        with self._opening:
            if self._ledger is not None:
                self._ledger.close()
            self._ledger = self._projector = None

    # Commands ----------------------------------------------------------------------------

    def actor(self, token: str) -> TokenActor | None:
        """The token's actor, from the tokens' store (and remembered: see `known_actor`)."""
        actor = (self.tokens or self).ledger().token_actor(token)
        if actor is not None:
            self._actors[token] = (time.monotonic() + TOKEN_TTL, actor)
        return actor

    def known_actor(self, token: str) -> TokenActor | None:
        """The actor of a token this worker looked up in the last `TOKEN_TTL` seconds,
        without a database read or a thread hop (a token is never changed once issued,
        only revoked: a revocation reaches this worker when the entry runs out; an
        unknown token is always looked up again)."""
        found = self._actors.get(token)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    async def send(self, body: bytes, actor: TokenActor
                   ) -> tuple[str | None, dict[str, Any], int | None]:
        """(the command's name, for the access log; its result; the size of the group it
        was decided in, None when coalescing is off)."""
        started = time.perf_counter()
        try:
            data = load_json(body)
        except InvalidJson as e:
            metrics.observe_command(None, refused(None, e), 0.0, ROLES)
            return None, refused(None, e), None
        name = data.get("command") if isinstance(data, dict) else None
        command = with_actor(data, actor)
        result: dict[str, Any] | None = None
        size = None
        try:  # counted for /metrics, its latency from the request's arrival
            if self.coalescer is None:
                result = await run_in_threadpool(lambda: self.ledger().send(command))
            else:
                result, size = await self.coalescer.send(command)
        finally:
            metrics.observe_command(name, result, time.perf_counter() - started, ROLES)
        return (name[:64] if isinstance(name, str) else None), result, size

    def send_batch(self, body: bytes, actor: TokenActor) -> list[dict[str, Any]]:
        """The commands in order, in groups of `group_max` (one transaction each), as
        `ledger send` does; one result each."""
        try:
            data = load_json(body)
        except InvalidJson as e:
            raise ServiceError(400, e.code, e.message) from None
        if not isinstance(data, list) or len(data) > MAX_BATCH:
            message = f"a batch is a JSON array of at most {MAX_BATCH} commands"
            raise ServiceError(422, "validation_error", message,
                               [{"field": "", "message": message}])
        results: list[dict[str, Any]] = []
        started = time.perf_counter()
        try:
            sent = self.ledger().send_many((with_actor(item, actor) for item in data),
                                           group_size=self.group_max or GROUP_MAX)
            for item, result in zip(data, sent, strict=False):  # a group's, once committed
                results.append(result)
                metrics.observe_command(item.get("command") if isinstance(item, dict) else None,
                                        result, time.perf_counter() - started, ROLES)
        except StoreUnavailable as e:
            # What was done is done (and replays): resending the whole batch is safe.
            raise ServiceError(503, "store_unavailable", str(e), {"results": results}
                               ) from None
        return results

    # Reads -------------------------------------------------------------------------------

    async def view(self, name: str, after: int | None, fresh: bool) -> ViewMixin:
        """The read models' view, once `name` has applied every event up to `after` (or,
        with `fresh`, the store's head now); 503 with the lag after `read_timeout`.

        A position beyond the store's head (read now, so a write committed a moment ago
        by another server counts) is refused at once: waiting could never reach it. The
        wait is spent on the event loop: each check or page of catch-up is a short job in
        a worker thread, so waiting readers hold no thread from commands or /healthz."""
        p = await run_in_threadpool(self.projector)
        if after is None and not fresh:
            return p.view
        head, position = await run_in_threadpool(lambda: (p.head(), p.view.position(name)))
        if after is not None and after > head:
            raise ValidationFailed.field("after", f"position {after} is beyond the store's "
                                         f"last position {head}: pass the `position` of an "
                                         "accepted command")
        target = head if fresh else after
        deadline = time.monotonic() + self.read_timeout
        pause = FIRST_PAUSE
        while target is not None and position < target:
            if time.monotonic() > deadline:
                raise self._behind(name, position, target)
            moved = await run_in_threadpool(self._step, p, name, target)
            if moved == position:  # another request is catching up, or not visible yet
                await asyncio.sleep(pause)
                pause = min(pause * 2, LAST_PAUSE)
            position = moved
        return p.view

    def freshness(self, name: str) -> tuple[int, int]:
        """(read model `name`'s position, the store's head), read in that order, so the
        head is never below the position."""
        p = self.projector()
        position = p.view.position(name)
        return position, p.head()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether every read model is within `ready_max_lag` events of the head, and
        each one's position and lag."""
        status = self.projector().status()
        models = [{k: row[k] for k in ("name", "position", "lag")} for row in status]
        lagging = [m["name"] for m in models if m["lag"] > self.ready_max_lag]
        return not lagging, {
            "status": "behind" if lagging else "ready",
            "head": status[0]["head"] if status else 0, "max_lag": self.ready_max_lag,
            "lagging": lagging, "read_models": models}

    def _step(self, p: Projector, name: str, target: int) -> int:
        """One page of catching up, unless another request is at it (it never waits for
        the lock); the read model's position then."""
        if self._catching_up.acquire(blocking=False):
            try:
                position = p.view.position(name)
                if position < target:
                    p.catch_up([name], until=min(target, position + p.page))
            finally:
                self._catching_up.release()
        return p.view.position(name)

    @staticmethod
    def _behind(name: str, position: int, target: int) -> ServiceError:
        return ServiceError(
            503, "read_model_behind",
            f"read model {name} is at position {position}, not yet at {target}; try again",
            {"read_model": name, "position": position, "after": target,
             "lag": target - position})
