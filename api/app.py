"""The FastAPI application: wiring only. Routers hold the endpoints, `Registry` the state."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from copyledger.api import metrics, problems
from copyledger.api.auth import KeyCache
from copyledger.api.deps import FastJSONResponse
from copyledger.api.registry import Registry
from copyledger.api.routes import claims, entries, log, pages, transfers, tsa, works
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.store import BlockRow
from copyledger.matching import LiveIndex

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


UPLOAD_PATHS = frozenset({"/v1/works", "/v1/claims/check"})  # the endpoints that take a file


class BodyLimit:
    """Refuse request bodies over the limit (413, problem+json) before they are read whole.
    Multipart uploads get the larger upload limit; they are hashed while streaming."""

    def __init__(
        self, app: ASGIApp, max_body: int, max_upload: int, upload_paths: frozenset[str]
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"")
        upload = ctype.startswith(b"multipart/") and scope.get("path") in self.upload_paths
        limit = self.max_upload if upload else self.max_body
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, counting, send)
        except _TooLarge:
            await self._reject(scope, receive, send, limit)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        resp = problems.problem(413, "payload-too-large", "Request body too large",
                                f"the limit is {limit} bytes", scope.get("path", ""))
        await resp(scope, receive, send)


class _TooLarge(Exception):
    """The body passed its limit while streaming in."""


class FastRegister:
    """POST /v1/works with a JSON body, served without routing and dependency solving: the
    hottest path, and HTTP framework overhead is most of its cost. It calls the very function
    the documented route calls (works.register_json); everything else goes to the app."""

    def __init__(self, app: ASGIApp, state: Any, max_body: int, count: bool = False) -> None:
        self.app = app
        self.state = state
        self.max_body = max_body
        self.count = count  # outside the app (see `serving_app`), it counts its own requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] != "/v1/works"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await problems.problem(413, "payload-too-large", "Request body too large",
                                       f"the limit is {self.max_body} bytes",
                                       "/v1/works")(scope, receive, send)
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        auth_header = headers.get(b"authorization", b"").decode("latin-1")
        try:
            result = await works.register_json(self.state, auth_header, b"".join(chunks))
            response: Response = FastJSONResponse(result, status_code=201)
        except CopyledgerError as e:
            response = problems.problem(e.status, e.slug, e.title, e.detail, "/v1/works",
                                        **e.extra)
        except Exception:
            problems.log.exception("unhandled error on /v1/works")
            response = problems.problem(500, "internal-error", "Internal error",
                                        "the server failed; nothing was recorded by this "
                                        "request", "/v1/works")
        if self.count:
            metrics.REQUESTS.labels("POST", f"{response.status_code // 100}xx").inc()
        await response(scope, receive, send)


class RequestMetrics:
    """Count requests by method and status class; pure ASGI, a few microseconds a request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                key = (scope["method"], f"{msg['status'] // 100}xx")
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = metrics.REQUESTS.labels(*key)
                child.inc()
            await send(msg)

        await self.app(scope, receive, counting_send)


def _on_seal(block: BlockRow, count: bool = True) -> None:
    if count:
        metrics.BLOCKS.inc()
        metrics.ENTRIES.inc(block.header.count)
        metrics.BATCH.observe(block.header.count)
    metrics.TREE_SIZE.set(block.header.tree_size)
    metrics.BLOCK_HEIGHT.set(block.header.height)


def serving_app(app: FastAPI) -> ASGIApp:
    """What `copyledger serve` runs: the app, with the JSON registration fast path in front of
    FastAPI itself (not only of its router), so the hot path skips every framework layer."""
    reg: Registry = app.state.registry
    return FastRegister(app, app.state, reg.settings.max_body_bytes, count=True)  # type: ignore[arg-type]


def create_app(registry: Registry, *, manage: bool = True) -> FastAPI:
    """The app for a registry. With `manage`, the app starts and stops the sequencer."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage:
            registry.start()
        if registry.sequencer.state.last is not None:
            _on_seal(registry.sequencer.state.last, count=False)
        threading.Thread(target=app.state.fp_index.build, args=(registry.store,),
                         name="fp-index", daemon=True).start()
        try:
            yield
        finally:
            if manage:
                registry.stop()

    app = FastAPI(
        title="copyledger",
        version="1",
        summary="Copyright evidence registry on an RFC 6962 transparency log",
        description="Every answer is checkable offline: entries are leaves of an RFC 6962 tree, "
        "checkpoints are C2SP signed notes, and receipts are inclusion proofs. Errors are "
        "RFC 9457 application/problem+json.",
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.keys = KeyCache(registry.store)
    registry.listeners.append(_on_seal)
    registry.external.on_missing = lambda url, n: metrics.EXTERNAL_MISSING.labels(url).set(n)
    problems.install(app)
    app.include_router(works.router)
    app.include_router(entries.router)
    app.include_router(log.router)
    app.include_router(tsa.router)
    app.include_router(transfers.router)
    app.include_router(claims.router)
    app.include_router(pages.router)
    app.state.fp_index = LiveIndex()  # rebuilt in the background at start
    app.state.transfer_locks = {}
    app.state.tsa_limiter = tsa.RateLimiter(registry.settings.timestamp_rate_per_s)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["operator"], summary="Liveness and log size")
    def healthz(request: Request) -> JSONResponse:
        st = registry.sequencer.state
        idx = request.app.state.fp_index
        return JSONResponse({"status": "ok", "tree_size": st.size,
                             "external_tsa_missing": registry.external.missing,
                             "fingerprint_index": {"ready": idx.ready, "entries": idx.size()}})

    app.add_middleware(
        BodyLimit,  # type: ignore[arg-type]
        max_body=registry.settings.max_body_bytes,
        max_upload=registry.settings.max_upload_bytes,
        upload_paths=UPLOAD_PATHS,
    )
    app.add_middleware(
        FastRegister,  # type: ignore[arg-type]
        state=app.state,
        max_body=registry.settings.max_body_bytes,
    )
    app.add_middleware(RequestMetrics)  # type: ignore[arg-type]
    return app
