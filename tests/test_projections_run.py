"""`ledger projections run` follows new events and stops cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from ledger.cli import main
from tests.test_cli import CAMPAIGN, NOW, REGISTER


def lag(opts: list[str]) -> set[int]:
    result = CliRunner().invoke(main, [*opts, "projections", "status", "--json"])
    return {json.loads(line)["lag"] for line in result.output.splitlines()}


def wait_for(condition: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_run_follows_new_events_and_stops_cleanly_on_ctrl_c_or_sigterm(
        backend: str, stop: signal.Signals) -> None:
    opts = ["--db", backend, "--now", NOW]
    CliRunner().invoke(main, [*opts, "send", "-"], input=json.dumps(CAMPAIGN))
    follower = subprocess.Popen([sys.executable, "-m", "ledger", *opts, "projections",
                                 "run", "--interval", "0.05"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: lag(opts) == {0}), "the follower did not catch up"
        CliRunner().invoke(main, [*opts, "send", "-"], input=json.dumps(REGISTER))
        assert wait_for(lambda: lag(opts) == {0}), "the follower did not follow a new event"
    finally:
        follower.send_signal(stop)
        _, err = follower.communicate(timeout=20)
    assert follower.returncode == 0, err
    assert "Traceback" not in err
    # It says how far the read models got (the position, not merely the store's head).
    status = CliRunner().invoke(main, [*opts, "projections", "status", "--json"]).output
    [head] = {json.loads(line)["head"] for line in status.splitlines()}
    assert err.strip().splitlines()[-1] == f"stopped at position {head}"
    advanced = [line for line in err.splitlines() if line.startswith("advanced to position")]
    assert advanced[-1] == f"advanced to position {head}"
