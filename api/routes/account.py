"""Anyone with a key: who that key acts for, so a client can check its setup before writing.
Admins: who stands behind an account (display name and kind, decision D50); anyone may read it,
since certificates and pages show it."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from copyledger.api import deps
from copyledger.api.deps import FastJSONResponse, json_body, node
from copyledger.api.models import WHOAMI_EXAMPLE, AccountIn, AccountOut, WhoamiOut
from copyledger.api.openapi import PUBLIC, answers, json_request, problems, secured
from copyledger.service import accounts, apikeys

router = APIRouter(tags=["account"])

_PROFILE = {"account": "acme", "display_name": "上海某某文化传播有限公司",
            "kind": "organisation", "updated_at": "2026-11-30T02:05:03.123456Z"}
_ACCOUNT = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")


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


@router.put(
    "/v1/accounts/{account}",
    response_model=AccountOut,
    summary="State who stands behind an account (admin)",
    description="Sets the account's display name and kind (`person` or `organisation`), shown "
    "beside the account id on certificates and pages as the operator's statement: it is not "
    "in the log and nothing signs it. Replaces an earlier profile. Needs an admin key.",
    responses={**answers(_PROFILE), **problems(401, 403, 413, 422)},
    openapi_extra={**secured("admin"), **json_request(AccountIn)},
)
async def set_account(request: Request, account: str = _ACCOUNT) -> FastJSONResponse:
    deps.require(request, "admin")
    a = await json_body(request, AccountIn)
    p = await run_in_threadpool(accounts.set_profile, node(request).store, account,
                                a.display_name, a.kind)
    return FastJSONResponse(p.to_dict())


@router.get(
    "/v1/accounts/{account}",
    response_model=AccountOut,
    summary="Who stands behind an account",
    description="The display name and kind the operator stated for the account (what "
    "certificates and pages show beside its id); 404 when none was stated.",
    responses={**answers(_PROFILE), **problems(404, 422)},
    openapi_extra=PUBLIC,
)
def get_account(request: Request, account: str = _ACCOUNT) -> FastJSONResponse:
    return FastJSONResponse(accounts.profile(node(request).store, account).to_dict())
