"""Bearer authentication: the HTTP half of API keys (the rest is `service.apikeys`)."""

from __future__ import annotations

from fastapi import Request

from copyledger.ledger.errors import Unauthorized
from copyledger.service.apikeys import KeyCache, Principal, authorize
from copyledger.service.quotas import TokenBuckets


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
