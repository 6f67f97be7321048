"""`GET /metrics`: who may scrape it, and the values read at scrape time (each read
model's position and lag, the store's head) beside the counters of `ledger.metrics`.

Access: with a metrics token (`ledger serve --metrics-token`, env LEDGER_METRICS_TOKEN)
a scrape must send `Authorization: Bearer <it>`, from anywhere; without one, only a
client on the loopback interface may scrape (a Prometheus on the same host, or a sidecar).
The ledger's own bearer tokens are for actors and never open /metrics: a scraper is not
an actor, and a seller's token should not reveal the service's traffic.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from ipaddress import ip_address

from fastapi import Request
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ledger import metrics
from ledger.ledger import store_fault
from ledger.service.state import Service
from ledger.service.status import ServiceError


class ReadModels(Collector):
    """The read models' lag as the store holds it now: one status read per scrape."""

    def __init__(self, service: Service, market: str) -> None:
        self.service = service
        self.market = market

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("ledger_store_up", "1 if the last scrape could read the "
                               "store, else 0.", labels=["market"])
        try:
            status = self.service.projector().status()
        except Exception as e:
            if store_fault(e) is None:
                raise
            up.add_metric([self.market], 0)
            yield up
            return
        up.add_metric([self.market], 1)
        lag = GaugeMetricFamily("ledger_read_model_lag_events", "Events recorded in the "
                                "store that the read model has not applied yet.",
                                labels=["read_model", "market"])
        position = GaugeMetricFamily("ledger_read_model_position", "The last store "
                                     "position the read model applied.",
                                     labels=["read_model", "market"])
        head = GaugeMetricFamily("ledger_store_head", "The store's last position.",
                                 labels=["market"])
        for row in status:
            lag.add_metric([row["name"], self.market], row["lag"])
            position.add_metric([row["name"], self.market], row["position"])
        head.add_metric([self.market], status[0]["head"] if status else 0)
        yield from (up, lag, position, head)


LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str | None) -> bool:
    """Whether the client's address is on the loopback interface."""
    if host is None:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def check_scraper(request: Request, token: str | None) -> None:
    """Let the scrape through, or refuse it (401 without the token, 403 off loopback)."""
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 token.encode()):
            raise ServiceError(401, "unauthorized", "/metrics needs Authorization: Bearer "
                               "<the metrics token given to `ledger serve --metrics-token`>")
        return
    if not is_loopback(request.client.host if request.client else None):
        raise ServiceError(403, "forbidden", "/metrics answers only on loopback unless "
                           "`ledger serve --metrics-token` sets a token")


def render(service: Service, market: str) -> bytes:
    """The scrape: every counter of every worker, and this store's read-model lag."""
    return metrics.render(ReadModels(service, market))
