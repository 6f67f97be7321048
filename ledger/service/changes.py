"""The dashboard's live feed: tells open pages that the read models moved past a position.

One `Changes` per worker process polls the read models' tracked positions (one small
query, every `POLL` seconds, and only while a page is listening) and wakes every stream
of that process when they move. It reads the database, not the follower's memory, so it
sees the follower's progress whichever worker (or server) follows the store: a page
served by worker 2 moves when worker 1's follower writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool

POLL = 0.1  # seconds between looks at the positions while a stream is open (one query)
HEARTBEAT = 15.0  # seconds between comment lines, so proxies keep a quiet stream open
# A stream ends after this long and the page opens another at once (so a revoked token's
# stream ends too). A worker that stops ends its streams at once (protocol.ENDLESS).
LIFETIME = 300.0

Positions = dict[str, int]


class Changes:
    """Read-model positions of this process, shared by every open stream."""

    def __init__(self, read: Callable[[], Positions], *, every: float = POLL) -> None:
        self.read = read
        self.every = every
        self.positions: Positions | None = None
        self.failure: str | None = None
        self._listeners = 0
        self._moved: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def stream(self, lifetime: float = LIFETIME) -> AsyncIterator[str]:
        """Server-sent events: `moved` with the positions now, at once and then whenever
        they change; `unavailable` when the store cannot be read; a comment line every
        `HEARTBEAT` seconds; for `lifetime` seconds."""
        self._listeners += 1
        try:
            deadline = time.monotonic() + lifetime
            said: Positions | None = None
            failed: str | None = None
            self._keep_polling()
            yield f"retry: 500\n: positions every {self.every:g} s\n\n"
            quiet_since = time.monotonic()
            while (left := deadline - time.monotonic()) > 0:
                if self.positions is not None and self.positions != said:
                    said = self.positions
                    quiet_since = time.monotonic()
                    yield event("moved", {"position": min(said.values(), default=0),
                                          "read_models": said})
                if self.failure != failed:
                    failed = self.failure
                    if failed is None:  # readable again: say where things are, even if
                        said = None     # nothing moved meanwhile
                        continue
                    yield event("unavailable", {"message": failed})
                if time.monotonic() - quiet_since >= HEARTBEAT:
                    quiet_since = time.monotonic()
                    yield ": still here\n\n"
                self._keep_polling()
                with contextlib.suppress(TimeoutError):  # at least once a second, look again
                    await asyncio.wait_for(self._event().wait(), min(left, 1.0))
        finally:
            self._listeners -= 1

    def _keep_polling(self) -> None:
        """Start the poll if none runs (the first listener, or the last poll ended: it
        ends when nobody listens, and a request's cancellation may take it along)."""
        if self._task is None or self._task.done():
            self.positions = None  # what an earlier poll saw may be old: say nothing
            self._task = asyncio.create_task(self._poll())  # until this one has looked

    def _event(self) -> asyncio.Event:
        """The event the next change sets (made in the running loop, on first use)."""
        if self._moved is None:
            self._moved = asyncio.Event()
        return self._moved

    async def _poll(self) -> None:
        while self._listeners > 0:
            positions: Positions | None
            failure = self.failure
            try:
                positions = await run_in_threadpool(self.read)
                self.failure = None
            except Exception as e:  # the store is down: streams wait, and the page says so
                self.failure = f"{type(e).__name__}: {e}".splitlines()[0]
                positions = self.positions
            if positions != self.positions or self.failure != failure:
                self.positions = positions
                woken, self._moved = self._event(), asyncio.Event()
                woken.set()
            await asyncio.sleep(self.every)


def event(name: str, data: dict[str, object]) -> str:
    """One server-sent event: its name and one line of JSON."""
    return f"event: {name}\ndata: {json.dumps(data, sort_keys=True)}\n\n"
