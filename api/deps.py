"""What a route takes from its request: the node on app state, the caller (bearer
authentication, the HTTP half of API keys, and its write quota), the JSON body within its
limit; and JSON out."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from copyledger.ledger.errors import PayloadTooLarge, Unauthorized
from copyledger.service.apikeys import KeyCache, Principal, authorize
from copyledger.service.inputs import parse_input
from copyledger.service.node import Node
from copyledger.service.quotas import TokenBuckets

M = TypeVar("M", bound=BaseModel)


def node(request: Request) -> Node:
    n: Node = request.app.state.node
    return n


async def json_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model` (413 past the body limit, 422 naming bad fields)."""
    return parse_body(model, await request.body(), node(request).settings.max_body_bytes)


def parse_body(model: type[M], body: bytes, limit: int) -> M:
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {limit}")
    return parse_input(model, body)


class FastJSONResponse(Response):
    """JSON via orjson: the registration answer is rendered on the hot path."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# --------------------------------------------------------------------------------------------
# Bearer authentication: the HTTP half of API keys (the rest is `service.apikeys`).

def require(request: Request, *roles: str) -> Principal:
    """The caller's principal, if its key has one of `roles` (admin may do anything)."""
    return check(request.app.state.keys, request.headers.get("authorization", ""), roles)


def require_write(request: Request, *roles: str) -> Principal:
    """As `require`, for a request that writes to the log: it also spends one of the key's
    write tokens (429 with Retry-After when they are spent), before any body is read."""
    state = request.app.state
    return check_write(state.keys, state.write_quota, request.headers.get("authorization", ""),
                       roles)


def check_write(cache: KeyCache, quota: TokenBuckets, header: str,
                roles: tuple[str, ...]) -> Principal:
    """As `require_write`, from the Authorization header's value."""
    who = check(cache, header, roles)
    quota.take(who.key_id)
    return who


def check(cache: KeyCache, header: str, roles: tuple[str, ...]) -> Principal:
    """As `require`, from the Authorization header's value."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <api key>'; mint one with "
                           "`copyledger keys create --role ...`")
    return authorize(cache.lookup(token.strip()), roles)
