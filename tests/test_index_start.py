"""The near-duplicate index's rebuild at start reads only the works that carry fingerprints,
through revision 0009's partial index (D90): nothing at all when no work has any."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, inspect, text

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import store
from copyledger.ledger.schema import ENTRIES_FINGERPRINTED
from copyledger.ledger.sequencer import Pending
from copyledger.matching import LiveIndex, image_fingerprints
from copyledger.service.node import Node
from tests import test_tiles
from tests.conftest import PostgresServer
from tests.helpers import sha
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
    index (on PostgreSQL, with sequential scans off: a table this small is read whole)."""
    seen: list[tuple[str, Any]] = []

    def on_execute(_c: Any, _cur: Any, sql: str, args: Any, *_: Any) -> None:
        seen.append((sql, args))

    fill(reg, 20)
    event.listen(reg.store.engine, "before_cursor_execute", on_execute)
    try:
        LiveIndex().build(reg.store)
    finally:
        event.remove(reg.store.engine, "before_cursor_execute", on_execute)
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
        t = threading.Thread(target=li.build, args=(s,), daemon=True)
        t.start()
        t.join(1.0)
        assert t.is_alive() and not li.ready  # waiting, not given up
        own_pg_server.start()
        t.join(120)
        assert li.ready and li.size() == 0
    finally:
        s.close()
