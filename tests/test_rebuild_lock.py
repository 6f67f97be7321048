"""One `projections rebuild` at a time per store: another is named in one line (or waited
for, with --wait); the lock goes with its holder however it dies."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from ledger.cli import main
from ledger.console.printing import speed
from tests.test_cli import CAMPAIGN, NOW, REGISTER
from tests.test_projections_run import wait_for

HOLDER = """
import sys, time
from ledger import Ledger
from ledger.projections.lock import REBUILD, only_one
with Ledger.open(sys.argv[1]) as ledger, only_one(ledger.app, REBUILD):
    print("locked", flush=True)
    time.sleep(120)
"""


def ledger_cli(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ledger", "--db", url, "--now", NOW, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextmanager
def rebuild_running(url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the store's rebuild lock, as a rebuild does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=20)


@pytest.fixture
def store(backend: str) -> str:
    text = json.dumps(CAMPAIGN) + "\n" + json.dumps(REGISTER) + "\n"
    sent = CliRunner().invoke(main, ["--db", backend, "--now", NOW, "send", "-"], input=text)
    assert sent.exit_code == 0, sent.output
    return backend


def test_a_second_rebuild_stops_in_one_line_naming_the_running_one(store: str) -> None:
    with rebuild_running(store) as holder:
        second = ledger_cli(store, "projections", "rebuild")
        out, err = second.communicate(timeout=60)
    assert second.returncode == 1, err
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("Error: conflict: a rebuild is already running on this store "), line
    assert f"pid {holder.pid} on {socket.gethostname()}" in line
    assert ", since 20" in line


def test_rebuild_wait_waits_for_the_running_one_which_its_death_releases(store: str) -> None:
    with rebuild_running(store) as holder:
        waiting = ledger_cli(store, "projections", "rebuild", "--wait")
        assert not wait_for(lambda: waiting.poll() is not None, timeout=1.5)
        holder.send_signal(signal.SIGKILL)  # a crash: the lock goes with the process
        out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert out.startswith("rebuilt manage_campaign, ")
    status = CliRunner().invoke(main, ["--db", store, "projections", "status", "--json"])
    assert {json.loads(line)["lag"] for line in status.output.splitlines()} == {0}


def test_two_rebuilds_at_once_never_show_a_database_error(store: str) -> None:
    both = [ledger_cli(store, "projections", "rebuild", "--jobs", "1") for _ in range(2)]
    results = [(p.wait(timeout=60), p.communicate()[1]) for p in both]
    for code, err in results:
        assert code == 0 or (code == 1 and "a rebuild is already running" in err), err
        assert "Traceback" not in err
        assert "Error: conflict" in err or not err.strip()


def test_the_progress_rate_is_shown_only_once_known() -> None:
    assert speed((5000, 10.0), 5000, 20000, 10.0) == ""  # one report: no rate yet
    assert speed((5000, 10.0), 5000, 20000, 12.0) == ""  # no events since: no rate
    assert speed((5000, 10.0), 10000, 20000, 12.0) == "  2,500/s  ETA 4s"
