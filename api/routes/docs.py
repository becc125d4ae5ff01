"""Anyone: the interactive API description (Swagger UI) from files this server ships.

FastAPI's default `/docs` loads Swagger UI from a CDN, so it is blank offline and runs code
this repository does not hold. Here the page, its start-up script and Swagger UI's own files
(the copy packaged by the `fastapi-offline` distribution) are served from this origin, under a
Content-Security-Policy that allows nothing else.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from copyledger.ledger.errors import NotFound, said

router = APIRouter(tags=["pages"])
OURS = Path(__file__).resolve().parent.parent / "static"
SWAGGER = Path(fastapi_offline.__file__).resolve().parent / "static"
FILES = {  # name -> (directory, media type): the only files served under /static/docs/
    "swagger-ui-bundle.js": (SWAGGER, "text/javascript; charset=utf-8"),
    "swagger-ui.css": (SWAGGER, "text/css; charset=utf-8"),
    "favicon.png": (SWAGGER, "image/png"),
    "docs-init.js": (OURS, "text/javascript; charset=utf-8"),
}
# Swagger UI draws some icons as data: images; nothing else comes from anywhere but here.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
       "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>copyledger API</title>
<link rel="icon" type="image/png" href="/static/docs/favicon.png">
<link rel="stylesheet" href="/static/docs/swagger-ui.css">
</head><body>
<div id="swagger-ui"></div>
<script src="/static/docs/swagger-ui-bundle.js"></script>
<script src="/static/docs/docs-init.js"></script>
</body></html>
"""


@router.get("/docs", include_in_schema=False)
def docs_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={**HEADERS, "Content-Security-Policy": CSP,
                                       "Cache-Control": "no-cache"})


@router.get("/static/docs/{name}", include_in_schema=False)
def docs_asset(name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        raise NotFound(said("no documentation file {name!r}", name=name))
    folder, media = found
    return Response((folder / name).read_bytes(), media_type=media,
                    headers={**HEADERS, "Cache-Control": "public, max-age=86400"})
