"""Tokens from external RFC 3161 TSAs over our block hashes, kept beside our own.

A court may trust a national or commercial TSA more than our notary, so an operator can list
TSAs to ask too. Asking happens off the sealing path, in one background thread: a TSA that is
slow or down never delays a block. Blocks still missing a TSA's token are found in the database
and asked for again on every pass, so an outage heals by itself; the count still missing is
reported (metrics, /healthz).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from asn1crypto import tsp  # type: ignore[import-untyped]

from copyledger.ledger.bounded import PLAIN, read_bounded, refuse_encoded, within
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.store import Store
from copyledger.ledger.timestamp import token_from_response, verify_token
from copyledger.notary.worker import Worker

log = logging.getLogger("copyledger.external_tsa")


def timestamp_query(digest: bytes, nonce: int) -> bytes:
    """A DER TimeStampReq for a SHA-256 digest, asking for the TSA's certificate."""
    req = tsp.TimeStampReq({
        "version": 1,
        "message_imprint": {
            "hash_algorithm": {"algorithm": "sha256"},
            "hashed_message": digest,
        },
        "nonce": nonce,
        "cert_req": True,
    })
    return bytes(req.dump())


MAX_REPLY_BYTES = 256 * 1024
"""The most of a TSA's reply read: a token with its certificate chain is a few kilobytes."""
REPLY_S = 30.0
"""The longest a TSA's reply may take, however it trickles in (D185)."""


def fetch_token(
    client: httpx.Client, url: str, digest: bytes, *, roots_pem: bytes | None, retries: int = 3
) -> bytes:
    """Ask one TSA for a token over `digest`; check it (fully, if we have its roots)."""
    delay = 0.5
    for attempt in range(retries):
        nonce = secrets.randbits(63)
        try:
            with within(REPLY_S) as deadline, client.stream(
                    "POST", url, content=timestamp_query(digest, nonce),
                    headers={"content-type": "application/timestamp-query", **PLAIN}) as r:
                refuse_encoded(r.headers.get("content-encoding"), url)
                if r.status_code != 200:
                    raise httpx.HTTPStatusError(f"HTTP {r.status_code}", request=r.request,
                                                response=r)
                reply = read_bounded(r.iter_bytes(), MAX_REPLY_BYTES, deadline, url)
            token = token_from_response(reply)
            if roots_pem is not None:
                verify_token(token, digest, roots_pem, nonce=nonce)
            return token
        except (httpx.HTTPError, CopyledgerError) as e:
            if attempt == retries - 1:
                raise
            log.info("TSA %s failed (%s); retrying in %.1f s", url, e, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


@dataclass
class ExternalStamper:
    """Background thread: every pass, ask each TSA for the blocks it has not stamped yet."""

    store: Store
    urls: Sequence[str]
    roots_pem: bytes | None = None
    interval: float = 2.0
    timeout: float = 10.0
    batch: int = 50
    on_missing: Callable[[str, int], None] | None = None
    missing: dict[str, int] = field(default_factory=dict)
    _worker: Worker = field(init=False)

    def __post_init__(self) -> None:
        self._worker = Worker("external-tsa", self.interval, self.timeout)

    def start(self) -> None:
        if self.urls:
            self._worker.start(self._pass_all)

    def stop(self) -> None:
        self._worker.stop()

    def poke(self) -> None:
        """A block was sealed: look sooner than the interval."""
        self._worker.poke()

    def _pass_all(self, client: httpx.Client) -> float:
        for url in self.urls:
            self._pass(client, url)
        return self.interval

    def _pass(self, client: httpx.Client, url: str) -> None:
        todo = self.store.blocks_missing_timestamp(url, limit=self.batch)
        for height, bhash in todo:
            if self._worker.stopping.is_set():
                return
            try:
                token = fetch_token(client, url, bhash, roots_pem=self.roots_pem)
            except (httpx.HTTPError, CopyledgerError) as e:
                log.warning("TSA %s: no token for block %d: %s", url, height, e)
                break  # it is down or refusing: try again next pass
            self.store.add_timestamp(height, url, token)
        self.missing[url] = self.store.count_missing_timestamps(url)
        if self.on_missing is not None:
            self.on_missing(url, self.missing[url])
