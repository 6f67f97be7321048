"""What `ledger serve` hands its worker processes in the environment, besides the store
and the limits (`protocol.py`): whether to offer to follow, /readyz's lag threshold, and
how single commands are grouped (`coalesce.py`).
A module of its own, so that the CLI reads it without importing FastAPI."""

from __future__ import annotations

import os

FOLLOW_ENV = "LEDGER_SERVE_FOLLOW"  # "0": this server does not follow (`--no-follow`)
READY_ENV = "LEDGER_READY_MAX_LAG"  # `--ready-max-lag`
CONFIG_ENV = "LEDGER_SERVE_CONFIG"  # `serve --config FILE`: every market of the file
READ_URL_ENV = "LEDGER_SERVE_READ_URL"  # a single market's read_url (`serve --market`)
MARKET_ENV = "LEDGER_SERVE_MARKET"  # `serve --market CODE`: the market, for tokens' limits
TOKENS_URL_ENV = "LEDGER_SERVE_TOKENS_URL"  # `serve --market CODE`: where tokens are kept
READY_MAX_LAG = 1000  # events a read model may be behind the head while /readyz says ready
GROUP_WAIT_ENV = "LEDGER_SERVE_GROUP_WAIT_MS"  # `--group-wait-ms`
GROUP_MAX_ENV = "LEDGER_SERVE_GROUP_MAX"  # `--group-max`
GROUP_WAIT_MS = 2.0  # ms a single command waits for others to share its transaction
GROUP_MAX = 200  # commands in one group at most (coalesced requests, a batch's groups)


def follow() -> bool:
    """Whether this worker may be elected to keep the read models current (`--no-follow`)."""
    return os.environ.get(FOLLOW_ENV, "1") != "0"


def ready_max_lag() -> int:
    """Events a read model may be behind while `/readyz` says ready (`--ready-max-lag`)."""
    return int(os.environ.get(READY_ENV, READY_MAX_LAG))


def group_wait_ms() -> float:
    """How long a single command waits for others to share its transaction (`--group-wait-ms`)."""
    return float(os.environ.get(GROUP_WAIT_ENV, GROUP_WAIT_MS))


def group_max() -> int:
    """The most commands in one group (`--group-max`)."""
    return int(os.environ.get(GROUP_MAX_ENV, GROUP_MAX))


METRICS_TOKEN_ENV = "LEDGER_METRICS_TOKEN"  # `--metrics-token`: /metrics wants it as a bearer
DEFAULT_MARKET = "default"  # a single store's market label


def metrics_token() -> str | None:
    """The bearer token `/metrics` wants (`--metrics-token`), if any."""
    return os.environ.get(METRICS_TOKEN_ENV) or None


def market() -> str:
    """The market label of this store's metrics: `serve --market`'s, else LEDGER_MARKET's,
    else `default` (a single store)."""
    return os.environ.get(MARKET_ENV) or os.environ.get("LEDGER_MARKET") or DEFAULT_MARKET
