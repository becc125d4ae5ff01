"""A peer's answer read within a size and a time: what a TSA, a witness or a log's tiles send
costs this process at most that, however large or however slowly it is sent (D185).

`read_bounded` is pure: it reads an iterator of byte chunks (an HTTP response's body, decoded).
The time bound also covers the answer's status line and headers, which the HTTP library reads
before any body chunk: `deadline_client`'s connections take each read's timeout from the
deadline `within` set (D188). That part uses httpcore, which httpx is built on.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpcore
import httpx

from copyledger.ledger.errors import Unavailable, said

__all__ = ["PLAIN", "deadline_client", "read_bounded", "refuse_encoded", "within"]

PLAIN = {"Accept-Encoding": "identity"}
"""The request header asking for the body as it is: a compressed body decodes to far more than
its bytes on the wire (64 KiB of gzip to 64 MiB in one chunk), and a stream of empty
compressed blocks yields no chunk at all, so neither bound would hold (D186)."""


def read_bounded(chunks: Iterable[bytes], most: int, deadline: float, what: str) -> bytes:
    """The bytes of `chunks`; Unavailable once they pass `most` bytes or `time.monotonic()`
    passes `deadline`. Each chunk is read within the connection's own timeout, so a peer that
    trickles a byte at a time is stopped at the deadline, not after the whole body."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > most:
            raise Unavailable(said("{what}: the answer is over {most} bytes", what=what,
                                   most=most))
        if time.monotonic() > deadline:
            raise Unavailable(said("{what}: the answer took too long", what=what))
    return bytes(body)


def refuse_encoded(encoding: str | None, what: str) -> None:
    """Unavailable unless an answer's Content-Encoding is none (`identity`), as `PLAIN`
    asked: its bytes are then what `read_bounded` counts and times."""
    if (encoding or "identity").strip().lower() != "identity":
        raise Unavailable(said("{what}: the answer is compressed ({encoding}), though it was "
                               "asked for as it is", what=what, encoding=encoding))


_T = TypeVar("_T")
log = logging.getLogger("copyledger.bounded")

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline",
                                                                         default=None)


@contextlib.contextmanager
def within(seconds: float) -> Iterator[float]:
    """Every network read and write of a `deadline_client` in this block (this thread) ends
    by `seconds` from now: connecting, sending, the status line and headers, the body. Yields
    the deadline (`time.monotonic()`), for `read_bounded`."""
    at = time.monotonic() + seconds
    token = _DEADLINE.set(at)
    try:
        yield at
    finally:
        _DEADLINE.reset(token)


def _left(timeout: float | None, late: type[Exception]) -> float | None:
    """The timeout of one network operation: the connection's own, cut to what is left
    before the deadline; `late` once it has passed."""
    at = _DEADLINE.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise late("the answer took too long")
    return left if timeout is None else min(timeout, left)


def _timed(op: Callable[[float | None], _T], timeout: float | None,
           late: type[Exception]) -> _T:
    """`op(timeout)` within the deadline; a timeout that the deadline cut says so."""
    try:
        return op(_left(timeout, late))
    except httpcore.TimeoutException:
        at = _DEADLINE.get()
        if at is not None and time.monotonic() >= at:
            raise late("the answer took too long") from None
        raise


class _Stream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _timed(lambda t: self._inner.read(max_bytes, t), timeout, httpcore.ReadTimeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _timed(lambda t: self._inner.write(buffer, t), timeout, httpcore.WriteTimeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(_timed(lambda t: self._inner.start_tls(ssl_context, server_hostname, t),
                              timeout, httpcore.ConnectTimeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """The default network backend, its connections held to the deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(_timed(lambda t: self._inner.connect_tcp(
            host, port, t, local_address, socket_options), timeout, httpcore.ConnectTimeout))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        return _Stream(_timed(lambda t: self._inner.connect_unix_socket(
            path, t, socket_options), timeout, httpcore.ConnectTimeout))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_client(timeout: float, **kwargs: Any) -> httpx.Client:
    """An httpx client whose connections keep `within`'s deadline (outside one: its own
    `timeout` per operation, as any), through a proxy from the environment too. httpx has no
    public way to hand its pools a network backend, so each pool the client made (its own and
    one per proxy) gets one after it is made (the lock files pin httpx; `tests/test_bounded.py`
    fails if that stops working). Made as any client is: a transport given to httpx would make
    it ignore the environment's proxies."""
    try:
        client = httpx.Client(timeout=timeout, **kwargs)
    except (ImportError, ValueError, httpx.InvalidURL) as e:  # a proxy httpx cannot use
        # (socks5 without socksio, an unknown scheme, a bad port): directly, still trusting
        # the CA files the environment names (SSL_CERT_FILE, SSL_CERT_DIR)
        log.warning("the environment's proxy settings cannot be used (%s): connecting "
                    "directly", e)
        kwargs.setdefault("verify", httpx.create_ssl_context())
        client = httpx.Client(timeout=timeout, trust_env=False, **kwargs)
    for transport in (client._transport, *client._mounts.values()):
        if isinstance(transport, httpx.HTTPTransport):
            pool = transport._pool
            pool._network_backend = _Backend(pool._network_backend)
    return client
