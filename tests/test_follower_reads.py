"""D128: a process that has not yet heard of the log's newest block answers reads from the
database rather than refusing them.

Under `serve --workers N` (and several hosts) a process other than the sequencer hears of a
block over the hand-over, a moment after the block was committed, and of none at all before it
has joined. A reader whose receipt came from one process and whose next read reaches another
must not be told that the log has no block, or that its entry is not in the tree."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.ledger import merkle
from copyledger.ledger.store import BlockRow
from copyledger.service.node import Node
from tests.helpers import bearer, settings_for, sha, wait_for, work_body


@contextlib.contextmanager
def processes(tmp_path: Path, database_url: str, *, second_first: bool
              ) -> Iterator[tuple[TestClient, TestClient, Node]]:
    """The sequencer's app and another process's, never joined to the sequencer
    (`manage=False`: the hand-over brings it no block). `second_first`: the other process is
    opened before the log had a block, so it knows none; else after the first block."""
    s = settings_for(tmp_path, database_url, workers=2)
    with contextlib.ExitStack() as stack:
        a = Node.open(s)
        b = Node.open(s) if second_first else None
        if b is not None:
            stack.callback(b.stop)
        ca = stack.enter_context(TestClient(create_app(a)))
        if b is None:
            b = Node.open(s)
            stack.callback(b.stop)
        cb = stack.enter_context(TestClient(create_app(b, manage=False)))
        yield ca, cb, b


@pytest.fixture
def two(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, TestClient, Node]]:
    with processes(tmp_path, database_url, second_first=True) as got:
        yield got


@pytest.fixture(params=["knows no block", "knows the first block"])
def lagging(request: pytest.FixtureRequest, tmp_path: Path, database_url: str
            ) -> Iterator[tuple[TestClient, TestClient, Node]]:
    with processes(tmp_path, database_url,
                   second_first=request.param == "knows no block") as got:
        yield got


def test_a_process_that_has_heard_of_no_block_reads_the_log_from_the_database(
        two: tuple[TestClient, TestClient, Node]) -> None:
    ca, cb, b = two
    assert b.sequencer.state.last is None  # so before D128: 404 for both
    log = cb.get("/v1/log")
    assert log.status_code == 200, log.text
    assert log.json() == ca.get("/v1/log").json()
    assert cb.get("/v1/log/checkpoint").text == ca.get("/v1/log/checkpoint").text
    assert cb.get("/").status_code == 200


def test_entries_another_process_just_recorded_are_proved_to_a_tree_that_holds_them(
        lagging: tuple[TestClient, TestClient, Node]) -> None:
    """Each read names entries this process has not heard of. Before D128 (measured by
    running these requests on the old code): the proofs, consistency and the explorer's entry
    page 422, the search and the tile 404, the chain of title and the claim check 500."""
    ca, cb, b = lagging
    auth = bearer(b, "ada")
    seqs = [ca.post("/v1/works", json=work_body(f"follower {i}"), headers=auth).json()["seq"]
            for i in range(3)]
    photo_fps = _photo_fingerprints()
    photo = ca.post("/v1/works", headers=auth, json={**work_body("astronaut"),
                                                     "fingerprints": photo_fps}).json()["seq"]
    bearer(b, "bo")  # (an account of the registry)
    transfer = ca.post("/v1/transfers", headers=auth,
                       json={"work_seq": seqs[0], "to": "bo",
                             "transfer_type": "non_exclusive_licence"})
    assert transfer.status_code == 201, transfer.text
    head = ca.get("/v1/log").json()
    size, root = head["tree_size"], bytes.fromhex(head["root"])

    knows = b.sequencer.state.last
    assert knows is None or knows.header.tree_size < size  # it has heard of none of them
    # Not joined to the sequencer: the log's head is read, not what it knows.
    assert cb.get("/v1/log").json()["tree_size"] == size
    for seq in seqs:
        p = cb.get(f"/v1/entries/{seq}/proof")
        assert p.status_code == 200, p.text
        got = p.json()
        assert got["tree_size"] == size and got["root"] == root.hex()
        assert got["checkpoint"] == ca.get("/v1/log/checkpoint").text
        merkle.verify_inclusion(seq, size, bytes.fromhex(got["leaf_hash"]),
                                [bytes.fromhex(h) for h in got["proof"]], root)
        assert cb.get(f"/v1/entries/{seq}/proof", params={"tree_size": size}).status_code == 200
        assert cb.get(f"/entries/{seq}").status_code == 200
        assert cb.get("/search", params={"q": str(seq)}, follow_redirects=False).status_code \
            == 303
    c = cb.get("/v1/log/consistency", params={"from": 1})
    assert c.status_code == 200 and c.json()["to"] == size, c.text
    h = cb.get(f"/v1/works/{seqs[0]}/history")
    assert h.status_code == 200, h.text
    assert h.json()["tree_size"] == size
    tile = cb.get(f"/tile/entries/000.p/{size}")
    assert tile.status_code == 200 and tile.content == ca.get(f"/tile/entries/000.p/{size}").content
    check = cb.post("/v1/claims/check", headers=bearer(b, "tube", "platform"),
                    json={"claimant": "ada", "work_seq": seqs[2],
                          "content": {"sha256": sha("follower 2")}})
    assert check.status_code == 200, check.text
    assert check.json()["tree_size"] == size and check.json()["work_registered"]
    # A fingerprint-only check: the index is caught up to the tree the answer is signed for.
    seen = cb.post("/v1/claims/check", headers=bearer(b, "tube", "platform"),
                   json={"claimant": "ada", "work_seq": seqs[1], "content": photo_fps})
    assert seen.status_code == 200, seen.text
    assert seen.json()["tree_size"] == size  # before the review's fix: no match at this size
    assert photo in {m["seq"] for m in seen.json()["matches"] if m["verdict"] == "match"}
    # A size past the log's end is still refused, after one look at the database.
    past = cb.get(f"/v1/entries/{seqs[0]}/proof", params={"tree_size": size + 1})
    assert past.status_code == 422, past.text
    assert cb.get(f"/v1/entries/{size}/proof").status_code == 422


def _photo_fingerprints() -> dict[str, Any]:
    """The fingerprints of a real photograph (scikit-image's astronaut, as a JPEG)."""
    from PIL import Image
    from skimage import data

    from copyledger.matching import image_fingerprints

    buf = io.BytesIO()
    photo = data.astronaut()  # type: ignore[no-untyped-call]
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    return dict(image_fingerprints(buf.getvalue()))



@pytest.mark.parametrize("how", ["alone", "for serve --workers"])
def test_a_sequencing_process_answers_from_what_it_knows(
        how: str, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a sequencing process knows is the log but for the moment between a block's commit
    and its taking it in: a read within it costs no database read; one past it reads the
    head once and is refused as before."""
    node = Node.open(settings_for(tmp_path, database_url, workers=1 if how == "alone" else 2))
    with TestClient(create_app(node)) as client:
        auth = bearer(node, "ada")
        seqs = [client.post("/v1/works", json=work_body(f"seq {i}"), headers=auth).json()["seq"]
                for i in range(2)]
        wait_for(lambda: node.index.ready, "the fingerprint index (it reads the log's size)")
        reads: list[int] = []
        real = node.store.latest_block

        def counted() -> BlockRow | None:
            reads.append(1)
            return real()

        monkeypatch.setattr(node.store, "latest_block", counted)
        size = client.get("/v1/log").json()["tree_size"]
        assert size == seqs[-1] + 1
        assert client.get("/v1/log/checkpoint").status_code == 200
        assert client.get(f"/v1/entries/{seqs[0]}/proof").status_code == 200
        assert client.get("/v1/log/consistency", params={"from": 1}).status_code == 200
        assert reads == []
        assert client.get("/v1/log/consistency", params={"from": 0, "to": size + 5}
                          ).status_code == 422
        assert client.get(f"/v1/entries/{size}/proof").status_code == 422
        assert client.get("/tile/0/x001/000").status_code == 404
        assert reads == [1, 1, 1]


def test_a_joined_follower_answers_from_what_the_hand_over_brought(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that follows, joined to the sequencer, hears of each block a moment after
    its commit: it answers from that without reading the database."""
    s = settings_for(tmp_path, database_url, workers=2)
    a, b = Node.open(s), Node.open(s)
    with TestClient(create_app(a)) as ca, TestClient(create_app(b)) as cb:
        assert a.sequencer.leading and not b.sequencer.leading  # type: ignore[union-attr]
        auth = bearer(a, "ada")
        seq = ca.post("/v1/works", json=work_body("joined"), headers=auth).json()["seq"]
        wait_for(lambda: b.sequencer.state.size == seq + 1 and b.index.ready,
                 "the follower to hear of the block")
        assert b.sequencer.current  # type: ignore[union-attr]
        monkeypatch.setattr(b.store, "latest_block", lambda: pytest.fail("a read"))
        assert cb.get("/v1/log").json()["tree_size"] == seq + 1
        assert cb.get(f"/v1/entries/{seq}/proof").status_code == 200


def test_the_index_never_reads_back_below_what_it_has_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Catch-ups ask for different sizes (a claim check's tree, what the process knows, D130):
    one asking for less, that passed the first look while another read
    further, must not set the index back (it would read the same works again, twice in the
    index)."""
    import threading

    from copyledger.matching import live

    calls: list[tuple[int, int]] = []
    inside, go_on = threading.Event(), threading.Event()

    def read(_store: Any, _index: Any, start: int, stop: int, _advanced: Any) -> None:
        calls.append((start, stop))
        inside.set()
        go_on.wait(30)

    monkeypatch.setattr(live, "_read_works", read)
    li = live.LiveIndex()
    li._index = object()  # type: ignore[assignment]  # (ready; `read` never touches it)
    waiting = threading.Event()

    class Lock:
        """The index's lock, saying when a second thread comes to wait for it."""

        lock = threading.Lock()

        def __enter__(self) -> None:
            if self.lock.locked():
                waiting.set()
            self.lock.acquire()

        def __exit__(self, *_: object) -> None:
            self.lock.release()

    li._catching_up = Lock()  # type: ignore[assignment]
    further = threading.Thread(target=li.catch_up, args=(None, 100))
    further.start()
    assert inside.wait(30)
    less = threading.Thread(target=li.catch_up, args=(None, 50))
    less.start()
    assert waiting.wait(30)  # past the first look, at the lock
    go_on.set()
    further.join(30)
    less.join(30)
    assert calls == [(0, 100)] and li._through == 100
