"""The real `ledger serve` over raw sockets: idle connections, slow headers and slow bodies
are cut off after their timeouts, and requests past the concurrency cap get 503."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import NewUrl
from tests.support.service import Server, add_token, serving

LIMITS = ["--timeout-keep-alive", "1", "--header-timeout", "1", "--body-timeout", "1",
          "--limit-concurrency", "2"]
BOUND = 5.0  # seconds any wait here may take before the test fails


@pytest.fixture(scope="module")
def limited(new_url: NewUrl, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Server, str]]:
    """A server with 1 s timeouts and a cap of 2 requests; a seller's token for it."""
    url = new_url()
    token = add_token(url, "seller", "seller-1")
    with serving(url, tmp_path_factory.mktemp("limits") / "serve.log", *LIMITS) as server:
        yield server, token


def connect(server: Server) -> socket.socket:
    host, port = server.base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=BOUND)


def until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """(everything the server sent, seconds until it closed the connection)."""
    started, received = time.monotonic(), b""
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic() - started


def error_of(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]["code"]


def post_head(token: str, length: int = 100) -> bytes:
    return (f"POST /v1/commands HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def test_a_connection_that_sends_nothing_is_closed_after_the_keep_alive_timeout(
    limited: tuple[Server, str],
) -> None:
    with connect(limited[0]) as sock:
        answer, waited = until_closed(sock)
    assert answer == b""
    assert 0.8 < waited < 3


def test_a_connection_idle_after_a_response_is_closed_after_the_keep_alive_timeout(
    limited: tuple[Server, str],
) -> None:
    with connect(limited[0]) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer, waited = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200")
    assert waited < 3


@pytest.mark.parametrize("trickle", [False, True], ids=["stalls", "trickles"])
def test_a_client_slow_to_send_its_headers_gets_408_after_the_header_timeout(
    limited: tuple[Server, str], trickle: bool,
) -> None:
    with connect(limited[0]) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.2 if trickle else BOUND)
        answer = b""
        while time.monotonic() - started < BOUND:
            try:  # a byte of header every 0.2 s (slowloris) does not keep it open
                if trickle:
                    sock.sendall(b"X")
                if not (chunk := sock.recv(65536)):
                    break
                answer += chunk
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        waited = time.monotonic() - started
    assert error_of(answer) == (408, "request_timeout")
    assert 0.8 < waited < 3


def test_a_body_that_trickles_gets_408_after_the_body_timeout(
    limited: tuple[Server, str],
) -> None:
    server, token = limited
    with connect(server) as sock:
        sock.sendall(post_head(token) + b'{"command": ')
        answer, waited = until_closed(sock)
    assert error_of(answer) == (408, "request_timeout")
    assert 0.8 < waited < 3


def test_requests_past_the_concurrency_cap_get_503_until_some_finish(
    limited: tuple[Server, str],
) -> None:
    server, token = limited
    holding = [connect(server), connect(server)]
    for sock in holding:  # two requests in flight, waiting for their bodies
        sock.sendall(post_head(token))
    try:
        answers = []
        for _ in range(10):
            with connect(server) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answers.append(until_closed(sock)[0])
            if answers[-1].startswith(b"HTTP/1.1 503"):
                break
            time.sleep(0.02)
        assert error_of(answers[-1]) == (503, "overloaded")
        assert b"\r\nretry-after: 2\r\n" in answers[-1].lower()
    finally:
        for sock in holding:
            sock.close()
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:  # the held requests are gone: served again
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if until_closed(sock)[0].startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.05)
    pytest.fail("the server did not serve again once the held requests were gone")
