"""What the client returns once an answer has verified. Receipts and claim checks are the
log's own typed documents (`ledger.documents.Receipt`, `ClaimCheck`, re-exported here); proofs
and checkpoints get the small frozen classes below, with `from_dict`/`to_dict` in the API's JSON
shape.

Answers the client passes through unchanged (entries, bundles, search results, chains of title,
notary keys, blocks, health) stay parsed JSON (`dict`): a class would only mirror the shapes
docs/api.md already specifies, and a bundle must be kept exactly as the server sent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from copyledger.ledger.documents import ClaimCheck, Receipt

__all__ = ["ClaimCheck", "ConsistencyProof", "InclusionProof", "Receipt", "SignedCheckpoint"]


@dataclass(frozen=True)
class InclusionProof:
    """A verified answer of GET /v1/entries/{seq}/proof. `checkpoint_verified` is False when
    no checkpoint was signed at exactly `tree_size` (the proof then only agrees with itself)."""

    seq: int
    tree_size: int
    leaf_hash: str
    root: str
    proof: tuple[str, ...]
    checkpoint: str | None
    checkpoint_verified: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InclusionProof:
        return cls(seq=d["seq"], tree_size=d["tree_size"], leaf_hash=d["leaf_hash"],
                   root=d["root"], proof=tuple(d["proof"]), checkpoint=d.get("checkpoint"))

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "tree_size": self.tree_size, "leaf_hash": self.leaf_hash,
                "root": self.root, "proof": list(self.proof), "checkpoint": self.checkpoint}


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose signature verified: the signed note and what it says."""

    note: str
    origin: str
    size: int
    root: bytes


@dataclass(frozen=True)
class ConsistencyProof:
    """A verified answer of GET /v1/log/consistency: the tree `old_size` is a prefix of the
    tree `new_size`, both roots being those of signed checkpoints."""

    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConsistencyProof:
        return cls(old_size=d["from"], new_size=d["to"], old_root=d["old_root"],
                   new_root=d["new_root"], proof=tuple(d["proof"]))

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.old_size, "to": self.new_size, "old_root": self.old_root,
                "new_root": self.new_root, "proof": list(self.proof)}
