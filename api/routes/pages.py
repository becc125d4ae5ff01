"""Anyone, with a browser: the evidence certificate and the verification page.

The page's JavaScript is ours and served from here (no CDN, no third-party code), so what a
judge's browser runs is what this repository holds. Content-Security-Policy headers keep it
that way: the certificate runs no script at all, the page only its own.
"""

from __future__ import annotations

import functools
import html
import json
import re
from pathlib import Path as FsPath
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from copyledger.api.deps import accept_weights, node
from copyledger.api.deps import lang as language
from copyledger.api.explorer import keep_query
from copyledger.api.openapi import PUBLIC, problems
from copyledger.ledger.errors import NotFound, said
from copyledger.service import accounts, reads
from copyledger.service.certificate import certificate_html
from copyledger.service.dates import beside_utc, zone, zone_word
from copyledger.service.i18n import DEFAULT, gettext, located
from copyledger.service.operations import MAX_INT
from copyledger.service.rendercache import RenderCache

router = APIRouter(tags=["pages"])
STATIC = FsPath(__file__).resolve().parent.parent / "static"
ASSETS = {  # the only files served from api/static, and their media types
    "verify.js": "text/javascript; charset=utf-8",
    "verify.css": "text/css; charset=utf-8",
    "explorer.js": "text/javascript; charset=utf-8",
    "dropzone.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
}
CERT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def verify_url(request: Request, seq: int) -> str:
    """Where the QR code points: this registry's /verify page, opened on this entry. From the
    configured public URL, never from the request's Host header, which the client chooses."""
    return f"{node(request).settings.base_url}/verify?seq={seq}"


def _wants_pdf(accept: str) -> bool:
    """True when Accept ranks application/pdf above text/html, by q-value (browsers ask for
    HTML, so only a client that names PDF gets it without ?format=pdf)."""
    q = accept_weights(accept)
    pdf = q.get("application/pdf", 0.0)
    if "text/html" in q:  # named both: PDF only if ranked strictly higher
        return pdf > q["text/html"]
    return pdf > 0 and pdf >= q.get("text/*", q.get("*/*", 0.0))  # a named type beats a wildcard


