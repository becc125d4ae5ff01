"""A stop is bounded: a request still running when the server is told to stop (SIGTERM, or a
process that stops sequencing and starts again, D109/D112) is cancelled after
`shutdown_grace_s` rather than holding the stop, and the restart after it, for as long as it
runs (a stalled upload: up to `upload_timeout_s`, an hour by default). The request cut short
is answered 503, "may or may not have been recorded", not uvicorn's plain-text 500."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import read_until_closed
from tests.server import ServerProcess, init_registry

pytestmark = pytest.mark.slow
GRACE_S = 1
SLACK_S = 30.0  # a loaded machine's scheduling; the wait ends as soon as the server exits


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stop_is_not_held_by_a_stalled_upload(tmp_path: Path, workers: str) -> None:
    data = tmp_path / "data"
    _, key = init_registry(data)
    srv = ServerProcess(data, COPYLEDGER_SHUTDOWN_GRACE_S=str(GRACE_S),
                        COPYLEDGER_WORKERS=workers).start()
    try:
        assert srv.proc is not None
        with socket.create_connection(("127.0.0.1", srv.port), timeout=SLACK_S) as s:
            # An upload's headers and the start of its body, then nothing: the app waits for
            # the rest for `upload_timeout_s` (3,600 s here).
            s.sendall(b"POST /v1/works HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + key.encode() + b"\r\n"
                      b"Content-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 1000000\r\n\r\n--b\r\n")
            # The request reaches the app: each process's event loop has read our bytes
            # once it has answered a request that came after them (with --workers, ten on
            # connections of their own reach both processes).
            time.sleep(0.5)
            for _ in range(10):
                assert httpx.get(srv.url + "/healthz", timeout=SLACK_S).status_code == 200
            assert srv.proc.poll() is None
            t0 = time.monotonic()
            srv.proc.terminate()
            try:
                srv.proc.wait(SLACK_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the server had not stopped {SLACK_S} s after SIGTERM")
            took = time.monotonic() - t0
            answer = read_until_closed(s)
        # Not uvicorn's plain-text 500 (which says nothing was recorded): a 503 saying the
        # request may or may not have been recorded, and the connection closed.
        assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
        assert b"application/problem+json" in answer and b"may or may not" in answer
        assert b"retry-after" in answer.lower() and b"connection: close" in answer.lower()
        # uvicorn re-raises the SIGTERM it caught once it has stopped (one process); the
        # supervisor of --workers exits 0.
        assert srv.proc.returncode in (0, -signal.SIGTERM)
        log = srv.log.read_text()
        assert "timeout graceful shutdown exceeded" in log, log[-2000:]
        assert took >= GRACE_S * 0.9  # it did wait for the request, up to the grace
    finally:
        srv.stop()
