"""Seals anchored outside the database: listing, HMAC signatures, and a root kept elsewhere.

A seal's rows live in the database they vouch for, so whoever can write it can rewrite a
chain *and* the seal rows consistently, or delete the seals. Two anchors outside it:

- the root printed by `ledger audit seal`, kept elsewhere: `verify --root HEX` requires
  a seal with that root whose heads still give it (so its heads are the ones sealed, and
  `chain.verify` checks them against the store);
- `LEDGER_SEAL_KEY`: `seal` stores HMAC-SHA256(key, the seal's content) in
  `ledger_seal_signatures`; `verify` with the key checks every signature, and reports an
  unsigned seal made after a signed one (unsigned seals before the first signed one were
  made before the key was set: counted, not reported). Without the key nobody can make a
  valid signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from ledger.audit.chain import Seal
from ledger.audit.findings import Finding
from ledger.audit.keyorder import ChainStore
from ledger.audit.merkle import MerkleRoot
from ledger.store.hashing import key_from_env as key_from_env


def _utc(value: datetime | str) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.astimezone(UTC).isoformat()


def content(seal: Seal, sealed_at: datetime | str) -> bytes:
    """What a signature covers: every stored field of the seal (its root covers its heads)."""
    return (f"ledger-seal-v1\n{seal.seal_id}\n{_utc(sealed_at)}\n{seal.position}\n"
            f"{seal.aggregates}\n{seal.events}\n{seal.root}").encode()


def signer(key: bytes) -> Callable[[Seal, datetime], bytes]:
    """The `sign` argument of `chain.seal` for this key."""
    def sign(seal: Seal, sealed_at: datetime) -> bytes:
        return hmac.new(key, content(seal, sealed_at), hashlib.sha256).digest()
    return sign


@dataclass(frozen=True)
class SealRow:
    """A stored seal, when it was made, and its signature if it was signed."""
    seal: Seal
    sealed_at: datetime
    signature: bytes | None

    def as_dict(self) -> dict[str, Any]:
        sealed_at = self.sealed_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return {"seal_id": self.seal.seal_id, "sealed_at": sealed_at,
                "position": self.seal.position, "aggregates": self.seal.aggregates,
                "events": self.seal.events, "root": self.seal.root,
                "signed": self.signature is not None}


def list_seals(store: ChainStore) -> list[SealRow]:
    """Every seal, oldest first, with its signature if it has one."""
    with store.snapshot() as curs:
        curs.execute(
            "SELECT s.seal_id, s.sealed_at, s.position, s.aggregates, s.events, s.root, "
            f"g.signature FROM {store.seals_table} s LEFT JOIN {store.seal_signatures_table} g "
            "ON g.seal_id = s.seal_id ORDER BY s.seal_id")
        rows = list(curs.fetchall())
    return [SealRow(
        Seal(int(r["seal_id"]), int(r["position"]), int(r["aggregates"]), int(r["events"]),
             bytes(r["root"]).hex()),
        datetime.fromisoformat(_utc(r["sealed_at"])),
        None if r["signature"] is None else bytes(r["signature"])) for r in rows]


@dataclass
class Signatures:
    """What `check_signatures` found: seals checked by signature, unsigned seals older
    than the first signed one (made before the key was set: not findings), a note."""

    signed: int = 0
    predating: int = 0
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None


def check_signatures(seals: list[SealRow], key: bytes) -> Signatures:
    """A wrong signature anywhere; no signature on a seal made after a signed one."""
    sign = signer(key)
    done = Signatures()
    first = next((s.seal.seal_id for s in seals if s.signature is not None), None)
    if first is None:
        done.predating = len(seals)
        which = f"none of the {len(seals)} seal(s) is signed" if seals else "no seal exists"
        done.note = (f"LEDGER_SEAL_KEY is set but {which}: run `ledger audit seal` with the "
                     "key to start signing")
    for row in seals:
        seal_id = row.seal.seal_id
        if row.signature is None:
            if first is not None and seal_id < first:
                done.predating += 1
            elif first is not None:
                done.findings.append(Finding(
                    "seal_unsigned", None, None, f"seal #{seal_id} has no signature, but the "
                    f"earlier seal #{first} is signed: it was made without LEDGER_SEAL_KEY, "
                    "or its signature was deleted"))
            continue
        done.signed += 1
        if not hmac.compare_digest(row.signature, sign(row.seal, row.sealed_at)):
            done.findings.append(Finding(
                "seal_forged", None, None, f"seal #{seal_id}: its signature does not match "
                "its content under LEDGER_SEAL_KEY: the seal was changed, or signed with "
                "another key"))
    return done


def check_root(store: ChainStore, seals: list[SealRow], root: bytes) -> Iterator[Finding]:
    """The seal with this root exists and its stored heads still give it."""
    matching = [s for s in seals if s.seal.root == root.hex()]
    if not matching:
        yield Finding("root_not_found", None, None, f"no seal has root {root.hex()}: the "
                      "seal rows were deleted or rewritten since it was printed")
        return
    seal_id = matching[0].seal.seal_id
    if _heads_root(store, seal_id) != root:
        yield Finding("root_not_found", None, None, f"seal #{seal_id} has root {root.hex()}, "
                      "but its stored heads no longer give it: the heads were rewritten")


def _heads_root(store: ChainStore, seal_id: int) -> bytes:
    merkle = MerkleRoot()
    with store.snapshot() as curs:
        curs.execute(f"SELECT originator_id, originator_version, hash FROM "
                     f"{store.seal_heads_table} WHERE seal_id = {store.p} "
                     "ORDER BY originator_id, originator_version", (seal_id,))
        for row in curs.fetchall():
            oid = row["originator_id"]
            merkle.add(oid if isinstance(oid, UUID) else UUID(oid), row["originator_version"],
                       bytes(row["hash"]))
    return merkle.root()
