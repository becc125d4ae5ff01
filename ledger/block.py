"""Block headers: the hash-chained "blockchain" view of the log.

The sequencer seals entries in batches. Each batch becomes one block whose header names the batch
and the whole tree after it, and whose hash covers the previous block's hash, so a rewritten
history shows as a broken link to anyone holding two headers. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from copyledger.ledger import jcs
from copyledger.ledger.errors import IntegrityError, InvalidInput

SCHEMA = "copyledger/block/v1"
GENESIS_PREV = bytes(32)


@dataclass(frozen=True)
class BlockHeader:
    height: int
    prev_block_hash: bytes
    batch_root: bytes
    first_seq: int
    count: int
    tree_size: int
    tree_root: bytes
    sealed_at: str

    def to_json(self) -> dict[str, Any]:
        """The header as JSON with lowercase hex hashes; its canonical form is what gets hashed."""
        return {
            "schema": SCHEMA,
            "height": self.height,
            "prev_block_hash": self.prev_block_hash.hex(),
            "batch_root": self.batch_root.hex(),
            "first_seq": self.first_seq,
            "count": self.count,
            "tree_size": self.tree_size,
            "tree_root": self.tree_root.hex(),
            "sealed_at": self.sealed_at,
        }

    @classmethod
    def from_json(cls, obj: object) -> BlockHeader:
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
            raise InvalidInput(f"block header: expected an object with schema {SCHEMA!r}")
        try:
            return cls(
                height=_int(obj["height"]),
                prev_block_hash=_hash(obj["prev_block_hash"]),
                batch_root=_hash(obj["batch_root"]),
                first_seq=_int(obj["first_seq"]),
                count=_int(obj["count"]),
                tree_size=_int(obj["tree_size"]),
                tree_root=_hash(obj["tree_root"]),
                sealed_at=str(obj["sealed_at"]),
            )
        except KeyError as e:
            raise InvalidInput(f"block header: missing field {e.args[0]!r}") from None

    def canonical_bytes(self) -> bytes:
        return jcs.canonicalize(self.to_json())

    def hash(self) -> bytes:
        """SHA-256 of the header's RFC 8785 canonical JSON, worked out once per header (the
        fields are frozen; the audit asks for each block's hash twice: its own, its link)."""
        known: bytes | None = self.__dict__.get("_hash")
        if known is None:
            known = hashlib.sha256(self.canonical_bytes()).digest()
            object.__setattr__(self, "_hash", known)
        return known


def _int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise InvalidInput(f"block header: expected a non-negative integer, got {v!r}")
    return v


def _hash(v: object) -> bytes:
    if not isinstance(v, str) or len(v) != 64:
        raise InvalidInput(f"block header: expected 64 hex characters, got {v!r}")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise InvalidInput(f"block header: not hex: {v!r}") from None


def check_header(header: BlockHeader) -> None:
    """Rules a header must satisfy on its own."""
    if header.tree_size != header.first_seq + header.count:
        raise IntegrityError(
            f"block {header.height}: tree_size {header.tree_size} != first_seq + count",
            height=header.height,
        )
    if header.height == 0 and (header.prev_block_hash != GENESIS_PREV or header.first_seq != 0):
        raise IntegrityError("block 0: genesis must start at seq 0 with a zero prev hash", height=0)


def check_link(prev: BlockHeader, header: BlockHeader) -> None:
    """Rules that chain a header to its predecessor: height, hash link, no sequence gap."""
    check_header(header)
    if header.height != prev.height + 1:
        raise IntegrityError(
            f"block {header.height}: follows block {prev.height}", height=header.height
        )
    if header.prev_block_hash != prev.hash():
        raise IntegrityError(
            f"block {header.height}: prev_block_hash does not match block {prev.height}'s hash",
            height=header.height,
        )
    if header.first_seq != prev.tree_size:
        raise IntegrityError(
            f"block {header.height}: first_seq {header.first_seq} != previous tree size "
            f"{prev.tree_size}",
            height=header.height,
        )
