"""The API's side of a stand-alone notary: a `Signer` and a TSA that hold no key, only a URL
and a bearer token. If the notary cannot be reached, they raise `Unavailable`: sealing fails
before anything is written, writers get 503 with Retry-After, and the next block tries again."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509

from copyledger.ledger import note
from copyledger.ledger.errors import CopyledgerError, InvalidInput, Unavailable, said
from copyledger.ledger.merkle import Consistency


@dataclass(frozen=True)
class RemoteIdentity:
    """The public half of the TSA identity, shaped like notary.tsa.TsaIdentity."""

    certificate: x509.Certificate
    chain: list[x509.Certificate]


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
        certs = [x509.load_pem_x509_certificate(p.encode()) for p in ident["tsa_chain"]]
        self.identity = RemoteIdentity(certs[0], certs[1:])

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
        return base64.b64decode(r["signature"])


class RemoteTSA:
    """The two calls the registry makes of its TSA, over the notary service."""

    def __init__(self, notary: RemoteNotary) -> None:
        self.notary = notary
        self.identity = notary.identity

    def timestamp_digest(self, digest: bytes) -> bytes:
        r = self.notary._call("POST", "/notary/v1/timestamp-digest",
                              json={"digest": base64.b64encode(digest).decode()})
        return base64.b64decode(r["token"])

    def respond(self, query_der: bytes) -> bytes:
        r = self.notary._call("POST", "/notary/v1/timestamp", content=query_der)
        return bytes(r.content)
