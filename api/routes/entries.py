"""Anyone: read entries, their inclusion proofs and evidence bundles, and search by content
hash."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request

from copyledger.api.deps import FastJSONResponse, node
from copyledger.api.models import (
    BUNDLE_EXAMPLE,
    ENTRY_EXAMPLE,
    PROOF_EXAMPLE,
    SEARCH_EXAMPLE,
    BundleOut,
    EntryOut,
    ProofOut,
    SearchOut,
)
from copyledger.api.openapi import PUBLIC, answers, problems
from copyledger.service import reads
from copyledger.service.operations import MAX_INT

router = APIRouter(tags=["entries"])


@router.get("/v1/entries/{seq}", response_model=EntryOut, summary="An entry",
            responses={**answers(ENTRY_EXAMPLE), **problems(404, 422)}, openapi_extra=PUBLIC)
def get_entry(request: Request, seq: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    return reads.entry(node(request), seq)


@router.get(
    "/v1/entries/{seq}/proof",
    response_model=ProofOut,
    summary="Inclusion proof",
    description="RFC 9162 inclusion proof of entry `seq` in the tree of `tree_size` leaves "
    "(default: the latest). Hashes are lowercase hex.",
    responses={**answers(PROOF_EXAMPLE), **problems(404, 422)},
    openapi_extra=PUBLIC,
)
def get_proof(
    request: Request,
    seq: int = Path(ge=0, le=MAX_INT),
    tree_size: int | None = Query(default=None, ge=1, le=MAX_INT),
) -> dict[str, Any]:
    return reads.proof(node(request), seq, tree_size)


@router.get(
    "/v1/entries/{seq}/bundle",
    summary="Evidence bundle",
    description="One self-contained JSON document that proves the entry offline: the entry, its "
    "leaf hash, the inclusion proof to the signed checkpoint of the block that sealed it, the "
    "block header and signed block note, the RFC 3161 tokens over the block hash, the notary's "
    "keys and TSA certificates, the same proof in C2SP tlog-proof text form, and for a work or "
    "a transfer the work's chain of title, each link with its proof. Verify it with "
    "`copyledger verify BUNDLE [FILE]`; docs/verification.md specifies each step.",
    response_model=BundleOut,
    responses={**answers(BUNDLE_EXAMPLE), **problems(404, 422)},
    openapi_extra=PUBLIC,
)
def get_bundle(request: Request, seq: int = Path(ge=0, le=MAX_INT)) -> FastJSONResponse:
    return FastJSONResponse(reads.bundle(node(request), seq))


@router.get(
    "/v1/search",
    response_model=SearchOut,
    summary="Find content by hash",
    description="Every entry whose content has this SHA-256, oldest first (priority order); "
    "at most 1000, with `truncated` true when there are more.",
    responses={**answers(SEARCH_EXAMPLE), **problems(422)},
    openapi_extra=PUBLIC,
)
def search(request: Request, sha256: str = Query(description="64 lowercase hex")) -> dict[str, Any]:
    return reads.search(node(request), sha256)
