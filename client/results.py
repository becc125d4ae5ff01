"""What the client returns once an answer has verified: small frozen classes for the answers
it checks (receipts, proofs, checkpoints, claim checks), each with `from_dict`/`to_dict` in the
API's JSON shape.

Answers the client passes through unchanged (entries, bundles, search results, chains of title,
notary keys, blocks, health) stay parsed JSON (`dict`): a class would only mirror the shapes
docs/api.md already specifies, and a bundle must be kept exactly as the server sent it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClaimCheck", "ConsistencyProof", "InclusionProof", "Receipt", "SignedCheckpoint"]


@dataclass(frozen=True)
class Receipt:
    """A verified registration (POST /v1/works, /v1/evidence, /v1/transfers, /v1/claims): the
    entry as sealed, its leaf hash, and its inclusion proof to a signed checkpoint."""

    seq: int
    leaf_hash: str
    block_height: int
    entry: dict[str, Any]
    tree_size: int
    root: str
    proof: tuple[str, ...]
    checkpoint: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Receipt:
        rc = d["receipt"]
        return cls(seq=d["seq"], leaf_hash=d["leaf_hash"], block_height=d["block_height"],
                   entry=d["entry"], tree_size=rc["tree_size"], root=rc["root"],
                   proof=tuple(rc["proof"]), checkpoint=rc["checkpoint"])

    def to_dict(self) -> dict[str, Any]:
        """The registration JSON, as the server sent it (keep it: it is the receipt)."""
        return {"seq": self.seq, "leaf_hash": self.leaf_hash, "block_height": self.block_height,
                "entry": self.entry, "receipt": {"tree_size": self.tree_size, "root": self.root,
                                                 "proof": list(self.proof),
                                                 "checkpoint": self.checkpoint}}


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


@dataclass(frozen=True)
class ClaimCheck:
    """A claim-check answer whose notary signature verified. The fields a platform decides on
    are typed; `answer` is the whole signed JSON (keep it: it re-verifies offline)."""

    verdict: str
    work_registered: bool
    work_seq: int | None
    claimant_is_registrant: bool
    claimant_is_holder: bool
    holder: str | None
    origin: str
    tree_size: int
    answer: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClaimCheck:
        return cls(verdict=d["verdict"], work_registered=d["work_registered"],
                   work_seq=d["work_seq"], claimant_is_registrant=d["claimant_is_registrant"],
                   claimant_is_holder=d["claimant_is_holder"], holder=d["holder"],
                   origin=d["origin"], tree_size=d["tree_size"], answer=d)

    def to_dict(self) -> dict[str, Any]:
        return self.answer
