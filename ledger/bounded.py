"""A peer's answer read within a size and a time: what a TSA, a witness or a log's tiles send
costs this process at most that, however large or however slowly it is sent (D185).

Pure: it reads an iterator of byte chunks (an HTTP response's body, decoded), so the layers that
speak HTTP share it without the ledger depending on an HTTP library.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from copyledger.ledger.errors import Unavailable, said

__all__ = ["read_bounded"]


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
