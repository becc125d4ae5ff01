"""Platforms: record takedown notices and counter-notices, and check a claim against the
registry: who registered the work, first, and does the disputed content match it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from copyledger.api import auth, uploads
from copyledger.api.deps import FastJSONResponse, json_body, node
from copyledger.api.models import CheckIn, ClaimIn, RegistrationOut
from copyledger.service import claims, operations
from copyledger.service.inputs import MAX_INT, parse_count

router = APIRouter(tags=["platforms"])


@router.post(
    "/v1/claims",
    status_code=201,
    response_model=RegistrationOut,
    summary="Record a takedown notice or counter-notice",
    description="Records the notice as a ledger entry (kind `claim`). It must contain what its "
    "regime requires (DMCA 512(c)(3) / 512(g)(3), EU DSA Art. 16, China E-commerce Law Art. "
    "42/43, Information Network Dissemination Regulations Art. 14/16): an incomplete notice is "
    "refused with 422 and `missing` naming the fields, and nothing is written. Works given by "
    "registry seq get their content hash filled in. Needs a platform key.",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ClaimIn.model_json_schema()}}}},
)
async def record_claim(request: Request) -> FastJSONResponse:
    who = auth.require(request, "platform")
    c = await json_body(request, ClaimIn)
    recorded = await operations.record_claim(node(request), who, c)
    return FastJSONResponse(recorded.to_dict(), status_code=201)


@router.get("/v1/claims/{seq}", summary="A claim and its timeline")
def get_claim(request: Request, seq: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    return claims.claim_timeline(node(request), seq)


async def _check_from_form(request: Request) -> CheckIn:
    """A multipart claim check: the file is hashed and fingerprinted by the service."""
    form = await uploads.read_form(request, max_fields=20)
    try:
        content: dict[str, Any] = {}
        if form.file is not None:
            facts = await form.file.describe(probe=True)
            content = {"sha256": facts.sha256, **facts.fingerprints}
        for k in ("sha256", "pdq", "phash"):
            if v := form.get(k):
                content.setdefault(k, v)  # what the server computed from the file wins
        seq_s = form.get("work_seq")
        return CheckIn(claimant=form.get("claimant"),
                       work_seq=parse_count(seq_s, "work_seq") if seq_s else None,
                       work_sha256=form.get("work_sha256") or None, content=content)
    finally:
        form.close()


@router.post(
    "/v1/claims/check",
    summary="Check a takedown claim",
    description="Is the claimed work registered, is the claimant its registrant or current "
    "holder, which registrations match the disputed content (exactly, or nearly by PDQ / pHash "
    "/ MinHash), oldest first, and what claims exist on the work. The answer is signed by the "
    "notary (`signature`, a C2SP signed note over the SHA-256 of the answer's RFC 8785 JSON "
    "without `signature`). JSON, or multipart/form-data with a `file`. Needs a platform key.",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": CheckIn.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "required": ["claimant"],
                                           "properties": {
            "file": {"type": "string", "format": "binary"},
            "claimant": {"type": "string"}, "work_seq": {"type": "string"},
            "work_sha256": {"type": "string"}, "sha256": {"type": "string"},
            "pdq": {"type": "string"}, "phash": {"type": "string"}}}}}}},
)
async def check_claim(request: Request) -> FastJSONResponse:
    auth.require(request, "platform")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        q = await _check_from_form(request)
    else:
        q = await json_body(request, CheckIn)
    return FastJSONResponse(await run_in_threadpool(claims.check_claim, node(request), q))
