"""Anyone: RFC 3161 time-stamping (application/timestamp-query in, timestamp-reply out)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from copyledger.api.deps import node
from copyledger.api.openapi import PUBLIC, problems
from copyledger.ledger.errors import InvalidInput, said
from copyledger.service.apikeys import TokenBuckets

router = APIRouter(tags=["time-stamping"])

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
MAX_QUERY_BYTES = 16_384  # a TimeStampReq is a few hundred bytes


def limiter(rate: float) -> TokenBuckets:
    """Per client address: `rate` requests a second, bursts of twice that (at least 1)."""
    return TokenBuckets(rate, 2 * rate, "time-stamp requests")


@router.post(
    "/v1/timestamp",
    summary="RFC 3161 time-stamp",
    description="Send a DER TimeStampReq (`openssl ts -query -data FILE -sha256 -cert`) as "
    "`application/timestamp-query`; get a DER TimeStampResp as `application/timestamp-reply`. "
    "A malformed query gets an RFC 3161 rejection (status 2 with failInfo), not an HTTP error. "
    "Verify with `openssl ts -verify -data FILE -in reply.tsr -CAfile root.pem -untrusted "
    "tsa.pem` using the chain from /v1/notary/keys. Rate-limited per client address.",
    response_class=Response,
    openapi_extra={**PUBLIC, "requestBody": {"required": True, "content": {
        QUERY_TYPE: {"schema": {"type": "string", "format": "binary"}}}}},
    responses={200: {"content": {REPLY_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
               **problems(413, 422, 429, 503)},
)
async def timestamp(request: Request) -> Response:
    limiter: TokenBuckets = request.app.state.tsa_limiter
    limiter.take(request.client.host if request.client else "unknown")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != QUERY_TYPE:
        raise InvalidInput(said("send the query as {wanted}, not {ctype}", wanted=QUERY_TYPE,
                                ctype=ctype or said("nothing")))
    body = await request.body()
    if len(body) > MAX_QUERY_BYTES:
        raise InvalidInput(said("a time-stamp query is at most {most} bytes",
                                most=MAX_QUERY_BYTES))
    # In a worker thread: with a remote notary respond() is a blocking HTTP call, and even
    # signing here holds the event loop for a millisecond or more.
    reply = await run_in_threadpool(node(request).tsa.respond, body)
    return Response(reply, media_type=REPLY_TYPE)
