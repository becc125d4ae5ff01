"""Anyone with a key: who that key acts for, so a client can check its setup before writing."""

from __future__ import annotations

from fastapi import APIRouter, Request

from copyledger.api import deps
from copyledger.api.deps import FastJSONResponse, node
from copyledger.api.models import WHOAMI_EXAMPLE, WhoamiOut
from copyledger.api.openapi import answers, problems, secured
from copyledger.service import apikeys

router = APIRouter(tags=["account"])


@router.get(
    "/v1/whoami",
    summary="Who am I",
    description="The account and role of the API key sent, its id and its prefix (what "
    "`copyledger keys list` shows), never the key itself. Any role's key.",
    response_model=WhoamiOut,
    responses={**answers(WHOAMI_EXAMPLE), **problems(401)},
    openapi_extra=secured(*apikeys.ROLES),
)
def whoami(request: Request) -> FastJSONResponse:
    who = deps.require(request, *apikeys.ROLES)
    return FastJSONResponse(apikeys.whoami(node(request).store, who))
