"""What `ledger serve` hands its worker processes in the environment, besides the store
and the limits (`protocol.py`): whether to offer to follow, and /readyz's lag threshold.
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


def follow() -> bool:
    return os.environ.get(FOLLOW_ENV, "1") != "0"


def ready_max_lag() -> int:
    return int(os.environ.get(READY_ENV, READY_MAX_LAG))
