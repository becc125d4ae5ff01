"""SQLite's content-hash indexes as sorted runs (D142): every read by content hash answers as
the entries themselves do, whatever the runs' merges have reached, across restarts cut in the
middle of a merge, and through revision 0016's upgrade and downgrade."""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, create_engine

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import note, runs
from copyledger.ledger import store as store_mod
from copyledger.ledger.audit import audit
from copyledger.ledger.errors import AlreadyRegistered, Conflict
from copyledger.ledger.sequencer import Pending, Sequencer
from copyledger.ledger.store import Store
from copyledger.notary.signer import FileSigner, sign_note
from tests.helpers import downgrade, sha, wait_for

POOL = 6  # content hashes: few, so that entries share them
WHO = ("alice", "bob", "carol")


def key(h: int) -> str:
    """The h-th content hash: the least and the greatest of all among them (where a bound
    made of bytes, or a byte's order, would show), then others."""
    return {0: "00" * 32, 1: "ff" * 32}.get(h) or sha(h)


def _pending(h: int, who: str, kind: str, once: bool) -> Pending:
    now = entry_mod.utc_now()
    if kind == "work":
        e = entry_mod.build_work(registrant=who, received_at=now, sha256=key(h), title=f"w{h}",
                                 creators=["A"], work_type="text")
    else:
        e = entry_mod.build_evidence(registrant=who, received_at=now, sha256=key(h),
                                     source_url=None, captured_at=now, capture_method="upload",
                                     description="d")
    return Pending(entry_mod.canonical_bytes(e), kind, key(h), who, once=once and kind == "work",
                   received_at=now)


def _model(store: Store) -> list[tuple[Any, ...]]:
    """Every entry, read by seq (no content-hash index): what each lookup must agree with."""
    return [t for chunk in store.iter_entry_tuples() for t in chunk]


def _check(store: Store) -> None:
    rows = _model(store)
    for h in range(POOL + 1):  # (one hash never registered)
        k = key(h)
        mine = [r for r in rows if r[4] == k]
        for kind in (None, "work", "evidence"):
            want = [r[0] for r in mine if kind is None or r[3] == kind]
            for limit in (1, 2, 1000):
                got: list[int] = []
                after = -1
                while True:  # keyset pages, as the search and the explorer page
                    page = store.search_sha256(k, limit, kind=kind, after=after)
                    assert len(page) <= limit
                    got += [r.seq for r in page]
                    if len(page) < limit:
                        break
                    after = page[-1].seq
                assert got == want, (k, kind, limit)
        works = [r[0] for r in mine if r[3] == "work"]
        assert store.first_work(k) == (min(works) if works else None)
        for r in mine[:3]:
            assert store.holds_leaf(k, r[1])
        assert not store.holds_leaf(k, b"\0" * 32)
    for who in WHO:
        want_reg: dict[str, int] = {}
        for r in rows:
            if r[5] == who and r[3] == "work":
                want_reg.setdefault(r[4], r[0])
        assert store.registered(who, [key(h) for h in range(POOL + 1)]) == want_reg
    for page_size in (1, 3, 1000):
        seen: list[str] = []
        after = None
        while True:
            page, after = store.content_hashes(after, page_size)
            if not page:
                break
            seen += page
        assert seen == sorted(r[4] for r in rows), page_size


def _listed_once(path: Path) -> None:
    """Each entry's key is in exactly one listed run of each table."""
    con = sqlite3.connect(path)
    try:
        n = con.execute("SELECT count(*) FROM entries").fetchone()[0]
        for table in runs.KEYS:
            got = con.execute(f"SELECT count(*), count(DISTINCT seq) FROM {table} "
                              f"WHERE run IN ({runs.LIVE})").fetchone()
            assert got == (n, n), table
    finally:
        con.close()


blocks_st = st.lists(
    st.lists(st.tuples(st.integers(0, POOL - 1), st.sampled_from(WHO),
                       st.sampled_from(["work", "work", "evidence"]), st.booleans()),
             min_size=1, max_size=7),
    min_size=1, max_size=14)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=blocks_st, restarts=st.sets(st.integers(0, 13), max_size=3),
       step_rows=st.integers(1, 4))
def test_lookups_by_content_hash_agree_with_the_entries_whatever_the_merges_reached(
        tmp_path_factory: pytest.TempPathFactory, blocks: list[list[tuple[int, str, str, bool]]],
        restarts: set[int], step_rows: int) -> None:
    path = tmp_path_factory.mktemp("runs") / "l.db"
    signer = FileSigner.generate("test.example/log", path.parent / "k.pem")
    store = Store.open(f"sqlite:///{path}")
    store.runs = runs.Runs(fanout=2, step_rows=step_rows)  # merges of a few rows, in steps
    seq = Sequencer(store, lambda t, _c: sign_note(t, [signer]), "test.example/log",  # type: ignore[arg-type]
                    linger=0.0)
    seq.start()
    try:
        for i, block in enumerate(blocks):
            for item, f in zip(block, seq.submit_many([_pending(*item) for item in block]),
                               strict=True):
                try:
                    f.result(timeout=60)
                except AlreadyRegistered as e:  # D36, read through the runs
                    h, who, _kind, _once = item
                    assert e.seq == min(r[0] for r in _model(store)
                                        if r[4] == key(h) and r[5] == who and r[3] == "work")
            _check(store)  # with a merge or a deletion part done
            if i in restarts:  # a process that stopped mid-merge: its run is garbage now
                store.runs = runs.Runs(fanout=2, step_rows=step_rows)
    finally:
        seq.stop()
    store.acquire_sequencer_lock()  # (only the lock's holder merges)
    while store.upkeep():
        pass
    _check(store)
    _listed_once(path)
    con = sqlite3.connect(path)
    levels = [lv for lv, in con.execute("SELECT level FROM content_runs")]
    stored = {r for t in runs.KEYS for r, in con.execute(f"SELECT DISTINCT run FROM {t}")}
    listed = {r for r, in con.execute(runs.LIVE)}
    con.close()
    assert stored == listed  # no garbage left
    assert all(levels.count(lv) < 2 for lv in set(levels))  # every due merge done
    store.close()


