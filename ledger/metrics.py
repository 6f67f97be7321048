"""What `/metrics` reports, in Prometheus' text format (prometheus_client).

The counters and histograms live here, in a leaf module, so that any layer can count:
the service counts commands, their latency, requests and connections; the group-commit
code calls `observe_group(size)`; `Ledger` counts the store faults its writes meet.

Processes: `ledger serve --workers N` runs N processes. It sets PROMETHEUS_MULTIPROC_DIR
(a fresh folder per run) before they start, so each process's values go to files there
and a scrape of any worker reads them all (`MultiProcessCollector`). When that folder is
not set at import (one worker, the CLI, tests) values stay in memory: `render` then reads
this process's registry.
"""

from __future__ import annotations

import os
from collections.abc import Container
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "observe_command", "observe_group", "render", "store_fault"]

# Decided when prometheus_client was imported: the environment at that moment chose how
# values are kept.
MULTIPROCESS = values.ValueClass is not values.MutexValue

COMMANDS = Counter(
    "ledger_commands", "Commands answered, by command name and outcome (accepted, "
    "replayed, refused; a refusal's error code in `code`).", ["command", "outcome", "code"])
LATENCY = Histogram(
    "ledger_command_duration_seconds", "Seconds from a command's arrival to its result.",
    ["command"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                          2.5, 5.0, 10.0))
GROUP_SIZE = Histogram(
    "ledger_command_group_size", "Commands committed together in one transaction "
    "(group commit; 1: a command on its own).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
FAULTS = Counter(
    "ledger_store_faults", "Store faults met (each failed attempt), by cause: unreachable, "
    "connection lost, locked, busy, disk full, read-only.", ["cause"])
IN_FLIGHT = Gauge("ledger_http_requests_in_flight", "HTTP requests being answered now.",
                  multiprocess_mode="livesum")
CONNECTIONS = Gauge("ledger_http_connections_open", "HTTP connections open now.",
                    multiprocess_mode="livesum")

UNKNOWN = "unknown"  # the label of a command name that is not one of ours (no label explosion)


def observe_command(name: Any, result: dict[str, Any] | None, seconds: float,
                    known: Container[str]) -> None:
    """Count one command's outcome and its latency. `name` is what the body said (any
    JSON value: only one of the `known` names is a label); `result` None: it got none
    (the store was unavailable)."""
    label = name if isinstance(name, str) and name in known else UNKNOWN
    if result is None:
        outcome, code = "refused", "store_unavailable"
    elif not result.get("ok"):
        outcome, code = "refused", str(result.get("error", {}).get("code", UNKNOWN))
    else:
        outcome, code = ("replayed" if result.get("replayed") else "accepted"), ""
    COMMANDS.labels(label, outcome, code).inc()
    LATENCY.labels(label).observe(seconds)


def observe_group(size: int) -> None:
    """One group of `size` commands committed in one transaction (group commit calls it)."""
    GROUP_SIZE.observe(size)


def store_fault(cause: str) -> None:
    """The store failed an attempt, for this cause."""
    FAULTS.labels(cause).inc()


def render(*live: Collector) -> bytes:
    """The text a scrape gets: every process's values, then `live` collectors (values
    read at scrape time, such as the read models' lag)."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if live:
        now = CollectorRegistry()
        for collector in live:
            now.register(collector)
        text += generate_latest(now)
    return text


def process_ended() -> None:
    """This worker is stopping: its live gauges stop counting (multiprocess mode)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
