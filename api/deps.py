"""Shared helpers for the routers: the node on app state, JSON bodies with limits, JSON out."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from copyledger.ledger.errors import InvalidInput, PayloadTooLarge
from copyledger.service.inputs import parse_input
from copyledger.service.node import Node

M = TypeVar("M", bound=BaseModel)


def node(request: Request) -> Node:
    n: Node = request.app.state.node
    return n


async def json_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model` (413 past the body limit, 422 naming bad fields)."""
    return parse_body(model, await request.body(), node(request).settings.max_body_bytes)


def parse_body(model: type[M], body: bytes, limit: int) -> M:
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {limit}")
    return parse_input(model, body)


async def form(request: Request, *, max_files: int, max_fields: int) -> FormData:
    """A multipart/form-data body, like `request.form()` except that a field whose bytes are not
    valid in the body's charset (UTF-8 unless it says otherwise) is refused with a 422 naming
    it: Starlette would read it as Latin-1, and a title in mojibake would be recorded."""
    parser = _StrictParser(request.headers, request.stream(), max_files=max_files,
                           max_fields=max_fields)
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise HTTPException(400, e.message) from None


class _StrictParser(MultiPartParser):
    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                part.data.decode(self._charset)
            except UnicodeDecodeError:
                name = part.field_name
                message = f"is not valid {self._charset}"
                raise InvalidInput(f"{name}: {message}",
                                   errors=[{"field": name, "message": message}]) from None
        super().on_part_end()


class FastJSONResponse(Response):
    """JSON via orjson: the registration answer is rendered on the hot path."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
