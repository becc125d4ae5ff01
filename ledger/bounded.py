"""A peer's answer read within a size and a time: what a TSA, a witness or a log's tiles send
costs this process at most that, however large or however slowly it is sent (D185).

Pure: it reads an iterator of byte chunks (an HTTP response's body, decoded), so the layers that
speak HTTP share it without the ledger depending on an HTTP library.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from copyledger.ledger.errors import Unavailable, said

__all__ = ["PLAIN", "read_bounded", "refuse_encoded"]

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
