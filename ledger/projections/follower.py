"""The store's one follower: among every process that offers to follow (each `ledger
serve` worker), the holder of the store's `follow` lock keeps the read models current.

Each candidate tries the lock every `every` seconds in a background thread. The holder
runs `Projector.run` (what `ledger projections run` runs: it waits through store faults)
for as long as it holds the lock; the lock dies with its process (see `lock.py`), so a
dead follower's place is taken at the next try of another candidate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ledger.projections.lock import FOLLOW, Lease, lease
from ledger.projections.runner import Projector

ELECT_EVERY = 1.0  # seconds between a candidate's tries, and between the holder's checks
POLL = 0.2  # seconds between the holder's looks for new events
log = logging.getLogger("ledger.follower")


class Follower:
    """A candidate for the store's follower, in a daemon thread: `start()`, `stop()`.

    `make_projector` is called in the thread (again after a failure), so a store that
    is down when the process starts delays following, not the start."""

    def __init__(self, make_projector: Callable[[], Projector], *,
                 every: float = ELECT_EVERY, poll: float = POLL) -> None:
        self.make_projector = make_projector
        self.every, self.poll = every, poll
        self.leading = threading.Event()  # set while this process is the follower
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said = ""  # the last failure logged, so a lasting one is said once

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ledger-follower",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following (after the page being written, a transaction of its own) and
        give the lock back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        projector: Projector | None = None
        while not self._stop.is_set():
            try:
                projector = projector or self.make_projector()
                self._term(projector)
            except Exception as e:  # the store is down, or a bug: say it, try again later
                self._say(f"ledger follower: {type(e).__name__}: {e}".splitlines()[0])
                projector = None
            self._stop.wait(self.every)

    def _term(self, projector: Projector) -> None:
        """Follow while this process holds the lock, if it can get it."""
        with lease(projector.reads, FOLLOW) as got:
            if not got.held:
                return
            self.leading.set()
            try:
                projector.run(interval=self.poll, should_stop=self._lost(got))
            finally:
                self.leading.clear()
        self._said = ""

    def _lost(self, got: Lease) -> Callable[[], bool]:
        """Asked between polls: stop, or the lock gone with its connection (checked once
        every `every` seconds: another process may hold it by now)."""
        checked = time.monotonic()

        def should_stop() -> bool:
            nonlocal checked
            if self._stop.is_set():
                return True
            if time.monotonic() - checked >= self.every:
                checked = time.monotonic()
                if not got.alive():
                    self._say("ledger follower: lost the follow lock; trying again")
                    return True
            return False

        return should_stop

    def _say(self, line: str) -> None:
        if line != self._said:
            log.warning(line)
            self._said = line
