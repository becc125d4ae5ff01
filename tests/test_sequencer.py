"""Group commit: batching, no gaps, receipts, heartbeat, and failure that writes nothing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import merkle, note
from copyledger.ledger.errors import Conflict, Unavailable
from copyledger.ledger.sequencer import Pending, Receipt, Sequencer
from copyledger.ledger.store import Store
from copyledger.notary.signer import FileSigner, sign_note
from tests.helpers import sha, wait_for


def pending(i: int, who: str = "alice", *, once: bool = False) -> Pending:
    e = entry_mod.build_work(registrant=who, received_at=entry_mod.utc_now(), sha256=sha(i),
                             title=f"w{i}", creators=["A"], work_type="text")
    return Pending(entry_mod.canonical_bytes(e), "work", sha(i), who, once=once)


@pytest.fixture
def signer(tmp_path: Path) -> FileSigner:
    return FileSigner.generate("test.example/log", tmp_path / "k.pem")


def make(store: Store, signer: FileSigner, **kw: float | bool) -> Sequencer:
    return Sequencer(store, lambda t, _c: sign_note(t, [signer]), "test.example/log", **kw)  # type: ignore[arg-type]


def test_concurrent_writers_get_gapless_seqs_and_valid_receipts(
    database_url: str, signer: FileSigner
) -> None:
    store = Store.open(database_url)
    seq = make(store, signer, linger=0.02)
    seq.start()
    verifier = note.parse_verifier_key(
        note.format_verifier_key(signer.name, signer.public_key))
    receipts = []
    lock = threading.Lock()

    def writer(base: int) -> None:
        futs = [seq.submit(pending(base * 100 + i)) for i in range(25)]
        got = [f.result(timeout=120) for f in futs]
        with lock:
            receipts.extend(got)

    threads = [threading.Thread(target=writer, args=(b,)) for b in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seq.stop()
    assert sorted(r.seq for r in receipts) == list(range(200))
    blocks = list(store.iter_blocks())
    assert len(blocks) < 1 + 200  # batched: fewer blocks than entries
    for r in receipts:
        merkle.verify_inclusion(r.seq, r.tree_size, r.leaf_hash, r.proof, r.root)
        n, _ = note.verify_note(r.checkpoint, [verifier])
        assert note.parse_checkpoint(n.text).root == r.root
        assert store.get_entry(r.seq).leaf_hash == r.leaf_hash
    store.close()


def test_restart_continues_the_same_tree(tmp_path: Path, signer: FileSigner) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    store = Store.open(url)
    s1 = make(store, signer)
    s1.start()
    first = [s1.submit(pending(i)).result(120) for i in range(5)]
    s1.stop()
    store2 = Store.open(url)
    s2 = make(store2, signer)
    s2.start()
    r = s2.submit(pending(99)).result(120)
    s2.stop()
    assert r.seq == 5
    old = first[-1]
    proof = merkle.consistency_proof(old.tree_size, r.tree_size, store2)
    merkle.verify_consistency(old.tree_size, r.tree_size, old.root, r.root, proof)


def test_heartbeat_seals_fresh_empty_blocks(tmp_path: Path, signer: FileSigner) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    s = make(store, signer, heartbeat=0.05)
    s.start()
    s.submit(pending(1)).result(120)
    wait_for(lambda: sum(b.header.count == 0 for b in list(store.iter_blocks())[2:]) >= 2,
             "no heartbeat blocks")
    s.stop()
    blocks = list(store.iter_blocks())
    empties = [b for b in blocks[2:] if b.header.count == 0]
    assert len(empties) >= 2
    assert all(b.header.tree_size == 1 for b in empties)
    assert len({b.block_note for b in empties}) == len(empties)  # each freshly signed


def test_signing_failure_writes_nothing_and_answers_503(tmp_path: Path, signer: FileSigner) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    broken = {"on": False}

    def sign(text: str, _consistency: object) -> str:
        if broken["on"]:
            raise OSError("HSM unplugged")
        return sign_note(text, [signer])

    s = Sequencer(store, sign, "test.example/log", linger=0.001)
    s.start()
    s.submit(pending(0)).result(120)
    broken["on"] = True
    fut = s.submit(pending(1))
    with pytest.raises(Unavailable, match="nothing was recorded"):
        fut.result(120)
    assert store.tree_size() == 1
    broken["on"] = False
    assert s.submit(pending(2)).result(120).seq == 1  # no gap
    s.stop()


def test_submit_when_stopped_is_unavailable(tmp_path: Path, signer: FileSigner) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    s = make(store, signer)
    with pytest.raises(Unavailable):
        s.submit(pending(0))


def test_async_waiters_are_answered_per_block(tmp_path: Path, signer: FileSigner) -> None:
    import asyncio

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    s = make(store, signer, linger=0.02)
    s.start()

    async def main() -> list[int]:
        futs = [s.submit_async(pending(i)) for i in range(64)]
        return [r.seq for r in await asyncio.gather(*futs)]

    seqs = asyncio.run(main())
    s.stop()
    assert sorted(seqs) == list(range(64))
    assert len(list(store.iter_blocks())) <= 1 + 4  # genesis + a few blocks, not 64


def test_one_sequencer_per_log(database_url: str, signer: FileSigner) -> None:
    a, b = Store.open(database_url), Store.open(database_url)
    s1 = make(a, signer)
    s1.start()
    with pytest.raises(Conflict, match="already"):
        make(b, signer).start()
    s1.stop()
    s2 = make(b, signer)
    s2.start()  # the lock is free again
    s2.stop()
    a.close()
    b.close()


@pytest.mark.parametrize("phase", ["during", "after"])
def test_failure_messages_say_what_was_recorded(
    tmp_path: Path, signer: FileSigner, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    s = make(store, signer)
    s.start()
    if phase == "during":
        monkeypatch.setattr(store, "append_block", lambda *a, **k: (_ for _ in ()).throw(
            OSError("disk full")))
    else:
        monkeypatch.setattr(merkle, "appended_proofs", lambda *a, **k: (_ for _ in ()).throw(
            MemoryError("out of memory")))
    with pytest.raises(Unavailable) as info:
        s.submit(pending(0)).result(120)
    monkeypatch.undo()
    if phase == "during":
        assert "most likely not recorded" in info.value.detail and store.tree_size() == 0
    else:
        assert "WAS recorded" in info.value.detail and store.tree_size() == 1
    assert s.submit(pending(1)).result(120).seq == store.tree_size() - 1  # and it carries on
    s.stop()


def test_a_large_block_is_stored_whole_and_a_conflicting_one_writes_nothing(
    database_url: str, signer: FileSigner
) -> None:
    """A block of hundreds of entries (PostgreSQL writes them and their nodes by COPY) is
    stored byte for byte with the tree the receipts prove; the same rows written again are a
    Conflict, as with executemany, and leave the log as it was."""
    store = Store.open(database_url)
    seq = make(store, signer)
    seq.start()
    pendings = [pending(i) for i in range(300)]
    receipts = [f.result(120) for f in seq.submit_many(pendings)]
    seq.stop()
    assert [r.seq for r in receipts] == list(range(300))
    assert [store.get_entry(r.seq).data for r in receipts] == [p.data for p in pendings]
    last = store.latest_block()
    assert last is not None and last.header.tree_size == 300
    assert merkle.tree_hash(300, store) == receipts[-1].root == last.header.tree_root
    for lo, hi in ((100, 200), (200, 208)):  # by COPY on PostgreSQL from 8 rows (D96)
        rows = [store.get_entry(s) for s in range(lo, hi)]
        with pytest.raises(Conflict, match="conflicts with stored rows"):
            store.append_block(rows, [], last)
    assert store.latest_block() == last
    assert [store.get_entry(s).data for s in range(100, 200)] == [p.data for p in pendings[100:200]]
    store.close()


def test_a_group_has_one_waiter_answered_once_in_order_across_blocks(
        tmp_path: Path, signer: FileSigner) -> None:
    """D87: a batch queued as a group is answered with one list, in its order, once the last
    of its blocks is sealed; a block that fails answers its entries with the error and the
    group's other blocks keep their receipts (refused items not written, the others are)."""
    import asyncio

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    calls = {"n": 0, "fail_from": 0}

    def sign(text: str, _consistency: object) -> str:
        calls["n"] += 1
        if calls["fail_from"] and calls["n"] >= calls["fail_from"]:
            raise OSError("HSM unplugged")
        return sign_note(text, [signer])

    s = Sequencer(store, sign, "test.example/log", linger=0.001, max_batch=10)
    s.start()

    async def group(first: int, n: int) -> list[object]:
        fut = s.submit_group_async([pending(first + i) for i in range(n)])
        assert (await s.submit_group_async([])) == []
        return list(await fut)

    got = asyncio.run(group(0, 25))
    assert [r.seq for r in got] == list(range(25))  # type: ignore[attr-defined]
    assert len({r.block_height for r in got}) == 3  # type: ignore[attr-defined]
    # The second block of the next group fails at signing: nothing of it is written.
    calls["fail_from"] = calls["n"] + 3
    got = asyncio.run(group(100, 25))
    assert [r.seq for r in got[:10]] == list(range(25, 35))  # type: ignore[attr-defined]
    assert all(isinstance(e, Unavailable) for e in got[10:])
    assert store.tree_size() == 35
    s.stop()


