"""D185: what a TSA, a witness or a log's tiles send is read within a size and a time, so a
peer cannot exhaust the registry's or a monitor's memory, nor hold its thread, by answering
with a huge or a trickling body."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

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


class Trickler:
    """A TCP server that answers each connection with a status line, then one header byte
    every 50 ms for 15 s, then a complete empty answer: a peer holding a thread with its
    headers, each read well within the connection's timeout."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopping = threading.Event()
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        with conn:
            try:
                conn.recv(65_536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(300):
                    if self.stopping.wait(0.05):
                        return
                    conn.sendall(b"a")
                    self.sent += 1
                conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                return

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    t = Trickler()
    yield t
    t.close()


def test_a_peer_trickling_its_headers_is_stopped_at_the_deadline(
        trickler: Trickler, monkeypatch: pytest.MonkeyPatch) -> None:
    """D188: the deadline held only once the headers were in; a peer sending a header byte
    within each read's timeout held the thread for as long as it liked (here 15 s, then a
    complete answer, which each call would take). With a deadline of 1 s each call fails as
    too slow, long before the peer has sent its 300 bytes."""
    from copyledger.client.errors import TransportError
    from copyledger.ledger.bounded import deadline_client

    monkeypatch.setattr(witnesses, "ANSWER_S", 1.0)
    monkeypatch.setattr(external_tsa, "REPLY_S", 1.0)
    monkeypatch.setattr("copyledger.client.tiles.FETCH_S", 1.0)
    with deadline_client(10.0) as http:
        with pytest.raises(httpx.TimeoutException, match="took too long"):
            witnesses.add_checkpoint(http, trickler.url, AddCheckpointRequest(0, (), b"x\n"))
        with pytest.raises(httpx.TimeoutException, match="took too long"):
            external_tsa.fetch_token(http, trickler.url, bytes(32), roots_pem=None, retries=1)
    with TileFetcher(trickler.url, timeout=10.0) as fetch, \
            pytest.raises(TransportError, match="took too long"):
        fetch("checkpoint")
    assert trickler.sent < 300


def test_a_proxy_from_the_environment_is_used_and_held_to_the_deadline(
        trickler: Trickler, monkeypatch: pytest.MonkeyPatch) -> None:
    """D188's review: a client made with its own transport ignored HTTP(S)_PROXY, so a notary
    whose only way out is a proxy could not reach its TSA or witnesses. The proxy (here the
    trickler, which every request to the unresolvable peer must go through) is used, and its
    trickled headers are stopped at the deadline."""
    from copyledger.ledger.bounded import deadline_client, within

    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", trickler.url)
    monkeypatch.setenv("http_proxy", trickler.url)
    with deadline_client(10.0) as http, within(1.0), \
            pytest.raises(httpx.TimeoutException, match="took too long"):
        http.get("http://peer.invalid/checkpoint")
    assert 0 < trickler.sent < 300


def test_a_proxy_setting_httpx_cannot_use_connects_directly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """D195's review: made from the environment, the client failed to be made at all under
    a proxy httpx cannot use (socks5 without socksio, an unknown scheme), which ended the
    notary's TSA and witness thread; it connects directly then, and says why."""
    from copyledger.ledger.bounded import deadline_client

    for bad in ("gopher://proxy.invalid:70", "http://proxy.invalid:port"):
        monkeypatch.setenv("ALL_PROXY", bad)
        caplog.clear()
        with caplog.at_level("WARNING"), deadline_client(1.0) as http:
            assert not http._mounts
        assert "cannot be used" in caplog.text


def test_outside_a_deadline_the_client_keeps_its_own_timeout(trickler: Trickler) -> None:
    """Without `within`, a deadline client is any client: its per-read timeout applies."""
    from copyledger.ledger.bounded import deadline_client

    with deadline_client(0.02) as http, pytest.raises(httpx.ReadTimeout):
        http.get(trickler.url)
