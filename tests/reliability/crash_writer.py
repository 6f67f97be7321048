"""The writer that `test_crash_writes.py` kills: a fixed list of commands, sent in order
(one at a time, or in groups with `send_many`), each result reported to the parent over a
pipe as soon as the ledger returns it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from itertools import groupby
from multiprocessing.connection import Connection
from typing import Any

from ledger import FixedClock, Ledger
from ledger.aggregates.base import registration_uuid
from tests.support.helpers import (
    NOW,
    STARTS,
    Json,
    approve,
    create_campaign,
    hours,
    record_performance,
    register,
    slot,
    withdraw,
)

CAMPAIGN = "crash-writes-live"
REGISTRATIONS = 40
PERFORMANCE_AT = STARTS + hours(3)  # after the reported period (STARTS, STARTS + 2h)

Step = tuple[datetime, Json]  # the clock's time when the command is sent, the command


def script() -> list[Step]:
    """The same commands, with the same `command_id`s, every time: all valid in this order."""
    steps: list[Step] = [(NOW, create_campaign(CAMPAIGN))]
    regs: list[str] = []
    for n in range(REGISTRATIONS):
        seller_id, account_id = f"seller-{n % 5}", f"shop-{n}"
        steps.append((NOW, register(CAMPAIGN, seller_id=seller_id, account_id=account_id,
                                    sessions=[slot(n % 24), slot(n % 24 + 30)])))
        regs.append(str(registration_uuid(CAMPAIGN, account_id)))
    approved: list[tuple[str, str]] = []
    for n, reg in enumerate(regs):
        seller_id = f"seller-{n % 5}"
        if n % 8 == 7:
            steps.append((NOW, withdraw(reg, seller_id=seller_id)))
            continue
        steps.append((NOW, approve(reg)))
        approved.append((reg, seller_id))
        if n % 6 == 0:
            steps.append((NOW, withdraw(reg, ["s2"], seller_id=seller_id)))
    for n, (reg, _) in enumerate(approved):
        steps.append((PERFORMANCE_AT, record_performance(reg, report_id=f"report-{n}")))
        if n % 9 == 0:  # the same report again, under a new command_id: accepted, no event
            steps.append((PERFORMANCE_AT, record_performance(reg, report_id=f"report-{n}")))
    for index, (_, cmd) in enumerate(steps):
        cmd["command_id"] = f"crash-{index:03d}"
    return steps


def send_all(ledger: Ledger, clock: FixedClock, steps: list[Step], group_size: int = 0
             ) -> list[dict[str, Any]]:
    """Every step's result, in order (in groups of `group_size` if set)."""
    return [result for _, result in sent(ledger, clock, steps, group_size)]


def sent(ledger: Ledger, clock: FixedClock, steps: list[Step], group_size: int
         ) -> Iterator[tuple[Json, dict[str, Any]]]:
    """Each command and its result as soon as the ledger returns it. Grouped: the steps
    that share a clock reading go through `send_many` together."""
    for moment, together in groupby(steps, key=lambda step: step[0]):
        clock.set(moment)
        commands = [cmd for _, cmd in together]
        if group_size:
            yield from zip(commands, ledger.send_many(commands, group_size=group_size),
                           strict=True)
        else:
            yield from ((cmd, ledger.send(cmd)) for cmd in commands)


def writer(url: str, out: Connection, group_size: int = 0) -> None:
    """Send every command from the first, reporting ("result", command_id, result) each."""
    clock = FixedClock(NOW)
    with Ledger.open(url, clock=clock, pool_size=1) as ledger:
        out.send(("ready", None, None))
        for cmd, result in sent(ledger, clock, script(), group_size):
            out.send(("result", cmd["command_id"], result))
    out.send(("done", None, None))
