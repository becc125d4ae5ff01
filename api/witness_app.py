"""The witness's HTTP face: C2SP tlog-witness `POST /add-checkpoint` at the root (the
submission prefix is the witness's URL), run by `copyledger witness serve`.

The spec's status codes are normative and differ from the registry's problem table: a malformed
body is 400 (not 422) and a checkpoint without a valid signature by the log is 403 (not 422),
and a 409 carries the witness's latest size as `text/x.tlog.size`, which a log reads to retry.
`GET /<origin hash>/checkpoint` is the spec's monitor retrieval mechanism (the monitoring prefix
is the witness's URL too): the last checkpoint it cosigned for that log, or 404 (D43).
So this app maps the domain errors itself, in `STATUS`; everything else goes through
`api/problems.py` like the other apps (D28).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from copyledger.api import problems
from copyledger.ledger.errors import (
    Conflict,
    CopyledgerError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ProofError,
    SignatureError,
    said,
)
from copyledger.service.witness import Witness

__all__ = ["STATUS", "create_witness_app"]

MAX_BODY = 64 * 1024  # 63 proof lines and a checkpoint with many signatures fit easily
SIZE_MEDIA_TYPE = "text/x.tlog.size"

# tlog-witness add-checkpoint: domain error -> status, most specific first.
STATUS: tuple[tuple[type[CopyledgerError], int], ...] = (
    (ProofError, 422),  # inconsistent with the last cosigned checkpoint, or a bad proof
    (SignatureError, 403),  # no valid signature by a key trusted for the origin
    (NotFound, 404),  # an origin this witness does not follow
    (Conflict, 409),  # `old` is not the size this witness last cosigned
    (InvalidInput, 400),  # malformed body, or `old` above the checkpoint's size
)


def create_witness_app(witness: Witness) -> FastAPI:
    app = FastAPI(title="copyledger witness", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.witness = witness
    problems.install(app)  # the read below answers NotFound as a 404 problem

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                too_large = PayloadTooLarge(said("over {most} bytes", most=MAX_BODY))
                return problems.from_error(too_large, request.url.path)
        try:
            line = await run_in_threadpool(witness.add_checkpoint, body)
        except CopyledgerError as exc:
            return _error(exc, request.url.path)
        return Response(line.encode(), headers={"content-type": "text/plain; charset=utf-8"})

    @app.get("/{origin_hash}/checkpoint", response_class=PlainTextResponse)
    def cosigned_checkpoint(origin_hash: str) -> PlainTextResponse:
        # a checkpoint may change at every add-checkpoint: caches revalidate (the spec allows an
        # hour's delay, which a monitor comparing views does not want)
        return PlainTextResponse(witness.cosigned_checkpoint(origin_hash),
                                 media_type="text/plain; charset=utf-8",
                                 headers={"Cache-Control": "no-cache"})

    return app


def _error(exc: CopyledgerError, instance: str) -> Response:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            if status == 409:
                return Response(f"{exc.extra['size']}\n".encode(),
                                status_code=409, headers={"content-type": SIZE_MEDIA_TYPE})
            _, slug, title = problems.classify(exc)
            return problems.problem(status, slug, title, exc.detail, instance)
    return problems.from_error(exc, instance)

