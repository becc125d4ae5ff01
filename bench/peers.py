"""The benchmarks' yardsticks (issue 13): a FastAPI app of `bench/` served by ONE uvicorn
worker, the way `http_bench.py` runs `noop_app.py` and `batch_bench.py` runs
`batch_floor_app.py`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server import free_port

READY_S = 300.0


@contextmanager
def one_worker(app: str, probe: str, env: dict[str, str] | None = None
               ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m uvicorn APP` on a free port, yielded (its URL, its process) once GET `probe`
    answers; stopped on exit. It fails, rather than waits on, a process that has ended."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", app, "--port", str(port),
                             "--log-level", "warning", "--no-access-log"],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + READY_S
        while True:
            try:
                httpx.get(url + probe, timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)
