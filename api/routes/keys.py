"""Admins: mint, list and revoke API keys over HTTP (the CLI's `keys` commands, remotely)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from copyledger.api import deps
from copyledger.api.deps import FastJSONResponse, json_body, node
from copyledger.api.models import KeyCreatedOut, KeyIn, KeyListOut, KeyOut
from copyledger.api.openapi import answers, json_request, problems, secured
from copyledger.service import apikeys
from copyledger.service.operations import MAX_INT

router = APIRouter(tags=["admin"])

_KEY = {"id": 3, "prefix": "cl_Xb3k9Q", "role": "creator", "account": "alice",
        "created_at": "2026-11-22T05:10:00.123456Z", "revoked_at": None}
_REVOKED = {**_KEY, "revoked_at": "2026-11-29T09:00:00.000001Z"}


@router.post(
    "/v1/keys",
    status_code=201,
    response_model=KeyCreatedOut,
    summary="Mint an API key",
    description="Creates a key for an account and role and returns its secret once (only its "
    "SHA-256 is stored). Needs an admin key.",
    responses={**answers({**_KEY, "key": "cl_Xb3k9Q…"}, 201), **problems(401, 403, 413, 422)},
    openapi_extra={**secured("admin"), **json_request(KeyIn)},
)
async def create_key(request: Request) -> FastJSONResponse:
    deps.require(request, "admin")
    k = await json_body(request, KeyIn)
    secret, row = await run_in_threadpool(apikeys.create_key, node(request).store, k.role,
                                          k.account)
    return FastJSONResponse({**row.to_dict(), "key": secret}, status_code=201)


@router.get(
    "/v1/keys",
    response_model=KeyListOut,
    summary="List API keys",
    description="Every key (or one account's), oldest first, revoked ones included, without "
    "secrets. Needs an admin key.",
    responses={**answers({"keys": [_KEY]}), **problems(401, 403, 422)},
    openapi_extra=secured("admin"),
)
def list_keys(request: Request,
              account: str | None = Query(default=None, max_length=64)) -> dict[str, Any]:
    deps.require(request, "admin")
    return {"keys": [r.to_dict() for r in apikeys.list_keys(node(request).store, account)]}


@router.delete(
    "/v1/keys/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key",
    description="Marks the key revoked (idempotent: a revoked key keeps its first revocation "
    "time). Every API process refuses it within `key_recheck_s` seconds (default 30). Needs an "
    "admin key.",
    responses={**answers(_REVOKED), **problems(401, 403, 404, 422)},
    openapi_extra=secured("admin"),
)
def revoke_key(request: Request, key_id: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    deps.require(request, "admin")
    return apikeys.revoke_key(node(request).store, key_id).to_dict()
