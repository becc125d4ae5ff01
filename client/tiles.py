"""Reading a log as C2SP tlog-tiles over HTTP, for a monitor or mirror (`service.monitor`),
and posting its alerts. The tiles are checked by whoever reads them, not here: this module only
moves bytes, with the project's errors instead of httpx's."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from copyledger.client.errors import ProblemError, TransportError
from copyledger.ledger.bounded import PLAIN, deadline_client, read_bounded, refuse_encoded, within
from copyledger.ledger.errors import NotFound, said

__all__ = ["TileFetcher", "post_alert"]

_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)


MAX_TILE_BYTES = 64 * 1024 * 1024
"""The most of one answer read, decoded: a full entry bundle tile is 256 entries of at most
64 KiB each (16 MiB); past this a log's answer is refused, whatever it says (D185)."""
FETCH_S = 120.0
"""The longest one answer may take, however it trickles in."""


class TileFetcher:
    """`fetcher(path)`: the bytes at `<log URL>/<path>` (`checkpoint`, `tile/0/000.p/5`, …),
    asked for uncompressed (a compressed answer is refused: D186). A 404 is NotFound (the
    spec's "no such tile"), any other error status a
    ProblemError, no answer a TransportError. Keeps one connection pool; close it when done."""

    def __init__(self, log_url: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.log_url = log_url.rstrip("/")
        self._http = (deadline_client(timeout, base_url=self.log_url + "/")
                      if transport is None else
                      httpx.Client(base_url=self.log_url + "/", timeout=timeout,
                                   transport=transport))

    def __call__(self, path: str) -> bytes:
        try:
            with within(FETCH_S) as deadline, self._http.stream("GET", path,
                                                                headers=PLAIN) as r:
                refuse_encoded(r.headers.get("content-encoding"), f"{self.log_url}/{path}")
                body = read_bounded(r.iter_bytes(), MAX_TILE_BYTES, deadline,
                                    f"{self.log_url}/{path}")
        except _HTTPX_ERRORS as e:
            raise TransportError(said("cannot fetch {url}/{path}: {e}", url=self.log_url,
                                      path=path, e=e)) from None
        if r.status_code == 404:
            raise NotFound(said("{url}/{path} is not served", url=self.log_url, path=path))
        if r.status_code != 200:
            raise ProblemError.from_response(r.status_code, body)
        return body

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TileFetcher:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def post_alert(url: str, alert: dict[str, Any], *, timeout: float = 10.0) -> None:
    """POST a monitor's alert as JSON to a webhook; TransportError or ProblemError if it was
    not accepted (any 2xx is)."""
    try:
        r = httpx.post(url, json=alert, timeout=timeout)
    except _HTTPX_ERRORS as e:
        raise TransportError(said("cannot post the alert to {url}: {e}", url=url, e=e)) from None
    if not 200 <= r.status_code < 300:
        raise ProblemError.from_response(r.status_code, r.content)
