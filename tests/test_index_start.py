"""The near-duplicate index's rebuild at start reads only the works that carry fingerprints,
through revision 0009's partial index (D90): nothing at all when no work has any."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import store
from copyledger.ledger.schema import ENTRIES_FINGERPRINTED
from copyledger.ledger.sequencer import Pending
from copyledger.matching import LiveIndex, image_fingerprints
from copyledger.service.node import Node
from tests import test_tiles
from tests.conftest import PostgresServer
from tests.helpers import own_statements, sha, wait_for
from tests.test_claims import png
from tests.test_tiles import fill

reg = test_tiles.reg  # a started registry, on each engine


def submit_work(reg: Node, title: str, fingerprints: dict[str, Any] | None = None) -> int:
    """Log one work (with these fingerprints, if any); its seq."""
    h = sha(title)
    data = entry_mod.canonical_bytes(entry_mod.build_work(
        registrant="alice", received_at=entry_mod.utc_now(), sha256=h, title=title,
        creators=["A"], work_type="image", fingerprints=fingerprints))
    return reg.sequencer.submit(Pending(data, "work", h, "alice")).result(timeout=120).seq


@pytest.fixture
def rows_read(reg: Node, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows each raw read of this registry's store returns, from now on, in
    this test's thread: the patch is on the class, so a thread another test left behind (an
    app's start-up warming, an index build) must not count."""
    counts: list[int] = []
    real = store.Store._driver_rows
    me = threading.get_ident()

    def counting(self: store.Store, q: Any) -> list[Any]:
        rs = real(self, q)
        if self is reg.store and threading.get_ident() == me:
            counts.append(len(rs))
        return rs

    monkeypatch.setattr(store.Store, "_driver_rows", counting)
    return counts


def test_the_rebuild_reads_no_entry_when_no_work_has_fingerprints(
        reg: Node, rows_read: list[int]) -> None:
    fill(reg, 60)
    li = LiveIndex()
    li.build(reg.store)
    assert li.ready and li.size() == 0
    assert rows_read == [0]  # one statement, no row (before D90: every entry, 60 rows)
    caught = LiveIndex()
    caught.build(reg.store)
    fill(reg, 10)
    caught.catch_up(reg.store, reg.sequencer.state.size)  # what others logged since: no row
    assert rows_read == [0, 0, 0] and caught.size() == 0


def test_the_rebuild_reads_exactly_the_works_with_fingerprints(
        reg: Node, rows_read: list[int]) -> None:
    fill(reg, 30)
    fps = [image_fingerprints(png(i)) for i in (1, 2, 3)]
    seqs = [submit_work(reg, f"image {i}", f) for i, f in enumerate(fps)]
    decoy = submit_work(reg, "fingerprints")  # the key's name as a value: read, then parsed out
    fill(reg, 30)
    li = LiveIndex()
    li.build(reg.store)
    assert sum(rows_read) == len(seqs) + 1 and decoy not in seqs
    assert li.size() == len(seqs)
    for seq, f in zip(seqs, fps, strict=True):
        assert {c.seq for c in li.search(f)} == {seq}
    # Caught up later (each claim check, D130), it reads the same way from where it stopped.
    caught = LiveIndex()
    caught.build(reg.store)
    later = submit_work(reg, "image later", image_fingerprints(png(4)))
    fill(reg, 5)
    del rows_read[:]
    caught.catch_up(reg.store, reg.sequencer.state.size)
    assert sum(rows_read) == 1 and caught.size() == len(seqs) + 1
    assert {c.seq for c in caught.search(image_fingerprints(png(4)))} == {later}


def test_the_rebuild_query_can_use_the_partial_index(reg: Node) -> None:
    """The query's predicate is the index's, as each engine's planner must see it to use the
    index (on PostgreSQL, with sequential scans off: a table this small is read whole).
    Only this thread's statements count: the registry's own threads (the sequencer, the
    heartbeat) read entries on the same engine at any time."""
    fill(reg, 20)
    with own_statements(reg.store.engine) as seen:
        LiveIndex().build(reg.store)
    [(sql, args)] = [s for s in seen if "FROM entries" in s[0]]
    raw = reg.store.engine.raw_connection()
    try:
        cur = raw.cursor()
        if reg.store.engine.dialect.name == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + sql, args)
        else:
            cur.execute("SET enable_seqscan = off")
            cur.execute("EXPLAIN " + sql, args)
        plan = " ".join(str(r) for r in cur.fetchall())
    finally:
        raw.close()
    assert ENTRIES_FINGERPRINTED in plan, plan


