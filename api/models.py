"""Request and response shapes, with examples for the OpenAPI docs. Field rules live in
`ledger.entry` (one place); these models give types, documentation and examples."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
CHECKPOINT_EXAMPLE = (
    "localhost/copyledger\n1\nnqnn6B6z2v1mFpQl3gb4nXxYCS1fBGLiEz7qM5SWkCQ=\n\n"
    "— localhost/copyledger uQ3kU2Ww...==\n"
)


class WorkIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sha256": SHA,
                    "size": 1048576,
                    "media_type": "image/png",
                    "title": "Harbour at dawn",
                    "creators": ["Ada Example"],
                    "work_type": "image",
                    "license": "CC-BY-4.0",
                    "metadata": {"year": 2026},
                }
            ]
        },
    )
    sha256: str = Field(description="SHA-256 of the work's bytes, 64 lowercase hex characters")
    title: str
    creators: list[str]
    work_type: str = Field(description="text, image, audio, video, software, dataset or other")
    size: int | None = Field(default=None, description="size in bytes")
    media_type: str | None = None
    license: str | None = None
    metadata: dict[str, Any] | None = None
    fingerprints: dict[str, Any] | None = Field(
        default=None,
        description="perceptual fingerprints computed on the creator's machine "
        "(`copyledger register` does): pdq, phash (images), minhash (text)",
    )


class EvidenceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sha256": SHA,
                    "source_url": "https://example.org/listing/42",
                    "captured_at": "2026-11-20T10:00:00Z",
                    "capture_method": "screenshot",
                    "description": "Listing offering copies of the registered photograph",
                    "related_work": 0,
                }
            ]
        },
    )
    sha256: str
    captured_at: str
    capture_method: str
    description: str
    source_url: str | None = None
    related_work: int | None = None
    size: int | None = None
    media_type: str | None = None
    metadata: dict[str, Any] | None = None
    warc_records: list[dict[str, Any]] | None = Field(
        default=None,
        description="for a WARC capture: each response record's target_uri, warc_date, "
        "record_id and payload_sha256 (the CLI computes them)",
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