def test_groups_and_single_waiters_sharing_blocks_each_get_their_own_outcomes(
        tmp_path: Path, signer: FileSigner) -> None:
    """Two groups and a single entry queued together with blocks of 10: the second group is
    split over two blocks, next to the first group and the single entry; each waiter gets
    exactly its own entries' receipts, in its order. (They are queued while the sequencer is
    held sealing an earlier entry, so they are collected together whatever the load.)"""
    import asyncio

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    gate, signing = threading.Event(), threading.Event()
    gate.set()

    def sign(text: str, _consistency: object) -> str:
        signing.set()
        assert gate.wait(120)
        return sign_note(text, [signer])

    s = Sequencer(store, sign, "test.example/log", linger=0.001, max_batch=10)
    s.start()

    async def main() -> tuple[list[object], list[object], int]:
        gate.clear()
        signing.clear()
        held = s.submit_async(pending(300))  # block 1, held at signing
        await asyncio.to_thread(wait_for, signing.is_set, "block 1 being signed")
        a = s.submit_group_async([pending(i) for i in range(7)])
        b = s.submit_group_async([pending(100 + i) for i in range(8)])
        one = s.submit_async(pending(200))
        gate.set()
        assert (await held).seq == 0
        return list(await a), list(await b), (await one).seq

    a, b, one = asyncio.run(main())
    s.stop()
    assert [r.seq for r in a] == list(range(1, 8))  # type: ignore[attr-defined]
    assert [r.seq for r in b] == list(range(8, 16))  # type: ignore[attr-defined]
    assert one == 16
    assert {r.block_height for r in b} == {2, 3}  # type: ignore[attr-defined]
    for r, i in zip(b, range(100, 108), strict=True):
        assert store.get_entry(r.seq).sha256 == sha(i)  # type: ignore[attr-defined,union-attr]


