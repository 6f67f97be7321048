"""bench/rebuild.py's bulk writer writes what a save writes (hash rows, command rows,
snapshot hash rows), so the stores it generates pass `ledger audit verify` (both backends)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from ledger import Ledger
from ledger.audit import integrity
from tests.conftest import POSTGRES_URL, SKIP_POSTGRES

ROOT = Path(__file__).parent.parent
SMALL = ["--generate-only", "--quick", "--small", "3000", "--campaigns", "1",
         "--events-per-registration", "200"]  # 20 registrations: snapshots at version 50


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def generated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a small store made by `bench/rebuild.py --generate-only`."""
    if request.param == "postgres" and SKIP_POSTGRES:
        pytest.skip("LEDGER_TEST_SKIP_POSTGRES=1")
    database = f"ledger_bench_{uuid4().hex[:12]}"
    pg_url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    subprocess.run([sys.executable, "bench/rebuild.py", *SMALL, "--backends", request.param,
                    "--sqlite-dir", str(tmp_path), "--pg-url", pg_url], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120)
    try:
        yield (f"sqlite:///{tmp_path / 'rebuild-3k.db'}" if request.param == "sqlite"
               else f"{pg_url}?schema=store_3k")
    finally:
        if request.param == "postgres":
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                              .format(sql.Identifier(database)))


def test_a_store_generated_by_the_rebuild_bench_verifies_clean(generated: str) -> None:
    with Ledger.open(generated, pool_size=1) as ledger:
        checked = integrity.verify(ledger.app)
    assert checked.report.findings == []
    assert checked.report.events == 3000
    assert checked.snapshots > 0
    assert checked.commands > 2000
