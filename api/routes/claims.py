"""Platforms: record takedown notices and counter-notices, and check a claim against the
registry: who registered the work, first, and does the disputed content match it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from copyledger.api import deps, uploads
from copyledger.api.deps import FastJSONResponse, node, parse_body
from copyledger.api.models import (
    CHECK_EXAMPLE,
    CLAIM_EXAMPLE,
    REGISTRATION_EXAMPLE,
    CheckIn,
    ClaimCheckOut,
    ClaimIn,
    ClaimOut,
    RegistrationOut,
)
from copyledger.api.openapi import PUBLIC, answers, json_request, problems, secured
from copyledger.service import claims, contacts, operations
from copyledger.service.operations import MAX_INT, parse_count

router = APIRouter(tags=["platforms"])
_CHECK_FORM = {"type": "object", "required": ["claimant"], "properties": {
    "file": {"type": "string", "format": "binary"},
    "claimant": {"type": "string"}, "work_seq": {"type": "string"},
    "work_sha256": {"type": "string"}, "sha256": {"type": "string"},
    "pdq": {"type": "string"}, "phash": {"type": "string"}}}


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
    responses={**answers(REGISTRATION_EXAMPLE, 201), **problems(401, 403, 409, 413, 422, 503)},
    openapi_extra={**secured("platform"), **json_request(ClaimIn)},
)
async def record_claim(request: Request) -> Response:
    return await deps.record(request, ("platform",), ClaimIn, operations.record_claim)


@router.get("/v1/claims/{seq}", summary="A claim and its timeline", response_model=None,
            responses={**answers(CLAIM_EXAMPLE, model=ClaimOut), **problems(404, 422)},
            openapi_extra=PUBLIC)
def get_claim(request: Request, seq: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    return claims.claim_timeline(node(request), seq)


_COMMITMENT = "5f1c" + "0" * 60
_DISCLOSURE = {"seq": 12, "contact": {"email": "legal@example.org", "phone": "+44 20 7946 0000"},
               "salt": "9a" * 32, "commitment": _COMMITMENT}
_ERASED = {"seq": 12, "erased": True, "commitment": _COMMITMENT}


class ContactOut(BaseModel):
    """A claimant's contact details and the salt that opens the logged commitment."""

    seq: int
    contact: dict[str, str] = Field(description="address, email and/or phone, as given")
    salt: str = Field(description="64 hex digits")
    commitment: str = Field(description="SHA-256 (hex) of the RFC 8785 JSON of "
                            "{\"contact\": contact, \"salt\": salt}, as logged")


class ErasedOut(BaseModel):
    seq: int
    erased: bool
    commitment: str = Field(description="stays in the log; without the salt it proves nothing")


@router.get(
    "/v1/claims/{seq}/contact",
    summary="A claimant's contact details (the filing platform and admins only)",
    description="The address, telephone and e-mail the claim was given, which the log holds "
    "only as a salted commitment (`claimant.contact_commitment`), with the salt that opens it: "
    "SHA-256 of the RFC 8785 JSON of `{\"contact\": contact, \"salt\": salt}` (decision D32). "
    "Needs the key of the platform account that filed the claim, or an admin key: 403 for "
    "others; 404 if none are kept (erased, none given, or a claim logged before D32).",
    response_model=None,
    responses={**answers(_DISCLOSURE, model=ContactOut), **problems(401, 403, 404, 422)},
    openapi_extra=secured("platform"),
)
def get_claim_contact(request: Request,
                      seq: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    who = deps.require(request, "platform")
    return contacts.disclose(node(request).store, who, seq).to_dict()


@router.delete(
    "/v1/claims/{seq}/contact",
    summary="Erase a claimant's contact details (admin)",
    description="Deletes the kept contact details and salt; the commitment stays in the log, "
    "which stays verifiable, and now proves nothing about anyone. Needs an admin key. 404 if "
    "there is nothing to erase.",
    response_model=None,
    responses={**answers(_ERASED, model=ErasedOut), **problems(401, 403, 404, 422)},
    openapi_extra=secured("admin"),
)
def erase_claim_contact(request: Request,
                        seq: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    deps.require(request, "admin")
    return contacts.erase(node(request).store, seq)


async def _check_from_form(request: Request) -> CheckIn:
    """A multipart claim check: the file is hashed and fingerprinted by the service."""
    form = await uploads.read_form(request, max_fields=20)
    try:
        content: dict[str, Any] = {}
        if form.file is not None:
            facts = await form.file.describe(query=True)
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
    response_model=ClaimCheckOut,
    responses={**answers(CHECK_EXAMPLE), **problems(400, 401, 403, 413, 422, 503)},
    openapi_extra={**secured("platform"), **json_request(
        CheckIn, multipart=_CHECK_FORM,
        multipart_example={"claimant": "ada", "work_seq": "5", "file": "(the disputed file)"})},
)
async def check_claim(request: Request) -> FastJSONResponse:
    deps.require(request, "platform")
    if uploads.is_multipart(request.headers.get("content-type", "")):
        q = await _check_from_form(request)
    else:
        q = parse_body(CheckIn, await request.body(),
                       node(request).settings.max_check_body_bytes)
    return FastJSONResponse(await run_in_threadpool(claims.check_claim, node(request), q))
