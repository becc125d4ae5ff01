"""Anyone: the log's identity, signed checkpoints, consistency proofs and block headers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse

from copyledger.api.deps import node
from copyledger.api.models import (
    BLOCK_EXAMPLE,
    CHECKPOINT_EXAMPLE,
    CONSISTENCY_EXAMPLE,
    LOG_EXAMPLE,
    NOTARY_KEYS_EXAMPLE,
    BlockOut,
    ConsistencyOut,
    LogOut,
    NotaryKeysOut,
)
from copyledger.api.openapi import PUBLIC, answers, problems
from copyledger.service import reads
from copyledger.service.operations import MAX_INT

router = APIRouter(tags=["log"])


@router.get("/v1/log", response_model=LogOut, response_model_exclude_none=True,
            summary="The log's identity and size",
            responses=answers(LOG_EXAMPLE), openapi_extra=PUBLIC)
def get_log(request: Request) -> dict[str, Any]:
    return reads.log_info(node(request))


@router.get(
    "/v1/log/checkpoint",
    response_class=PlainTextResponse,
    summary="Latest signed checkpoint",
    description="A C2SP checkpoint (c2sp.org/tlog-checkpoint) as a signed note, verifiable with "
    "Go's note.Open under the key from /v1/log.",
    responses={**answers(CHECKPOINT_EXAMPLE, media_type="text/plain"), **problems(404)},
    openapi_extra=PUBLIC,
)
def get_checkpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse(reads.checkpoint(node(request)),
                             media_type="text/plain; charset=utf-8")


@router.get(
    "/v1/log/cosigned-checkpoint",
    response_class=PlainTextResponse,
    summary="Latest checkpoint cosigned by a quorum of witnesses",
    description="The latest signed checkpoint that at least `witness_quorum` of the configured "
    "C2SP witnesses cosigned, with their `cosignature/v1` lines appended as note signatures. "
    "404 until there is one.",
    responses={**answers(CHECKPOINT_EXAMPLE, media_type="text/plain"), **problems(404)},
    openapi_extra=PUBLIC,
)
def get_cosigned_checkpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse(reads.cosigned_checkpoint(node(request)),
                             media_type="text/plain; charset=utf-8")


@router.get(
    "/v1/log/consistency",
    response_model=ConsistencyOut,
    summary="Consistency proof",
    description="RFC 9162 consistency proof from tree size `from` to `to` (default: latest).",
    responses={**answers(CONSISTENCY_EXAMPLE), **problems(422)},
    openapi_extra=PUBLIC,
)
def get_consistency(
    request: Request,
    from_: int = Query(alias="from", ge=0, le=MAX_INT),
    to: int | None = Query(default=None, ge=0, le=MAX_INT),
) -> dict[str, Any]:
    return reads.consistency(node(request), from_, to)


@router.get(
    "/v1/notary/keys",
    summary="Notary keys",
    description="The log's verifier keys (Go note format) with their validity, and the RFC 3161 "
    "TSA certificate chain (PEM): what to pin when verifying bundles and tokens offline.",
    response_model=None,
    responses=answers(NOTARY_KEYS_EXAMPLE, model=NotaryKeysOut),
    openapi_extra=PUBLIC,
)
def get_notary_keys(request: Request) -> dict[str, Any]:
    return reads.notary_keys(node(request))


@router.get("/v1/blocks/{height}", response_model=BlockOut, summary="A block header",
            response_model_exclude_none=True,
            responses={**answers(BLOCK_EXAMPLE), **problems(404, 422)}, openapi_extra=PUBLIC)
def get_block(request: Request, height: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    return reads.block(node(request), height)
