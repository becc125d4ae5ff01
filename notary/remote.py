"""The API's side of a stand-alone notary: a `Signer` and a TSA that hold no key, only a URL
and a bearer token. If the notary cannot be reached, they raise `Unavailable`: sealing fails
before anything is written, writers get 503 with Retry-After, and the next block tries again."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from copyledger.ledger import note, sm2
from copyledger.ledger.errors import (
    CopyledgerError,
    InvalidInput,
    Unavailable,
    VerificationError,
    said,
)
from copyledger.ledger.merkle import Consistency
from copyledger.ledger.sm2_timestamp import (
    certificate_public_key,
    load_certificates,
    verify_certificate_signature,
    verify_sm2_token,
)
from copyledger.ledger.timestamp import verify_token
from copyledger.notary.tsa import self_signed


@dataclass(frozen=True)
class RemoteIdentity:
    """The public half of the TSA identity, shaped like notary.tsa.TsaIdentity."""

    certificate: x509.Certificate
    chain: list[x509.Certificate]

    @property
    def roots(self) -> list[x509.Certificate]:
        """The trust anchors the notary serves: its self-signed certificates (an imported
        chain may hold several roots), else the last of the chain."""
        certs = [self.certificate, *self.chain]
        return [c for c in certs if self_signed(c)] or certs[-1:]


class RemoteNotary:
    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        if url.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=url[5:], retries=2)
            base = "http://notary"
        else:
            transport = httpx.HTTPTransport(retries=2)
            base = url.rstrip("/")
        self.url = url
        self._client = httpx.Client(base_url=base, transport=transport, timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}"})
        ident = self._call("GET", "/notary/v1/identity")
        self.name: str = ident["name"]
        self.public_key_bytes = base64.b64decode(ident["public_key"])
        self.verifier_key: str = ident["verifier_key"]
        if note.format_verifier_key(self.name, self.public_key_bytes) != self.verifier_key:
            raise InvalidInput("the notary's identity is inconsistent")
        self.verifier = note.parse_verifier_key(self.verifier_key)
        certs = [x509.load_pem_x509_certificate(p.encode()) for p in ident["tsa_chain"]]
        self.identity = RemoteIdentity(certs[0], certs[1:])
        # An SM-suite notary's SM2 key and SM2 TSA chain [certificate, root] (D57), PEM.
        self.sm2_verifier_key: str | None = ident.get("sm2_verifier_key")
        self.sm2_tsa_chain: list[str] = list(ident.get("sm2_tsa_chain") or [])
        if self.sm2_verifier_key is not None and (
                sm2.parse_verifier_key(self.sm2_verifier_key).name != self.name
                or len(self.sm2_tsa_chain) != 2):
            raise InvalidInput("the notary's SM2 identity is inconsistent")

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise Unavailable("the notary cannot be reached",
                              internal=f"{self.url}: {e}") from None
        if r.status_code != 200:
            detail = r.json().get("detail") if r.headers.get("content-type", "").endswith(
                "json") else r.text[:200]
            if r.status_code >= 500 or r.status_code == 401:
                raise Unavailable(said("the notary answered {status_code}",
                                       status_code=r.status_code),
                                  internal=f"{self.url}: {detail}")
            raise CopyledgerError(said("the notary refused: {detail}",
                                       detail=detail))  # its own problem detail
        return r if path.endswith("/timestamp") else r.json()

    def close(self) -> None:
        self._client.close()


def _checked(notary: RemoteNotary, verifier: note.Verifier | sm2.Verifier, message: bytes,
             signature: bytes) -> bytes:
    """`signature` if it verifies under the key this process fetched from the notary at its
    start, the one it names in the note's signature line; else Unavailable. A notary re-keyed
    or replaced while the registry runs would otherwise have the log carry signatures that its
    own key does not verify (an audit's integrity failure, and every bundle after it refused):
    sealing fails before anything is written, as in a notary outage, until the notary's
    keys are put back (a stand-alone notary's keys do not rotate; D123)."""
    if verifier.verify(message, signature):
        return signature
    raise _foreign(notary, f"a signature of {verifier.vkey}", "it does not verify")


def _foreign(notary: RemoteNotary, wanted: str, why: str) -> Unavailable:
    return Unavailable(said("what the notary signed does not verify under the log's keys"),
                       internal=f"{notary.url}: not {wanted}, as this process fetched from the "
                                f"notary at its start ({why}): the notary was re-keyed or "
                                "replaced; put its earlier keys back (D123)")


def _token_checked(notary: RemoteNotary, token: bytes, wanted: str,
                   verify: Callable[[], bool]) -> bytes:
    """`token` if `verify` (the token's verifier, which raises its VerificationError on a token
    that does not verify) says it comes from the TSA certificate fetched at start, named by
    `wanted`; else Unavailable, as `_checked`."""
    try:
        why = "" if verify() else "signed by another certificate"
    except VerificationError as e:
        why = e.detail
    if why:
        raise _foreign(notary, wanted, why)
    return token


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class RemoteSigner:
    """notary.signer.Signer over the notary service. The notary signs a checkpoint only with a
    consistency proof from the last one it signed: `proving` gives the signer that sends it."""

    def __init__(self, notary: RemoteNotary, consistency: Consistency | None = None) -> None:
        self.notary = notary
        self.name = notary.name
        self.consistency = consistency

    def proving(self, consistency: Consistency) -> RemoteSigner:
        return RemoteSigner(self.notary, consistency)

    @property
    def public_key(self) -> bytes:
        return self.notary.public_key_bytes

    def sign(self, message: bytes) -> bytes:
        body: dict[str, Any] = {"message": base64.b64encode(message).decode()}
        if self.consistency is not None:
            body["consistency"] = self.consistency.to_dict()
        r = self.notary._call("POST", "/notary/v1/sign", json=body)
        return _checked(self.notary, self.notary.verifier, message,
                        base64.b64decode(r["signature"]))


class RemoteTSA:
    """The two calls the registry makes of its TSA, over the notary service."""

    def __init__(self, notary: RemoteNotary) -> None:
        self.notary = notary
        self.identity = ident = notary.identity
        # What each block's token is checked against, made once (the roots are judged by their
        # signatures) rather than at every block.
        self._roots_pem = _pem(ident.roots)
        self._untrusted_pem = _pem([ident.certificate, *ident.chain])
        self._wanted = ("a token from the TSA certificate sha256:"
                        + ident.certificate.fingerprint(hashes.SHA256()).hex())

    def timestamp_digest(self, digest: bytes) -> bytes:
        """A token over digest, checked as the log's own: from the TSA certificate this process
        fetched from the notary at its start (see `_checked`)."""
        r = self.notary._call("POST", "/notary/v1/timestamp-digest",
                              json={"digest": base64.b64encode(digest).decode()})
        token = base64.b64decode(r["token"])
        return _token_checked(self.notary, token, self._wanted, lambda: verify_token(
            token, digest, self._roots_pem, untrusted_pem=self._untrusted_pem,
        ).tsa_certificate == self.identity.certificate)

    def respond(self, query_der: bytes) -> bytes:
        r = self.notary._call("POST", "/notary/v1/timestamp", content=query_der)
        return bytes(r.content)


class RemoteSm2Signer:
    """An SM-suite log's SM2 line (notary.signer.ExtraSigner) signed by the notary service,
    which holds the SM2 key (D57); a checkpoint must be the one its log key just signed."""

    def __init__(self, notary: RemoteNotary) -> None:
        if notary.sm2_verifier_key is None:
            raise InvalidInput(said("the notary holds no SM2 key: an SM-suite registry needs "
                                    "a notary made with `copyledger notary init --suite sm`"))
        self.notary = notary
        self.verifier = sm2.parse_verifier_key(notary.sm2_verifier_key)
        self.name = self.verifier.name
        self.key_id = self.verifier.key_id

    @property
    def verifier_key(self) -> str:
        return self.verifier.vkey

    def sign(self, message: bytes) -> bytes:
        r = self.notary._call("POST", "/notary/v1/sm2/sign",
                              json={"message": base64.b64encode(message).decode()})
        return _checked(self.notary, self.verifier, message, base64.b64decode(r["signature"]))


class RemoteSm2TSA:
    """The SM2/SM3 TSA (D51) of an SM-suite notary service: tokens over SM3 of the data."""

    def __init__(self, notary: RemoteNotary) -> None:
        if len(notary.sm2_tsa_chain) != 2:
            raise InvalidInput("the notary holds no SM2 TSA")
        self.notary = notary
        self.certificate_pem, self.root_pem = notary.sm2_tsa_chain
        try:
            certs, roots = (load_certificates(p.encode()) for p in notary.sm2_tsa_chain)
            consistent = len(certs) == len(roots) == 1 and verify_certificate_signature(
                certs[0], certificate_public_key(roots[0]))
        except (InvalidInput, ValueError, IndexError, TypeError):  # DER that is no certificate
            consistent = False
        if not consistent:
            raise InvalidInput("the notary's SM2 identity is inconsistent")
        self._certificate_sm3 = sm2.sm3_hex(certs[0])
        self._wanted = ("an SM2 token from the SM2 TSA certificate sm3:"
                        + self._certificate_sm3)

    def timestamp(self, data: bytes) -> bytes:
        """An SM2 token over SM3 of data, checked as `RemoteTSA.timestamp_digest`'s."""
        digest = sm2.sm3(data)
        r = self.notary._call("POST", "/notary/v1/sm2/timestamp-digest",
                              json={"digest": base64.b64encode(digest).decode()})
        token = base64.b64decode(r["token"])
        return _token_checked(self.notary, token, self._wanted, lambda: verify_sm2_token(
            token, digest, self.root_pem.encode(),
        ).tsa_certificate_sm3 == self._certificate_sm3)
