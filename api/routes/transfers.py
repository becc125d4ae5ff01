"""Creators: record assignments and licences of rights; anyone: read a work's chain of title."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from copyledger.api import deps
from copyledger.api.deps import FastJSONResponse, node, parse_body
from copyledger.api.models import (
    HISTORY_EXAMPLE,
    REGISTRATION_EXAMPLE,
    AnswerIn,
    HistoryOut,
    RegistrationOut,
    TransferIn,
)
from copyledger.api.openapi import PUBLIC, answers, json_request, problems, secured
from copyledger.service import operations, title
from copyledger.service.operations import MAX_INT

router = APIRouter(tags=["creators"])


@router.post(
    "/v1/transfers",
    status_code=201,
    response_model=RegistrationOut,
    summary="Record a transfer of rights",
    description="Records a licence, or an offer of assignment, of rights in a registered work. "
    "Only the work's current holder (the registrant, or whoever last accepted an assignment) "
    "may do this; anyone else gets 403 and nothing is written. `to` must be an account of this "
    "registry (else 422). An assignment is recorded as an offer (`needs_acceptance: true`): "
    "the holder changes only when the recipient accepts it "
    "(`POST /v1/transfers/{seq}/accept`); until then the holder may withdraw it, and no other "
    "transfer of the work is recorded (409). Needs a creator key.",
    responses={**answers(REGISTRATION_EXAMPLE, 201), **problems(401, 403, 409, 413, 422, 503)},
    openapi_extra={**secured("creator"), **json_request(TransferIn)},
)
async def record_transfer(request: Request) -> Response:
    return await deps.record(request, ("creator",), TransferIn, operations.record_transfer)


# The body is optional (an acceptance may carry a note, or nothing).
_ANSWER_DOC = json_request(AnswerIn)
_ANSWER_DOC["requestBody"]["required"] = False


@router.post(
    "/v1/transfers/{seq}/{action}",
    status_code=201,
    response_model=RegistrationOut,
    summary="Accept or withdraw an offer of assignment",
    description="Answers the pending offer of assignment at `seq`. `accept`: only its recipient "
    "(`to`), who holds the work from then on (an `acceptance` entry). `withdraw`: only its maker "
    "(`from`, still the holder), e.g. after offering to the wrong account (a `withdrawal` "
    "entry). Anyone else gets 403; an offer already accepted or withdrawn, 409; an entry that "
    "is no offer, 404; nothing is written then. Needs a creator key.",
    responses={**answers(REGISTRATION_EXAMPLE, 201),
               **problems(401, 403, 404, 409, 413, 422, 503)},
    openapi_extra={**secured("creator"), **_ANSWER_DOC},
)
async def answer_offer(
    request: Request,
    seq: int = Path(ge=0, le=MAX_INT),
    action: Literal["accept", "withdraw"] = Path(description="accept (recipient) or withdraw "
                                                 "(offerer)"),
) -> FastJSONResponse:
    who = deps.require(request, "creator")
    n = node(request)
    a = parse_body(AnswerIn, await request.body() or b"{}", n.settings.max_body_bytes)
    kind = "acceptance" if action == "accept" else "withdrawal"
    recorded = await operations.answer_offer(n, who, seq, kind, a.note)
    return FastJSONResponse(recorded.to_dict(), status_code=201)


@router.get(
    "/v1/works/{seq}/history",
    summary="Chain of title",
    description="The work, every transfer recorded on it in log order (offers of assignment, "
    "acceptances and withdrawals included), who held it after each, the offer still awaiting "
    "an answer (`pending_offer`, or null), "
    "and for each link its inclusion proof to the latest signed checkpoint (included), so the "
    "chain can be checked link by link. Each link's full evidence bundle is at `bundle`.",
    response_model=None,
    responses={**answers(HISTORY_EXAMPLE, model=HistoryOut), **problems(404, 422)},
    openapi_extra=PUBLIC,
)
def history(request: Request, seq: int = Path(ge=0, le=MAX_INT)) -> dict[str, Any]:
    return title.history(node(request), seq)