def test_migration_0009_down_and_up(reg: Node, database_url: str) -> None:
    """Downgraded to 0008 the index is gone; a store opened on it (as `copyledger` opens
    one at start) upgrades it back, and the rebuild finds what was logged before."""
    seq = submit_work(reg, "image", image_fingerprints(png(5)))
    reg.stop()
    engine = create_engine(database_url)

    def state() -> tuple[bool, str]:
        with engine.connect() as conn:
            v = str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())
        return ENTRIES_FINGERPRINTED in {ix["name"] for ix in
                                         inspect(engine).get_indexes("entries")}, v

    try:
        assert state() == (True, store.head_revision())
        cfg = Config()
        cfg.set_main_option("script_location", str(store.MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
        assert state() == (False, "0008")
        s = store.Store.open(database_url)
        try:
            assert state() == (True, store.head_revision())
            li = LiveIndex()
            li.build(s)
            assert {c.seq for c in li.search(image_fingerprints(png(5)))} == {seq}
        finally:
            s.close()
    finally:
        engine.dispose()


def test_the_predicate_means_the_same_bytes_whatever_the_servers_string_setting(
        tmp_path: Any, pg_server: Any) -> None:
    """On a PostgreSQL database with `standard_conforming_strings = off` (a server setting
    older installations keep) the partial index's predicate and the rebuild's query still
    look for the bytes `"fingerprints"`. Before D91 their literal `'\\x22…'` was read as
    escapes there, so both looked for other bytes and the rebuild found no work."""
    from sqlalchemy.engine import make_url

    from tests.helpers import open_registry

    url = pg_server.new_database()
    name = make_url(url).database
    with pg_server.admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET standard_conforming_strings = off')
    r = open_registry(tmp_path, url)
    r.start()
    try:
        fps = image_fingerprints(png(5))
        seq = submit_work(r, "image 5", fps)
        fill(r, 3)
        li = LiveIndex()
        li.build(r.store)
        assert li.size() == 1 and {c.seq for c in li.search(fps)} == {seq}
    finally:
        r.stop()


@pytest.mark.postgres
def test_an_index_build_that_meets_the_database_down_builds_once_it_is_back(
        own_pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """D111: the fingerprint index's build at start waits for a database it cannot reach (a
    restart) and builds once it is back, instead of leaving claim checks unready until the
    process is restarted."""
    from copyledger.matching import live

    monkeypatch.setattr(live, "DATABASE_RETRY_S", 0.05, raising=False)
    s = store.Store.open(own_pg_server.new_database())
    try:
        own_pg_server.crash()
        li = LiveIndex()
        t = threading.Thread(target=li.run, args=(s, lambda: 0), daemon=True)
        t.start()
        t.join(1.0)
        assert t.is_alive() and not li.ready  # waiting, not given up
        own_pg_server.start()
        wait_for(lambda: li.ready, "the index was not built once the database was back", 120)
        assert li.size() == 0 and t.is_alive()  # built, and now following the log
    finally:
        s.close()
    t.join(10)
    assert not t.is_alive()  # the store closed: the index's thread ends


# --- the index's own thread keeps it caught up (D130) ---------------------------------------


def _following(reg: Node) -> tuple[LiveIndex, threading.Thread]:
    li = LiveIndex()
    t = threading.Thread(target=li.run, args=(reg.store, lambda: reg.sequencer.state.size),
                         daemon=True)
    t.start()
    wait_for(lambda: li.following, "the index was not built")
    return li, t


def test_a_search_asks_the_index_thread_for_its_tree_and_waits_for_it(
        reg: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Works logged after the build are read by the index's thread (not by the caller) as soon
    as a search asks for them: with the thread's timer at 60 s, only the request can wake it."""
    from copyledger.matching import live

    monkeypatch.setattr(live, "FOLLOW_EVERY_S", 60.0)
    li, t = _following(reg)
    try:
        fps = image_fingerprints(png(6))
        seq = submit_work(reg, "later", fps)
        fill(reg, 3)
        size = reg.sequencer.state.size
        index, through = li.searchable(size, wait=30)
        assert index is not None and through >= size and li.through >= size
        assert {c.seq for c in index.search(fps)} == {seq}
    finally:
        li.stop()
    t.join(10)
    assert not t.is_alive() and not li.following  # stopped: it reads nothing more


def test_the_index_thread_reads_what_the_process_knows_unasked(reg: Node) -> None:
    li, t = _following(reg)
    try:
        seq = submit_work(reg, "later still", image_fingerprints(png(7)))
        wait_for(lambda: li.size() == 1, "the index's thread did not read the new work", 30)
        assert {c.seq for c in li.search(image_fingerprints(png(7)))} == {seq}
    finally:
        li.stop()
    t.join(10)


def test_an_index_no_thread_follows_is_searched_at_once_for_what_it_has(reg: Node) -> None:
    """No thread follows this index: `searchable` answers at once with what it has, so a claim
    check says the index was behind instead of reading the backlog itself."""
    li = LiveIndex()
    li.build(reg.store)
    first = li._index
    li.build(reg.store)  # a second build changes nothing
    assert li._index is first
    size = reg.sequencer.state.size
    submit_work(reg, "unread", image_fingerprints(png(8)))
    index, through = li.searchable(reg.sequencer.state.size, wait=30)
    assert index is first and through == size < reg.sequencer.state.size
    assert li.search(image_fingerprints(png(8))) == []


def test_an_interrupted_read_resumes_after_the_last_chunk_it_added(
        reg: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_through` moves after each chunk, so a read cut by a database error does not add the
    chunks it had added again (they were counted twice in `entries` before)."""
    li = LiveIndex()
    li.build(reg.store)
    seqs = [submit_work(reg, f"chunked {i}", image_fingerprints(png(10 + i))) for i in range(3)]
    real = store.Store.iter_fingerprinted

    def cut_after_one(self: store.Store, start: int, stop: int, chunk: int = 10_000) -> Any:
        pages = real(self, start, stop, chunk=1)
        yield next(pages)
        raise self.database_errors[1]("the connection is lost")

    monkeypatch.setattr(store.Store, "iter_fingerprinted", cut_after_one)
    size = reg.sequencer.state.size
    with pytest.raises(reg.store.database_errors):
        li.catch_up(reg.store, size)
    assert li.size() == 1 and li._through == seqs[0] + 1
    monkeypatch.undo()
    li.catch_up(reg.store, size)
    assert li.size() == 3 and li._through == size
