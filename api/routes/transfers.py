"""Creators: record assignments and licences of rights; anyone: read a work's chain of title."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request

from copyledger.api import auth
from copyledger.api.deps import FastJSONResponse, json_body, node
from copyledger.api.models import (
    HISTORY_EXAMPLE,
    REGISTRATION_EXAMPLE,
    HistoryOut,
    RegistrationOut,
    TransferIn,
)
from copyledger.api.openapi import PUBLIC, answers, json_request, problems, secured
from copyledger.service import operations, title
from copyledger.service.inputs import MAX_INT

router = APIRouter(tags=["creators"])


@router.post(
    "/v1/transfers",
    status_code=201,
    response_model=RegistrationOut,
    summary="Record a transfer of rights",
    description="Records an assignment or licence of rights in a registered work. Only the "
    "work's current holder (the registrant, or whoever it was last assigned to) may do this; "
    "anyone else gets 403 and nothing is written. Needs a creator key.",
    responses={**answers(REGISTRATION_EXAMPLE, 201), **problems(401, 403, 413, 422, 503)},
    openapi_extra={**secured("creator"), **json_request(TransferIn)},
)
async def record_transfer(request: Request) -> FastJSONResponse:
    who = auth.require_write(request, "creator")
    t = await json_body(request, TransferIn)
    recorded = await operations.record_transfer(node(request), who, t)
    return FastJSONResponse(recorded.to_dict(), status_code=201)


@router.get(
    "/v1/works/{seq}/history",
    summary="Chain of title",
    description="The work, every transfer recorded on it in log order, who held it after each, "
    "and for each link its inclusion proof to the latest signed checkpoint (included), so the "
    "chain can be checked link by link. Each link's full evidence bundle is at `bundle`.",
    response_model=None,
    responses={**answers(HISTORY_EXAMPLE, model=HistoryOut), **problems(404, 422)},
    openapi_extra=PUBLIC,
)
def history(request: Request, seq: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    return title.history(node(request), seq)
