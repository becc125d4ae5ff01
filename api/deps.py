"""Shared helpers for the routers: the registry on app state, JSON bodies with limits, hex."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from copyledger.api.registry import Registry
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import jcs
from copyledger.ledger.errors import InvalidInput, PayloadTooLarge
from copyledger.ledger.sequencer import Pending, Receipt
from copyledger.ledger.store import EntryRow

M = TypeVar("M", bound=BaseModel)


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


async def json_body(request: Request, model: type[M]) -> M:
    return parse_body(model, await request.body(), registry(request).settings.max_body_bytes)


def parse_body(model: type[M], body: bytes, limit: int) -> M:
    """A JSON request body as `model`, or InvalidInput naming every bad field."""
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {limit}")
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
            for err in e.errors()
        ]
        detail = "; ".join(f"{x['field']}: {x['message']}" for x in errors)
        raise InvalidInput(detail, errors=errors) from None


async def append(request: Request, entry: dict[str, Any]) -> tuple[Receipt, dict[str, Any]]:
    """Canonicalise an entry, hand it to the sequencer and wait for its durable receipt."""
    return await append_entry(registry(request), entry)


async def append_entry(reg: Registry, entry: dict[str, Any]) -> tuple[Receipt, dict[str, Any]]:
    entry, data = entry_mod.encode(entry)
    pending = Pending(
        data=data,
        kind=str(entry["kind"]),
        sha256=entry_mod.content_sha256(entry),
        registrant=str(entry["registrant"]),
    )
    receipt = await reg.sequencer.submit_async(pending)
    return receipt, entry


class FastJSONResponse(Response):
    """JSON via orjson: the registration answer is rendered on the hot path."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def registration_json(receipt: Receipt, entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": receipt.seq,
        "leaf_hash": receipt.leaf_hash.hex(),
        "block_height": receipt.block_height,
        "entry": entry,
        "receipt": {
            "tree_size": receipt.tree_size,
            "root": receipt.root.hex(),
            "proof": [p.hex() for p in receipt.proof],
            "checkpoint": receipt.checkpoint,
        },
    }


def entry_json(row: EntryRow) -> dict[str, Any]:
    obj = jcs.parse(row.data)
    return {
        "seq": row.seq,
        "leaf_hash": row.leaf_hash.hex(),
        "block_height": row.block_height,
        "entry": obj,
    }


def parse_hex_hash(value: str, field: str) -> bytes:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidInput(f"{field}: must be 64 lowercase hex characters",
                           errors=[{"field": field, "message": "must be 64 lowercase hex"}])
    return bytes.fromhex(value)


def parse_metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    try:
        v = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"metadata: not JSON: {e}") from None
    if not isinstance(v, dict):
        raise InvalidInput("metadata: must be a JSON object")
    return v
