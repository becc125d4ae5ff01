"""Creators: register works (JSON with hashes, or a streamed file upload) and deposit evidence."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response

from copyledger.api import batch, deps, uploads
from copyledger.api.deps import FastJSONResponse, node, parse_body
from copyledger.api.models import (
    BATCH_EXAMPLE,
    REGISTRATION_EXAMPLE,
    BatchOut,
    EvidenceBatchIn,
    EvidenceIn,
    RegistrationOut,
    WorkIn,
    WorksBatchIn,
)
from copyledger.api.openapi import answers, json_request, problems, secured
from copyledger.ledger.errors import InvalidInput, said
from copyledger.service import operations
from copyledger.service.apikeys import Principal
from copyledger.service.node import Node
from copyledger.service.operations import parse_metadata

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
        "again": {"type": "string", "enum": ["true", "false"],
                  "description": "register anew content this account already registered"},
    },
}
_UPLOAD_EXAMPLE = {"file": "(the file's bytes)", "title": "Harbour at dawn",
                   "creators": ["Ada Example"], "work_type": "image", "license": "CC-BY-4.0"}
_REGISTERED = answers(REGISTRATION_EXAMPLE, 201)
_ALREADY = answers({**REGISTRATION_EXAMPLE, "already_registered": True}, 200)
_ALREADY[200]["description"] = ("This account already registered this content: the earlier "
                                "registration (`already_registered: true`); nothing was written.")

_KEYED = ("Send `Idempotency-Key: <unique string>` to make a retry safe: the same key with "
          "the same body within 24 hours answers as the first request did (with "
          "`Idempotent-Replayed: true`) and writes nothing; with another body it is refused "
          "(422). A retry while the first request is still running waits for its answer, or "
          "is answered 409 (in progress: retry shortly) after 10 seconds.")
_BATCH_DOC = ("Each item is validated and answered on its own, in order: `registration` (as "
              "the single request answers, status 201 or 200) or `problem` (an RFC 9457 "
              "problem; that item is not written). The others are written, in shared blocks. "
              "An item's `idempotency_key` makes its retry answer as it first did "
              "(`replayed: true`), writing nothing. The body may be up to 8 MiB. ")


async def register_json(n: Node, who: Principal, body: bytes, query: bytes,
                        key: str | None = None) -> Response:
    """The JSON registration from the raw body and query string, for a caller already
    authenticated (before its body was read), replayed under its Idempotency-Key `key`. The
    ASGI fast path (`api.app.FastRegister`) calls it for every JSON `POST /v1/works`; the
    route below only documents that body and takes uploads."""

    async def run() -> Response:
        again = again_query(query)
        w = parse_body(WorkIn, body, n.settings.max_body_bytes)
        return registration_answer(await operations.register_work(n, who, w, again=again))

    return await deps.once(n, who, key, (b"/v1/works", query, body), run)


def again_query(query: bytes) -> bool:
    """`?again=true` (or 1): register anew even content this account already registered."""
    values = [v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
              if k == "again"]
    return any(_flag(v, "again") for v in values)


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0", ""):
        return False
    message = said("must be true or false")
    raise InvalidInput(said("{name}: {message}", name=name, message=message),
                       errors=[{"field": name, "message": message}])


def registration_answer(recorded: operations.Recorded) -> FastJSONResponse:
    """201 with a new entry's receipt; 200, `already_registered` and the earlier entry's
    address in `Content-Location` when this account had registered the content before."""
    if not recorded.existing:
        return FastJSONResponse(recorded.to_dict(), status_code=201)
    return FastJSONResponse(recorded.to_dict(), status_code=200, headers={
        "Content-Location": f"/v1/entries/{recorded.receipt.seq}"})


@router.post(
    "/v1/works",
    status_code=201,
    response_model=RegistrationOut,
    summary="Register a work",
    description="Registers a work by its SHA-256 (JSON) or by uploading the file (multipart; the "
    "server hashes it from a temporary spool file and deletes it, keeping only the hash). "
    "Answers only after the block that holds the entry is durably committed, with a receipt: "
    "the inclusion proof to the signed checkpoint of that block. Content this account already "
    "registered is not registered twice by mistake: the answer is then the earlier "
    "registration, status 200, with `already_registered: true` and `Content-Location` naming "
    "the earlier entry; `again: true` (JSON or form field) or `?again=true` records a new entry "
    "anyway (201). " + _KEYED + " An upload is the same request when its file and form "
    "fields are. Needs a creator key.",
    responses={**_REGISTERED, **_ALREADY, **problems(400, 401, 403, 409, 413, 422, 503)},
    openapi_extra={**secured("creator"),
                   **json_request(WorkIn, multipart=_UPLOAD, multipart_example=_UPLOAD_EXAMPLE)},
)
async def register_work(request: Request) -> Response:
    n = node(request)
    who = deps.require_write(request, "creator")  # before reading any of the body
    key = deps.key_of(dict(request.scope["headers"]))
    query = request.scope.get("query_string", b"")
    if not uploads.is_multipart(request.headers.get("content-type", "")):
        return await register_json(n, who, await request.body(), query, key)
    again = again_query(query)
    form = await uploads.read_form(request, max_fields=100)
    try:
        if form.file is None:
            raise InvalidInput("file: a multipart upload needs a 'file' part",
                               errors=[{"field": "file", "message": said("required")}])
        again = _flag(form.get("again"), "again") or again
        facts = await form.file.identify(sm3=n.sm_suite)
        w = WorkIn(sha256=facts.sha256, sm3=facts.sm3, size=facts.size,
                   media_type=facts.media_type,
                   title=form.get("title"), work_type=form.get("work_type"),
                   creators=form.getlist("creators"), license=form.get("license") or None,
                   metadata=parse_metadata(form.get("metadata")))
        ident: tuple[bytes, ...] = ()
        if key is not None:
            # Under a key an upload is identified by its file's hashes, size and media type
            # (the file itself is neither kept nor hashed twice) and its form fields as sent,
            # as a JSON body is by its bytes (D137); ASCII JSON, which any text part can be
            # written as.
            fields = {name: form.getlist(name) for name in _UPLOAD_FIELDS}
            sent = json.dumps({"file": [facts.sha256, facts.sm3, facts.size, facts.media_type],
                               "fields": fields}, sort_keys=True).encode()
            ident = (b"/v1/works", query, b"multipart/form-data", sent)
            # A retry whose first send was answered gets that answer before its file is
            # fingerprinted again, the costly part (D140).
            if (early := await deps.answered_before(n, who, key, ident)) is not None:
                return early
        facts = await form.file.fingerprint(facts)
    finally:
        form.close()

    async def run() -> Response:
        return registration_answer(await operations.register_work(
            n, who, w, computed=facts.fingerprints, again=again))

    return await deps.once(n, who, key, ident, run)


_UPLOAD_FIELDS = tuple(name for name in _UPLOAD["properties"] if name != "file")
"""The form fields that make an upload's request under its key, each as the list of its values
in the order sent."""


@router.post(
    "/v1/evidence",
    status_code=201,
    response_model=RegistrationOut,
    summary="Deposit evidence",
    description="Records the hash of captured evidence (a screenshot, a web capture) with its "
    "source, capture time and method. " + _KEYED + " Needs a creator, platform or court key.",
    responses={**_REGISTERED, **problems(401, 403, 409, 413, 422, 503)},
    openapi_extra={**secured("creator", "platform", "court"), **json_request(EvidenceIn)},
)
async def deposit_evidence(request: Request) -> Response:
    return await deps.record(request, ("creator", "platform", "court"), EvidenceIn,
                                   operations.deposit_evidence)


@router.post(
    "/v1/works/batch",
    response_model=BatchOut,
    summary="Register up to 1,000 works",
    description="Registers each work as `POST /v1/works` (JSON) would, including the answer "
    "with the earlier registration for content this account already registered (`again` per "
    "item, or `?again=true` for all). " + _BATCH_DOC + "Needs a creator key.",
    responses={**answers(BATCH_EXAMPLE), **problems(401, 403, 413, 422, 429)},
    openapi_extra={**secured("creator"), **json_request(WorksBatchIn)},
)
async def register_works(request: Request) -> FastJSONResponse:
    n = node(request)
    who = deps.require_write(request, "creator")  # before reading any of the body
    query = request.scope.get("query_string", b"")
    again = again_query(query)
    return await batch.answer(
        n, who, await request.body(), query, "/v1/works/batch", "works", WorkIn,
        lambda items: operations.register_works(n, who, items, again=again))


@router.post(
    "/v1/evidence/batch",
    response_model=BatchOut,
    summary="Deposit up to 1,000 pieces of evidence",
    description="Records each deposit as `POST /v1/evidence` would. " + _BATCH_DOC
    + "Needs a creator, platform or court key.",
    responses={**answers(BATCH_EXAMPLE), **problems(401, 403, 413, 422, 429)},
    openapi_extra={**secured("creator", "platform", "court"), **json_request(EvidenceBatchIn)},
)
async def deposit_evidence_many(request: Request) -> FastJSONResponse:
    n = node(request)
    who = deps.require_write(request, "creator", "platform", "court")
    return await batch.answer(
        n, who, await request.body(), request.scope.get("query_string", b""),
        "/v1/evidence/batch", "evidence", EvidenceIn,
        lambda items: operations.deposit_evidence_many(n, who, items))
