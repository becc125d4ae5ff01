"""The reader's language, for every request: chosen once here, used by pages and problems.

`?lang=` (the switch on every page) wins and is remembered in a `lang` cookie, so following a
link keeps the language; else the cookie; else `Accept-Language` (`service.i18n.negotiate`).
Answers people read (HTML, problem details) say which language they are in
(`Content-Language`) and that it depends on the request (`Vary`), so a cache keeps one copy per
language. JSON data is the same in every language and is left alone.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from copyledger.service.i18n import DEFAULT, negotiate, pick

__all__ = ["Language", "lang"]

READ = (b"text/html", b"application/problem+json", b"application/pdf")
VARY = "Accept-Language, Cookie"


def lang(request: Request) -> str:
    """The language the middleware chose for this request (English outside it)."""
    return str(getattr(request.state, "lang", DEFAULT))


def _cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(v.decode("latin-1"))
            except Exception:  # a malformed Cookie header only loses the preference
                return None
            if "lang" in jar:
                return jar["lang"].value
    return None


class Language:
    """Pure ASGI: sets scope["state"]["lang"] and the headers described above."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", []))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        asked = pick((query.get("lang") or [""])[-1])
        accept = next((v.decode("latin-1") for k, v in headers if k == b"accept-language"), "")
        chosen = negotiate(accept, asked or pick(_cookie(headers)))
        scope.setdefault("state", {})["lang"] = chosen

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers", []))
                media = next((v for k, v in out if k.lower() == b"content-type"), b"")
                if media.startswith(READ):
                    vary = [v.decode("latin-1") for k, v in out if k.lower() == b"vary"]
                    out = [(k, v) for k, v in out if k.lower() != b"vary"]
                    out.append((b"vary", ", ".join([*vary, VARY]).encode("latin-1")))
                    out.append((b"content-language", chosen.encode("ascii")))
                    if asked:
                        out.append((b"set-cookie", f"lang={asked}; Path=/; SameSite=Lax; "
                                    "Max-Age=31536000".encode("ascii")))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_with_language)