def test_revision_0016_moves_an_existing_logs_keys_into_one_run_and_back(tmp_path: Path
                                                                          ) -> None:
    path = tmp_path / "l.db"
    signer = FileSigner.generate("test.example/log", tmp_path / "k.pem")
    store = Store.open(f"sqlite:///{path}")
    seq = Sequencer(store, lambda t, _c: sign_note(t, [signer]), "test.example/log")  # type: ignore[arg-type]
    seq.start()
    for f in seq.submit_many([_pending(h % POOL, WHO[h % 3], ("work", "evidence")[h % 2], False)
                              for h in range(20)]):
        f.result(timeout=60)
    seq.stop()
    store.close()
    engine = create_engine(f"sqlite:///{path}")
    try:
        downgrade(engine, "0015")
    finally:
        engine.dispose()
    con = sqlite3.connect(path)
    tables = {r for r, in con.execute("SELECT name FROM sqlite_master")}
    assert {"ix_entries_sha256", "ix_entries_registrant_sha256"} <= tables
    assert not tables & {"content_runs", *runs.KEYS}
    con.close()
    old = Store(Store.open(f"sqlite:///{path}", migrate_schema=False).engine)
    assert not old.has_runs
    _check(old)  # the B-tree indexes answer as before
    old.close()
    store = Store.open(f"sqlite:///{path}")  # upgrades to 0016
    assert store.has_runs
    con = sqlite3.connect(path)
    tables = {r for r, in con.execute("SELECT name FROM sqlite_master")}
    assert not {"ix_entries_sha256", "ix_entries_registrant_sha256"} & tables
    assert con.execute("SELECT run, level FROM content_runs").fetchall() == [(0, runs.TOP_LEVEL)]
    con.close()
    _listed_once(path)
    _check(store)
    store.close()


def _one_row_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waits: tuple[float, float]
                   ) -> tuple[Path, Store, FileSigner]:
    """A new log whose runs merge in pairs in the least steps (one row a step deleted, at most
    `runs.MIN_SHARE` a run copied), a failed step's next after `waits` (least, most): its
    path, store and signer."""
    monkeypatch.setattr(store_mod, "UPKEEP_WAIT_S", waits)
    path = tmp_path / "l.db"
    signer = FileSigner.generate("test.example/log", tmp_path / "k.pem")
    store = Store.open(f"sqlite:///{path}")
    store.runs = runs.Runs(fanout=2, step_rows=1)
    return path, store, signer


def _eight_works(store: Store, signer: FileSigner) -> Sequencer:
    """A sequencer on `store` (no linger), started, once eight works are sealed one by one."""
    seq = Sequencer(store, lambda t, _c: sign_note(t, [signer]), "test.example/log",
                    linger=0.0)
    seq.start()
    for h in range(8):
        seq.submit(_pending(h % POOL, "alice", "work", False)).result(timeout=60)
    return seq


