"""Admins: mint, list and revoke API keys over HTTP (the CLI's `keys` commands, remotely)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from copyledger.api import auth
from copyledger.api.deps import FastJSONResponse, json_body, node
from copyledger.api.models import KeyCreatedOut, KeyIn, KeyListOut, KeyOut
from copyledger.service import apikeys
from copyledger.service.inputs import MAX_INT

router = APIRouter(tags=["admin"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no API key, or an unknown or revoked one", **_PROBLEM},
    403: {"description": "the key is not an admin key", **_PROBLEM},
}


@router.post(
    "/v1/keys",
    status_code=201,
    response_model=KeyCreatedOut,
    summary="Mint an API key",
    description="Creates a key for an account and role and returns its secret once (only its "
    "SHA-256 is stored). Needs an admin key.",
    responses={**PROBLEMS, 422: {"description": "unknown role or invalid account", **_PROBLEM}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": KeyIn.model_json_schema()}}}},
)
async def create_key(request: Request) -> FastJSONResponse:
    auth.require(request, "admin")
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
    responses=PROBLEMS,
)
def list_keys(request: Request,
              account: str | None = Query(default=None, max_length=64)) -> dict[str, Any]:
    auth.require(request, "admin")
    return {"keys": [r.to_dict() for r in apikeys.list_keys(node(request).store, account)]}


@router.delete(
    "/v1/keys/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key",
    description="Marks the key revoked (idempotent: a revoked key keeps its first revocation "
    "time). Every API process refuses it within `key_recheck_s` seconds (default 30). Needs an "
    "admin key.",
    responses={**PROBLEMS, 404: {"description": "no key with that id", **_PROBLEM}},
)
def revoke_key(request: Request, key_id: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    auth.require(request, "admin")
    return apikeys.revoke_key(node(request).store, key_id).to_dict()
