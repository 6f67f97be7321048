"""What `ledger serve` hands its worker processes in the environment, besides the store
and the limits (`protocol.py`): whether to offer to follow, and /readyz's lag threshold.
A module of its own, so that the CLI reads it without importing FastAPI."""

from __future__ import annotations

import os

FOLLOW_ENV = "LEDGER_SERVE_FOLLOW"  # "0": this server does not follow (`--no-follow`)
READY_ENV = "LEDGER_READY_MAX_LAG"  # `--ready-max-lag`
READY_MAX_LAG = 1000  # events a read model may be behind the head while /readyz says ready


def follow() -> bool:
    """Whether this worker may be elected to keep the read models current (`--no-follow`)."""
    return os.environ.get(FOLLOW_ENV, "1") != "0"


def ready_max_lag() -> int:
    """Events a read model may be behind while `/readyz` says ready (`--ready-max-lag`)."""
    return int(os.environ.get(READY_ENV, READY_MAX_LAG))
