"""Run a real `copyledger serve` process for tests that need one (crash, interop, benchmarks)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def _outside_ephemeral() -> range:
    """Ports the kernel never picks for an outgoing connection's own end: the 12,000 below its
    ephemeral range (or above it). A port taken by binding to 0 lies inside that range, so a
    client elsewhere in the suite (or a monitor polling a server that is restarting) may be
    given it as its local port between our releasing it and the server binding it, and the
    server fails to start; a connection to a port in the range where nobody listens may even
    connect to itself."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - 1024 >= 2000:
        return range(max(1024, low - 12000), low)
    if 65535 - high >= 2000:  # a machine whose ephemeral range starts low: the ports above it
        return range(high + 1, min(65536, high + 12001))
    return range(20000, 32000)  # no room outside it: at least never two of ours at once


_PORTS = _outside_ephemeral()
# Each pytest process walks the range from its own place (two runs at once rarely meet), and
# never hands out a port twice: a test that stops a server and starts another on the same
# address says so (`port=`), nothing else reuses one by accident.
_NEXT = itertools.count(os.getpid() * 7919 % len(_PORTS))
_PORT_LOCK = threading.Lock()


def free_port() -> int:
    """A loopback port no one is listening on, outside the ephemeral range (see above)."""
    with _PORT_LOCK:
        for _ in range(len(_PORTS)):
            port = _PORTS[next(_NEXT) % len(_PORTS)]
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # someone else's
            return port
    raise RuntimeError("no free port outside the ephemeral range")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a new process (600 s bounds a hang: at load 30 imports alone take long)."""
    return subprocess.run([sys.executable, "-m", "copyledger.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def init_with_creator(data: Path, database_url: str) -> tuple[list[str], str, str]:
    """`copyledger init` a registry in `data` (SQLite, or the PostgreSQL at `database_url`) and
    create a creator key for alice, all through the CLI. Returns the `--database` arguments for
    later commands, the key, and the URL a `ServerProcess` takes ("" for SQLite)."""
    sqlite = database_url.startswith("sqlite")
    db = [] if sqlite else ["--database", database_url]
    assert cli("init", "--data-dir", str(data), *db).returncode == 0
    key = json.loads(cli("keys", "create", "--role", "creator", "--account", "alice",
                         "--data-dir", str(data), *db, "--json").stdout)["key"]
    return db, str(key), "" if sqlite else database_url


class ServerProcess:
    def __init__(self, data_dir: Path, database: str = "", *, command: tuple[str, ...] = ("serve",),
                 port: int | None = None, listen: str = "--port", host: str = "127.0.0.1",
                 prefix: tuple[str, ...] = (), **env: str) -> None:
        """`listen` is the option that takes the port: `--port N`, or for `--serve`,
        `--serve 127.0.0.1:N` (a monitor's). `host` is the address it is reached at (it
        listens there: COPYLEDGER_HOST); `prefix` runs it inside another command (a network
        namespace's `ip netns exec NAME`)."""
        self.data_dir = data_dir
        self.database = database
        self.command = command
        self.listen = listen
        self.prefix = prefix
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.env = {**os.environ, "COPYLEDGER_LOG_JSON": "true", **env}
        if host != "127.0.0.1":
            self.env["COPYLEDGER_HOST"] = host
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        """Wait for /healthz; the deadline bounds a hang (a loaded machine imports slowly), it
        ends as soon as the server answers."""
        where = f"127.0.0.1:{self.port}" if self.listen == "--serve" else str(self.port)
        args = [*self.prefix, sys.executable, "-m", "copyledger.cli", *self.command,
                "--data-dir", str(self.data_dir), self.listen, where]
        if self.database:
            args += ["--database", self.database]
        # Its own process group: `stop` can then end every process it made (with --workers,
        # uvicorn's workers outlived a supervisor that was killed, and went on sealing
        # heartbeat blocks and loading the machine for the rest of the suite).
        self.proc = subprocess.Popen(args, env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()  # not left running (with `--workers`, respawning) after the test fails
        raise RuntimeError("server did not start")

    def tail(self, chars: int = 4000) -> str:
        """The end of what the server wrote, for a failing test's message (its tmp_path is gone
        by the time anyone reads a CI log)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.log.name}, last {chars} characters:\n{text[-chars:]}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (a graceful stop, which tests check), then whatever is left of the process
        group is killed, so no process outlives its test."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        with contextlib.suppress(ProcessLookupError):  # unless the whole group has exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)


def init_registry(data_dir: Path, role: str = "creator") -> tuple[str, str]:
    """`copyledger init` a registry and create an API key: (the log's verifier key, the key)."""
    made = cli("init", "--data-dir", str(data_dir), "--json")
    assert made.returncode == 0, made.stdout + made.stderr
    key = cli("keys", "create", "--role", role, "--data-dir", str(data_dir), "--json")
    assert key.returncode == 0, key.stdout + key.stderr
    return str(json.loads(made.stdout)["verifier_key"]), str(json.loads(key.stdout)["key"])


def post_works(url: str, key: str, n: int, salt: str = "") -> list[int]:
    """Register `n` small works (content hashes of `salt` and a counter) over HTTP: their seqs."""
    seqs = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        for i in range(n):
            r = c.post("/v1/works", json={
                "sha256": hashlib.sha256(f"{salt}{i}".encode()).hexdigest(),
                "title": f"w{salt}{i}", "creators": ["A"], "work_type": "text"})
            r.raise_for_status()
            seqs.append(int(r.json()["seq"]))
    return seqs
