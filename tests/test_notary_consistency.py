"""The notary signs a checkpoint only if it extends the last one it signed (D18), and does not
forget that checkpoint across a restart or a SIGKILL."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from copyledger.ledger import merkle, note
from copyledger.ledger.errors import InvalidInput, Unavailable
from copyledger.ledger.merkle import Consistency
from copyledger.ledger.sequencer import Sequencer
from copyledger.ledger.store import Store
from copyledger.notary.signer import CheckpointGuard, FileSigner, sign_note
from copyledger.service.settings import Settings, load
from tests.helpers import work_body
from tests.server import ServerProcess, cli
from tests.test_sequencer import pending

TOKEN = "test-notary-token-0123456789"
ORIGIN = "n.example/log"
H = {"Authorization": f"Bearer {TOKEN}"}


class Tree:
    """A tree grown leaf by leaf, to make honest and dishonest checkpoints and proofs."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.size = 0
        self.frontier: list[bytes] = []
        self.reader = merkle.MemoryReader()

    def grow(self, n: int) -> Tree:
        leaves = merkle.leaf_hashes([f"{self.tag}{self.size + i}".encode() for i in range(n)])
        appended = merkle.append(self.size, self.frontier, leaves)
        self.reader.update(appended.nodes)
        self.size, self.frontier = appended.size, list(appended.frontier)
        return self

    def root(self, size: int | None = None) -> bytes:
        return merkle.tree_hash(self.size if size is None else size, self.reader)

    def checkpoint(self, size: int | None = None) -> str:
        size = self.size if size is None else size
        return note.format_checkpoint(note.Checkpoint(ORIGIN, size, self.root(size)))

    def proof(self, old: int, new: int | None = None) -> dict[str, Any]:
        new = self.size if new is None else new
        hashes = tuple(merkle.consistency_proof(old, new, self.reader))
        return Consistency(old, self.root(old), hashes).to_dict()


def _sign(c: httpx.Client | TestClient, text: str, proof: dict[str, Any] | None = None
          ) -> httpx.Response:
    body: dict[str, Any] = {"message": base64.b64encode(text.encode()).decode()}
    if proof is not None:
        body["consistency"] = proof
    return c.post("/notary/v1/sign", json=body, headers=H)


def _notary_settings(tmp_path: Path) -> Settings:
    from copyledger.service.node import init_notary_keys

    s = load(tmp_path / "n", origin=ORIGIN)
    init_notary_keys(s)
    return s


def _app(s: Settings) -> TestClient:
    from copyledger.api.notary_app import create_notary_app
    from copyledger.service.node import open_notary

    signer, tsa, checkpoints = open_notary(s)
    return TestClient(create_notary_app(signer, tsa, TOKEN, checkpoints=checkpoints))


def test_notary_refuses_what_does_not_extend_the_last_checkpoint(tmp_path: Path) -> None:
    s = _notary_settings(tmp_path)
    c = _app(s)
    t = Tree().grow(5)
    assert _sign(c, t.checkpoint()).status_code == 200  # nothing remembered yet: first use
    assert _sign(c, t.checkpoint()).status_code == 200  # the same tree again: nothing to prove
    assert _sign(c, t.checkpoint(), t.proof(5)).status_code == 200

    smaller = _sign(c, t.checkpoint(4))
    assert smaller.status_code == 409 and "smaller than 5" in smaller.json()["detail"]
    assert smaller.headers["content-type"] == "application/problem+json"
    other = Tree("fork").grow(5)
    assert _sign(c, other.checkpoint()).status_code == 409  # same size, another root
    assert _sign(c, other.checkpoint(), other.proof(5)).status_code == 409

    t.grow(4)
    missing = _sign(c, t.checkpoint())
    assert missing.status_code == 422 and "needs a consistency proof" in missing.json()["detail"]
    wrong = t.proof(5)
    wrong["proof"][0] = bytes(32).hex()
    assert _sign(c, t.checkpoint(), wrong).status_code == 409
    assert _sign(c, t.checkpoint(), t.proof(4)).status_code == 409  # from a tree it never signed
    forked = Tree("fork").grow(9)  # a bigger tree that does not extend the one signed
    assert _sign(c, forked.checkpoint(), forked.proof(5)).status_code == 409
    assert _sign(c, t.checkpoint(), {"old_size": 5}).status_code == 422  # malformed

    old = 5
    for grow in (0, 1, 7, 0, 16):  # the honest sequence, empty heartbeats included
        r = _sign(c, t.checkpoint(), t.proof(old))
        assert r.status_code == 200, r.text
        old = t.size
        t.grow(grow)
    assert _sign(c, t.checkpoint(), t.proof(old)).status_code == 200
    assert s.last_checkpoint_path.read_text() == t.checkpoint()

    # Block notes and claim-check answers keep today's rules: no proof, any height.
    assert _sign(c, note.block_note_text(ORIGIN, 1, bytes(32))).status_code == 200

    # A restart remembers: the next app refuses the fork and accepts the honest extension.
    c = _app(s)
    assert _sign(c, t.checkpoint(5)).status_code == 409
    old = t.size
    t.grow(3)
    assert _sign(c, t.checkpoint(), t.proof(old)).status_code == 200


