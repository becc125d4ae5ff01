"""Anyone, with a browser: the log explorer (home, entries, blocks, an entry, a block, a work's
chain of title, a claim's timeline, search). Each route reads one service function and renders
one page of `api/explorer.py`; a domain error, or a query or path value the route's parameters
refuse, becomes an HTML page in the reader's language with the problem's status (the `/v1` API
keeps its JSON problems).

The pages are HTML for people, so they are left out of the OpenAPI document; the JSON they are
made from is in the documented `/v1` API.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from copyledger.api import deps
from copyledger.api import explorer as pages
from copyledger.api.deps import node
from copyledger.api.problems import classify
from copyledger.ledger.errors import CopyledgerError, Said, said
from copyledger.service import explorer
from copyledger.service.i18n import gettext, say
from copyledger.service.operations import MAX_INT

EXPLORER_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                "connect-src 'none'; base-uri 'none'; form-action 'self'; "
                "frame-ancestors 'none'")
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": EXPLORER_CSP, "Cache-Control": "no-cache"}


def _refused(errors: Sequence[Any]) -> list[Said]:
    """What a page's refused parameters were, in words a reader's language has (pydantic's
    messages are English only): each parameter named, with the bound it missed when known."""
    parts: list[Said] = []
    for e in errors:
        field = str(e.get("loc", ("", "?"))[-1])
        kind, ctx = e.get("type", ""), e.get("ctx") or {}
        if kind in ("int_parsing", "int_type", "int_from_float"):
            parts.append(said("{field}: a whole number", field=field))
        elif kind == "greater_than_equal":
            parts.append(said("{field}: at least {limit}", field=field, limit=ctx.get("ge")))
        elif kind == "less_than_equal":
            parts.append(said("{field}: at most {limit}", field=field, limit=ctx.get("le")))
        elif kind == "string_too_long":
            parts.append(said("{field}: at most {limit} characters", field=field,
                              limit=ctx.get("max_length")))
        else:
            parts.append(said("{field}: not a value this page can use", field=field))
    return parts or [said("invalid request")]


def error_response(request: Request, depth: int, status: int, title: str, detail: str
                   ) -> Response:
    """An explorer page's error as an HTML page, with `status`; `title` and `detail` are in
    the reader's language already."""
    lang = deps.lang(request)
    page = pages.error_page(status, title, detail, depth, lang)
    return HTMLResponse(pages.keep_query(page, request.query_params.multi_items()),
                        status_code=status, headers=HEADERS)


class PageRoute(APIRoute):
    """An explorer route: a query or path value its parameters refuse (`/search?q=` too long,
    `/entries?before=abc`, `/blocks/abc`) is answered with an HTML page, not the API's JSON
    problem that a browser showed as text; the status stays the problem's (422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        depth = self.path.count("/") - 1  # "/" and "/entries": 0; "/entries/{seq}": 1

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                lang = deps.lang(request)
                return error_response(request, depth, 422, gettext(lang, "Invalid input"),
                              "; ".join(say(lang, p) for p in _refused(e.errors())))
        return page


router = APIRouter(tags=["explorer"], include_in_schema=False, route_class=PageRoute)


def _limit() -> Any:
    """A fresh Query for each parameter: FastAPI binds a Query object to one parameter name."""
    return Query(default=None, ge=1, le=explorer.MAX_ROWS)


def _key() -> Any:
    return Query(default=None, ge=0, le=MAX_INT)


def _page(request: Request, depth: int, read: Callable[[], Any],
          render: Callable[[Any, str], str | Response]) -> Response:
    """Read, render in the reader's language; a domain error (no such entry, a bad query) as
    an HTML page with the status its problem would have."""
    lang = deps.lang(request)
    try:
        out = render(read(), lang)
    except CopyledgerError as e:
        status, _, title = classify(e)
        return error_response(request, depth, status, gettext(lang, title), say(lang, e.detail))
    return out if isinstance(out, Response) else HTMLResponse(
        pages.keep_query(out, request.query_params.multi_items()), headers=HEADERS)


@router.get("/")
def home(request: Request) -> Response:
    return _page(request, 0, lambda: explorer.overview(node(request)), pages.home_page)


@router.get("/entries")
def entries(request: Request, before: int | None = _key(), limit: int | None = _limit()
            ) -> Response:
    return _page(request, 0, lambda: explorer.entries_page(node(request), before, limit),
                 pages.entries_page)


@router.get("/blocks")
def blocks(request: Request, before: int | None = _key(), limit: int | None = _limit()
           ) -> Response:
    return _page(request, 0, lambda: explorer.blocks_page(node(request), before, limit),
                 pages.blocks_page)


@router.get("/entries/{seq}")
def entry(request: Request, seq: int = Path(ge=0, le=MAX_INT), after: int | None = _key()
          ) -> Response:
    return _page(request, 1, lambda: explorer.entry_view(node(request), seq,
                                                -1 if after is None else after),
                 pages.entry_page)


@router.get("/blocks/{height}")
def block(request: Request, height: int = Path(ge=0, le=MAX_INT), after: int | None = _key(),
          limit: int | None = _limit()) -> Response:
    return _page(request, 1, lambda: explorer.block_view(node(request), height, after, limit),
                 pages.block_page)


@router.get("/works/{seq}")
def work_title(request: Request, seq: int = Path(ge=0, le=MAX_INT)) -> Response:
    return _page(request, 1, lambda: explorer.title_view(node(request), seq), pages.title_page)


@router.get("/claims/{seq}")
def claim(request: Request, seq: int = Path(ge=0, le=MAX_INT)) -> Response:
    return _page(request, 1, lambda: explorer.claim_view(node(request), seq), pages.claim_page)


@router.get("/search")
def search(request: Request, q: str = Query(default="", max_length=200),
           after: int | None = _key(), limit: int | None = _limit()) -> Response:
    """An entry number goes to its page (303); a SHA-256 lists the entries with that content."""
    return _page(request, 0, lambda: explorer.find(node(request), q, after, limit), _found)


def _found(d: dict[str, Any], lang: str) -> str | Response:
    if "seq" in d:
        return RedirectResponse(f"entries/{d['seq']}", status_code=303, headers=HEADERS)
    return pages.search_page(d, lang)
