"""Peak memory of `ledger send FILE` as its input grows: it should stay flat.

For each size it writes a JSON Lines file of that many MB (one `create_campaign`, then
commands of an unknown name padded to --line-bytes, which are refused at once, so the
run measures reading and answering, not the store), runs `python -m ledger send FILE`
in a child process with its results going to /dev/null, and prints the child's peak RSS
(from wait4) and how long it took.

    python bench/send_memory.py                  # 10 MB and 200 MB (about a minute)
    python bench/send_memory.py --sizes 10,100,1000 --line-bytes 8192
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

NOW = "2026-10-02T09:00:00+07:00"
CAMPAIGN = {
    "command": "create_campaign", "command_id": "cc-1", "actor": {"id": "ops", "role": "operator"},
    "payload": {
        "campaign_id": "1111-mega-live", "name": "11.11 Mega LIVE", "kind": "live",
        "review_mode": "manual", "registration_opens_at": "2026-10-01T00:00:00+07:00",
        "registration_closes_at": "2026-11-05T00:00:00+07:00",
        "starts_at": "2026-11-10T00:00:00+07:00", "ends_at": "2026-11-13T00:00:00+07:00",
    },
}


def write_input(path: Path, megabytes: int, line_bytes: int) -> int:
    """A file of about `megabytes` MB: one real command, then refusals; its line count."""
    target = megabytes * 1024 * 1024
    pad = "x" * max(0, line_bytes - 120)
    lines, written = 1, 0
    with path.open("w", encoding="utf-8") as out:
        written += out.write(json.dumps(CAMPAIGN) + "\n")
        while written < target:
            line = json.dumps({"command": "no_such_command", "command_id": f"m-{lines:09d}",
                               "actor": {"id": "ops", "role": "operator"},
                               "payload": {"pad": pad}})
            written += out.write(line + "\n")
            lines += 1
    return lines


def measure(path: Path, db: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, seconds, exit status) of one `ledger send FILE > /dev/null`."""
    started = time.monotonic()
    with open(os.devnull, "wb") as null:
        child = subprocess.Popen(
            [sys.executable, "-m", "ledger", "--db", f"sqlite:///{db}", "--now", NOW,
             "send", str(path)], stdout=null, stderr=subprocess.PIPE)
        assert child.stderr is not None
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        error = child.stderr.read().decode()
    if child.returncode not in (0, 1, 2) or error:
        raise SystemExit(f"ledger send failed ({child.returncode}): {error}")
    return usage.ru_maxrss / 1024, time.monotonic() - started, child.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,200", help="input sizes in MB, comma-separated")
    parser.add_argument("--line-bytes", type=int, default=4096, help="bytes per input line")
    args = parser.parse_args(argv)
    print(f"{'input MB':>9} {'lines':>9} {'peak RSS MB':>12} {'seconds':>8} {'exit':>5}")
    with tempfile.TemporaryDirectory(prefix="send-memory-") as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            path, db = Path(folder) / f"{size}.jsonl", Path(folder) / f"{size}.db"
            lines = write_input(path, size, args.line_bytes)
            rss, seconds, status = measure(path, db)
            print(f"{size:>9} {lines:>9,} {rss:>12.1f} {seconds:>8.1f} {status:>5}", flush=True)
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