def test_the_upkeep_never_stops_the_sequencer(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that fails is logged and forgotten, and the next tried after a wait that doubles;
    the blocks go on, and the later steps merge, while the sequencer is idle too."""
    path, store, signer = _one_row_steps(tmp_path, monkeypatch, (0.2, 0.5))
    failing = {"left": 3}
    real = store.runs.step
    synced: set[int] = set()
    failed_at: list[float] = []

    def step(cur: Any) -> bool:
        synced.add(cur.execute("PRAGMA synchronous").fetchone()[0])
        if failing["left"]:
            failing["left"] -= 1
            failed_at.append(time.monotonic())
            raise sqlite3.OperationalError("disk I/O error")
        return real(cur)

    store.runs.step = step  # type: ignore[method-assign]
    seq = _eight_works(store, signer)
    # Idle now: the sequencer steps on its own once each wait is over, until nothing is due.
    wait_for(lambda: failing["left"] == 0 and not store.runs.due(), "the idle upkeep",
             timeout=30)
    seq.stop()
    gaps = [b - a for a, b in itertools.pairwise(failed_at)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # 0.2 s, then doubled (0.5 at most)
    assert caplog.text.count("upkeep failed") == 3
    _check(store)
    _listed_once(path)
    assert synced == {1}  # a step commits unsynced (NORMAL) ...
    with _every_pooled(store) as conns:  # ... and every connection it used is back in the
        # pool synced (FULL), failed or not
        assert {c.exec_driver_sql("PRAGMA synchronous").scalar() for c in conns} == {2}
    store.close()


def test_a_connection_whose_sync_cannot_be_set_back_is_never_pooled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step commits unsynced (NORMAL) and sets FULL back after; if that fails, its connection
    is closed, not pooled: a block committed on it later would not be synced, and could be
    lost with the machine's power after its writers were answered. The blocks and the later
    steps go on."""
    path, store, signer = _one_row_steps(tmp_path, monkeypatch, (0.05, 0.1))
    left = {"n": 2}
    dropped: list[sqlite3.Connection] = []
    driver_cursor = store._driver_cursor

    class Cursor:
        """The driver's cursor, but setting FULL back fails the first two times."""

        def __init__(self, cur: Any) -> None:
            self._cur = cur

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "PRAGMA synchronous=FULL" and left["n"]:
                left["n"] -= 1
                dropped.append(self._cur.connection)
                raise sqlite3.OperationalError("disk I/O error")
            return self._cur.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cur, name)

    monkeypatch.setattr(store, "_driver_cursor", lambda conn: Cursor(driver_cursor(conn)))
    seq = _eight_works(store, signer)
    wait_for(lambda: left["n"] == 0 and not store.runs.due(), "the upkeep, failing then not",
             timeout=30)
    seq.stop()
    assert len(dropped) == 2 and caplog.text.count("upkeep failed") == 2
    for con in dropped:
        with pytest.raises(sqlite3.ProgrammingError):  # closed: dropped from the pool
            con.execute("SELECT 1")
    with _every_pooled(store) as conns:
        assert {c.exec_driver_sql("PRAGMA synchronous").scalar() for c in conns} == {2}
    _check(store)
    _listed_once(path)
    store.close()


@pytest.mark.parametrize("bound", [None, "owed", "runs"])
def test_the_upkeep_waits_for_the_blocks_waiting_while_it_owes_little(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: str | None) -> None:
    """Blocks waiting to be sealed go first: the sequencer takes no step of the runs' upkeep
    between them while it owes at most `UPKEEP_MOST_OWED` rows and level 0 lists at most
    `UPKEEP_MOST_BLOCK_RUNS` runs (D144), and steps when idle; past either bound it steps
    between them too, so it falls behind only so far."""
    # Each bound tried alone: two entries' rows, or three runs of single-entry blocks.
    most_owed = 16 if bound == "owed" else 10**9
    most_runs = 3 if bound == "runs" else 10**9
    monkeypatch.setattr(store_mod, "UPKEEP_MOST_OWED", most_owed)
    monkeypatch.setattr(store_mod, "UPKEEP_MOST_BLOCK_RUNS", most_runs)
    path = tmp_path / "l.db"
    signer = FileSigner.generate("test.example/log", tmp_path / "k.pem")
    store = Store.open(f"sqlite:///{path}")
    store.runs = runs.Runs(fanout=2, step_rows=1)
    seq = Sequencer(store, lambda t, _c: sign_note(t, [signer]), "test.example/log",  # type: ignore[arg-type]
                    linger=0.0, max_batch=1)  # (a block an entry)
    steps: list[tuple[int, int, int]] = []  # (blocks waiting, rows owed, level-0 runs) a step
    real_step, real_append = store._upkeep_step, store.append_block
    held = threading.Event()

    def step() -> int:
        steps.append((seq._queue.qsize(), store._upkeep_debt, store.runs.listed(0)))
        return real_step()

    def append_block(*args: Any, **kwargs: Any) -> None:
        held.wait(60)  # the first block waits until every entry is queued
        real_append(*args, **kwargs)

    seq.start()  # (its first block, the log's start, sealed)
    # Its first idle step (reading the runs' state) done before any is recorded: a step that
    # began idle must not be taken for one between blocks.
    wait_for(lambda: not store.runs.due(), "the first idle step")
    store._upkeep_step = step  # type: ignore[method-assign]
    store.append_block = append_block  # type: ignore[method-assign]
    futures = [seq.submit(_pending(h % POOL, WHO[h % 3], "work", False)) for h in range(12)]
    held.set()
    for f in futures:
        f.result(timeout=60)
    wait_for(lambda: not store.runs.due(), "the idle upkeep")
    seq.stop()
    behind = [step for step in steps if step[0] > 0]
    if bound is None:
        assert behind == []
    else:  # past a bound: a step between blocks, and only then
        assert behind and all(owed > most_owed or listed > most_runs
                              for _, owed, listed in behind), behind
    assert any(waiting == 0 for waiting, _, _ in steps)  # the idle ones
    _check(store)
    _listed_once(path)
    store.close()


@contextlib.contextmanager
def _every_pooled(store: Store) -> Iterator[list[Connection]]:
    """Every connection idle in the store's pool, and a new one: what a step or a check left
    behind in the pool."""
    idle = store.engine.pool.checkedin()  # type: ignore[attr-defined]
    conns = [store.engine.connect() for _ in range(idle + 1)]
    try:
        yield conns
    finally:
        for c in conns:
            c.close()


