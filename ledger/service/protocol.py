"""uvicorn's HTTP protocol with the limits it lacks: idle, header and body timeouts, and a
cap on requests in flight answered 503 in the service's error body.

uvicorn arms its keep-alive timer only after a response, so a connection that never sends
a byte, sends half a header, or trickles a body is kept for ever; it has no header or body
timeout. These are deadlines of the connection, so they live here, in a small subclass of
uvicorn's httptools protocol (the one `uvicorn[standard]` runs), not in the ASGI app,
which never sees a request before its headers are complete. `ledger serve` passes the
limits to its worker processes in LEDGER_SERVE_LIMITS (JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ledger import metrics
from ledger.service.status import RETRY_AFTER, error_body

ENV = "LEDGER_SERVE_LIMITS"


@dataclass(frozen=True)
class Limits:
    """How long a client may take and how much it may send, per connection and request."""

    keep_alive: int = 5  # seconds an idle connection is kept (before and between requests)
    header: float = 10.0  # seconds from a request's first byte to the end of its headers
    body: float = 30.0  # seconds from the end of the headers to the end of the body
    concurrency: int = 200  # requests handled at once by one worker; more are 503

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Limits:
        return cls(**json.loads(os.environ.get(ENV, "{}")))


def response(status: int, reason: str, code: str, message: str,
             headers: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, in the service's error body."""
    body = json.dumps(error_body(code, message)).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# Responses that never end by themselves (the dashboard's live feed): told that their
# client left when the worker stops, instead of holding the stop for as long as they last.
ENDLESS = frozenset({"/dashboard/api/changes"})


class LimitedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with Limits.from_env() (read once per worker process)."""

    _process_limits: ClassVar[Limits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if LimitedProtocol._process_limits is None:
            LimitedProtocol._process_limits = Limits.from_env()
        self.limits: Limits = LimitedProtocol._process_limits
        self.timeout_keep_alive = self.limits.keep_alive
        self.limit_concurrency = None  # counted in on_headers_complete instead
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, expire: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        metrics.CONNECTIONS.inc()
        # uvicorn's keep-alive timer starts after a first response: start it now too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.limits.keep_alive, self.timeout_keep_alive_handler)

    def shutdown(self) -> None:
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete
                and cycle.scope["path"] in ENDLESS):
            cycle.disconnected = True  # the app's receive() says http.disconnect, so the
            cycle.message_event.set()  # stream ends; what it still sends is dropped
            # The body's last chunk, so the client sees a stream that ended (and opens
            # another, on a worker that runs), then the connection goes.
            self._close_with(b"0\r\n\r\n" if cycle.chunked_encoding else b"")
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        metrics.CONNECTIONS.dec()
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        idle = self._deadline is None and (self.cycle is None or self.cycle.response_complete)
        if idle and self.timeout_keep_alive_task is None and not self.transport.is_closing():
            # Bytes that began no request (blank lines): still idle, the timer goes on.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.limits.keep_alive, self.timeout_keep_alive_handler)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.limits.header, self._header_expired)

    def on_headers_complete(self) -> None:
        self._disarm()
        busy = len(self.tasks) >= self.limits.concurrency
        self.app = self._busy if busy else self.config.loaded_app
        super().on_headers_complete()
        self._arm(self.limits.body, self._body_expired)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _header_expired(self) -> None:
        self._deadline = None
        self._close_with(response(408, "Request Timeout", "request_timeout",
                                  f"the request's headers took over {self.limits.header:g} s"))

    def _body_expired(self) -> None:
        self._deadline = None
        cycle = self.cycle
        answer = b""
        if cycle is not None and not cycle.response_started:
            answer = response(408, "Request Timeout", "request_timeout",
                              f"the request's body took over {self.limits.body:g} s")
        if cycle is not None:  # the app's reading ends; what it still sends is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self._close_with(answer)

    def _close_with(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()

    async def _busy(self, scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps(error_body(
            "overloaded", f"this worker is handling {self.limits.concurrency} requests "
            "already; try again shortly")).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"retry-after", RETRY_AFTER.encode()),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