def test_a_block_committed_after_all_is_in_the_state_before_its_writers_are_answered(
    database_url: str, signer: FileSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer told "WAS recorded" (the block committed, its receipts failed) reads a log head
    that holds its entry: the state is read back before the answer, however slow the read
    (D107; before, the answer went first and the head lagged until the read-back was done)."""
    from copyledger.ledger import sequencer as seq_mod

    store = Store.open(database_url)
    s = make(store, signer, linger=0.001)
    s.start()
    size = s.state.size
    real = seq_mod.Sequencer._reload

    def slow(self: seq_mod.Sequencer) -> None:
        time.sleep(0.3)
        real(self)

    monkeypatch.setattr(seq_mod.Sequencer, "_reload", slow)
    monkeypatch.setattr(merkle, "appended_proofs", lambda *a, **k: (_ for _ in ()).throw(
        MemoryError("out of memory")))
    with pytest.raises(Unavailable, match="WAS recorded"):
        s.submit(pending(0)).result(30)
    assert s.state.size == size + 1 == store.tree_size()
    monkeypatch.undo()
    assert s.submit(pending(1)).result(30).seq == size + 1
    s.stop()
    store.close()


def test_the_sequencer_outlives_a_failed_block_whose_state_cannot_be_read_back(
    tmp_path: Path, signer: FileSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block fails while the database is unreachable, and so does reading the log's state
    back: the waiters are answered, the thread lives, the next block while the database is
    still away fails as nothing recorded, and once it is back the log goes on without a gap
    (D91; before, the read-back's error ended the sequencer's thread)."""
    from copyledger.ledger import sequencer as seq_mod

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    s = make(store, signer, linger=0.001)
    s.start()
    assert s.submit(pending(0)).result(30).seq == 0

    def down(*_a: object, **_k: object) -> None:
        raise OSError("database unreachable")

    monkeypatch.setattr(store, "append_block", down)
    monkeypatch.setattr(seq_mod.LogState, "load", down)
    with pytest.raises(Unavailable, match="most likely not recorded"):
        s.submit(pending(1)).result(30)
    monkeypatch.setattr(store, "append_block", Store.append_block.__get__(store))
    with pytest.raises(Unavailable, match="nothing was recorded"):
        s.submit(pending(2)).result(30)  # the state is still unread: nothing is sealed on it
    monkeypatch.undo()
    assert s._thread is not None and s._thread.is_alive()
    assert s.submit(pending(3)).result(30).seq == store.tree_size() - 1 == 1
    s.stop()


def test_a_cancelled_waiter_does_not_stop_the_sequencer(tmp_path: Path, signer: FileSigner) -> None:
    """A caller that cancels its future before the block is sealed: the entry is recorded, the
    others in its block are answered and the sequencer goes on (setting a cancelled future's
    result raises; D91)."""
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    s = make(store, signer, linger=2.0)  # long enough for the cancel to come before the seal
    s.start()
    gone, kept = s.submit(pending(0)), s.submit(pending(1))
    assert gone.cancel()
    assert kept.result(30).seq in (0, 1)
    assert s.submit(pending(2)).result(30).seq == 2
    assert s._thread is not None and s._thread.is_alive()
    s.stop()


def test_once_works_already_registered_are_answered_not_written(
        database_url: str, signer: FileSigner) -> None:
    """D94: a `once` work whose registrant already has a work with its content, in the log or
    earlier in the same block, is answered AlreadyRegistered with the earliest one's seq and
    not written; another registrant's, an `again` one (once=False) and evidence are written;
    a block of nothing but such answers seals nothing."""
    import asyncio

    from copyledger.ledger.errors import AlreadyRegistered

    store = Store.open(database_url)
    s = make(store, signer, linger=0.001)
    s.start()

    async def group(ps: list[Pending]) -> list[object]:
        return list(await s.submit_group_async(ps))

    first = asyncio.run(group([pending(1, once=True), pending(2)]))
    assert [r.seq for r in first] == [0, 1]  # type: ignore[attr-defined]
    height = store.latest_block().header.height  # type: ignore[union-attr]
    evidence = Pending(b'{"kind":"evidence"}', "evidence", sha(1), "alice", once=True)
    got = asyncio.run(group([
        pending(1, once=True),  # in the log: seq 0
        pending(3, once=True), pending(3, once=True),  # new, then the same again in the block
        pending(2, "bob", once=True),  # bob's first of content 2
        pending(1),  # asked anew (again): written
        evidence,  # not a work: written
        pending(4), pending(4, once=True),  # written anew, then answered with it
    ]))
    kinds = [(type(o).__name__, getattr(o, "seq", None)) for o in got]
    assert kinds == [("AlreadyRegistered", 0), ("Receipt", 2), ("AlreadyRegistered", 2),
                     ("Receipt", 3), ("Receipt", 4), ("Receipt", 5), ("Receipt", 6),
                     ("AlreadyRegistered", 6)]
    assert store.tree_size() == 7
    # Nothing new at all: no block is sealed for it.
    height = store.latest_block().header.height  # type: ignore[union-attr]
    again = asyncio.run(group([pending(1, once=True), pending(3, "alice", once=True)]))
    assert [o.seq for o in again] == [0, 2]  # type: ignore[attr-defined]
    assert all(isinstance(o, AlreadyRegistered) for o in again)
    assert store.latest_block().header.height == height  # type: ignore[union-attr]
    s.stop()
    store.close()


def test_a_claimed_request_is_written_once(database_url: str, signer: FileSigner) -> None:
    """D134: an entry whose Idempotency-Key claim (account, key, request hash) already has an
    entry, earlier in its block or recorded in the log within the keys' lifetime, is answered
    AlreadyRegistered with that entry's seq and not written, whatever its kind; the same key
    with another request hash, another account's key, and a claim recorded longer ago than
    the lifetime are written; a block of nothing but such answers seals nothing."""
    import asyncio


    store = Store.open(database_url)
    s = make(store, signer, linger=0.001)
    s.start()
    c1, c2 = ("alice", "k1", "a" * 64), ("alice", "k2", "b" * 64)

    def claimed(i: int, claim: tuple[str, str, str]) -> Pending:
        return pending(i)._replace(claim=claim)  # `again` works: D36 never answers them

    async def group(ps: list[Pending]) -> list[tuple[str, int | None]]:
        return [(type(o).__name__, getattr(o, "seq", None))
                for o in await s.submit_group_async(ps)]

    evidence = Pending(b'{"kind":"evidence"}', "evidence", sha(9), "alice", claim=c2)
    assert asyncio.run(group([claimed(1, c1), claimed(1, c1), evidence, evidence])) == [
        ("Receipt", 0), ("AlreadyRegistered", 0), ("Receipt", 1), ("AlreadyRegistered", 1)]
    height = store.latest_block().header.height  # type: ignore[union-attr]
    assert asyncio.run(group([claimed(1, c1), evidence])) == [
        ("AlreadyRegistered", 0), ("AlreadyRegistered", 1)]
    assert store.latest_block().header.height == height  # type: ignore[union-attr]
    assert asyncio.run(group([
        claimed(1, ("alice", "k1", "c" * 64)),  # the key with another request: D132's 422
        claimed(1, ("bob", "k1", "a" * 64)),  # another account's key
        claimed(2, c1),  # recorded before: answered with seq 0 whatever it carries
    ])) == [("Receipt", 2), ("Receipt", 3), ("AlreadyRegistered", 0)]
    s.claim_ttl_s = -5  # every recorded claim is past its lifetime: the key is forgotten
    assert asyncio.run(group([claimed(1, c1)])) == [("Receipt", 4)]
    assert store.tree_size() == 5
    s.stop()
    store.close()


def test_earlier_registrations_alone_do_not_hold_off_the_heartbeat(
        tmp_path: Path, signer: FileSigner) -> None:
    """D94: a block of nothing but earlier registrations seals nothing, so it must not count
    as a seal: a steady trickle of duplicates still lets the heartbeat's empty blocks out."""
    import asyncio
    import time

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    s = make(store, signer, linger=0.001, heartbeat=1.0)
    s.start()

    async def once() -> list[object]:
        return list(await s.submit_group_async([pending(1, once=True)]))

    asyncio.run(once())  # written
    height = store.latest_block().header.height  # type: ignore[union-attr]
    # A duplicate every 0.05 s, far more often than the heartbeat, until two empty blocks are
    # out (a minute at most: a fixed 2 s could pass on a loaded machine before two were
    # signed). Blocks count only while no gap between duplicates came near the heartbeat: a
    # stall of this thread would let even a sequencer that the duplicates hold off seal one.
    deadline = time.monotonic() + 60
    last = time.monotonic()
    while store.latest_block().header.height < height + 2:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the duplicates held the heartbeat off"
        assert type(asyncio.run(once())[0]).__name__ == "AlreadyRegistered"
        now = time.monotonic()
        if now - last > 0.5:  # a stall: count again from here
            height = store.latest_block().header.height  # type: ignore[union-attr]
        last = now
        time.sleep(0.05)
    assert store.tree_size() == 1
    s.stop()
    store.close()


def test_a_work_already_in_the_log_is_answered_as_such_when_its_block_fails(
        tmp_path: Path, signer: FileSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    """D97: a `once` work its registrant already has in the log is that earlier work even if
    the block it came with fails to be written; a new work, and its repeat within that block,
    share the block's fate ("may or may not be recorded")."""
    import asyncio

    from copyledger.ledger.errors import AlreadyRegistered, Uncertain

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    s = make(store, signer, linger=0.001)
    s.start()
    assert s.submit(pending(1, once=True)).result(30).seq == 0
    monkeypatch.setattr(store, "append_block", lambda *a, **k: (_ for _ in ()).throw(
        OSError("disk full")))

    async def group(ps: list[Pending]) -> list[object]:
        return list(await s.submit_group_async(ps))

    got = asyncio.run(group([pending(1, once=True), pending(2, once=True),
                             pending(2, once=True)]))
    monkeypatch.undo()
    assert isinstance(got[0], AlreadyRegistered) and got[0].seq == 0
    assert all(isinstance(o, Uncertain) for o in got[1:])
    assert store.tree_size() == 1
    assert s.submit(pending(2, once=True)).result(30).seq == 1  # and it carries on
    s.stop()
    store.close()


def test_the_filter_spares_the_read_only_for_content_no_entry_holds(
        database_url: str, signer: FileSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    """D103: once its scan of the log is done, the sequencer reads D94's answer only for the
    `once` works whose content some entry may hold: content registered before it started (by
    anyone) is still read and answered, content it has never seen is not read at all, and
    content it sealed itself is read again the next time. The scan reads pages of two here,
    so it must page on, past a hash repeated across pages."""
    import asyncio

    from copyledger.ledger import sequencer as sequencer_mod

    monkeypatch.setattr(sequencer_mod, "SCAN_PAGE", 2)
    store = Store.open(database_url)
    s1 = make(store, signer)
    s1.start()
    for i, who in ((1, "alice"), (2, "alice"), (1, "bob"), (3, "dave"), (1, "carol")):
        s1.submit(pending(i, who)).result(120)
    s1.stop()
    # On by default on PostgreSQL, and on SQLite with the content-hash runs (D142).
    assert make(store, signer).content_filter is (store.dialect == "postgresql" or store.has_runs)
    assert store.has_runs is (store.dialect == "sqlite")
    s = make(store, signer, linger=0.001, content_filter=True)
    s.start()
    assert s.seen is not None
    wait_for(lambda: s.seen is not None and s.seen.ready, "the content-hash scan")
    assert s.seen.maybe([sha(1), sha(2), sha(3)]) == [True, True, True]
    asked: list[set[str]] = []
    registered = store.registered

    def spy(registrant: str, shas: object) -> dict[str, int]:
        asked.append(set(shas))  # type: ignore[call-overload]
        return registered(registrant, asked[-1])

    store.registered = spy  # type: ignore[method-assign]

    async def group(ps: list[Pending]) -> list[object]:
        return list(await s.submit_group_async(ps))

    got = asyncio.run(group([
        pending(1, once=True),  # alice's, in the log before this sequencer started
        pending(2, "bob", once=True),  # content in the log (alice's): read, and bob's first
        pending(50, once=True), pending(50, once=True),  # never seen: not read; then repeated
    ]))
    kinds = [(type(o).__name__, getattr(o, "seq", None)) for o in got]
    assert kinds == [("AlreadyRegistered", 0), ("Receipt", 5), ("Receipt", 6),
                     ("AlreadyRegistered", 6)]
    assert set().union(*asked) == {sha(1), sha(2)}
    asked.clear()
    again = asyncio.run(group([pending(50, once=True), pending(51, "carol", once=True)]))
    assert [(type(o).__name__, getattr(o, "seq", None)) for o in again] == [
        ("AlreadyRegistered", 6), ("Receipt", 7)]
    assert set().union(*asked) == {sha(50)}
    s.stop()
    store.close()


def test_a_late_block_of_a_sequencer_that_lost_the_lock_reaches_the_filter(
        database_url: str, signer: FileSigner) -> None:
    """D103: a sequencer that lost the lock may still commit a block it had in flight, after
    the new one's scan is done. The new one's next block then clashes on its seqs, and reading
    its state back adds the late block's hashes to the filter: the same content again is
    answered as registered, not written twice."""
    from copyledger.ledger.errors import AlreadyRegistered

    store = Store.open(database_url)
    s = make(store, signer, linger=0.001, content_filter=True)
    assert not s.content_filter_ready  # (not started)
    s.start()
    wait_for(lambda: s.content_filter_ready, "the content-hash scan")
    late = make(Store.open(database_url), signer)  # never started: holds no lock
    late._seal([pending(7, once=True)])  # its block, committed behind the sequencer's back
    with pytest.raises(Exception):  # noqa: B017  (the clash on seq: whatever it is called)
        s.submit(pending(8)).result(120)
    with pytest.raises(AlreadyRegistered):
        s.submit(pending(7, once=True)).result(120)
    assert [e.sha256 for part in store.iter_entries() for e in part].count(sha(7)) == 1
    s.stop()
    assert s.seen is not None and s.seen.ready and not s.content_filter_ready  # (stopped)
    late.store.close()
    store.close()


def _hold_commits(store: Store) -> tuple[threading.Event, threading.Event]:
    """Each block's commit waits for the second event; the first is set once one waits."""
    entered, gate = threading.Event(), threading.Event()
    commit = store.append_block

    def held(*args: object, **kw: object) -> None:
        entered.set()
        assert gate.wait(120)
        commit(*args, **kw)  # type: ignore[arg-type]

    store.append_block = held  # type: ignore[method-assign]
    return entered, gate


def _stopped_while_sealing(url: str, signer: FileSigner) -> tuple[
        Store, threading.Thread, Future[Receipt], threading.Event]:
    """A sequencer stopped with a 50 ms timeout while its block is held in the commit: its
    store and thread, the entry's future, and the event that lets the commit go on."""
    store = Store.open(url)
    s = make(store, signer, linger=0.001)
    s.start()
    thread = s._thread
    assert thread is not None
    entered, gate = _hold_commits(store)
    fut = s.submit(pending(1))
    assert entered.wait(120)
    s.stop(timeout=0.05)  # the block is still in flight
    return store, thread, fut, gate


def test_a_sequencer_still_sealing_when_stopped_keeps_the_lock_until_its_block_is_done(
        database_url: str, signer: FileSigner) -> None:
    """D104: `stop` that times out with a block in flight leaves the lock to the thread, and
    `Store.close` does too, so no successor can start and be overtaken by that block; the
    thread gives the lock up once the block is committed and answered."""
    store, _, fut, gate = _stopped_while_sealing(database_url, signer)
    other = Store.open(database_url)
    with pytest.raises(Conflict):
        other.acquire_sequencer_lock()
    store.close()  # leaves the lock to the thread as well
    with pytest.raises(Conflict):
        other.acquire_sequencer_lock()
    with pytest.raises(Conflict):  # nor may this store start another sequencer meanwhile
        store.acquire_sequencer_lock()
    gate.set()
    receipt = fut.result(120)
    wait_for(lambda: _takes_the_lock(other), "the lock given up by the stopped sequencer")
    assert other.get_entry(receipt.seq).leaf_hash == receipt.leaf_hash
    other.close()


def _takes_the_lock(store: Store) -> bool:
    try:
        store.acquire_sequencer_lock()
    except Conflict:
        return False
    return True


def test_a_new_sequencer_never_takes_the_lock_a_stopped_one_is_giving_up_for_its_own(
        database_url: str, signer: FileSigner) -> None:
    """D104 (a review found it): while the stopped sequencer's thread gives its kept lock up,
    a new sequencer on the same store waits, then takes a lock of its own. Before the guard
    the acquire found the old lock still open, took it for held, and the thread then freed it
    under the new sequencer, leaving the log to any other process as well."""
    store, thread, fut, gate = _stopped_while_sealing(database_url, signer)
    inside, go = threading.Event(), threading.Event()

    class Paused(Store):
        """Pauses the stopped sequencer's thread as it clears the kept flag (inside the
        release, after the lock itself is freed)."""

        @property  # type: ignore[override]
        def _lock_kept(self) -> bool:
            return bool(self.__dict__["_lock_kept"])

        @_lock_kept.setter
        def _lock_kept(self, value: bool) -> None:
            self.__dict__["_lock_kept"] = value
            if not value and threading.current_thread().name == "sequencer":
                inside.set()
                assert go.wait(120)

    store.__dict__["_lock_kept"] = True
    store.__class__ = Paused
    gate.set()
    fut.result(120)
    assert inside.wait(120)
    s2 = make(store, signer, linger=0.001)
    starting = threading.Thread(target=s2.start)
    starting.start()
    starting.join(0.3)  # (waits on the guard the release holds, or took the old lock)
    go.set()
    starting.join(120)
    thread.join(120)  # its release done, whatever it freed
    assert not thread.is_alive()
    other = Store.open(database_url)
    try:
        assert not _takes_the_lock(other), "the new sequencer runs without the log's lock"
    finally:
        s2.stop()
        other.close()
        store.close()


def test_stop_with_a_full_queue_returns_and_the_thread_ends_once_it_has_sealed_the_queue(
        tmp_path: Path, signer: FileSigner) -> None:
    """`stop` is bounded by its timeout even when its end-of-queue marker finds no room, and
    the thread ends anyway once the queue is empty, sealing every entry it had taken and
    giving up the lock (D104)."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    store = Store.open(url)
    s = make(store, signer, linger=0.001, max_queue=2)  # type: ignore[arg-type]
    s.start()
    entered, gate = _hold_commits(store)
    first = s.submit(pending(1))
    assert entered.wait(120)
    queued = [s.submit(pending(2)), s.submit(pending(3))]  # the queue is full now
    stopping = threading.Thread(target=s.stop, kwargs={"timeout": 0.05})
    stopping.start()
    stopping.join(30)
    assert not stopping.is_alive()
    other = Store.open(url)
    with pytest.raises(Conflict):
        other.acquire_sequencer_lock()
    gate.set()
    got = [f.result(120) for f in (first, *queued)]
    assert [r.seq for r in got] == [0, 1, 2]
    wait_for(lambda: _takes_the_lock(other), "the lock given up once the queue was sealed")
    other.close()
    store.close()


def test_a_failed_unlock_ends_the_session_and_leaves_the_store_free_to_lock_again(
        pg_server: Any) -> None:
    """D104's review: when a kept lock's advisory unlock fails, the connection is invalidated
    (its session ends, and the lock with it) and the store no longer counts the lock as kept,
    so another process, or this store, can take it again."""
    url = pg_server.new_database()
    store, other = Store.open(url), Store.open(url)
    store.acquire_sequencer_lock()
    real = store._lock_conn
    assert real is not None

    class Broken:
        """The lock's connection, as if the server stopped answering on it."""

        def execute(self, *_: object) -> None:
            raise ConnectionError("the server went away")

        def commit(self) -> None: ...

        def invalidate(self) -> None:
            assert real is not None
            real.invalidate()

        def close(self) -> None:
            assert real is not None
            real.close()

    store._lock_conn = Broken()  # type: ignore[assignment]
    store.keep_sequencer_lock()
    with pytest.raises(ConnectionError):
        store.release_sequencer_lock(kept=True)
    wait_for(lambda: _takes_the_lock(other), "the lock gone with its session")
    other.release_sequencer_lock()
    store.acquire_sequencer_lock()  # not "still sealing"
    store.close()
    other.close()


def _received(tag: str, received_at: str) -> Pending:
    e = entry_mod.build_work(registrant="alice", received_at=received_at, sha256=sha(tag),
                             title=tag, creators=["A"], work_type="text")
    return Pending(entry_mod.canonical_bytes(e), "work", sha(tag), "alice",
                   received_at=received_at)


def test_a_block_is_never_sealed_before_an_entry_in_it_was_received(
    api: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D117: an entry stamped by a host whose clock runs 0.3 s ahead of the sequencer's is
    sealed, at once, in a block whose `sealed_at` is that `received_at`, so its bundle
    verifies (a verifier refuses an entry received after its block was sealed, and a block
    sealed after its token's time and accuracy); one stamped more than MAX_AHEAD_S ahead is
    refused before it is queued, and nothing is written. The sequencer's clock stands still
    for the first entry: a sequencer that waited for it to pass the entry's time would never
    seal it, and a slow seal cannot overtake the 0.3 s (it did not here; it could on a loaded
    machine)."""
    from copyledger.ledger.verify import verify_bundle
    from copyledger.service.node import read_verifier_key

    client, reg = api
    real, t0 = entry_mod.utc_now, time.monotonic()
    with monkeypatch.context() as m:
        m.setattr(entry_mod, "utc_now",
                  lambda ahead_s=0.0: real(ahead_s - (time.monotonic() - t0)))
        ahead = entry_mod.utc_now(0.3)
        r = reg.sequencer.submit(_received("ahead", ahead)).result(timeout=60)
        assert reg.store.get_block(r.block_height).header.sealed_at == ahead
        assert ahead > entry_mod.utc_now()  # sealed without waiting for this clock to pass it
    bundle = client.get(f"/v1/entries/{r.seq}/bundle").json()
    rep = verify_bundle(bundle, trusted_keys=[read_verifier_key(reg.settings)])
    assert rep.ok, rep
    assert reg.sequencer.clock_ahead_blocks == 1
    assert "copyledger_blocks_sealed_ahead 1.0" in client.get("/metrics").text

    size = reg.store.tree_size()
    far = entry_mod.utc_now(5.0)
    with pytest.raises(Unavailable, match="ahead of the sequencer's"):
        reg.sequencer.submit(_received("far", far))
    assert reg.sequencer.clock_refused == 1
    assert "copyledger_entries_refused_clock 1.0" in client.get("/metrics").text
    r2 = reg.sequencer.submit(_received("next", entry_mod.utc_now())).result(timeout=60)
    assert r2.seq == size  # the refused one took no seq
    assert reg.store.tree_size() == size + 1


def test_the_clock_limit_is_read_again_once_old_so_a_clock_gone_back_is_seen(
    tmp_path: Path, signer: FileSigner, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D117: the limit `_check_clock` keeps is trusted for LIMIT_FOR_S only: after this
    clock went back by a second, an entry at the limit read before (so let in by it) is
    refused once that limit is LIMIT_FOR_S old; and a block whose entry is further ahead than
    MAX_AHEAD_S of the clock at sealing fails before anything is written. The limit is aged
    by hand, not by a sleep, so the entry stays 1 s ahead of the clock, less the test's own
    pace, and inside the old limit whatever that pace."""
    from copyledger.ledger import sequencer as sequencer_mod

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    seq = make(store, signer, linger=0.001)
    seq._check_clock(entry_mod.utc_now())  # the limit read now: 0.5 s ahead
    limit, _ = seq._ahead_limit
    back = entry_mod.utc_now(-1.0)  # then this clock goes back by a second
    real = entry_mod.utc_now
    monkeypatch.setattr(entry_mod, "utc_now",
                        lambda ahead_s=0.0: real(ahead_s - 1.0))
    seq._ahead_limit = (limit, time.monotonic() - sequencer_mod.LIMIT_FOR_S)
    with pytest.raises(Unavailable, match="ahead of the sequencer's"):
        seq._check_clock(limit)  # 1 s ahead of the clock as it now reads
    assert entry_mod.utc_now() >= back
    with pytest.raises(Unavailable, match="clock went back"):
        sequencer_mod._sealed_at(real(0.0))
    store.close()
