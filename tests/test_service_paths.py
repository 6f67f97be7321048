"""Paths the service does not have get its error body; /docs and /redoc work offline (every
script and stylesheet they load is served by the service itself)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from ledger import FixedClock, Ledger
from tests.support.service import Api, in_process


@pytest.fixture
def api(ledger: Ledger, backend: str, clock: FixedClock) -> Iterator[Api]:
    with in_process(backend, clock, ledger) as api:
        yield api


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/no-such-path", 404, "not_found"),
    ("GET", "/v1/no/such/read", 404, "not_found"),
    ("POST", "/v1/command", 404, "not_found"),
    ("GET", "/static-offline-docs/no-such-file.js", 404, "not_found"),
    ("DELETE", "/v1/commands", 405, "method_not_allowed"),
    ("GET", "/v1/commands", 405, "method_not_allowed"),
    ("POST", "/healthz", 405, "method_not_allowed"),
])
def test_a_path_or_method_the_service_lacks_gets_the_service_s_error_body(
    api: Api, method: str, path: str, status: int, code: str,
) -> None:
    response = api.client.request(method, path, headers={"Authorization": "Bearer x"})
    assert response.status_code == status
    body = response.json()
    assert body == {"ok": False, "command_id": None, "error": body["error"]}
    assert (body["error"]["code"], body["error"]["details"]) == (code, {})
    assert "/docs" in body["error"]["message"]
    if status == 405:
        assert response.headers["allow"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_the_service_itself(api: Api, page: str) -> None:
    response = api.client.get(page)
    assert response.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", response.text)
    assert any(u.endswith(".js") for u in urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/"), f"{url} is not on the server"
        assert not url.startswith("//"), f"{url} is not on the server"
        assert api.client.get(url).status_code == 200, url
