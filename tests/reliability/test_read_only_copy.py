"""A read-only copy of a SQLite store (a forensic copy on a read-only file system) can be
read: show, events, audit, queries; what would write says the store is read-only, in one
line, and the copy is left byte for byte as it was."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import FixedClock, Ledger
from ledger.projections.registry import projector
from tests.reliability.test_storage_faults import cli, one_line, remount, tmpfs
from tests.support.helpers import NOW, approve, create_campaign, register


def make_store(folder: Path) -> tuple[str, str]:
    """A store whose read models are behind by one event: (url, a registration id)."""
    url = f"sqlite:///{folder / 'ledger.db'}"
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert ledger.send(create_campaign())["ok"]
        registration = ledger.send(register())["aggregate_id"]
        projector(ledger.app).catch_up()
        assert ledger.send(approve(registration))["ok"]
    return url, registration


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(params=["closed", "with-wal"])
def forensic_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A copy of a store on a read-only file system: of a closed store (one file), or of
    one taken while a process had it open (with its -wal and -shm, events in the -wal)."""
    url, registration = make_store(tmp_path)
    with tmpfs(tmp_path / "copy", "16m") as folder, \
            Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as live:
        if request.param == "with-wal":
            assert live.send(register(seller_id="seller-9", account_id="shop-9"))["ok"]
            assert (tmp_path / "ledger.db-wal").stat().st_size > 0
        for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
            if request.param == "with-wal" and (tmp_path / name).exists():
                shutil.copy(tmp_path / name, folder / name)
        if request.param == "closed":
            live.close()
            shutil.copy(tmp_path / "ledger.db", folder / "ledger.db")
        remount(folder, "ro")
        try:
            before = files(folder)
            yield f"sqlite:///{folder / 'ledger.db'}", registration
            assert files(folder) == before
        finally:
            remount(folder, "rw")


@pytest.mark.parametrize("args", [
    ["show", "campaign", "mega-1111-live"],
    ["show", "registration", "{registration}"],
    ["events", "{registration}"],
    ["audit", "history", "{registration}"],
    ["audit", "as-of", "{registration}", "--version", "1"],
    ["audit", "verify"],
    ["manage", "--seller", "seller-1"],
    ["campaigns"],
], ids=lambda args: " ".join(args[:2]))
def test_reads_work_on_a_read_only_copy(forensic_copy: tuple[str, str], args: list[str]) -> None:
    url, registration = forensic_copy
    done = cli(url, *[a.format(registration=registration) for a in args])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip()


@pytest.mark.parametrize("args", [
    ["send", "-"],
    ["manage", "--seller", "seller-1", "--fresh"],
    ["projections", "catch-up"],
    ["projections", "rebuild"],
], ids=lambda args: " ".join(args))
def test_what_would_write_says_the_store_is_read_only(forensic_copy: tuple[str, str],
                                                      args: list[str]) -> None:
    url, _ = forensic_copy
    command = json.dumps(register(seller_id="seller-2", account_id="shop-2"))
    done = cli(url, *args, stdin=command)
    assert done.returncode == 2, done.stdout + done.stderr
    one_line(done.stderr, "the database is read-only")
