"""The one ASGI stack: FastAPI, its routers, the small pure-ASGI middlewares and the
Prometheus metrics they and the seal listener keep.

HTTP lives only in `api/`; routes parse, call one service operation and render.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from copyledger.api import deps, openapi, problems, uploads
from copyledger.api.deps import Language
from copyledger.api.models import HEALTH_EXAMPLE, HealthOut
from copyledger.api.routes import (
    account,
    claims,
    docs,
    entries,
    explorer,
    keys,
    log,
    pages,
    tiles,
    transfers,
    tsa,
    works,
)
from copyledger.ledger.errors import (
    CopyledgerError,
    PayloadTooLarge,
    RequestTimeout,
    Uncertain,
    said,
)
from copyledger.ledger.note import BlockHeader
from copyledger.service.apikeys import KeyCache, TokenBuckets
from copyledger.service.certificate import pdf_cache
from copyledger.service.node import Node

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# Prometheus metrics: what an operator graphs and alerts on (served at /metrics).

REGISTRY = CollectorRegistry()

ENTRIES = Counter("copyledger_entries_total", "Entries sealed into the log", registry=REGISTRY)
BLOCKS = Counter("copyledger_blocks_total", "Blocks sealed", registry=REGISTRY)
TREE_SIZE = Gauge("copyledger_tree_size", "Leaves in the log", registry=REGISTRY)
BLOCK_HEIGHT = Gauge("copyledger_block_height", "Height of the latest block", registry=REGISTRY)
BATCH = Histogram(
    "copyledger_block_entries",
    "Entries per sealed block",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
    registry=REGISTRY,
)
REQUESTS = Counter(
    "copyledger_http_requests_total",
    "HTTP requests by method and status class",
    ["method", "status"],
    registry=REGISTRY,
)
EXTERNAL_MISSING = Gauge(
    "copyledger_external_tsa_missing_blocks",
    "Blocks not yet stamped by an external TSA",
    ["tsa"],
    registry=REGISTRY,
)
WITNESS_LAG = Gauge(
    "copyledger_witness_uncosigned_entries",
    "Entries of the log not yet covered by a witness's latest cosignature",
    ["witness"],
    registry=REGISTRY,
)
WITNESS_COSIGNED = Gauge(
    "copyledger_witness_cosigned_timestamp_seconds",
    "When a witness last cosigned the log (D133: asked again about an unchanged tree every "
    "witness_refresh_s, so an old value is a witness that stopped answering)",
    ["witness"],
    registry=REGISTRY,
)
SEQUENCING = Gauge("copyledger_sequencing",
                   "1 if this process holds the sequencer lock (serve --workers N: one does)",
                   registry=REGISTRY)
BARRED = Gauge("copyledger_handoff_barred",
               "1 if this process's hand-over secret is not the one the hosts share (D113): it "
               "will not sequence the log", registry=REGISTRY)
SEAL_SECONDS = Gauge("copyledger_seal_seconds",
                     "Seconds this process has spent sealing blocks, by phase (cumulative)",
                     ["phase"], registry=REGISTRY)
UPKEEP_SECONDS = Gauge(
    "copyledger_content_runs_upkeep_seconds",
    "Seconds this process's sequencer has spent on the content-hash runs' upkeep (SQLite, "
    "D142): after a batch of writes it sealed, or in idle time (cumulative)",
    ["when"], registry=REGISTRY)
UPKEEP_ROWS = Gauge(
    "copyledger_content_runs_upkeep_rows",
    "Rows of the content-hash runs (both tables) this process's upkeep copied into merged "
    "runs or deleted as garbage, in steps that committed (SQLite, D142; cumulative)",
    ["kind"], registry=REGISTRY)
CONTENT_RUNS = Gauge(
    "copyledger_content_runs_listed",
    "Content-hash runs listed, as this process last read them: every lookup by content hash "
    "seeks each (SQLite, D142; 0 on PostgreSQL and in a process that does not sequence)",
    registry=REGISTRY)
WAKEUPS = Gauge("copyledger_answer_wakeups",
                "Event-loop wake-ups this process asked for to answer writers (cumulative)",
                registry=REGISTRY)
CLOCK_REFUSED = Gauge("copyledger_entries_refused_clock",
                      "Entries this process's sequencer refused, nothing recorded, because a "
                      "host's clock stamped them more than 0.5 s ahead of its own (D117; "
                      "cumulative)", registry=REGISTRY)
CONTENT_FILTER_READY = Gauge(
    "copyledger_content_filter_ready",
    "1 once this process sequences and its filter of the log's content hashes (D103) holds "
    "every hash of the log; 0 while the scan that fills it at start runs (about 25 s at "
    "10,000,000 entries; until then each block reads its works from the database), where the "
    "filter is off, or in a process that does not sequence", registry=REGISTRY)
CLOCK_AHEAD = Gauge("copyledger_blocks_sealed_ahead",
                    "Blocks this process sealed at an entry's received_at ahead of its own clock "
                    "(D117: a host's clock runs ahead, by at most 0.5 s; cumulative)",
                    registry=REGISTRY)


UPLOAD_PATHS = frozenset({"/v1/works", "/v1/claims/check"})  # the endpoints that take a file
BATCH_PATHS = frozenset({"/v1/works/batch", "/v1/evidence/batch"})  # up to 1,000 items
CHECK_PATHS = frozenset({"/v1/claims/check"})  # a disputed image's keypoints, as JSON (D52)


class BodyLimit:
    """Refuse request bodies over the limit (413, problem+json) before they are read whole, and
    bodies that do not arrive in time (408, and the connection closed).

    Only `multipart/form-data` POSTs to an upload path get the larger upload limit (they are
    spooled to disk and hashed as they stream in); every other body, whatever its type, gets
    the small JSON limit, so no request can make the server hold more than that in memory.
    A POST to a batch path gets the batch limit (JSON, up to 1,000 items), one to a check
    path the claim-check limit (a disputed image's ORB keypoints, D52).
    The time limit is for the whole body, not between pieces, so a client that trickles a byte
    at a time holds a connection no longer than one that stalls; uploads get
    `upload_timeout` seconds, other bodies `timeout`."""

    def __init__(
        self, app: ASGIApp, max_body: int, max_upload: int, upload_paths: frozenset[str],
        timeout: float = 30.0, upload_timeout: float = 3600.0,
        max_batch: int = 0, batch_paths: frozenset[str] = frozenset(),
        max_check: int = 0, check_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_batch = max(max_batch, max_body)
        self.batch_paths = batch_paths
        self.max_check = max(max_check, max_body)
        self.check_paths = check_paths
        self.max_upload = max_upload
        self.upload_paths = upload_paths
        self.timeout = timeout
        self.upload_timeout = upload_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"")
        upload = (scope.get("method") == "POST" and scope.get("path") in self.upload_paths
                  and uploads.is_multipart(ctype.decode("latin-1")))
        if upload:
            limit = self.max_upload
        elif scope.get("method") == "POST" and scope.get("path") in self.batch_paths:
            limit = self.max_batch
        elif scope.get("method") == "POST" and scope.get("path") in self.check_paths:
            limit = self.max_check
        else:
            limit = self.max_body
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return
        seen = 0
        allowed = self.upload_timeout if upload else self.timeout
        deadline = asyncio.get_running_loop().time() + allowed
        body_done = False
        started = False

        async def counting() -> Message:
            nonlocal seen, body_done
            if body_done:  # after the body, receive() waits for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # no task per call, unlike wait_for
                    msg = await receive()
            except TimeoutError:
                raise _TooSlow() from None
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
                body_done = not msg.get("more_body", False)
            return msg

        async def watching(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counting, watching)
        except _TooLarge:
            await self._reject(scope, receive, send, limit)
        except _TooSlow:
            if started:
                raise
            resp = problems.from_error(
                RequestTimeout(said("the request body did not arrive within {allowed:g} s",
                                    allowed=allowed)),
                scope.get("path", ""), _lang(scope))
            resp.headers["Connection"] = "close"  # the server closes it after this answer
            await resp(scope, receive, send)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        resp = problems.from_error(PayloadTooLarge(said("the limit is {limit} bytes", limit=limit)),
                                   scope.get("path", ""), _lang(scope))
        await resp(scope, receive, send)


def _lang(scope: Scope) -> str:
    """The language `Language` (outside these middlewares) chose for the request."""
    return deps.lang_of(scope)


class _TooLarge(Exception):
    """The body passed its limit while streaming in."""


class _TooSlow(Exception):
    """The body was not all in by its deadline."""


class FastRegister:
    """JSON `POST /v1/works`, answered without routing and dependency solving: the hottest
    path, where framework overhead is most of the cost. It sits inside the same stack as every
    other request (metrics and body limits outside it, the same problem mapping) and calls the
    same function the documented route does, `works.register_json`."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] != "/v1/works"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            await self.app(scope, receive, send)
            return
        auth_header = headers.get(b"authorization", b"").decode("latin-1")
        response: Response
        try:
            who = deps.check_write(self.state.keys, self.state.write_quota, auth_header,
                                   ("creator",))  # before any body
            key = deps.key_of(headers)
        except CopyledgerError as e:
            response = problems.from_error(e, "/v1/works", _lang(scope))
        else:
            body = await read_body(receive)  # BodyLimit's _TooLarge passes through
            if body is None:
                return  # the client went away
            try:
                response = await works.register_json(self.state.node, who, body,
                                                     scope.get("query_string", b""), key)
            except CopyledgerError as e:
                response = problems.from_error(e, "/v1/works", _lang(scope))
            except Exception:
                response = problems.internal_error("/v1/works", _lang(scope))
        await response(scope, receive, send)


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body (None if the client disconnected). The limit is BodyLimit's."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


class RequestMetrics:
    """Count requests by method and status class; pure ASGI, a few microseconds a request.

    Outermost, it also answers a request that a bounded stop cancelled (`shutdown_grace_s`,
    D119) before its answer began: 503, "may or may not have been recorded", as for any write
    whose fate is unknown (its entry may be in the sequencer's queue, which the stop then
    seals). uvicorn would answer a plain-text 500, which our API says means nothing was
    recorded. Nothing else cancels a request's task: a client that goes away is not one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def counting_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                key = (scope["method"], f"{msg['status'] // 100}xx")
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = REQUESTS.labels(*key)
                child.inc()
            await send(msg)

        try:
            await self.app(scope, receive, counting_send)
        except asyncio.CancelledError:
            if started:
                raise
            stopping = Uncertain(said(
                "the server is stopping and cut this request short; it may or may not have "
                "been recorded: look it up before retrying"))
            resp = problems.from_error(stopping, scope.get("path", ""), _lang(scope))
            resp.headers["connection"] = "close"
            await resp(scope, receive, counting_send)


def _on_seal(header: BlockHeader, count: bool = True) -> None:
    if count:
        BLOCKS.inc()
        ENTRIES.inc(header.count)
        BATCH.observe(header.count)
    TREE_SIZE.set(header.tree_size)
    BLOCK_HEIGHT.set(header.height)


def _watch_sequencer(node: Node) -> None:
    """The sequencer's own counters, read when /metrics is (D86); the last app made wins."""
    seq = node.sequencer
    SEQUENCING.set_function(lambda: float(getattr(seq, "leading", True)))
    BARRED.set_function(lambda: float(getattr(seq, "barred", False)))
    WAKEUPS.set_function(lambda: float(seq.wakeups))
    CLOCK_REFUSED.set_function(lambda: float(seq.clock_refused))
    CLOCK_AHEAD.set_function(lambda: float(seq.clock_ahead_blocks))
    CONTENT_FILTER_READY.set_function(lambda: float(seq.content_filter_ready))
    for phase in seq.spent:  # every phase, from the start
        SEAL_SECONDS.labels(phase).set_function(functools.partial(seq.spent.__getitem__, phase))
    for when in seq.upkeep_spent:
        UPKEEP_SECONDS.labels(when).set_function(
            functools.partial(seq.upkeep_spent.__getitem__, when))
    UPKEEP_ROWS.labels("copied").set_function(lambda: float(seq.upkeep_rows["copied"]))
    UPKEEP_ROWS.labels("deleted").set_function(lambda: float(seq.upkeep_rows["deleted"]))
    CONTENT_RUNS.set_function(lambda: float(seq.content_runs_listed))


def _operation_id(route: APIRoute) -> str:
    """The route function's name: what a generated client calls the operation."""
    return route.name


def create_app(node: Node, *, manage: bool = True) -> FastAPI:
    """The one ASGI application for a node: what `copyledger serve` runs and what the tests
    drive. With `manage`, it starts and stops the node's sequencer with the app."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage:
            node.start()
        if node.sequencer.state.last is not None:
            _on_seal(node.sequencer.state.last.header, count=False)
        node.start_index()
        node.warm_reads()
        try:
            yield
        finally:
            if manage:
                node.stop()

    app = FastAPI(
        title="copyledger",
        version="1",
        summary="Copyright evidence registry on an RFC 6962 transparency log",
        description="Every answer is checkable offline: entries are leaves of an RFC 6962 tree, "
        "checkpoints are C2SP signed notes, and receipts are inclusion proofs. Errors are "
        "RFC 9457 application/problem+json.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        docs_url=None,  # served by routes/docs.py from packaged files, not from a CDN
    )
    app.state.node = node
    app.state.keys = KeyCache(node.store, node.settings.key_recheck_s)
    node.listeners.append(_on_seal)
    _watch_sequencer(node)
    node.external.on_missing = lambda url, n: EXTERNAL_MISSING.labels(url).set(n)
    node.cosigner.on_lag = lambda vkey, n: WITNESS_LAG.labels(vkey).set(n)
    node.cosigner.on_cosigned = lambda vkey, at: WITNESS_COSIGNED.labels(vkey).set(at)
    problems.install(app, pages=True)
    openapi.install(app)
    for r in (works, entries, log, tiles, tsa, transfers, claims, account, keys, pages, explorer,
              docs):
        app.include_router(r.router)
    app.state.tsa_limiter = tsa.limiter(node.settings.timestamp_rate_per_s)
    app.state.write_quota = TokenBuckets(node.settings.write_rate_per_s,
                                         node.settings.write_burst, "writes per API key")
    app.state.pdf_cache = pdf_cache()

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["operator"], summary="Liveness and log size",
             response_model=None,
             responses=openapi.answers(HEALTH_EXAMPLE, model=HealthOut),
             openapi_extra=openapi.PUBLIC)
    def healthz() -> JSONResponse:
        idx = node.index
        return JSONResponse({"status": "ok", "tree_size": node.sequencer.state.size,
                             "external_tsa_missing": node.external.missing,
                             "witness_uncosigned": dict(node.cosigner.lag),
                             "fingerprint_index": {"ready": idx.ready, "entries": idx.size(),
                                                   "read_through": idx.through,
                                                   "following": idx.following}})

    # Outermost last: RequestMetrics -> BodyLimit -> FastRegister -> routes.
    app.add_middleware(FastRegister, state=app.state)
    app.add_middleware(
        BodyLimit,
        max_body=node.settings.max_body_bytes,
        max_upload=node.settings.max_upload_bytes,
        upload_paths=UPLOAD_PATHS,
        max_batch=node.settings.max_batch_body_bytes,
        batch_paths=BATCH_PATHS,
        max_check=node.settings.max_check_body_bytes,
        check_paths=CHECK_PATHS,
        timeout=node.settings.body_timeout_s,
        upload_timeout=node.settings.upload_timeout_s,
    )
    app.add_middleware(Language)
    app.add_middleware(RequestMetrics)
    return app
