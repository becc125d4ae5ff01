"""Creators: register works (JSON with hashes, or a streamed file upload) and deposit evidence."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from copyledger.api import auth, uploads
from copyledger.api.deps import FastJSONResponse, json_body, node, parse_body
from copyledger.api.models import REGISTRATION_EXAMPLE, EvidenceIn, RegistrationOut, WorkIn
from copyledger.api.openapi import answers, json_request, problems, secured
from copyledger.ledger.errors import InvalidInput
from copyledger.service import operations
from copyledger.service.apikeys import Principal
from copyledger.service.inputs import parse_metadata
from copyledger.service.node import Node

router = APIRouter(tags=["creators"])

_UPLOAD = {
    "type": "object",
    "required": ["file", "title", "creators", "work_type"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "hashed by the server, then deleted"},
        "title": {"type": "string"},
        "creators": {"type": "array", "items": {"type": "string"}},
        "work_type": WorkIn.model_json_schema()["properties"]["work_type"],
        "license": {"type": "string"},
        "metadata": {"type": "string", "description": "a JSON object"},
    },
}
_UPLOAD_EXAMPLE = {"file": "(the file's bytes)", "title": "Harbour at dawn",
                   "creators": ["Ada Example"], "work_type": "image", "license": "CC-BY-4.0"}
_REGISTERED = answers(REGISTRATION_EXAMPLE, 201)


async def register_json(n: Node, who: Principal, body: bytes) -> dict[str, Any]:
    """The JSON registration from the raw body, for a caller already authenticated (before its
    body was read). The ASGI fast path (`api.app.FastRegister`) calls it for every JSON
    `POST /v1/works`; the route below only documents that body and takes uploads."""
    w = parse_body(WorkIn, body, n.settings.max_body_bytes)
    return (await operations.register_work(n, who, w)).to_dict()


@router.post(
    "/v1/works",
    status_code=201,
    response_model=RegistrationOut,
    summary="Register a work",
    description="Registers a work by its SHA-256 (JSON) or by uploading the file (multipart; the "
    "server hashes it from a temporary spool file and deletes it, keeping only the hash). "
    "Answers only after the block that holds the entry is durably committed, with a receipt: "
    "the inclusion proof to the signed checkpoint of that block. Needs a creator key.",
    responses={**_REGISTERED, **problems(400, 401, 403, 413, 422, 503)},
    openapi_extra={**secured("creator"),
                   **json_request(WorkIn, multipart=_UPLOAD, multipart_example=_UPLOAD_EXAMPLE)},
)
async def register_work(request: Request) -> FastJSONResponse:
    n = node(request)
    who = auth.require(request, "creator")  # before reading any of the body
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return FastJSONResponse(await register_json(n, who, await request.body()),
                                status_code=201)
    form = await uploads.read_form(request, max_fields=100)
    try:
        if form.file is None:
            raise InvalidInput("file: a multipart upload needs a 'file' part",
                               errors=[{"field": "file", "message": "required"}])
        facts = await form.file.describe(sm3=n.settings.sm_suite)
        w = WorkIn(sha256=facts.sha256, sm3=facts.sm3, size=facts.size,
                   media_type=facts.media_type,
                   title=form.get("title"), work_type=form.get("work_type"),
                   creators=form.getlist("creators"), license=form.get("license") or None,
                   metadata=parse_metadata(form.get("metadata")))
    finally:
        form.close()
    recorded = await operations.register_work(n, who, w, computed=facts.fingerprints)
    return FastJSONResponse(recorded.to_dict(), status_code=201)


@router.post(
    "/v1/evidence",
    status_code=201,
    response_model=RegistrationOut,
    summary="Deposit evidence",
    description="Records the hash of captured evidence (a screenshot, a web capture) with its "
    "source, capture time and method. Needs a creator, platform or court key.",
    responses={**_REGISTERED, **problems(401, 403, 413, 422, 503)},
    openapi_extra={**secured("creator", "platform", "court"), **json_request(EvidenceIn)},
)
async def deposit_evidence(request: Request) -> FastJSONResponse:
    who = auth.require(request, "creator", "platform", "court")
    ev = await json_body(request, EvidenceIn)
    recorded = await operations.deposit_evidence(node(request), who, ev)
    return FastJSONResponse(recorded.to_dict(), status_code=201)
