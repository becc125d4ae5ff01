"""What a route takes from its request: the node on app state, the caller (bearer
authentication, the HTTP half of API keys, and its write quota), the JSON body within its
limit, its `Idempotency-Key` (D41), the reader's language (`Language`, the middleware that
chooses it); and JSON out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from http.cookies import SimpleCookie
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from copyledger.ledger.errors import PayloadTooLarge, Unauthorized, Uncertain, said
from copyledger.service import idempotency, operations
from copyledger.service.apikeys import KeyCache, Principal, TokenBuckets, authorize
from copyledger.service.i18n import DEFAULT, negotiate, pick
from copyledger.service.idempotency import Answer, Claim, Written, check_key, claim, request_hash
from copyledger.service.node import Node
from copyledger.service.operations import Recorded, parse_input

M = TypeVar("M", bound=BaseModel)


def node(request: Request) -> Node:
    n: Node = request.app.state.node
    return n


async def json_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model` (413 past the body limit, 422 naming bad fields)."""
    return parse_body(model, await request.body(), node(request).settings.max_body_bytes)


def parse_body(model: type[M], body: bytes, limit: int) -> M:
    if len(body) > limit:
        raise PayloadTooLarge(said("request body is {size} bytes; the limit is {limit}",
                                   size=len(body), limit=limit))
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