def test_the_memory_is_per_origin_and_unreadable_memory_stops_the_notary(tmp_path: Path) -> None:
    s = _notary_settings(tmp_path)
    s.last_checkpoint_path.write_text(note.format_checkpoint(
        note.Checkpoint("other.example/log", 1, bytes(32))))
    with pytest.raises(InvalidInput, match=r"not 'n\.example/log'"):
        _app(s)
    s.last_checkpoint_path.write_text("garbage\n")
    with pytest.raises(InvalidInput, match="cannot read the last signed checkpoint"):
        _app(s)


def test_the_sequencer_proves_every_checkpoint_and_cannot_seal_when_refused(
    tmp_path: Path,
) -> None:
    """The in-process path under the same rule; a refusal is a seal failure (503, nothing
    written), and the log seals again once the notary agrees."""
    signer = FileSigner.generate("test.example/log", tmp_path / "k.pem")
    guard = CheckpointGuard("test.example/log")

    def sign(text: str, consistency: Consistency | None) -> str:
        if consistency is not None:
            guard.sign(note.parse_checkpoint(text), consistency, lambda: None)
        return sign_note(text, [signer])

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    seq = Sequencer(store, sign, "test.example/log", linger=0.001)
    seq.start()
    futures = [seq.submit(pending(i)) for i in range(40)]
    assert [f.result(120).seq for f in futures] == list(range(40))
    assert guard.last is not None and guard.last.size == 40 == store.tree_size()

    honest = guard.last
    guard.last = note.Checkpoint("test.example/log", 42, bytes(32))  # a tree the log never had
    with pytest.raises(Unavailable, match=r"nothing was recorded.*smaller than 42"):
        seq.submit(pending(40)).result(120)
    assert store.tree_size() == 40
    guard.last = honest
    assert seq.submit(pending(41)).result(120).seq == 40  # no gap
    seq.stop()


@pytest.mark.slow
def test_stand_alone_notary_survives_sigkill_and_the_registry_cannot_fork_it(
    tmp_path: Path,
) -> None:
    env = {"COPYLEDGER_NOTARY_TOKEN": TOKEN}
    ndir, adir = tmp_path / "notary", tmp_path / "api"
    assert cli("notary", "init", "--data-dir", str(ndir), "--origin", ORIGIN).returncode == 0
    memory = load(ndir).last_checkpoint_path
    notary = ServerProcess(ndir, command=("notary", "serve"), **env).start()
    api: ServerProcess | None = None
    try:
        t = Tree().grow(3)
        with httpx.Client(base_url=notary.url, timeout=30) as c:
            assert _sign(c, t.checkpoint()).status_code == 200
            notary.kill9()  # right after the answer: the memory is already on disk
        notary = ServerProcess(ndir, command=("notary", "serve"), port=notary.port,
                               **env).start()
        with httpx.Client(base_url=notary.url, timeout=30) as c:
            assert _sign(c, t.checkpoint(2)).status_code == 409
            assert _sign(c, Tree("fork").grow(3).checkpoint()).status_code == 409
            t.grow(2)
            assert _sign(c, t.checkpoint(), t.proof(3)).status_code == 200
        notary.stop()
        memory.unlink()  # start this notary afresh for the registry below

        # A registry signing through it: every block's checkpoint is proved and remembered.
        notary = ServerProcess(ndir, command=("notary", "serve"), port=notary.port,
                               **env).start()
        r = cli("init", "--data-dir", str(adir), "--origin", ORIGIN, "--notary-url",
                notary.url, env=env)
        assert r.returncode == 0, r.stderr
        key = json.loads(cli("keys", "create", "--role", "creator", "--data-dir", str(adir),
                             "--json").stdout)["key"]
        api = ServerProcess(adir, **env).start()
        h = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=api.url, timeout=30) as c:
            for i in range(3):
                assert c.post("/v1/works", json=work_body(i), headers=h).status_code == 201
            last = c.get("/v1/log/checkpoint").text
            assert memory.read_text() == note.parse_note(last).text

            # The notary now remembers a tree this log never had: it cannot seal (503,
            # nothing written), and what was acknowledged stays.
            notary.stop()
            size = c.get("/v1/log").json()["tree_size"]
            memory.write_text(note.format_checkpoint(note.Checkpoint(ORIGIN, size + 5,
                                                                     bytes(32))))
            notary = ServerProcess(ndir, command=("notary", "serve"), port=notary.port,
                                   **env).start()
            r = c.post("/v1/works", json=work_body("refused"), headers=h)
            assert r.status_code == 503 and "nothing was recorded" in r.json()["detail"]
            assert "smaller than" in r.json()["detail"]
            assert c.get("/v1/log").json()["tree_size"] == size
            assert c.get(f"/v1/entries/{size - 1}").status_code == 200
    finally:
        if api is not None:
            api.stop()
        notary.stop()
