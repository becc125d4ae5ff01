"""The stand-alone notary's HTTP face: the only process that holds the log key and the TSA key.

`copyledger notary serve` runs it on its own port or Unix socket; `copyledger serve --notary-url`
then signs through it and holds no private key. It signs only what a notary should: C2SP
checkpoints and block notes for its own origin, and RFC 3161 tokens; for an SM-suite log also
the SM2 lines of those notes and SM2/SM3 tokens (D57). A checkpoint is signed
only if it extends the last one signed, proved by the request's `consistency` (D18). Every call
needs the shared bearer token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from copyledger.api import problems
from copyledger.ledger import note
from copyledger.ledger.errors import CopyledgerError, InvalidInput, NotFound, Unauthorized, said
from copyledger.ledger.merkle import Consistency
from copyledger.notary.signer import CheckpointGuard, Signer, check_signable, verifier_key
from copyledger.notary.sm2 import Sm2Signer
from copyledger.notary.sm2_tsa import Sm2TimeStampAuthority
from copyledger.notary.tsa import TimeStampAuthority

PREFIX = "/notary/v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(v: object, what: str) -> bytes:
    if not isinstance(v, str):
        raise InvalidInput(said("{what} must be a base64 string", what=what))
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):  # ValueError: text not ASCII, such as "é"
        raise InvalidInput(said("{what} is not base64", what=what)) from None


async def _json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; anything else (not JSON, not UTF-8, nested past the parser's
    recursion limit, not an object) is the caller's mistake, a 422."""
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        raise InvalidInput("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def create_notary_app(signer: Signer, tsa: TimeStampAuthority, token: str, *,
                      checkpoints: CheckpointGuard, sm2_signer: Sm2Signer | None = None,
                      sm2_tsa: Sm2TimeStampAuthority | None = None) -> FastAPI:
    """The notary's app; with `sm2_signer` and `sm2_tsa` (an SM-suite notary) it also signs
    SM2 note lines and issues SM2/SM3 tokens, under the same checkpoint rule."""
    if checkpoints.origin != signer.name:
        raise InvalidInput(said("the checkpoint memory is for {origin}, the key for {name}",
                                origin=checkpoints.origin, name=signer.name))
    if len(token) < 16:
        raise InvalidInput("the notary token must be at least 16 characters")
    app = FastAPI(title="copyledger notary", version="1", docs_url=None, redoc_url=None)
    chain = [tsa.identity.certificate, *tsa.identity.chain]

    @app.middleware("http")
    async def bearer(request: Request, call_next: Any) -> Any:
        if request.url.path == "/healthz":
            return await call_next(request)
        got = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(got.encode(), token.encode()):
            return _problem(Unauthorized("the notary needs its bearer token"))
        return await call_next(request)

    @app.exception_handler(CopyledgerError)
    async def _err(_request: Request, exc: CopyledgerError) -> JSONResponse:
        return _problem(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
        return problems.internal_error(request.url.path)  # a problem, never an HTML page

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(PREFIX + "/identity")
    def identity() -> dict[str, Any]:
        out = {
            "name": signer.name,
            "public_key": _b64(signer.public_key),
            "verifier_key": verifier_key(signer),
            "tsa_chain": [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain],
        }
        if sm2_signer is not None and sm2_tsa is not None:
            out |= {"sm2_verifier_key": sm2_signer.verifier_key,
                    "sm2_tsa_chain": [sm2_tsa.certificate_pem, sm2_tsa.root_pem]}
        return out

    async def signed(request: Request, sign: Callable[[bytes], bytes]) -> dict[str, str]:
        """A note signed by `sign`: a checkpoint only if it extends the last one signed
        (D18), whichever key signs it, so the SM2 line obeys the same rule."""
        body = await _json_object(request)
        message = _unb64(body.get("message"), "message")
        if check_signable(message, signer.name) != "checkpoint":
            return {"signature": _b64(sign(message))}
        proof = body.get("consistency")
        consistency = None if proof is None else Consistency.from_dict(proof)
        checkpoint = note.parse_checkpoint(message.decode())
        return {"signature": _b64(checkpoints.sign(checkpoint, consistency,
                                                   lambda: sign(message)))}

    @app.post(PREFIX + "/sign")
    async def sign(request: Request) -> dict[str, str]:
        return await signed(request, signer.sign)

    def sm2_parts() -> tuple[Sm2Signer, Sm2TimeStampAuthority]:
        if sm2_signer is None or sm2_tsa is None:
            raise NotFound(said("this notary holds no SM2 key: it serves a standard-suite log"))
        return sm2_signer, sm2_tsa

    @app.post(PREFIX + "/sm2/sign")
    async def sm2_sign(request: Request) -> dict[str, str]:
        return await signed(request, sm2_parts()[0].sign)

    @app.post(PREFIX + "/sm2/timestamp-digest")
    async def sm2_stamp(request: Request) -> dict[str, str]:
        tsa_ = sm2_parts()[1]
        body = await _json_object(request)
        return {"token": _b64(tsa_.timestamp_digest(_unb64(body.get("digest"), "digest")))}

    @app.post(PREFIX + "/timestamp-digest")
    async def stamp(request: Request) -> dict[str, str]:
        body = await _json_object(request)
        digest = _unb64(body.get("digest"), "digest")
        return {"token": _b64(tsa.timestamp_digest(digest))}

    @app.post(PREFIX + "/timestamp")
    async def rfc3161(request: Request) -> Response:
        return Response(tsa.respond(await request.body()),
                        media_type="application/timestamp-reply")

    return app


def _problem(exc: CopyledgerError) -> JSONResponse:
    return problems.from_error(exc, "")