def test_every_lookup_seeks_the_runs_and_scans_only_their_list(tmp_path: Path) -> None:
    """Each read by content hash costs a seek a listed run (and the entries it finds), never a
    scan of the runs or of the entries: `SCAN` names only `content_runs`, a row a run."""
    Store.open(f"sqlite:///{tmp_path / 'l.db'}").close()
    con = sqlite3.connect(tmp_path / "l.db")
    probe = b"\1" * 32
    for sql, args in ((runs.search_sql(None), (probe, -1, 10)),
                      (runs.search_sql("work"), (probe, -1, 10, "work")),
                      (runs.FIRST_WORK_SQL, (probe,)), (runs.HOLDS_LEAF_SQL, (probe, b"x")),
                      (runs.registered_sql(3), ("alice", probe, probe, probe)),
                      (runs.SCAN_SQL, (probe, 3, 5))):
        plan = [str(r[3]) for r in con.execute("EXPLAIN QUERY PLAN " + sql, args)]
        scans = [p for p in plan if p.startswith("SCAN")]
        assert all(p in ("SCAN c", "SCAN content_runs") for p in scans), (sql, plan)
        assert any("USING PRIMARY KEY (run=?" in p for p in plan), (sql, plan)
        if sql in (runs.search_sql(None), runs.search_sql("work")):  # a run's page, bounded
            assert "SEARCH r USING PRIMARY KEY (run=? AND sha256=? AND seq>? AND seq<?)" \
                in plan, plan
        if sql == runs.SCAN_SQL:  # a page's rows are bounded in the index, not filtered
            assert "SEARCH r USING PRIMARY KEY (run=? AND (sha256,seq)>(?,?) AND sha256<?)" \
                in plan, plan
    # The full audit's check reads the listed runs once, sorts their rows by seq, and then
    # seeks each entry by seq, in that order (D143): no scan of the entries.
    for table in runs.KEYS:
        plan = [str(r[3]) for r in con.execute("EXPLAIN QUERY PLAN " + runs.totals_sql(table))]
        assert [p for p in plan if p.startswith("SCAN")] == ["SCAN c", "SCAN (subquery-4)",
                                                              "SCAN r"], plan
        assert "SEARCH e USING INDEX sqlite_autoindex_entries_1 (seq=?) LEFT-JOIN" in plan, plan
    con.close()


def _log(path: Path, n: int) -> tuple[Store, str]:
    """The log at `path` with `n` more entries, its runs merged as they came (fanout 2, steps
    of 3 rows); its verifier key (made at the first call, then loaded)."""
    pem = path.parent / "k.pem"
    signer = (FileSigner.load("test.example/log", pem) if pem.exists()
              else FileSigner.generate("test.example/log", pem))
    store = Store.open(f"sqlite:///{path}")
    store.runs = runs.Runs(fanout=2, step_rows=3)
    seq = Sequencer(store, lambda t, _c: sign_note(t, [signer]), "test.example/log",  # type: ignore[arg-type]
                    linger=0.0)
    seq.start()
    base = sum(1 for chunk in store.iter_entry_tuples() for _ in chunk)
    for h in range(base, base + n):
        seq.submit(_pending(h % POOL, WHO[h % 3], ("work", "evidence")[h % 2], False)
                   ).result(timeout=60)
    seq.stop()
    store.acquire_sequencer_lock()  # (only the lock's holder merges)
    while store.upkeep():
        pass
    store.release_sequencer_lock()
    return store, note.format_verifier_key(signer.name, signer.public_key)


def _tamper(path: Path, sql: str) -> None:
    con = sqlite3.connect(path)
    con.execute(sql)
    con.commit()
    assert con.total_changes > 0, sql  # (a tampering that changed nothing would prove nothing)
    con.close()


