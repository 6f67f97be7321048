"""Merkle roots over aggregates' heads (RFC 6962's tree shape), one leaf at a time."""

from __future__ import annotations

import hashlib
import struct
from uuid import UUID


class MerkleRoot:
    """RFC 6962's Merkle tree hash, fed one leaf at a time in O(log n) memory."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []  # perfect subtrees: (leaves, hash)
        self.leaves = 0

    def add(self, originator_id: UUID, version: int, digest: bytes) -> None:
        self.leaves += 1
        node = (1, hashlib.sha256(b"\x00" + originator_id.bytes + struct.pack(">Q", version)
                                  + digest).digest())
        while self.stack and self.stack[-1][0] == node[0]:
            size, left = self.stack.pop()
            node = (2 * size, _node(left, node[1]))
        self.stack.append(node)

    def root(self) -> bytes:
        if not self.stack:
            return hashlib.sha256(b"").digest()
        acc = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            acc = _node(left, acc)
        return acc


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()

