"""D185: what a TSA, a witness or a log's tiles send is read within a size and a time, so a
peer cannot exhaust the registry's or a monitor's memory, nor hold its thread, by answering
with a huge or a trickling body."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from copyledger.client.tiles import MAX_TILE_BYTES, TileFetcher
from copyledger.ledger.bounded import read_bounded
from copyledger.ledger.cosignature import AddCheckpointRequest
from copyledger.ledger.errors import Unavailable
from copyledger.notary import external_tsa, witnesses


class Endless(httpx.SyncByteStream):
    """A body that never ends, counting what was read of it."""

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while True:
            self.sent += 65_536
            yield b"x" * 65_536


def client(stream: Endless, status: int = 200) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(
        lambda _r: httpx.Response(status, stream=stream)))


def test_read_bounded_stops_at_the_size_and_the_deadline() -> None:
    assert read_bounded(iter([b"ab", b"cd"]), 4, time.monotonic() + 60, "x") == b"abcd"
    with pytest.raises(Unavailable, match="x: the answer is over 3 bytes"):
        read_bounded(iter([b"ab", b"cd"]), 3, time.monotonic() + 60, "x")
    with pytest.raises(Unavailable, match="x: the answer took too long"):
        read_bounded(iter([b"ab", b"cd"]), 99, time.monotonic() - 1, "x")


def test_an_endless_tsa_reply_is_cut_at_its_bound() -> None:
    body = Endless()
    with pytest.raises(Unavailable, match="over 262144 bytes"):
        external_tsa.fetch_token(client(body), "http://tsa", bytes(32), roots_pem=None,
                                 retries=1)
    assert body.sent <= external_tsa.MAX_REPLY_BYTES + 65_536


def test_an_endless_witness_answer_is_cut_at_its_bound() -> None:
    body = Endless()
    with pytest.raises(Unavailable, match="over 65536 bytes"):
        witnesses.add_checkpoint(client(body), "http://w", AddCheckpointRequest(0, (), b"x\n"))
    assert body.sent <= witnesses.MAX_ANSWER_BYTES + 65_536


def test_an_endless_tile_is_cut_at_its_bound() -> None:
    body = Endless()
    with TileFetcher("http://log", transport=httpx.MockTransport(
            lambda _r: httpx.Response(200, stream=body))) as fetch, \
            pytest.raises(Unavailable, match="is over"):
        fetch("tile/0/000")
    assert body.sent <= MAX_TILE_BYTES + 65_536


def test_a_compressed_answer_is_refused_and_none_is_asked_for() -> None:
    """D186: a gzip body decodes to far more than its bytes (and empty blocks yield nothing to
    time), so the answers are asked for as they are, and a compressed one is refused."""
    import gzip

    asked: list[str | None] = []

    def gzipped(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding"))
        return httpx.Response(200, content=gzip.compress(b"x" * 1000),
                              headers={"content-encoding": "gzip"})

    http = httpx.Client(transport=httpx.MockTransport(gzipped))
    with pytest.raises(Unavailable, match="compressed"):
        external_tsa.fetch_token(http, "http://tsa", bytes(32), roots_pem=None, retries=1)
    with pytest.raises(Unavailable, match="compressed"):
        witnesses.add_checkpoint(http, "http://w", AddCheckpointRequest(0, (), b"x\n"))
    with TileFetcher("http://log", transport=httpx.MockTransport(gzipped)) as fetch, \
            pytest.raises(Unavailable, match="compressed"):
        fetch("checkpoint")
    assert asked == ["identity"] * 3
