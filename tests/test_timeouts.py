"""Request-body and keep-alive timeouts on a real server: a client that sends headers and then
stalls or trickles the body gets 408 and the connection closed in the configured time; an idle
keep-alive connection is closed (issue 10 item 8)."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.helpers import read_until_closed
from tests.server import ServerProcess, cli

pytestmark = pytest.mark.slow
LIMIT_S = 1.0  # body_timeout_s and keep_alive_s for this server
# Scheduling on a loaded machine (load 30 on two cores); the point is "seconds, not forever",
# and every wait ends as soon as the server answers, so a generous slack costs nothing.
SLACK_S = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    data = tmp_path_factory.mktemp("t") / "data"
    assert cli("init", "--data-dir", str(data)).returncode == 0
    key = json.loads(cli("keys", "create", "--role", "creator", "--account", "a",
                         "--data-dir", str(data), "--json").stdout)["key"]
    srv = ServerProcess(data, COPYLEDGER_BODY_TIMEOUT_S=str(LIMIT_S),
                        COPYLEDGER_KEEP_ALIVE_S=str(LIMIT_S)).start()
    yield srv, key
    srv.stop()


def _connect(srv: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=LIMIT_S + SLACK_S)


def _head(path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("path", ["/v1/evidence", "/v1/works"])  # a route; the fast path
def test_stalled_body_gets_408_and_the_connection_closed(
    server: tuple[ServerProcess, str], path: str,
) -> None:
    srv, key = server
    with _connect(srv) as s:
        s.sendall(_head(path, 1000, f"Authorization: Bearer {key}\r\n") + b'{"sha256": "')
        answer = read_until_closed(s)  # the socket's timeout fails the test if it hangs
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"application/problem+json" in answer and b"request-timeout" in answer


def test_trickled_body_gets_408_too(server: tuple[ServerProcess, str]) -> None:
    srv, key = server
    with _connect(srv) as s:
        s.sendall(_head("/v1/evidence", 1000, f"Authorization: Bearer {key}\r\n"))
        t0 = time.monotonic()
        answer = b""
        while time.monotonic() - t0 < LIMIT_S + SLACK_S:
            # One byte every 0.2 s (never idle, never done) until the server answers; then only
            # read. Sending after the server has closed would draw a reset, which can discard
            # its answer before we read it.
            if select.select([s], [], [], 0.2)[0]:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                answer += chunk
                if not chunk:
                    break
            elif not answer:
                try:
                    s.sendall(b" ")
                except OSError:
                    break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_unauthenticated_time_stamp_body_stall(server: tuple[ServerProcess, str]) -> None:
    srv, _ = server
    with _connect(srv) as s:
        s.sendall(b"POST /v1/timestamp HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/timestamp-query\r\nContent-Length: 50\r\n\r\n0")
        answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_idle_keep_alive_connection_is_closed(server: tuple[ServerProcess, str]) -> None:
    srv, _ = server
    with _connect(srv) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        rest = read_until_closed(s)  # nothing more is sent: the server must hang up
        assert rest == b"" or rest.endswith(b"}")