@router.get(
    "/v1/entries/{seq}/certificate",
    summary="Evidence certificate",
    description="A human-readable certificate for the entry, rendered from its evidence bundle: "
    "registrant, title, hashes, registration and block times, block, signed checkpoint, the "
    "RFC 3161 time-stamp authority and time, a QR code that opens `/verify?seq={seq}`, and how "
    "to check it independently. HTML by default; PDF with `?format=pdf` or "
    "`Accept: application/pdf` (503 with Retry-After while the server is still installing "
    "the PDF's fonts, when a PDF has waited 60 s for one of the renders the server runs "
    "at once, or at once when too many PDFs wait already; identical requests share one "
    "render, and a rendered PDF is served from memory). The "
    "registrant's display name and kind, when the operator stated them "
    "(`/v1/accounts/{account}`), show beside the account id. Times are shown in "
    "the viewer's zone (Asia/Shanghai in zh-CN, else UTC, or `?tz=`) and in UTC.",
    response_class=HTMLResponse,
    responses={200: {"content": {
        "text/html": {"example": "<!doctype html><html lang=\"en\">…</html>"},
        "application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
        **problems(404, 422, 503)},
    openapi_extra=PUBLIC,
)
async def get_certificate(
    request: Request,
    seq: int = Path(ge=0, le=MAX_INT),
    format: Literal["html", "pdf"] | None = Query(default=None),
    tz: str | None = Query(default=None, max_length=64,
                           description="an IANA time zone for the time lines, e.g. Asia/Shanghai"),
) -> Response:
    # A coroutine so that a PDF request queued for a render slot holds no thread (D75); the
    # reads and the HTML run on the threadpool as a sync route's body would.
    as_pdf = format == "pdf" or (format is None and _wants_pdf(request.headers.get("accept", "")))
    headers = {**SECURITY, "Vary": "Accept"}
    if not as_pdf:
        page = await run_in_threadpool(lambda: certificate_html(*_inputs(request, seq, tz)))
        return HTMLResponse(page, headers={**headers, "Content-Security-Policy": CERT_CSP})
    inputs = await run_in_threadpool(_inputs, request, seq, tz)
    headers["Content-Disposition"] = f'attachment; filename="copyledger-entry-{seq}.pdf"'
    pdf: RenderCache = request.app.state.pdf_cache
    # Starlette does not cancel a coroutine route whose client has gone: asked once a slot is
    # granted, so an abandoned request is not rendered for nobody (D75).
    body = await pdf.aget(*inputs, gone=request.is_disconnected)
    return Response(body, media_type="application/pdf", headers=headers)


def _inputs(request: Request, seq: int, tz: str | None) -> tuple[
        dict[str, Any], str, str, dict[str, Any] | None, str | None]:
    """What a certificate is rendered from: the bundle, the QR code's URL, the language, the
    registrant's profile and the zone (the PDF cache's key)."""
    bundle = reads.bundle(node(request), seq)
    lang = language(request)
    zone(lang, tz)  # an unknown zone is the client's mistake: 422 before rendering
    found = accounts.get_profile(node(request).store, str(bundle["entry"].get("registrant", "")))
    profile = found.to_dict() if found is not None else None
    return bundle, verify_url(request, seq), lang, profile, tz


@router.get("/verify", summary="Verification page", response_class=HTMLResponse,
            description="Checks a file and its evidence bundle in the browser, with the page's "
            "own JavaScript (WebCrypto SHA-256 and Ed25519). `?seq=N` loads entry N's bundle "
            "from this registry. The file is never uploaded. Times are shown as on the "
            "certificate: in the viewer's zone (Asia/Shanghai in zh-CN, else UTC, or `?tz=`) "
            "and in UTC.",
            responses={200: {"content": {"text/html": {
                "example": "<!doctype html><html lang=\"en\">…</html>"}}}, **problems(422)},
            openapi_extra=PUBLIC)
def verify_page(
    request: Request,
    tz: str | None = Query(default=None, max_length=64,
                           description="an IANA time zone for the times, e.g. Asia/Shanghai"),
) -> HTMLResponse:
    lang = language(request)
    where = beside_utc(lang, tz)  # an unknown zone is the client's mistake: 422, as the certificate
    page = keep_query(in_zone(verify_html(lang), lang, where), request.query_params.multi_items())
    return HTMLResponse(page,
                        headers={**SECURITY, "Content-Security-Policy": PAGE_CSP,
                                 "Cache-Control": "no-cache"})


def in_zone(page: str, lang: str, where: str | None) -> str:
    """The page with the viewer's zone on its <body> for verify.js (D71): `data-tz`, the IANA
    name, and `data-tz-name`, how a reader names it; neither when the zone is UTC."""
    if where is None:
        return page
    return page.replace("<body>", f'<body data-tz="{html.escape(where)}" '
                        f'data-tz-name="{html.escape(zone_word(where, lang))}">', 1)


MARKER = re.compile(r"\{\{(.+?)\}\}", re.S)


@functools.cache
def verify_html(lang: str = DEFAULT) -> str:
    """verify.html in `lang`: each `{{...}}` segment (an HTML fragment of ours, whitespace
    folded, is the msgid) replaced by its translation, and for verify.js the translations of its
    tables as a JSON data block (never executed, so the CSP stays `script-src 'self'`)."""
    page = (STATIC / "verify.html").read_text(encoding="utf-8")
    page = MARKER.sub(lambda m: gettext(lang, " ".join(m.group(1).split())), page)
    page = page.replace('<html lang="en">', f'<html lang="{html.escape(lang)}">', 1)
    words = located(lang, "api/static/verify.js")
    if words:
        data = json.dumps(words, ensure_ascii=False).replace("<", "\\u003c")
        page = page.replace("</head>", f'<script type="application/json" id="l10n">{data}'
                            "</script>\n</head>", 1)
    return page


@router.get("/static/{name}", include_in_schema=False)
def static_asset(name: str) -> Response:
    media = ASSETS.get(name)
    if media is None:
        raise NotFound(said("no static file {name!r}", name=name))
    return Response((STATIC / name).read_bytes(), media_type=media,
                    headers={**SECURITY, "Cache-Control": "no-cache"})