@pytest.mark.parametrize("tamper", [
    "DELETE FROM runs_by_hash WHERE seq = 3",
    "DELETE FROM runs_by_registrant WHERE seq = 9",
    "DELETE FROM content_runs WHERE run = (SELECT min(run) FROM content_runs)",
    # listed twice
    "INSERT INTO runs_by_hash SELECT (SELECT min(run) FROM content_runs WHERE run NOT IN "
    "(SELECT run FROM runs_by_hash WHERE seq = 4)), sha256, seq FROM entries WHERE seq = 4",
    # listed under another entry's key, and under another registrant
    "UPDATE runs_by_hash SET sha256 = (SELECT sha256 FROM entries WHERE seq = 2) WHERE seq = 5",
    "UPDATE runs_by_registrant SET registrant = 'mallory' WHERE seq = 6",
    # one entry listed twice, under its own key, and another not at all: as many rows as
    # entries, each matching its entry (only the seqs' places in order tell)
    "UPDATE runs_by_hash SET sha256 = (SELECT sha256 FROM entries WHERE seq = 2), seq = 2 "
    "WHERE seq = 10 AND run != (SELECT run FROM runs_by_hash WHERE seq = 2)",
])
def test_the_audit_finds_an_entry_the_runs_do_not_list_once_under_its_key(
        tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "l.db"
    store, vkey = _log(path, 12)
    first = audit(store, vkey)
    assert first.ok, first
    assert "the content-hash index lists every entry once, under its own key" in first.checked
    _tamper(path, tamper)
    rep = audit(store, vkey)
    assert not rep.ok and "content-hash index" in str(rep.problem), rep
    named = {"DELETE FROM runs_by_hash WHERE seq = 3": "entry 3 is not listed",
             "seq = 2 WHERE seq = 10": "entry 2 is listed more than once"}
    for case, problem in named.items():  # where the seqs in order depart from the entries
        if case in tamper:
            assert problem in str(rep.problem), rep
    store.close()


def test_the_whole_check_beside_the_audit_covers_the_entries_past_its_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check of every listed row runs beside the other checks (D143), from a snapshot
    taken when the audit starts: the entries sealed after it are checked one by one."""
    path = tmp_path / "l.db"
    store, vkey = _log(path, 12)
    _tamper(path, "DELETE FROM runs_by_hash WHERE seq = 10")
    assert store.runs_whole_fault()[0] is not None  # (a whole check that sees entry 10 finds it)

    def as_if_it_began_at_eight(stop: threading.Event | None = None) -> tuple[str | None, int]:
        assert stop is not None  # (started beside the audit, with a way to stop it)
        return None, 8  # (its snapshot held entries 0-7, all listed once)

    monkeypatch.setattr(store, "runs_whole_fault", as_if_it_began_at_eight)
    rep = audit(store, vkey)
    assert not rep.ok and "entry 10's content hash is not listed once" in str(rep.problem), rep
    store.close()


def test_the_whole_check_stops_when_asked(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An audit that stops first (another fault, an interrupt) interrupts the check beside
    it rather than wait for tens of seconds at 10 M entries."""
    store, _ = _log(tmp_path / "l.db", 12)
    monkeypatch.setattr(store_mod, "RUNS_CHECK_STEPS", 1)
    stop = threading.Event()
    assert store.runs_whole_fault(stop) == (None, 12)
    stop.set()
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        store.runs_whole_fault(stop)
    # Every pooled connection is back without the stop's handler (the stop is still set).
    with _every_pooled(store) as conns:
        for c in conns:
            assert c.exec_driver_sql("SELECT count(*) FROM runs_by_hash").scalar() == 12
    store.close()


def test_an_audit_that_fails_first_stops_the_check_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another check's fault is the one reported, and the check of the runs is asked to stop
    rather than waited for to its end."""
    store, _ = _log(tmp_path / "l.db", 4)
    asked: list[bool] = []

    def long_check(stop: threading.Event | None = None) -> tuple[str | None, int]:
        assert stop is not None
        asked.append(stop.wait(timeout=20))
        return None, 4

    monkeypatch.setattr(store, "runs_whole_fault", long_check)
    other = FileSigner.generate("test.example/log", tmp_path / "other.pem")  # not the log's key
    rep = audit(store, note.format_verifier_key(other.name, other.public_key))
    assert not rep.ok and "content-hash" not in str(rep.problem), rep
    assert asked == [True]
    store.close()


def test_an_in_memory_log_is_audited_whole(tmp_path: Path) -> None:
    """In memory, a second connection (another thread's) opens another, empty database: the
    check of the runs is then not started beside the others but run after them, here."""
    signer = FileSigner.generate("test.example/log", tmp_path / "k.pem")
    store = Store.open("sqlite://")
    assert store.has_runs
    rep = audit(store, note.format_verifier_key(signer.name, signer.public_key))
    assert rep.ok, rep
    assert "the content-hash index lists every entry once, under its own key" in rep.checked
    store.close()


def test_a_resumed_audit_checks_the_new_entries_runs(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store, vkey = _log(path, 8)
    first = audit(store, vkey)
    assert first.ok and first.state is not None
    store.close()
    store, _ = _log(path, 5)
    again = audit(store, vkey, since=first.state)
    assert again.ok and again.resumed_from == 8, again
    assert ("the content-hash index lists each of the 5 new entries once, under its own key"
            in again.checked)
    _tamper(path, "DELETE FROM runs_by_hash WHERE seq = 10")  # a new entry, and one too few
    rep = audit(store, vkey, since=first.state)
    assert not rep.ok and "content-hash index" in str(rep.problem), rep
    store.close()


def _add(cur: Any, run: int, keys: list[tuple[bytes, int, str]]) -> None:
    """`keys` (sha256, seq, registrant) as the listed level-0 run `run`, with no entries: a
    run as a block's transaction writes it (`runs.add`), for the upkeep alone to work on."""
    cur.execute("INSERT INTO content_runs (run, level, keys) VALUES (?, 0, ?)", (run, len(keys)))
    cur.executemany("INSERT INTO runs_by_hash (run, sha256, seq) VALUES (?, ?, ?)",
                    sorted((run, h, s) for h, s, _ in keys))
    cur.executemany("INSERT INTO runs_by_registrant (run, registrant, sha256, seq) "
                    "VALUES (?, ?, ?, ?)", sorted((run, r, h, s) for h, s, r in keys))


def _runs_db(tmp_path: Path, sizes: dict[int, tuple[int, str]], *,
             levels: dict[int, int] | None = None, narrow: int | None = None
             ) -> sqlite3.Connection:
    """A database whose listed runs are `sizes`: run -> (keys, registrant), at level 0 unless
    `levels` says, the keys spread over the whole key space (those of run `narrow` over a
    65,536th of it)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "r.db"
    Store.open(f"sqlite:///{path}").close()
    con = sqlite3.connect(path, isolation_level=None)
    seq = 0
    for run, (n, who) in sizes.items():
        keys = []
        for _ in range(n):
            k = bytes.fromhex(sha(f"k{seq}"))
            keys.append((b"\x80\x00" + k[2:] if run == narrow else k, seq, who))
            seq += 1
        con.execute("BEGIN")
        _add(con.cursor(), run, keys)
        con.execute("UPDATE content_runs SET level = ? WHERE run = ?",
                    ((levels or {}).get(run, 0), run))
        con.execute("COMMIT")
    return con


def _copied_a_step(upkeep: runs.Runs, cur: Any) -> list[int]:
    """Steps until none is left (each statement its own transaction: committed at once), and
    the rows each copied into both tables."""
    steps = []
    while upkeep.step(cur):
        before = upkeep.merged_rows
        upkeep.committed()
        steps.append(upkeep.merged_rows - before)
    return steps


def test_a_step_copies_at_most_its_budget_whatever_the_runs_sizes(tmp_path: Path) -> None:
    """A merge step's end is the least of every merged run's share of the budget (each in
    proportion to its keys), so neither a small run (or one whose registrant sorts last) nor
    one whose keys crowd into a narrow range lets the others pour in at once, and a step of
    unequal runs still copies about its budget."""
    sizes = {0: (10, "zed"), 1: (1000, "amy"), 2: (3, "zed"), 3: (1000, "amy"),
             4: (2000, "bob"), 5: (1000, "amy"), 6: (7, "zed"), 7: (1000, "amy")}
    total = sum(n for n, _ in sizes.values())
    for narrow in (None, 5, 1):
        con = _runs_db(tmp_path / f"n{narrow}", sizes, narrow=narrow)
        upkeep = runs.Runs(fanout=8, step_rows=800)
        steps = _copied_a_step(upkeep, con.cursor())
        # two tables, and the rows of the three runs with fewer keys than MIN_SHARE in all,
        # which never bound a step
        assert steps and max(steps) <= 2 * (800 + 20), (narrow, steps)
        if narrow is None:  # keys spread evenly: about the budget a step
            assert len([s for s in steps if s]) <= 2 * total // 800 + 3, steps
        assert len(list(con.execute(runs.LIVE))) == 1
        for table in runs.KEYS:
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == total
        con.close()


def test_a_merge_left_a_sliver_of_a_step_waits_for_the_next(tmp_path: Path) -> None:
    """A small merge that ends a few rows short of the step's budget leaves a larger merge
    too little for any of its runs' shares to bound a copy: that merge waits for the next
    step instead of copying all it has left at once (D157)."""
    # 20 rows left: each large run's share 10, under MIN_SHARE (16) though not under 16 x 1
    sizes = {0: (390, "amy"), 1: (390, "amy"), 2: (5000, "amy"), 3: (5000, "amy")}
    con = _runs_db(tmp_path, sizes, levels={2: 1, 3: 1})
    upkeep = runs.Runs(fanout=2, step_rows=800)
    steps = _copied_a_step(upkeep, con.cursor())
    assert steps[0] == 2 * 780, steps  # (the small merge, whole; the large one not begun)
    assert max(steps) <= 2 * 800, steps  # (after the first: two runs' shares of 400, two tables)
    assert sum(steps) == 2 * (780 + 10_000)
    levels = sorted(lv for lv, in con.execute("SELECT level FROM content_runs"))
    assert levels == [1, 2], levels  # (the small merge's run, then the large one's)
    for table in runs.KEYS:
        assert con.execute(f"SELECT count(*), count(DISTINCT seq) FROM {table}"
                           ).fetchone() == (780 + 10_000, 780 + 10_000)
    con.close()


def test_no_run_with_fewer_keys_than_a_steps_share_is_sought(tmp_path: Path) -> None:
    """A run with fewer keys in all than its share of a step has no share-th key to end the
    step at, so it is not sought: a level-0 merge of small blocks' runs, which ends in one
    step, and the deletion of those runs seek nothing; beside a large run, only the large
    run is sought (its copy and its deletion each end at a sought key)."""
    for name, sizes, sought in (
            ("small", {r: (5, "amy") for r in range(8)}, set()),
            ("mixed", {0: (1000, "amy"), **{r: (5, "zed") for r in range(1, 8)}}, {0})):
        con = _runs_db(tmp_path / name, sizes)
        seeks: list[str] = []
        con.set_trace_callback(functools.partial(_offsets, seeks))
        upkeep, cur, deleted = runs.Runs(fanout=8, step_rows=800), con.cursor(), [0]
        while upkeep.step(cur):
            upkeep.committed()
            deleted.append(upkeep.deleted_rows)
        total = sum(n for n, _ in sizes.values())
        assert (upkeep.merged_rows, deleted[-1]) == (2 * total, 2 * total), (name, deleted)
        # (each step within its budget, whether its garbage run was sought or known to fit)
        assert all(b - a <= 2 * 800 for a, b in itertools.pairwise(deleted)), deleted
        assert {int(sql.split("WHERE run = ")[1].split()[0]) for sql in seeks} == sought, seeks
        for table in runs.KEYS:  # (the merged run alone is left)
            assert con.execute(f"SELECT count(*), count(DISTINCT run) FROM {table}"
                               ).fetchone() == (total, 1)
        con.close()


def _offsets(into: list[str], sql: str) -> None:
    if " OFFSET " in sql:
        into.append(sql)


def _clustered(parts: list[tuple[int, int]]) -> sqlite3.Connection:
    """An in-memory database of listed runs 0, 1, ..., run i holding parts[i] = (a, z): `a`
    keys of registrant "acme" and `z` of "zeta", so that in `runs_by_registrant` each
    registrant's keys lie together, as one client's catalogue does."""
    con = sqlite3.connect(":memory:", isolation_level=None)
    for ddl in runs.create_sql():
        con.execute(ddl)
    seq = 0
    for run, (a, z) in enumerate(parts):
        keys = []
        for who, n in (("acme", a), ("zeta", z)):
            for _ in range(n):
                keys.append((bytes.fromhex(sha(f"c{seq}")), seq, who))
                seq += 1
        _add(con.cursor(), run, keys)
    return con


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=2,
                      max_size=4),
       budget=st.integers(1, 300), skip=st.floats(0, 1))
@example(parts=[(300, 10), (0, 100)], budget=30, skip=0.72)  # (only the first run bounds)
@example(parts=[(200, 0), (0, 200)], budget=20, skip=0.0)  # (every share under MIN_SHARE)
def test_a_copy_takes_the_next_keys_and_at_most_each_runs_share(
        parts: list[tuple[int, int]], budget: int, skip: float) -> None:
    """Whatever the runs' sizes, however their keys cluster, and wherever the merge stands,
    a step's copy takes the next keys in order and at most each run's share (its part of the
    budget, at least MIN_SHARE) from each run: a small run cannot pour all it has into a
    step whose larger runs are near their end, nor can every run's share be too small to
    bound it (D157)."""
    con = _clustered(parts)
    cur = con.cursor()
    sizes = [a + z for a, z in parts]
    upkeep = runs.Runs(fanout=len(parts), step_rows=300)
    m = runs._Merge(olds=list(range(len(parts))), new=99, level=1, sizes=sizes)
    upkeep._merges, upkeep._levels = {0: m}, {0: len(parts)}  # (as `_start` leaves them)
    shares = [max(runs.MIN_SHARE, budget * n // max(1, sum(sizes))) for n in sizes]
    before: dict[str, list[tuple[Any, ...]]] = {}
    for table, key in runs.KEYS.items():
        cols = ", ".join(key)
        rows = [tuple(r) for r in con.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}")]
        start = int(skip * len(rows))
        if start:
            m.done[table] = rows[start - 1]
        before[table] = rows[start:]
    upkeep._copy(cur, m, budget)
    for table, key in runs.KEYS.items():
        cols = ", ".join(key)
        got = [tuple(r) for r in con.execute(
            f"SELECT {cols} FROM {table} WHERE run = 99 ORDER BY {cols}")]
        assert got == before[table][:len(got)], table  # the next keys, none skipped
        gave = []
        for run, share in enumerate(shares):
            mine = con.execute(f"SELECT count(*) FROM {table} t WHERE run = 99 AND EXISTS "
                               f"(SELECT 1 FROM {table} o WHERE o.run = ? AND "
                               + " AND ".join(f"o.{c} = t.{c}" for c in key) + ")",
                               (run,)).fetchone()[0]
            assert mine <= share, (table, run, mine, share)
            gave.append(mine)
        if table in m.finished:
            assert len(got) == len(before[table])  # (all that was left)
        else:
            assert got and got[-1] == m.done[table]  # (where the next step goes on)
            # ... and the run that bounds it gave its whole share: no step stops short
            assert any(g == s for g, s in zip(gave, shares, strict=True)), (gave, shares)
    con.close()


def test_the_upkeeps_row_counts_keep_committed_steps_and_drop_a_failed_one(
        tmp_path: Path) -> None:
    """`merged_rows` and `deleted_rows` (/metrics, D156) count only what committed, and only
    grow: a step's rows count once its transaction committed (`committed`), also through a
    later `forget` (the store calls it when it takes the lock again); the rows of a step
    rolled back, or that raised midway, are dropped with it by `forget`."""
    con = _runs_db(tmp_path, {0: (100, "amy"), 1: (100, "bob")})
    upkeep = runs.Runs(fanout=2, step_rows=60)
    cur = con.cursor()
    con.execute("BEGIN")
    assert upkeep.step(cur)
    assert upkeep.merged_rows == 0  # (not committed yet)
    con.execute("COMMIT")
    upkeep.committed()
    first = upkeep.merged_rows
    assert 0 < first <= 2 * (60 + 20), first  # (two tables, a run's share at most over)
    upkeep.forget()  # (as when the lock is taken again)
    assert upkeep.merged_rows == first
    con.execute("BEGIN")
    upkeep.step(cur)  # (reads the state again: the merge starts over, the old run garbage)
    con.execute("ROLLBACK")
    upkeep.forget()  # (as `Store._upkeep_step` does when a step fails)
    upkeep.committed()  # (nothing left pending to count)
    assert (upkeep.merged_rows, upkeep.deleted_rows) == (first, 0)
    # A step that raises after it copied (its merge's switch refused), then forgotten.
    real_switch = upkeep._switch

    def refuse(*_: Any) -> None:
        raise Conflict("(a test's refusal)")

    upkeep._switch = refuse  # type: ignore[method-assign]
    con.execute("BEGIN")
    with pytest.raises(Conflict):
        while upkeep.step(cur):
            pass
    con.execute("ROLLBACK")
    upkeep.forget()
    upkeep.committed()
    assert (upkeep.merged_rows, upkeep.deleted_rows) == (first, 0)
    upkeep._switch = real_switch  # type: ignore[method-assign]
    while True:  # the rest, each step committed: every row of both runs copied once more
        con.execute("BEGIN")
        counted = (upkeep.merged_rows, upkeep.deleted_rows)
        did = upkeep.step(cur)
        assert (upkeep.merged_rows, upkeep.deleted_rows) == counted  # (until committed)
        con.execute("COMMIT")
        upkeep.committed()
        if not did:
            break
    assert upkeep.merged_rows - first == 2 * 200  # (the merge started over: all of it)
    # The first merge's rows were garbage once it started over, and the old runs once merged.
    assert upkeep.deleted_rows == first + 2 * 200, (upkeep.deleted_rows, first)
    con.close()


def test_small_merges_go_on_while_a_large_one_is_under_way(tmp_path: Path) -> None:
    """Blocks of 10 keys, steps of 200 rows (the ratio of 1,000-entry blocks to 20,000-row
    steps), a step after each block: the runs listed stay about `fanout` - 1 a level, however
    large the merge under way, because merges advance from the lowest level up."""
    con = _runs_db(tmp_path, {})
    upkeep = runs.Runs(fanout=4, step_rows=200)
    cur = con.cursor()
    most = 0
    for block in range(1200):
        keys = [(bytes.fromhex(sha(f"b{block}.{i}")), block * 10 + i, "amy") for i in range(10)]
        con.execute("BEGIN")
        _add(cur, upkeep.next_run(cur), keys)
        con.execute("COMMIT")
        upkeep.added()
        con.execute("BEGIN")
        upkeep.step(cur)
        con.execute("COMMIT")
        levels = [lv for lv, in con.execute("SELECT level FROM content_runs")]
        most = max(most, max(levels.count(lv) for lv in set(levels)))
    assert most <= 4 + 1, most  # a level's runs: at most one more than the fanout
    assert max(levels) >= 3  # (merges of 640 keys and more happened meanwhile)
    con.close()


@pytest.mark.parametrize("most_owed", [0, 4 * 800 * store_mod.UPKEEP_ROWS_AN_ENTRY])
def test_merges_keep_up_with_blocks_of_any_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                most_owed: int) -> None:
    """Blocks of 800 entries against steps of 400 rows: the steps a block's entries owe (not one
    step a block) keep every level at about the fanout while blocks come back to back, and
    behind it by what the writer may owe while blocks wait (D144): here four blocks' rows."""
    monkeypatch.setattr(store_mod, "UPKEEP_MOST_OWED", most_owed)
    path = tmp_path / "l.db"
    signer = FileSigner.generate("test.example/log", tmp_path / "k.pem")
    store = Store.open(f"sqlite:///{path}")
    store.runs = runs.Runs(fanout=4, step_rows=400)
    worst: list[int] = []
    real = store.append_block

    def append(*args: Any, **kw: Any) -> None:
        real(*args, **kw)
        con = sqlite3.connect(path)
        levels = [lv for lv, in con.execute("SELECT level FROM content_runs")]
        con.close()
        if levels:  # (the genesis block has no entry)
            worst.append(max(levels.count(lv) for lv in set(levels)))

    store.append_block = append  # type: ignore[method-assign]
    seq = Sequencer(store, lambda t, _c: sign_note(t, [signer]), "test.example/log",  # type: ignore[arg-type]
                    linger=0.0, max_batch=800)
    blocks = [[_pending(i % POOL, WHO[i % 3], "work", False) for i in range(b, b + 800)]
              for b in range(0, 25_600, 800)]
    seq.start()
    futures = [f for block in blocks for f in seq.submit_many(block)]  # queued at once: no idle
    for f in futures:
        f.result(timeout=120)
    seq.stop()
    behind = most_owed // (800 * store_mod.UPKEEP_ROWS_AN_ENTRY)  # blocks
    assert len(worst) >= 32 and max(worst) <= 4 + 1 + behind, worst
    _check(store)
    store.close()


def _scan_cost(con: sqlite3.Connection, page: int) -> int:
    """SQLite's virtual-machine steps (in thousands) of a whole scan by `runs.SCAN_SQL`."""
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    con.set_progress_handler(tick, 1000)
    mark: tuple[Any, ...] = (b"", -1)
    n = 0
    while rows := con.execute(runs.SCAN_SQL, (*mark, page)).fetchall():
        n += len(rows)
        mark = rows[-1]
    con.set_progress_handler(None, 0)
    return ticks[0]


def test_the_scan_reads_about_each_key_once_whatever_the_runs_levels(tmp_path: Path) -> None:
    """A whole scan costs about one read of each key, also when a tiny run sits at the top level
    (as a log migrated when small keeps one forever): the page's bound comes from the run with
    the most keys."""
    big = {1: (20_000, "amy")}
    alone = _scan_cost(_runs_db(tmp_path / "a", big), 500)
    with_top = _scan_cost(_runs_db(tmp_path / "b", {0: (5, "amy"), **big},
                                   levels={0: runs.TOP_LEVEL, 1: 3}), 500)
    assert with_top < 2 * alone, (with_top, alone)
