"""What `ledger serve` hands its worker processes in the environment, besides the store
and the limits (`protocol.py`): whether to offer to follow, and /readyz's lag threshold.
A module of its own, so that the CLI reads it without importing FastAPI."""

from __future__ import annotations

import os

FOLLOW_ENV = "LEDGER_SERVE_FOLLOW"  # "0": this server does not follow (`--no-follow`)
READY_ENV = "LEDGER_READY_MAX_LAG"  # `--ready-max-lag`
READY_MAX_LAG = 1000  # events a read model may be behind the head while /readyz says ready


def follow() -> bool:
    return os.environ.get(FOLLOW_ENV, "1") != "0"


def ready_max_lag() -> int:
    return int(os.environ.get(READY_ENV, READY_MAX_LAG))


METRICS_TOKEN_ENV = "LEDGER_METRICS_TOKEN"  # `--metrics-token`: /metrics wants it as a bearer
MARKET_ENV = "LEDGER_MARKET"  # the market label of this store's metrics
DEFAULT_MARKET = "default"  # a single store


def metrics_token() -> str | None:
    return os.environ.get(METRICS_TOKEN_ENV) or None


def market() -> str:
    return os.environ.get(MARKET_ENV) or DEFAULT_MARKET
