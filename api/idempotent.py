"""`Idempotency-Key` on the write endpoints (decision D41): a retried request gets the answer
the first one got, with `Idempotent-Replayed: true`, and writes nothing. What is kept, for how
long and when a key is refused is `service.idempotency`'s; this only reads the header and
turns answers into bytes and back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from copyledger.api import deps
from copyledger.api.deps import FastJSONResponse, json_body, node
from copyledger.service.apikeys import Principal
from copyledger.service.idempotency import Answer, check_key, request_hash
from copyledger.service.node import Node
from copyledger.service.operations import Recorded

REPLAYED = "Idempotent-Replayed"


def key_of(headers: dict[bytes, bytes]) -> str | None:
    """The request's Idempotency-Key, if it sent one (ASGI headers, lower-case names)."""
    raw = headers.get(b"idempotency-key")
    return None if raw is None else check_key(raw.decode("latin-1"))


async def once(
    n: Node, who: Principal, key: str | None, request: tuple[bytes, ...],
    run: Callable[[], Awaitable[Response]],
) -> Response:
    """`run`'s answer; with a key, the kept answer to the same request under that key if there
    is one (InvalidInput if the key answered another request), else `run`'s, kept if it
    succeeded. `request` is what identifies it: path, query and body."""
    if key is None:
        return await run()
    digest = request_hash(*request)
    async with n.idempotency_locks.hold((who.account, key)):  # a retry waits for the first
        kept = n.idempotency.recall(who.account, key, digest)
        if kept is not None:
            return replay(kept)
        answer = await run()
        if 200 <= answer.status_code < 300:
            n.idempotency.keep(who.account, key, digest,
                               Answer(answer.status_code, bytes(answer.body)))
        return answer


async def keyed(request: Request, who: Principal,
                run: Callable[[], Awaitable[Response]]) -> Response:
    """`run` (a route's work, after authentication) under the request's Idempotency-Key, if
    it sent one."""
    key = key_of(dict(request.scope["headers"]))
    ident = (request.url.path.encode(), request.scope.get("query_string", b""),
             await request.body() if key is not None else b"")
    return await once(node(request), who, key, ident, run)


_In = TypeVar("_In", bound=BaseModel)


async def record(
    request: Request, roles: tuple[str, ...], model: type[_In],
    operation: Callable[[Node, Principal, _In], Awaitable[Recorded]],
) -> Response:
    """A JSON write route's whole work: the key checked for one of `roles` before any of the
    body is read, then, under the request's Idempotency-Key, the body parsed as `model`,
    `operation` run and its receipt answered with 201."""
    who = deps.require_write(request, *roles)

    async def run() -> Response:
        recorded = await operation(node(request), who, await json_body(request, model))
        return FastJSONResponse(recorded.to_dict(), status_code=201)

    return await keyed(request, who, run)


def replay(kept: Answer) -> Response:
    return Response(kept.body, status_code=kept.status, media_type="application/json",
                    headers={REPLAYED: "true"})
