"""Small builders the tests share."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from copyledger.service.node import Node
from copyledger.service.settings import Settings

HSM = os.environ.get("COPYLEDGER_KEY_BACKEND") == "pkcs11"  # the whole suite, keys in an HSM


def settings_for(tmp: Path, database_url: str = "", **kw: Any) -> Settings:
    base = Settings(data_dir=tmp / "data", database=database_url, origin="test.example/log",
                    linger_ms=1.0, heartbeat_s=3600.0, log_json=False)
    if HSM:
        base = replace(base, key_backend="pkcs11",
                       pkcs11_module=os.environ["COPYLEDGER_PKCS11_MODULE"],
                       pkcs11_token_label=os.environ["COPYLEDGER_PKCS11_TOKEN_LABEL"])
    return Settings(**{**base.__dict__, **kw})


def open_registry(tmp: Path, database_url: str = "", **kw: Any) -> Node:
    return Node.open(settings_for(tmp, database_url, **kw))


def sha(i: int | str | bytes) -> str:
    data = i if isinstance(i, bytes) else str(i).encode()
    return hashlib.sha256(data).hexdigest()


# A work as a Chinese user registers it: Chinese title and creators, a mixed-script description.
# The zh-CN certificate of this work is the one whose size the docs state (D44, D56).
ZH_TITLE = "《春江花月夜》数字版"
ZH_CREATORS = ["张若虚", "李清照"]
MIXED = "2026 年上海书展 (Shanghai Book Fair) 展出的插图 — ISBN 978-7-02-000001-1, 第 3 版"


def zh_work_body() -> dict[str, Any]:
    """The body that registers that work (its content hash is `sha("春江")`)."""
    return {"sha256": sha("春江"), "title": ZH_TITLE, "creators": ZH_CREATORS,
            "work_type": "image", "metadata": {"description": MIXED}}


def work_body(i: int | str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sha256": sha(i),
        "title": f"Work {i}",
        "creators": ["Ada Example"],
        "work_type": "image",
    }
    body.update(kw)
    return body


def bearer(reg: Node, account: str, role: str = "creator") -> dict[str, str]:
    """The Authorization header of a new key for `account`."""
    from copyledger.service.apikeys import create_key

    return {"Authorization": f"Bearer {create_key(reg.store, role, account)[0]}"}


def tree_size(client: Any) -> int:
    return int(client.get("/v1/log").json()["tree_size"])


def wait_for(cond: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    """Poll `cond` until it is true; fail with `what` after `timeout` seconds.

    The deadline bounds a hang, it does not measure speed: it ends as soon as `cond` holds, so a
    generous one costs nothing on a quiet machine and spares a loaded one (load 30 on two cores)
    a failure by chance. A speed the product promises is measured by a benchmark, not here."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def read_until_closed(s: socket.socket) -> bytes:
    """Everything a server sends on `s` until it closes the connection (the socket's timeout
    fails the test if it never does)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def pg_dsn(url: Any) -> str:
    """A libpq DSN for the database of a SQLAlchemy PostgreSQL URL (the tests' clusters use
    trust authentication: no password)."""
    from sqlalchemy.engine import make_url

    u = make_url(str(url))
    return f"host={u.host} port={u.port} user={u.username} dbname={u.database}"


def terminate_backend(url: Any, pid: int) -> None:
    """End the server process `pid` of the database at `url`, and wait until it is gone, as
    a PostgreSQL restart or an administrator would."""
    import psycopg

    with psycopg.connect(pg_dsn(url), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        deadline = time.monotonic() + 60
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone():
            assert time.monotonic() < deadline, f"backend {pid} still there"
            time.sleep(0.02)


class CutLink:
    """A TCP relay to a server on this host whose open connections can be cut as a network
    partition cuts them: after `cut()`, what either side sends on a connection open then is
    dropped, an end of it too, and neither side is told; connections made later pass. After
    `mend()` (the link is back, and the server has ended the cut sessions meanwhile) a cut
    connection on which the client sends again is reset, as the server's host answers it;
    one whose client only waits (for a retransmission timer, in a real network) is not told.
    For a test whose process cannot go into a network namespace of its own."""

    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._guard = threading.Lock()
        self._open: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.dropped = 0  # bytes sent on cut connections
        self._mended = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._guard:
            for *_, cut in self._open:
                cut.set()

    def mend(self) -> None:
        self._mended.set()

    def close(self) -> None:
        self._listener.close()
        with self._guard:
            for a, b, _ in self._open:
                _end(a)
                _end(b)

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
            except OSError:
                return
            try:
                far = socket.create_connection(self._target)
            except OSError:
                near.close()
                continue
            cut = threading.Event()
            with self._guard:
                self._open.append((near, far, cut))
            for a, b, client in ((near, far, True), (far, near, False)):
                threading.Thread(target=self._pump, args=(a, b, cut, client),
                                 daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, cut: threading.Event,
              client: bool) -> None:
        while True:
            try:
                data = a.recv(65536)
            except OSError:
                return
            if cut.is_set():
                if client and data and self._mended.is_set():
                    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))  # closed with a reset
                    a.close()
                    _end(b)
                    return
                with self._guard:
                    self.dropped += len(data)
                if not data:
                    return  # (the other side is not told: `close` ends both)
                continue
            try:
                if not data:
                    b.shutdown(socket.SHUT_WR)
                    return
                b.sendall(data)
            except OSError:
                return


def _end(s: socket.socket) -> None:
    """Close a socket another thread may be reading: shut down first, which wakes it."""
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def downgrade(engine: Any, revision: str) -> None:
    """Take a registry's schema back to `revision` by the migrations' own downgrades (0009 and
    later have one), in one transaction: a log as an older release left it."""
    from alembic import command
    from alembic.config import Config

    from copyledger.ledger.store import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


@contextlib.contextmanager
def own_statements(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements, with their parameters, that this thread sends through `engine`
    while the block runs: a started registry's own threads (the sequencer, the heartbeat)
    use the same engine at any time, and their statements are not the caller's."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []
    me = threading.get_ident()

    def on_execute(_c: Any, _cur: Any, sql: str, args: Any, *_: Any) -> None:
        if threading.get_ident() == me:
            seen.append((sql, args))

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
