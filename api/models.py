"""Request and response shapes, with examples for the OpenAPI docs. Field rules live in
`ledger.entry` (one place); these models give types, documentation and examples."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from copyledger.service.inputs import (
    SHA,
    AnswerIn,
    CheckIn,
    ClaimIn,
    EvidenceIn,
    TransferIn,
    WorkIn,
)

__all__ = ["AnswerIn", "CheckIn", "ClaimIn", "EvidenceIn", "TransferIn", "WorkIn"]

CHECKPOINT_EXAMPLE = (
    "localhost/copyledger\n1\nnqnn6B6z2v1mFpQl3gb4nXxYCS1fBGLiEz7qM5SWkCQ=\n\n"
    "— localhost/copyledger uQ3kU2Ww...==\n"
)


class ReceiptOut(BaseModel):
    tree_size: int
    root: str
    proof: list[str]
    checkpoint: str = Field(description="C2SP signed checkpoint of the block that sealed the entry")


class RegistrationOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "seq": 0,
                    "leaf_hash": SHA,
                    "block_height": 1,
                    "entry": {"schema": "copyledger/entry/v1", "kind": "work"},
                    "receipt": {"tree_size": 1, "root": SHA, "proof": [],
                                "checkpoint": CHECKPOINT_EXAMPLE},
                }
            ]
        }
    )
    seq: int
    leaf_hash: str
    block_height: int
    entry: dict[str, Any]
    receipt: ReceiptOut
    already_registered: bool | None = Field(
        default=None, description="present (true) only when the answer is this account's "
        "earlier registration of the same content (status 200), not a new entry")


class EntryOut(BaseModel):
    seq: int
    leaf_hash: str
    block_height: int
    entry: dict[str, Any]


class ProofOut(BaseModel):
    seq: int
    tree_size: int
    leaf_hash: str
    root: str
    proof: list[str]
    checkpoint: str | None = Field(
        default=None, description="signed checkpoint at exactly this tree size, if one was signed"
    )


class ConsistencyOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: int = Field(alias="from")
    to: int
    old_root: str
    new_root: str
    proof: list[str]


class LogOut(BaseModel):
    origin: str
    verifier_key: str = Field(description="Go note verifier key: name+hexkeyid+base64(0x01||key)")
    tree_size: int
    root: str
    block_height: int


class BlockOut(BaseModel):
    height: int
    hash: str
    header: dict[str, Any]
    checkpoint: str
    block_note: str
    timestamps: list[dict[str, str]] = Field(
        default_factory=list, description="RFC 3161 tokens (base64 DER) over the block hash"
    )


class SearchOut(BaseModel):
    sha256: str
    results: list[EntryOut]
    truncated: bool = False
