"""Anyone: read entries, their inclusion proofs, and search by content hash."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request

from copyledger.api.deps import FastJSONResponse, entry_json, parse_hex_hash, registry
from copyledger.api.models import EntryOut, ProofOut, SearchOut
from copyledger.api.registry import Registry
from copyledger.ledger import merkle
from copyledger.ledger.bundle import Timestamp, make_bundle
from copyledger.ledger.errors import InvalidInput

router = APIRouter(tags=["entries"])
SEARCH_LIMIT = 1000  # the oldest registrations come first, so priority is never cut off


def current_size(request: Request) -> int:
    return registry(request).sequencer.state.size


def resolve_size(request: Request, tree_size: int | None) -> int:
    size = current_size(request)
    if tree_size is None:
        return size
    if tree_size > size:
        raise InvalidInput(f"tree_size {tree_size} is beyond the log's size {size}")
    return tree_size


@router.get("/v1/entries/{seq}", response_model=EntryOut, summary="An entry")
def get_entry(request: Request, seq: int = Path(ge=0)) -> dict[str, Any]:
    return entry_json(registry(request).store.get_entry(seq))


@router.get(
    "/v1/entries/{seq}/proof",
    response_model=ProofOut,
    summary="Inclusion proof",
    description="RFC 9162 inclusion proof of entry `seq` in the tree of `tree_size` leaves "
    "(default: the latest). Hashes are lowercase hex.",
)
def get_proof(
    request: Request,
    seq: int = Path(ge=0),
    tree_size: int | None = Query(default=None, ge=1),
) -> dict[str, Any]:
    reg = registry(request)
    size = resolve_size(request, tree_size)
    if seq >= size:
        raise InvalidInput(f"seq {seq} is not in a tree of size {size}")
    leaf = reg.store.read_hashes([(0, seq)])[0]
    proof = merkle.inclusion_proof(seq, size, reg.store)
    root = merkle.tree_hash(size, reg.store)
    block = reg.store.block_for_size(size)
    return {
        "seq": seq,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "root": root.hex(),
        "proof": [p.hex() for p in proof],
        "checkpoint": block.checkpoint if block else None,
    }


@router.get(
    "/v1/entries/{seq}/bundle",
    summary="Evidence bundle",
    description="One self-contained JSON document that proves the entry offline: the entry, its "
    "leaf hash, the inclusion proof to the signed checkpoint of the block that sealed it, the "
    "block header and signed block note, the RFC 3161 tokens over the block hash, the notary's "
    "keys and TSA certificates, and the same proof in C2SP tlog-proof text form. Verify it with "
    "`copyledger verify BUNDLE [FILE]`; docs/verification.md specifies each step.",
)
def get_bundle(request: Request, seq: int = Path(ge=0)) -> FastJSONResponse:
    reg = registry(request)
    return FastJSONResponse(build_bundle(reg, seq))


def build_bundle(reg: Registry, seq: int) -> dict[str, Any]:
    row = reg.store.get_entry(seq)
    blk = reg.store.get_block(row.block_height)
    return make_bundle(
        origin=reg.origin,
        seq=seq,
        leaf_hash=row.leaf_hash,
        entry_data=row.data,
        proof=merkle.inclusion_proof(seq, blk.header.tree_size, reg.store),
        header=blk.header,
        block_hash=blk.hash,
        checkpoint=blk.checkpoint,
        block_note=blk.block_note,
        timestamps=[Timestamp(t, tok) for t, tok in reg.store.get_timestamps(blk.header.height)],
        notary=reg.notary_keys(),
    )


@router.get(
    "/v1/search",
    response_model=SearchOut,
    summary="Find content by hash",
    description="Every entry whose content has this SHA-256, oldest first (priority order); "
    "at most 1000, with `truncated` true when there are more.",
)
def search(request: Request, sha256: str = Query(description="64 lowercase hex")) -> dict[str, Any]:
    parse_hex_hash(sha256, "sha256")
    rows = registry(request).store.search_sha256(sha256, limit=SEARCH_LIMIT + 1)
    return {
        "sha256": sha256,
        "results": [entry_json(r) for r in rows[:SEARCH_LIMIT]],
        "truncated": len(rows) > SEARCH_LIMIT,
    }
