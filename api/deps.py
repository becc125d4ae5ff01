"""Shared helpers for the routers: the node on app state, JSON bodies with limits, JSON out."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from copyledger.ledger.errors import PayloadTooLarge
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


class FastJSONResponse(Response):
    """JSON via orjson: the registration answer is rendered on the hot path."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
