"""Typed inputs of the service operations, with their documentation and examples.

The HTTP layer parses request bodies into these (`parse_input`), the CLI builds them directly;
the field rules of an entry live in `ledger.entry` (one place), so these models give types,
documentation and examples, and refuse unknown members.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, WithJsonSchema

from copyledger.ledger import claims
from copyledger.ledger.entry import MAX_METADATA_DEPTH, TRANSFER_TYPES, WORK_TYPES
from copyledger.ledger.errors import InvalidInput

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
M = TypeVar("M", bound=BaseModel)

MAX_INT = 2**63 - 1
"""The largest integer a request may carry: the database's 64-bit signed integer. A bigger one
is refused as input (422) instead of overflowing the driver (500); entries hold at most
2**53-1, which `ledger.entry` checks."""
Count = Annotated[int, Field(ge=0, le=MAX_INT)]


def closed(values: tuple[str, ...]) -> WithJsonSchema:
    """A closed set of strings as the OpenAPI description shows it (an enum). Validation stays
    with the entry rules in `ledger/`, whose messages list every allowed value."""
    return WithJsonSchema({"type": "string", "enum": list(values)})


WorkType = Annotated[str, closed(WORK_TYPES)]
TransferType = Annotated[str, closed(TRANSFER_TYPES)]
Regime = Annotated[str, closed(claims.REGIMES)]
NoticeType = Annotated[str, closed(claims.NOTICE_TYPES)]
Action = Annotated[str, closed(claims.ACTIONS)]


def _shape(schema: dict[str, Any]) -> WithJsonSchema:
    """The documented members of a JSON object the entry rules check (unknown ones refused)."""
    return WithJsonSchema({"type": "object", "additionalProperties": False, **schema})


_STR = {"type": "string"}
_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
Claimant = Annotated[dict[str, Any], _shape({"required": ["name"], "properties": {
    "name": _STR, "email": _STR, "phone": _STR, "address": _STR,
    "authority": {"type": "string", "enum": list(claims.AUTHORITIES)},
    "account": {**_STR, "description": "the claimant's account in this registry"}}})]
ClaimedWork = Annotated[dict[str, Any], _shape({"properties": {
    "seq": {"type": "integer", "minimum": 0}, "sha256": _HEX, "description": _STR}})]
Target = Annotated[dict[str, Any], _shape({"required": ["url"], "properties": {
    "url": _STR, "sha256": _HEX}})]
Statements = Annotated[dict[str, Any], _shape({"properties": {
    k: {"type": "boolean"} for k in ("good_faith", "accuracy", "perjury", "mistake",
                                     "jurisdiction_consent")}})]


def parse_input(model: type[M], body: bytes) -> M:
    """A JSON document as `model`, or InvalidInput naming every bad field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise _invalid(e, "") from None


def parse_value(model: type[M], value: Any, where: str = "") -> M:
    """An already decoded JSON value as `model` (one item of a batch), or InvalidInput naming
    every bad field, prefixed with `where` (`works[3].`)."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise _invalid(e, where) from None


def _invalid(e: ValidationError, where: str) -> InvalidInput:
    errors = [
        {"field": where + ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in e.errors()
    ]
    return InvalidInput("; ".join(f"{x['field']}: {x['message']}" for x in errors),
                        errors=errors)


def parse_count(raw: str, field: str) -> int:
    """A form field holding a non-negative integer: ASCII digits only (`str.isdigit` also
    accepts "²" and "٣", which `int` refuses), at most MAX_INT."""
    if not re.fullmatch(r"[0-9]{1,19}", raw) or int(raw) > MAX_INT:
        raise InvalidInput(f"{field}: must be an integer from 0 to {MAX_INT}",
                           errors=[{"field": field, "message": f"must be an integer from 0 to "
                                    f"{MAX_INT}"}])
    return int(raw)


def parse_metadata(raw: str) -> dict[str, Any] | None:
    """A form's `metadata` field (a JSON object as text), or None when empty. Nesting past the
    entry limit is refused by a scan before parsing, so a document nested thousands deep never
    reaches the recursive JSON parser."""
    if raw == "":
        return None
    if _nesting(raw) > MAX_METADATA_DEPTH:
        message = f"nested deeper than {MAX_METADATA_DEPTH} levels"
        raise InvalidInput(f"metadata: {message}",
                           errors=[{"field": "metadata", "message": message}])
    try:
        v = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"metadata: not JSON: {e}",
                           errors=[{"field": "metadata", "message": "not JSON"}]) from None
    if not isinstance(v, dict):
        raise InvalidInput("metadata: must be a JSON object",
                           errors=[{"field": "metadata", "message": "must be a JSON object"}])
    return v


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text, brackets inside strings not
    counted; linear, and needs no valid JSON (the parser judges that afterwards)."""
    depth = deepest = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


class WorkIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sha256": SHA,
                    "size": 1048576,
                    "media_type": "image/png",
                    "title": "Harbour at dawn",
                    "creators": ["Ada Example"],
                    "work_type": "image",
                    "license": "CC-BY-4.0",
                    "metadata": {"year": 2026},
                }
            ]
        },
    )
    sha256: str = Field(description="SHA-256 of the work's bytes, 64 lowercase hex characters")
    sm3: str | None = Field(
        default=None,
        description="SM3 (GB/T 32905) of the work's bytes, 64 lowercase hex characters: required "
        "by registries created with the SM suite (GET /v1/log says crypto_suite), optional "
        "elsewhere; `copyledger register` computes it",
    )
    title: str
    creators: list[str]
    work_type: WorkType
    size: Count | None = Field(default=None, description="size in bytes")
    media_type: str | None = None
    license: str | None = None
    metadata: dict[str, Any] | None = None
    fingerprints: dict[str, Any] | None = Field(
        default=None,
        description="perceptual fingerprints computed on the creator's machine "
        "(`copyledger register` does): pdq, phash (images), minhash (text), chromaprint "
        "(audio), vpdq and chromaprint (video)",
    )
    again: StrictBool | None = Field(
        default=None,
        description="register anew even if this account already registered this content "
        "(otherwise the earlier registration is the answer, status 200); not recorded",
    )


class EvidenceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sha256": SHA,
                    "source_url": "https://example.org/listing/42",
                    "captured_at": "2026-11-20T10:00:00Z",
                    "capture_method": "screenshot",
                    "description": "Listing offering copies of the registered photograph",
                    "related_work": 0,
                }
            ]
        },
    )
    sha256: str
    captured_at: str
    capture_method: str
    description: str
    source_url: str | None = None
    related_work: Count | None = None
    size: Count | None = None
    media_type: str | None = None
    metadata: dict[str, Any] | None = None
    warc_records: list[dict[str, Any]] | None = Field(
        default=None,
        description="for a WARC capture: each response record's target_uri, warc_date, "
        "record_id and payload_sha256 (the CLI computes them)",
    )


class TransferIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "work_seq": 0, "to": "harbour-press", "transfer_type": "exclusive_licence",
            "territory": "EU", "term_start": "2027-01-01T00:00:00Z",
            "term_end": "2032-01-01T00:00:00Z",
            "terms_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        }]},
    )
    work_seq: Count = Field(description="seq of the registered work")
    to: str = Field(description="the receiving account")
    transfer_type: TransferType
    territory: str = "worldwide"
    term_start: str | None = None
    term_end: str | None = None
    terms_sha256: str | None = Field(default=None, description="SHA-256 of the signed contract")
    note: str | None = None


class AnswerIn(BaseModel):
    """The body of an acceptance or withdrawal of an offer of assignment (may be empty)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "note": "accepted under the contract of 2027-01-01"}]})
    note: str | None = Field(default=None, description="a short public note")


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "notice_type": "notice", "regime": "dmca_512c3",
        "claimant": {"name": "Ada Example", "email": "ada@example.org", "phone": "+1 555 0100",
                     "address": "1 Harbour St, Springfield", "authority": "owner",
                     "account": "ada"},
        "works": [{"seq": 0}],
        "targets": [{"url": "https://video.example/watch/123"}],
        "statements": {"good_faith": True, "accuracy": True, "perjury": True},
        "requested_action": "remove", "signature": "/Ada Example/",
    }]})
    notice_type: NoticeType = "notice"
    regime: Regime
    refers_to: Count | None = Field(default=None, description="a counter-notice's claim seq")
    claimant: Claimant
    works: list[ClaimedWork] | None = None
    targets: list[Target] | None = None
    substantiation: str | None = None
    statements: Statements | None = None
    requested_action: Action | None = None
    signature: str | None = None


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "claimant": "ada", "work_seq": 0,
        "content": {"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "pdq": "f" * 64},
    }]})
    claimant: str = Field(description="the claimant's account in this registry")
    work_seq: Count | None = None
    work_sha256: str | None = None
    content: dict[str, Any] = Field(default_factory=dict,
                                    description="disputed content: sha256, pdq, phash, minhash, "
                                                "chromaprint, vpdq")
