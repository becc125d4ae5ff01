"""RFC 9457 problem details for every error, so clients never have to parse HTML or guess."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from copyledger.api.deps import lang, wants_html
from copyledger.ledger.errors import (
    Conflict,
    CopyledgerError,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ProofError,
    RateLimited,
    RequestTimeout,
    SignatureError,
    Unauthorized,
    Unavailable,
    VerificationError,
)
from copyledger.ledger.throttle import Throttle, db_reason
from copyledger.ledger.timestamp import TimestampError
from copyledger.service.i18n import DEFAULT, gettext, say

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://copyledger.dev/problems/"
log = logging.getLogger("copyledger.api")

SERVER_ERROR_LOG_S = 10.0
"""A server error of one kind and detail is logged at most once this often (D111), with how
many like it were held back; a database outage under load answers thousands a second."""

# The one place a domain error becomes HTTP: class -> (status, problem type slug, title).
# A class not listed maps as its nearest listed base class.
PROBLEMS: dict[type[CopyledgerError], tuple[int, str, str]] = {
    CopyledgerError: (500, "internal-error", "Internal error"),
    InvalidInput: (422, "invalid-input", "Invalid input"),
    NotFound: (404, "not-found", "Not found"),
    Unauthorized: (401, "unauthorized", "Missing or unknown API key"),
    Forbidden: (403, "forbidden", "This API key may not do that"),
    Conflict: (409, "conflict", "Conflict"),
    PayloadTooLarge: (413, "payload-too-large", "Request body too large"),
    RateLimited: (429, "rate-limited", "Too many requests"),
    RequestTimeout: (408, "request-timeout", "Request body too slow"),
    Unavailable: (503, "unavailable", "Service unavailable"),
    VerificationError: (422, "verification-failed", "Verification failed"),
    ProofError: (422, "proof-failed", "Merkle proof does not verify"),
    SignatureError: (422, "signature-failed", "Signature does not verify"),
    TimestampError: (422, "timestamp-failed", "Time-stamp token does not verify"),
    IntegrityError: (500, "integrity", "Ledger integrity violated"),
}

INTERNAL = "the server failed; nothing was recorded by this request"
# Fixed details, translated like the titles. A domain error's detail built with values is a
# `said(template, **values)`: its template is the msgid, filled in after the lookup (D50).
NO_PAGE = "No page has this address."
"""A browser's 404 page (outside /v1): a mistyped address."""
DETAILS = (INTERNAL, "invalid request", "Not Found", "Method Not Allowed", "Unauthorized", NO_PAGE)


def classify(exc: CopyledgerError) -> tuple[int, str, str]:
    """(status, slug, title) for a domain error, from PROBLEMS."""
    for cls in type(exc).__mro__:
        if issubclass(cls, CopyledgerError) and cls in PROBLEMS:
            return PROBLEMS[cls]
    return PROBLEMS[CopyledgerError]


_server_errors = Throttle(SERVER_ERROR_LOG_S)


def from_error(exc: CopyledgerError, instance: str, lang: str = DEFAULT) -> JSONResponse:
    """The problem+json response for a domain error (logged when it is the server's fault),
    its title and detail in `lang` where the catalogue has them."""
    status, slug, title = classify(exc)
    if status >= 500 and (held := _server_errors.due(
            (type(exc).__name__, str(exc.detail), db_reason(exc)))) is not None:
        log.error("server error on %s: %s", instance, exc.full_detail,
                  extra={"held_back": held})
    return problem(status, slug, gettext(lang, title), say(lang, exc.detail), instance,
                   **exc.extra)


def body_of(exc: CopyledgerError, instance: str) -> dict[str, Any]:
    """The problem document of a domain error, as a batch item's answer carries it."""
    status, slug, title = classify(exc)
    return problem_body(status, slug, title, exc.detail, instance, **exc.extra)


def problem_body(
    status: int, slug: str, title: str, detail: str, instance: str, **extra: Any
) -> dict[str, Any]:
    return {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail,
            "instance": instance, **extra}


def internal_error(instance: str, lang: str = DEFAULT) -> JSONResponse:
    """An unexpected exception: logged with its traceback (the same failure at most once in
    SERVER_ERROR_LOG_S, D111: a database outage fails every read), never shown to the
    client."""
    e = sys.exc_info()[1]
    if (held := _server_errors.due(db_reason(e) if e else "")) is not None:
        log.exception("unhandled error on %s", instance, extra={"held_back": held})
    return problem(500, "internal-error", gettext(lang, "Internal error"),
                   gettext(lang, INTERNAL), instance)


def problem(
    status: int, slug: str, title: str, detail: str, instance: str, **extra: Any
) -> JSONResponse:
    body = problem_body(status, slug, title, detail, instance, **extra)
    # Retry-After on every 429 and 503, and on any answer whose error names a wait (a 409
    # for an Idempotency-Key still in flight): clients resend on it (D131).
    headers = ({"Retry-After": str(extra.get("retry_after", 1))}
               if status in (429, 503) or "retry_after" in extra else None)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def invalid_input(errors: Sequence[Any], instance: str, lang: str = DEFAULT) -> JSONResponse:
    """422 naming each field pydantic refused (`loc` without the leading `body`)."""
    fields = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
            "message": e.get("msg", ""),
        }
        for e in errors
    ]
    detail = ("; ".join(f"{e['field']}: {e['message']}" for e in fields)
              or gettext(lang, "invalid request"))
    return problem(422, "invalid-input", gettext(lang, "Invalid input"), detail, instance,
                   errors=fields)


MAX_PAGE_DEPTH = 32
"""Levels a 404 page's relative links climb at most: a deeper path (a crafted one of slashes)
would only lengthen each link, and a browser stops `..` at the root anyway."""


def install(app: FastAPI, *, pages: bool = False) -> None:
    """Answer errors as problem documents; with `pages` (the registry, whose explorer they
    are), a browser's 404 outside /v1 as an explorer page (D213)."""
    @app.exception_handler(CopyledgerError)
    async def _copyledger(request: Request, exc: CopyledgerError) -> JSONResponse:
        return from_error(exc, request.url.path, lang(request))

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: Exception) -> JSONResponse:
        # A route's parameters (RequestValidationError) or an input model a route builds
        # itself, e.g. from a form (pydantic's ValidationError): the client's mistake either way.
        assert isinstance(exc, RequestValidationError | ValidationError)
        return invalid_input(exc.errors(), request.url.path, lang(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        page_or_problem = pages and exc.status_code == 404 and not (
            path == "/v1" or path.startswith("/v1/"))
        if page_or_problem and wants_html(request):
            # A mistyped page address in a browser: a page, not the API's JSON problem.
            from copyledger.api.routes.explorer import error_response

            words = lang(request)
            page = error_response(request, min(max(path.count("/") - 1, 0), MAX_PAGE_DEPTH),
                                  404, gettext(words, "Not found"), gettext(words, NO_PAGE))
            page.headers.append("Vary", "Accept")
            return page
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(
            exc.status_code, "http-error"
        )
        words = say(lang(request), exc.detail)  # (a said(...) detail by its template)
        answer = problem(exc.status_code, slug, words, words, path)
        if page_or_problem:  # (the answer to this address depends on Accept)
            answer.headers.append("Vary", "Accept")
        return answer

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request.url.path, lang(request))
