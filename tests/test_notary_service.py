"""A stand-alone notary: the API process holds no key, and a notary outage loses nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from copyledger.ledger.verify import verify_bundle
from tests.helpers import wait_for, work_body
from tests.server import ServerProcess, cli

pytestmark = pytest.mark.slow
TOKEN = "test-notary-token-0123456789"


def test_api_without_keys_and_notary_outage(tmp_path: Path) -> None:
    env = {"COPYLEDGER_NOTARY_TOKEN": TOKEN}
    ndir, adir = tmp_path / "notary", tmp_path / "api"
    r = cli("notary", "init", "--data-dir", str(ndir), "--origin", "n.example/log")
    assert r.returncode == 0, r.stderr
    notary = ServerProcess(ndir, command=("notary", "serve"), **env).start()
    try:
        r = cli("init", "--data-dir", str(adir), "--origin", "n.example/log", "--notary-url",
                notary.url, env=env)
        assert r.returncode == 0, r.stderr
        key = json.loads(cli("keys", "create", "--role", "creator", "--data-dir", str(adir),
                             "--json").stdout)["key"]
        api = ServerProcess(adir, **env).start()
        h = {"Authorization": f"Bearer {key}"}
        try:
            # No private key anywhere in the API's data directory or environment.
            for f in adir.rglob("*"):
                if f.is_file() and f.suffix != ".sqlite3":
                    assert b"PRIVATE KEY" not in f.read_bytes(), f
            assert api.proc is not None
            environ = Path(f"/proc/{api.proc.pid}/environ").read_bytes()
            assert b"PRIVATE KEY" not in environ and b"KEY_PASSPHRASE" not in environ
            with httpx.Client(base_url=api.url, timeout=30) as c:
                for i in range(3):
                    assert c.post("/v1/works", json=work_body(i), headers=h).status_code == 201
                vkey = c.get("/v1/log").json()["verifier_key"]
                assert verify_bundle(c.get("/v1/entries/1/bundle").json(),
                                     trusted_keys=[vkey]).ok

                notary.stop()  # outage: writes get 503 and nothing is half-written
                size = c.get("/v1/log").json()["tree_size"]
                r = c.post("/v1/works", json=work_body("during"), headers=h)
                assert r.status_code == 503 and r.headers.get("retry-after")
                assert "nothing was recorded" in r.json()["detail"]
                assert c.get("/v1/log").json()["tree_size"] == size

                notary = ServerProcess(ndir, command=("notary", "serve"), port=notary.port,
                                       **env).start()  # back: the sequencer resumes
                r = c.post("/v1/works", json=work_body("after"), headers=h)
                assert r.status_code == 201 and r.json()["seq"] == size
        finally:
            api.stop()
        rep = cli("audit", "--data-dir", str(adir), "--json")
        assert rep.returncode == 0 and json.loads(rep.stdout)["ok"], rep.stdout
    finally:
        notary.stop()


def test_notary_signs_only_its_own_notes(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from copyledger.api.notary_app import create_notary_app
    from copyledger.notary.signer import CheckpointGuard
    from copyledger.notary.tsa import TimeStampAuthority
    from copyledger.service.node import init_notary_keys, load_signer, load_tsa_identity
    from copyledger.service.settings import load

    s = load(tmp_path / "n", origin="n.example/log")
    init_notary_keys(s)
    app = create_notary_app(load_signer(s), TimeStampAuthority(load_tsa_identity(s)), TOKEN,
                            checkpoints=CheckpointGuard(s.origin, s.last_checkpoint_path))
    c = TestClient(app)
    h = {"Authorization": f"Bearer {TOKEN}"}
    import base64

    def sign(text: str, headers: dict[str, str] = h) -> int:
        msg = base64.b64encode(text.encode()).decode()
        return c.post("/notary/v1/sign", json={"message": msg}, headers=headers).status_code

    root = base64.b64encode(bytes(32)).decode()
    assert sign(f"n.example/log\n5\n{root}\n") == 200
    assert sign(f"other.example/log\n5\n{root}\n") == 422
    assert sign("please sign this contract\n") == 422
    assert sign(f"n.example/log\n5\n{root}\n", {"Authorization": "Bearer wrong"}) == 401


def _accepts(path: Path) -> bool:
    """Whether something listens on the Unix socket at `path`."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def test_a_registry_opens_one_connection_to_its_notary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process of a registry with `--notary-url` asks the notary for its identity once at
    its start, and checks and writes the data directory's public files from that answer: the
    same connection then signs (it asked twice before: once to write the files, once to
    sign)."""
    from fastapi.testclient import TestClient

    from copyledger.api.app import create_app
    from copyledger.notary.remote import RemoteNotary
    from copyledger.service import node as node_mod
    from tests.helpers import bearer, open_registry

    opened: list[RemoteNotary] = []

    class Counted(RemoteNotary):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            opened.append(self)

    monkeypatch.setattr(node_mod, "RemoteNotary", Counted)
    monkeypatch.setenv("COPYLEDGER_NOTARY_TOKEN", TOKEN)
    ndir = tmp_path / "notary"
    assert cli("notary", "init", "--data-dir", str(ndir), "--origin", "test.example/log"
               ).returncode == 0
    notary = ServerProcess(ndir, command=("notary", "serve"), COPYLEDGER_NOTARY_TOKEN=TOKEN
                           ).start()
    try:
        for start in ("first", "again"):
            reg = open_registry(tmp_path, notary_url=notary.url)
            assert len(opened) == 1, start
            with TestClient(create_app(reg)) as c:
                r = c.post("/v1/works", json=work_body(start), headers=bearer(reg, "alice"))
                assert r.status_code == 201, r.text
                assert r.json()["seq"] == (0 if start == "first" else 1)
            assert len(opened) == 1, start
            assert (tmp_path / "data" / "notary" / "log.vkey").exists()
            opened.clear()
    finally:
        notary.stop()


def test_notary_on_a_private_unix_socket(tmp_path: Path) -> None:
    import os
    import stat
    import subprocess
    import sys

    from copyledger.notary.remote import RemoteNotary

    ndir, sock = tmp_path / "notary", tmp_path / "notary.sock"
    assert cli("notary", "init", "--data-dir", str(ndir), "--origin", "n.example/log"
               ).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "copyledger.cli", "notary", "serve",
                             "--data-dir", str(ndir), "--uds", str(sock)],
                            env={**os.environ, "COPYLEDGER_NOTARY_TOKEN": TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, "no socket")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # from the moment it exists
        wait_for(lambda: _accepts(sock) or proc.poll() is not None, "the notary never listened")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # and once served
        n = RemoteNotary(f"unix:{sock}", TOKEN)
        assert n.name == "n.example/log"
        n.close()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(("suite", "names"), [
    ("standard", ["log-key.pem", "log.vkey"]),
    ("standard", ["tsa/tsa.pem", "tsa/tsa-key.pem", "tsa/root.pem"]),
    ("sm", ["log-sm2-key.pem", "log-sm2.vkey"]),
    ("sm", ["tsa/sm2-tsa.pem", "tsa/sm2-tsa-key.pem", "tsa/sm2-root.pem"]),
], ids=["log-key", "tsa", "sm2-key", "sm2-tsa"])
def test_a_notary_re_keyed_under_a_running_registry_signs_nothing_into_its_log(
        tmp_path: Path, suite: str, names: list[str]) -> None:
    """One of the stand-alone notary's keys (its log key, its TSA chain, or on an SM-suite
    registry its SM2 key or SM2 TSA chain, each alone) is replaced while the registry runs,
    and the notary started again: the registry still names the key it fetched at its start in
    every signature line and pins the TSA certificates it fetched, so what the new key signs
    would put in the log a checkpoint its own key does not verify, or a token from a TSA no
    verifier pinned. The registry checks each signature and token the notary returns: the
    write is refused 503, nothing recorded, the operator's log says why; a registry process
    started meanwhile refuses to start rather than take the new key as the log's; with the
    notary's key back, writes go on and the audit is clean."""
    from copyledger.ledger import sm2

    # Key files on both sides, so the notary's keys can be swapped (also in the SoftHSM pass).
    env = {"COPYLEDGER_NOTARY_TOKEN": TOKEN, "COPYLEDGER_KEY_BACKEND": "file"}
    origin, sm = "n.example/log", ["--suite", "sm"] if suite == "sm" else []
    ndir, other, adir = tmp_path / "notary", tmp_path / "other", tmp_path / "api"
    for d in (ndir, other):
        r = cli("notary", "init", "--data-dir", str(d), "--origin", origin, *sm, env=env)
        assert r.returncode == 0, r.stderr
    notary = ServerProcess(ndir, command=("notary", "serve"), **env).start()
    api = None
    try:
        r = cli("init", "--data-dir", str(adir), "--origin", origin, *sm, "--notary-url",
                notary.url, env=env)
        assert r.returncode == 0, r.stderr
        key = json.loads(cli("keys", "create", "--role", "creator", "--data-dir", str(adir),
                             "--json", env=env).stdout)["key"]
        api = ServerProcess(adir, **env).start()

        def body(i: int | str) -> dict[str, object]:
            return work_body(i, sm3=sm2.sm3_hex(str(i).encode())) if sm else work_body(i)

        def client(srv: ServerProcess) -> httpx.Client:
            return httpx.Client(base_url=srv.url, timeout=30,
                                headers={"Authorization": f"Bearer {key}"})

        def restart_notary_with(keys_from: Path) -> ServerProcess:
            notary.stop()
            for name in names:
                (ndir / "notary" / name).write_bytes((keys_from / name).read_bytes())
            return ServerProcess(ndir, command=("notary", "serve"), port=notary.port,
                                 **env).start()

        with client(api) as c:
            assert c.post("/v1/works", json=body(1)).status_code == 201
            size = c.get("/v1/log").json()["tree_size"]
            kept = tmp_path / "kept"
            (kept / "tsa").mkdir(parents=True)
            for name in names:
                (kept / name).write_bytes((ndir / "notary" / name).read_bytes())
            notary = restart_notary_with(other / "notary")
            r = c.post("/v1/works", json=body("re-keyed"))
            assert r.status_code == 503, r.text
            assert "nothing was recorded" in r.json()["detail"]
            assert "does not verify under the log's keys" in r.json()["detail"]
            assert c.get("/v1/log").json()["tree_size"] == size
            assert "re-keyed or replaced" in api.log.read_text()
        api.stop()

        # Started now, the registry would take the notary's new public keys as the log's (and
        # fail its audit at block 0): it refuses to start, its files unchanged.
        held = {f: f.read_bytes() for f in (adir / "notary").rglob("*") if f.is_file()}
        api = ServerProcess(adir, **env)
        with pytest.raises(RuntimeError, match="no longer serves the public key"):
            api.start()
        assert {f: f.read_bytes() for f in (adir / "notary").rglob("*") if f.is_file()} == held

        notary = restart_notary_with(kept)
        api = ServerProcess(adir, **env).start()
        with client(api) as c:
            r = c.post("/v1/works", json=body("after"))
            assert r.status_code == 201 and r.json()["seq"] == size
    finally:
        if api is not None:
            api.stop()
        notary.stop()
    rep = cli("audit", "--data-dir", str(adir), "--json")
    assert rep.returncode == 0 and json.loads(rep.stdout)["ok"], rep.stdout
