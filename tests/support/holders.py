"""Another process holds a lock until a block ends: the SQLite file's write lock
(tests/reliability/test_outage.py `write_locked`), its writers' turn
(tests/reliability/test_write_turns.py `turn_held`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress


@contextmanager
def held_elsewhere(script: str) -> Iterator[None]:
    """Run `script` in another Python process: it takes its lock, prints `held`, then
    waits for its stdin to close (the block's end) and lets go."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys\n{script}\n"
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        with suppress(OSError):
            holder.communicate(timeout=10)
        if holder.poll() is None:
            holder.kill()
            holder.wait()