# --------------------------------------------------------------------------------------------
# `Idempotency-Key` on the write endpoints (decision D41): a retried request gets the answer
# the first one got, with `Idempotent-Replayed: true`, and writes nothing. What is kept, for how
# long and when a key is refused is `service.idempotency`'s; this only reads the header and
# turns answers into bytes and back.

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
    succeeded. `request` is what identifies it: path, query and body (for an upload, a marker and
    its file's hashes and fields instead of the body)."""
    if key is None:
        return await run()
    digest = request_hash(*request)
    # The wait for a key in flight counts from the request's arrival, not from the end of its
    # turn behind earlier retries in this process: queued one after another, each waiting
    # WAIT_S afresh, a later retry would claim the key past ABANDONED_S, take over the claim
    # of a process that died mid-write, and run the write again (D131).
    deadline = time.monotonic() + idempotency.WAIT_S
    async with n.idempotency_locks.hold((who.account, key)):  # a retry waits for the first
        kept = await claim(n.idempotency, who.account, key, digest,  # in any process (D59)
                           wait_s=max(0.0, deadline - time.monotonic()))
        if isinstance(kept, Written):
            [body] = await written_answers(n, who.account, [(key, digest, kept.seq)])
            return replay(Answer(201, body))
        if isinstance(kept, Answer):
            return replay(kept)
        # Shielded: a client that hangs up does not cancel the write, so its outcome is still
        # settled under the key when it comes (a retry then gets it, not a second entry).
        return await asyncio.shield(asyncio.ensure_future(_settled(n, kept, request[0], run)))


async def answered_before(n: Node, who: Principal, key: str,
                          request: tuple[bytes, ...]) -> Response | None:
    """The success kept under the key for `request` (as `once` identifies it), replayed, or
    None: a check without a claim, made before work that only a first send needs (an
    upload's fingerprints, D140). `once` still settles whatever this does not answer."""
    answer = await asyncio.to_thread(n.idempotency.kept, who.account, key,
                                     request_hash(*request))
    return None if answer is None else replay(answer)


async def written_answers(n: Node, account: str, written: Sequence[tuple[str, str, int]]
                          ) -> list[bytes]:
    """The 201 answers of requests (key, request hash, seq) whose entries are at `seq` but
    whose answers were never kept (D132): each entry with its receipt as sealed, the answer
    its first request would have got (equal as JSON), kept now under its key. Unavailable
    (retry, nothing changed) if the entries cannot be read now."""
    recorded = await operations.recorded_before(n, [seq for _, _, seq in written])
    bodies = [orjson.dumps(r.to_json()) for r in recorded]
    for (key, digest, _), body in zip(written, bodies, strict=True):
        await idempotency.settle_written(n.idempotency, account, key, digest, Answer(201, body))
    return bodies


async def _settled(n: Node, claim: Claim, path: bytes,
                   run: Callable[[], Awaitable[Response]]) -> Response:
    """`run`'s answer, its outcome recorded under the key (off the event loop): a success is
    kept for replay; a write whose fate is unknown (Uncertain) keeps its problem, so its retry
    is answered with its entry if it was recorded (D132) and run again if not (D135); any
    other refusal frees the key, since nothing was written (or puts back the kept 503 this
    retry took over, D135). Keeping never fails the answer: the entry is recorded whatever
    the key's row says (D69). A fault while the answer is made ready to keep fails it (500),
    the answer itself may be what broke, but never leaves the claim held (D147)."""
    # The entry's block records that it was written under this claim (D132).
    try:
        token = idempotency.WRITING.set(claim.request)
        replayed = idempotency.REPLAYED.set(False)
        try:
            answer = await run()
            if idempotency.REPLAYED.get():  # its earlier send's entry (D134)
                answer.headers[REPLAYED] = "true"
        finally:
            idempotency.REPLAYED.reset(replayed)
            idempotency.WRITING.reset(token)
        # Made here, so a fault while making it releases the claim below rather than leaving
        # it held, and refreshed for the process's life (D147).
        success = (Answer(answer.status_code, bytes(answer.body))
                   if 200 <= answer.status_code < 300 else None)
    except Uncertain as error:
        try:
            from copyledger.api.problems import body_of  # problems imports this module

            body = body_of(error, path.decode("utf-8", "replace"))
            problem = Answer(body["status"], orjson.dumps(body))
        except BaseException:  # its fate is still unknown: not released (D147)
            await idempotency.abandon(n.idempotency, claim)
            raise
        await idempotency.keep(n.idempotency, claim, problem)
        raise
    except asyncio.CancelledError:  # only the whole server stopping cancels the write itself
        # In flight until taken over, or the kept 503 it took over put back (D150); shielded,
        # since the task is being cancelled and the stop may cancel it again.
        await asyncio.shield(idempotency.abandon(n.idempotency, claim))
        raise
    except BaseException:
        await idempotency.release(n.idempotency, claim)
        raise
    if success is None:
        await idempotency.release(n.idempotency, claim)
    else:
        await idempotency.keep(n.idempotency, claim, success)
    return answer


async def keyed(request: Request, who: Principal,
                run: Callable[[], Awaitable[Response]]) -> Response:
    """`run` (a route's work, after authentication) under the request's Idempotency-Key, if
    it sent one."""
    key = key_of(dict(request.scope["headers"]))
    ident = (request.url.path.encode(), request.scope.get("query_string", b""),
             await request.body() if key is not None else b"")
    return await once(node(request), who, key, ident, run)


async def record(
    request: Request, roles: tuple[str, ...], model: type[M],
    operation: Callable[[Node, Principal, M], Awaitable[Recorded]],
) -> Response:
    """A JSON write route's whole work: the key checked for one of `roles` before any of the
    body is read, then, under the request's Idempotency-Key, the body parsed as `model`,
    `operation` run and its receipt answered with 201."""
    who = require_write(request, *roles)

    async def run() -> Response:
        recorded = await operation(node(request), who, await json_body(request, model))
        return FastJSONResponse(recorded.to_dict(), status_code=201)

    return await keyed(request, who, run)


def replay(kept: Answer) -> Response:
    """A kept answer sent again, with the headers its first send had: a 200 that names an
    earlier registration (`already_registered`) names its entry in `Content-Location`, which
    is not kept, so it is read back from the body (D189)."""
    media = "application/problem+json" if kept.status >= 400 else "application/json"
    headers = {REPLAYED: "true"}
    if kept.status == 200:
        body = orjson.loads(kept.body)
        if isinstance(body, dict) and body.get("already_registered") is True \
                and type(body.get("seq")) is int:
            headers["Content-Location"] = f"/v1/entries/{body['seq']}"
    return Response(kept.body, status_code=kept.status, media_type=media, headers=headers)


# --------------------------------------------------------------------------------------------
# The reader's language, for every request: chosen once here, used by pages and problems.
#
# `?lang=` (the switch on every page) wins and is remembered in a `lang` cookie, so following a
# link keeps the language; else the cookie; else `Accept-Language` (`service.i18n.negotiate`).
# Answers people read (HTML, problem details) say which language they are in
# (`Content-Language`) and that it depends on the request (`Vary`), so a cache keeps one copy per
# language. JSON data is the same in every language and is left alone.

def accept_weights(accept: str) -> dict[str, float]:
    """Each media type an Accept header names, with its q-value (1 unless given; 0 if
    unreadable), lower-cased."""
    q: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        weight = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    weight = float(p[2:])
                except ValueError:
                    weight = 0.0
        q[media.lower()] = max(weight, q.get(media.lower(), 0.0))
    return q


def wants_html(request: Request) -> bool:
    """A browser's request: Accept names text/html, ranked at least as high as JSON (curl's
    `*/*` and API clients' `application/json` are not)."""
    q = accept_weights(request.headers.get("accept", ""))
    html = q.get("text/html", 0.0)
    return html > 0 and html >= max(q.get("application/json", 0.0),
                                    q.get("application/problem+json", 0.0))


READ = (b"text/html", b"application/problem+json", b"application/pdf")
VARY = "Accept-Language, Cookie"


def lang(request: Request) -> str:
    """The language the middleware chose for this request (English outside it)."""
    return lang_of(request.scope)


def lang_of(scope: Scope) -> str:
    """As `lang`, from the ASGI scope. `Language` leaves the choice open (None) and it is made
    here on first use, so an answer no one reads in a language (a registration's JSON) costs no
    negotiation."""
    state = scope.get("state", {})
    chosen = state.get("lang", DEFAULT)
    if chosen is None:
        chosen, state["lang_asked"] = _choose(scope)
        state["lang"] = chosen
    return str(chosen)


def _choose(scope: Scope) -> tuple[str, str | None]:
    """(the language chosen, the one `?lang=` asked for, if any)."""
    headers = list(scope.get("headers", []))
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    asked = pick((query.get("lang") or [""])[-1])
    accept = next((v.decode("latin-1") for k, v in headers if k == b"accept-language"), "")
    return negotiate(accept, asked or pick(_cookie(headers))), asked


def _cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(v.decode("latin-1"))
            except Exception:  # a malformed Cookie header only loses the preference
                return None
            if "lang" in jar:
                return jar["lang"].value
    return None


class Language:
    """Pure ASGI: makes the request's language choosable (`lang_of`) and sets the headers
    described above on answers people read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["lang"] = None  # chosen on first use

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers", []))
                media = next((v for k, v in out if k.lower() == b"content-type"), b"")
                if media.startswith(READ):
                    chosen = lang_of(scope)
                    asked = scope["state"].get("lang_asked")
                    vary = [v.decode("latin-1") for k, v in out if k.lower() == b"vary"]
                    out = [(k, v) for k, v in out if k.lower() != b"vary"]
                    out.append((b"vary", ", ".join([*vary, VARY]).encode("latin-1")))
                    out.append((b"content-language", chosen.encode("ascii")))
                    if asked:
                        out.append((b"set-cookie", f"lang={asked}; Path=/; SameSite=Lax; "
                                    "Max-Age=31536000".encode("ascii")))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_with_language)
