"""Creators: register works (JSON with hashes, or a streamed file upload) and deposit evidence."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from copyledger.api import auth
from copyledger.api.deps import (
    FastJSONResponse,
    append,
    append_entry,
    json_body,
    parse_body,
    parse_metadata,
    registration_json,
    registry,
)
from copyledger.api.models import EvidenceIn, RegistrationOut, WorkIn
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import fingerprint as fp
from copyledger.ledger.errors import InvalidInput, NotFound
from copyledger.matching import fingerprints_for

router = APIRouter(tags=["creators"])

_WORK_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": WorkIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "title", "creators", "work_type"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "hashed by the server, then deleted"},
                        "title": {"type": "string"},
                        "creators": {"type": "array", "items": {"type": "string"}},
                        "work_type": {"type": "string"},
                        "license": {"type": "string"},
                        "metadata": {"type": "string", "description": "a JSON object"},
                    },
                }
            },
        },
    }
}

CHUNK = 1 << 20
MAX_FINGERPRINT_BYTES = 64 * 1024 * 1024  # larger uploads are hashed but not fingerprinted


async def _hash_upload(upload: UploadFile) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := await upload.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


async def _work_from_form(request: Request, registrant: str) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=100)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("file: a multipart upload needs a 'file' part",
                               errors=[{"field": "file", "message": "required"}])
        sha256, size = await _hash_upload(upload)
        media_type = (upload.content_type or "").split(";")[0].strip().lower() or None
        if media_type == "application/octet-stream":
            media_type = None
        fingerprints: dict[str, Any] = {}
        if media_type and size <= MAX_FINGERPRINT_BYTES:
            await upload.seek(0)
            fingerprints = await run_in_threadpool(
                fingerprints_for, await upload.read(), media_type)

        def text(name: str) -> str | None:
            v = form.get(name)
            return v if isinstance(v, str) else None

        return entry_mod.build_work(
            registrant=registrant,
            received_at=entry_mod.utc_now(),
            sha256=sha256,
            size=size,
            media_type=media_type,
            title=text("title") or "",
            creators=[c for c in form.getlist("creators") if isinstance(c, str)],
            work_type=text("work_type") or "",
            license=text("license"),
            metadata=parse_metadata(text("metadata")),
            fingerprints=fingerprints or None,
            check=False,
        )
    finally:
        await form.close()


@router.post(
    "/v1/works",
    status_code=201,
    response_model=RegistrationOut,
    summary="Register a work",
    description="Registers a work by its SHA-256 (JSON) or by uploading the file (multipart; the "
    "server hashes it from a temporary spool file and deletes it, keeping only the hash). "
    "Answers only after the block that holds the entry is durably committed, with a receipt: "
    "the inclusion proof to the signed checkpoint of that block. Needs a creator key.",
    openapi_extra=_WORK_DOC,
)
async def register_work(request: Request) -> FastJSONResponse:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return FastJSONResponse(await register_json(
            request.app.state, request.headers.get("authorization", ""), await request.body()),
            status_code=201)
    who = auth.require(request, "creator")
    entry = await _work_from_form(request, who.account)
    return FastJSONResponse(await _record_work(request.app.state, entry), status_code=201)


async def register_json(state: Any, authorization: str, body: bytes) -> dict[str, Any]:
    """The JSON registration, from the raw header and body: the route above and the ASGI fast
    path (api.app.FastRegister) both call it, so there is one implementation."""
    who = auth.check(state.keys, authorization, ("creator",))
    reg = state.registry
    w = parse_body(WorkIn, body, reg.settings.max_body_bytes)
    entry = entry_mod.build_work(
        registrant=who.account,
        received_at=entry_mod.utc_now(),
        sha256=w.sha256,
        size=w.size,
        media_type=w.media_type,
        title=w.title,
        creators=w.creators,
        work_type=w.work_type,
        license=w.license,
        metadata=w.metadata,
        fingerprints=fp.validate_fingerprints(w.fingerprints) if w.fingerprints else None,
        check=False,
    )
    return await _record_work(state, entry)


async def _record_work(state: Any, entry: dict[str, Any]) -> dict[str, Any]:
    receipt, entry = await append_entry(state.registry, entry)
    fps = entry["content"].get("fingerprints")
    if fps:  # matchable at once
        state.fp_index.add(receipt.seq, fps)
    return registration_json(receipt, entry)


def _require_work(request: Request, seq: int) -> None:
    msg = None
    try:
        row = registry(request).store.get_entry(seq)
        if row.kind != "work":
            msg = f"entry {seq} is a {row.kind}, not a work"
    except NotFound:
        msg = f"no entry with seq {seq}"
    if msg:
        raise InvalidInput(f"related_work: {msg}",
                           errors=[{"field": "related_work", "message": msg}])


@router.post(
    "/v1/evidence",
    status_code=201,
    response_model=RegistrationOut,
    summary="Deposit evidence",
    description="Records the hash of captured evidence (a screenshot, a web capture) with its "
    "source, capture time and method. Needs a creator, platform or court key.",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": EvidenceIn.model_json_schema()}}}},
)
async def deposit_evidence(request: Request) -> FastJSONResponse:
    who = auth.require(request, "creator", "platform", "court")
    ev = await json_body(request, EvidenceIn)
    if ev.related_work is not None:
        _require_work(request, ev.related_work)
    entry = entry_mod.build_evidence(
        registrant=who.account,
        received_at=entry_mod.utc_now(),
        sha256=ev.sha256,
        source_url=ev.source_url,
        captured_at=ev.captured_at,
        capture_method=ev.capture_method,
        description=ev.description,
        related_work=ev.related_work,
        size=ev.size,
        media_type=ev.media_type,
        metadata=ev.metadata,
        warc_records=ev.warc_records,
        check=False,
    )
    receipt, entry = await append(request, entry)
    return FastJSONResponse(registration_json(receipt, entry), status_code=201)
