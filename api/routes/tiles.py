"""Anyone: the log as C2SP tlog-tiles (c2sp.org/tlog-tiles) at the root, not under /v1 — the
spec fixes these paths relative to the log's prefix: `/checkpoint`, `/tile/<L>/<N>[.p/<W>]` and
`/tile/entries/<N>[.p/<W>]`. Full tiles are cached for a year, partial ones and the checkpoint
briefly."""

from __future__ import annotations

import gzip

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from copyledger.api.deps import node
from copyledger.api.models import CHECKPOINT_EXAMPLE
from copyledger.api.openapi import PUBLIC, answers, problems
from copyledger.service import tiles

router = APIRouter(tags=["tiles"])


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    summary="Latest signed checkpoint (tlog-tiles)",
    description="The same C2SP checkpoint as /v1/log/checkpoint, at the path tlog-tiles "
    "clients expect.",
    responses={**answers(CHECKPOINT_EXAMPLE, media_type="text/plain"), **problems(404)},
    openapi_extra=PUBLIC,
    operation_id="get_tiles_checkpoint",
)
def get_checkpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse(tiles.checkpoint(node(request)),
                             media_type="text/plain; charset=utf-8",
                             headers={"Cache-Control": tiles.CHECKPOINT_CACHE})


@router.get(
    "/tile/{path:path}",
    response_class=Response,
    summary="A Merkle tree tile or an entry bundle (tlog-tiles)",
    description="`/tile/<L>/<N>[.p/<W>]`: 256 (or W) consecutive RFC 6962 hashes at Merkle "
    "level 8·L; `/tile/entries/<N>[.p/<W>]`: the canonical entries of the level-0 tile, each "
    "after a big-endian uint16 length. <N> is written in 3-digit elements, all but the last "
    "prefixed with `x` (1234067 is `x001/x234/067`).",
    responses={200: {"content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}, **problems(404)},
    openapi_extra=PUBLIC,
)
def get_tile(request: Request, path: str) -> Response:
    tile, data = tiles.tile(node(request), "tile/" + path)
    headers = {"Cache-Control": tiles.cache_control(tile)}
    if tile.entries:
        # Entry bundles are JSON text: gzip them for clients that accept it (the spec asks for
        # compression at the HTTP layer). Hash tiles are random bytes and stay as they are.
        headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            data = gzip.compress(data, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
    return Response(data, media_type="application/octet-stream", headers=headers)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (and does not refuse it with q=0)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params or float(q) > 0
            except ValueError:
                return False
    return False
