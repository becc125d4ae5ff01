"""Anyone: the log's identity, signed checkpoints, consistency proofs and block headers."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse

from copyledger.api.deps import registry
from copyledger.api.models import BlockOut, ConsistencyOut, LogOut
from copyledger.api.routes.entries import resolve_size
from copyledger.ledger import merkle
from copyledger.ledger.errors import InvalidInput, NotFound

router = APIRouter(tags=["log"])


@router.get("/v1/log", response_model=LogOut, summary="The log's identity and size")
def get_log(request: Request) -> dict[str, Any]:
    reg = registry(request)
    st = reg.sequencer.state
    if st.last is None:
        raise NotFound("the log has no block yet")
    return {
        "origin": reg.origin,
        "verifier_key": reg.verifier_key,
        "tree_size": st.last.header.tree_size,
        "root": st.last.header.tree_root.hex(),
        "block_height": st.last.header.height,
    }


@router.get(
    "/v1/log/checkpoint",
    response_class=PlainTextResponse,
    summary="Latest signed checkpoint",
    description="A C2SP checkpoint (c2sp.org/tlog-checkpoint) as a signed note, verifiable with "
    "Go's note.Open under the key from /v1/log.",
    responses={200: {"content": {"text/plain": {}}}},
)
def get_checkpoint(request: Request) -> PlainTextResponse:
    last = registry(request).sequencer.state.last
    if last is None:
        raise NotFound("the log has no checkpoint yet")
    return PlainTextResponse(last.checkpoint, media_type="text/plain; charset=utf-8")


@router.get(
    "/v1/log/consistency",
    response_model=ConsistencyOut,
    summary="Consistency proof",
    description="RFC 9162 consistency proof from tree size `from` to `to` (default: latest).",
)
def get_consistency(
    request: Request,
    from_: int = Query(alias="from", ge=0),
    to: int | None = Query(default=None, ge=0),
) -> dict[str, Any]:
    reg = registry(request)
    new = resolve_size(request, to)
    if from_ > new:
        raise InvalidInput(f"from ({from_}) must not exceed to ({new})")
    proof = merkle.consistency_proof(from_, new, reg.store)
    return {
        "from": from_,
        "to": new,
        "old_root": merkle.tree_hash(from_, reg.store).hex(),
        "new_root": merkle.tree_hash(new, reg.store).hex(),
        "proof": [p.hex() for p in proof],
    }


@router.get(
    "/v1/notary/keys",
    summary="Notary keys",
    description="The log's verifier keys (Go note format) with their validity, and the RFC 3161 "
    "TSA certificate chain (PEM): what to pin when verifying bundles and tokens offline.",
)
def get_notary_keys(request: Request) -> dict[str, Any]:
    k = registry(request).notary_keys()
    return {"log_keys": k.log_keys, "tsa_roots": k.tsa_roots, "tsa_chain": k.tsa_chain}


@router.get("/v1/blocks/{height}", response_model=BlockOut, summary="A block header")
def get_block(request: Request, height: int = Path(ge=0)) -> dict[str, Any]:
    reg = registry(request)
    b = reg.store.get_block(height)
    return {
        "timestamps": [
            {"tsa": tsa, "hash_alg": "sha256", "token": base64.b64encode(tok).decode()}
            for tsa, tok in reg.store.get_timestamps(height)
        ],
        "height": b.header.height,
        "hash": b.hash.hex(),
        "header": b.header.to_json(),
        "checkpoint": b.checkpoint,
        "block_note": b.block_note,
    }
