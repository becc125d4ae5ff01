"""D109: on PostgreSQL the sequencer's lock is a session's advisory lock, and a block commits
only on that session. A session that ends under a running sequencer (a PostgreSQL restart,
`pg_terminate_backend`, an idle-session timeout) is found before the next block: the lock is
taken again if it is free, and if another process took it meanwhile this one writes nothing
(two sequencers of one log would each believe they are the only one)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from copyledger.ledger import store as store_mod
from copyledger.ledger.errors import Conflict, NotFound, Unavailable, Uncertain
from copyledger.ledger.sequencer import LogState, Sequencer
from copyledger.ledger.store import Store
from copyledger.notary.signer import FileSigner
from copyledger.service import handoff
from tests.conftest import PostgresServer
from tests.helpers import CutLink, pg_dsn, terminate_backend, wait_for
from tests.test_sequencer import make, pending

pytestmark = pytest.mark.postgres


@pytest.fixture
def signer(tmp_path: Path) -> FileSigner:
    return FileSigner.generate("test.example/log", tmp_path / "k.pem")


def end_lock_session(store: Store) -> None:
    """End the database session that holds `store`'s lock, as a restart would, and wait until
    the server has let it go."""
    assert store._lock_conn is not None
    pid = store._lock_conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    terminate_backend(store.engine.url, pid)


def started(url: str, signer: FileSigner) -> Sequencer:
    s = make(Store.open(url), signer, linger=0.001)
    s.start()
    return s


@contextmanager
def session_ended(pg_server: PostgresServer, signer: FileSigner, *, end: bool = True
                  ) -> Iterator[tuple[Sequencer, Store]]:
    """A running sequencer that has written one entry and whose lock's session has then
    ended (unless not `end`), and another store on its database (another process)."""
    url = pg_server.new_database()
    s = started(url, signer)
    other = Store.open(url)
    try:
        assert s.submit(pending(1)).result(60).seq == 0
        if end:
            end_lock_session(s.store)
        yield s, other
    finally:
        s.stop()
        s.store.close()
        other.close()


def test_a_lock_whose_session_ended_while_idle_is_taken_again_before_the_next_block(
        pg_server: PostgresServer, signer: FileSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session ends while no block is written; the next block asks it for a round trip
    first (the sequencer has been idle past `LOCK_IDLE_PING_S`), finds it gone, takes the
    lock again on a new session, and is written: the writer never sees the ended session.
    The lock is then held again: no other process can start sequencing the log."""
    monkeypatch.setattr(store_mod, "LOCK_IDLE_PING_S", 0.0, raising=False)
    with session_ended(pg_server, signer) as (s, other):
        assert s.submit(pending(2)).result(60).seq == 1
        with pytest.raises(Conflict):
            other.acquire_sequencer_lock()
        assert [e.seq for e in (other.get_entry(0), other.get_entry(1))] == [0, 1]


def test_a_session_ended_under_load_fails_one_block_and_the_next_takes_the_lock_again(
        pg_server: PostgresServer, signer: FileSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    """No round trip is asked of a busy sequencer's session: a session that ends between two
    close blocks is found by the block written on it, which fails (its fate unknown to the
    sequencer, so its writer is told so); the next block takes the lock again and is
    written after it."""
    monkeypatch.setattr(store_mod, "LOCK_IDLE_PING_S", 3600.0, raising=False)
    url = pg_server.new_database()
    s = started(url, signer)
    try:
        assert s.submit(pending(1)).result(60).seq == 0
        end_lock_session(s.store)
        with pytest.raises(Uncertain):
            s.submit(pending(2)).result(60)
        assert s.submit(pending(3)).result(60).seq == 1
        assert s.state.size == 2
    finally:
        s.stop()
        s.store.close()


def test_a_block_stuck_on_a_lock_session_the_server_ended_is_abandoned(
        pg_server: PostgresServer, signer: FileSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    """D126: the sequencer's host is cut off from the database in the middle of a block (the
    relay drops what either side sends, and tells neither), the server ends the lock's
    session, as its keepalive does, once the link is back. By TCP alone the block's
    statement would wait for its next retransmission, up to two minutes; the relay sends
    none, so without the lock's watch the writer would wait for ever. The watch asks the
    server on a new connection: while the session still holds the lock (a slow statement)
    it leaves the statement alone; once the session is gone it abandons it: the writer is
    told its entry may or may not be recorded, and the next block takes the free lock again
    and is written after the first."""
    monkeypatch.setattr(store_mod, "LOCK_STUCK_S", 0.5)
    monkeypatch.setattr(store_mod, "LOCK_WATCH_S", 0.05)
    monkeypatch.setattr(store_mod, "LOCK_IDLE_PING_S", 3600.0)
    monkeypatch.setattr(store_mod, "_LOCK_LIVES_BACKOFF_S", 0.2)
    answers: list[bool | None] = []
    asked = Store._holds_lock

    def holds_lock(self: Store, session: tuple[int, Any]) -> bool | None:
        answers.append(asked(self, session))
        return answers[-1]

    monkeypatch.setattr(Store, "_holds_lock", holds_lock)
    url = pg_server.new_database()
    link = CutLink(pg_server.port)
    s = started(url.replace(f":{pg_server.port}/", f":{link.port}/"), signer)
    first, then = pending(1), pending(3)
    try:
        assert s.submit(first).result(60).seq == 0
        assert s.store._lock_conn is not None
        pid = s.store._lock_conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        # (the content filter's scan done: a read in flight at the cut would wait as long)
        wait_for(lambda: s.seen is None or s.seen.ready, "the content filter", 60)
        link.cut()
        stuck = s.submit(pending(2))
        wait_for(lambda: link.dropped > 0, "the block to be sent into the cut link", 60)
        wait_for(lambda: answers.count(True) >= 2, "the watch to ask about the session", 60)
        assert not stuck.done()  # the session holds the lock: a slow statement, left alone
        link.mend()  # (what the sequencer's other connections send now is answered)
        terminate_backend(url, pid)
        with pytest.raises(Uncertain):
            stuck.result(60)
        assert answers[-1] is False and None not in answers
        assert s.submit(then).result(60).seq == 1
        other = Store.open(url)
        try:
            assert [other.get_entry(i).data for i in (0, 1)] == [first.data, then.data]
            with pytest.raises(Conflict):
                other.acquire_sequencer_lock()
        finally:
            other.close()
    finally:
        s.stop()
        s.store.close()
        link.close()


def test_a_sequencer_whose_lock_another_process_took_writes_nothing(
        pg_server: PostgresServer, signer: FileSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session ends and another process takes the free lock before this sequencer's next
    block: that block is refused before anything is signed or written (a plain Unavailable:
    nothing recorded), `on_lock_lost` is told, and the log is the other's alone. Once the
    other gives the lock up, the next block takes it again."""
    monkeypatch.setattr(store_mod, "LOCK_IDLE_PING_S", 0.0, raising=False)
    told: list[int] = []
    with session_ended(pg_server, signer) as (s, other):
        s.on_lock_lost = lambda: told.append(1)
        height = s.state.last.header.height  # type: ignore[union-attr]
        other.acquire_sequencer_lock()
        with pytest.raises(Unavailable) as refused:
            s.submit(pending(2)).result(60)
        assert not isinstance(refused.value, Uncertain)
        assert "another process took the lock" in str(refused.value)
        assert told == [1]
        assert LogState.load(other).size == 1  # nothing written: no entry, no block
        with pytest.raises(NotFound):
            other.get_block(height + 1)
        other.release_sequencer_lock()
        assert s.submit(pending(3)).result(60).seq == 1
        with pytest.raises(Conflict):
            other.acquire_sequencer_lock()


def test_a_leader_that_finds_its_lock_taken_steps_down_once(
        pg_server: PostgresServer, signer: FileSigner, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """`serve --workers N`: the process leading when its lock is found taken by another ends
    itself (its supervisor starts a follower in its place), once however many blocks are
    refused meanwhile."""
    monkeypatch.setattr(store_mod, "LOCK_IDLE_PING_S", 0.0, raising=False)
    url = pg_server.new_database()
    s = make(Store.open(url), signer, linger=0.001)
    steps: list[int] = []
    h = handoff.Handoff(s, tmp_path, step_down=lambda: steps.append(1))
    other = Store.open(url)
    h.start()
    try:
        assert h.leading
        end_lock_session(s.store)
        other.acquire_sequencer_lock()
        for i in (2, 3):
            with pytest.raises(Unavailable):
                s.submit(pending(i)).result(60)
        assert steps == [1]
    finally:
        h.stop()
        s.store.close()
        other.close()


def test_a_failed_lock_attempt_leaves_no_lock_on_a_pooled_session(
        pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt interrupted after the lock was granted (here by an exception from the
    commit that follows it) discards its connection, so the lock is not left on a session
    back in the pool, where no one would ever give it up."""
    url = pg_server.new_database()
    store, other = Store.open(url), Store.open(url)
    try:
        def interrupted(*_: Any) -> None:
            raise KeyboardInterrupt

        from sqlalchemy import event
        event.listen(store.engine, "commit", interrupted)
        with pytest.raises(KeyboardInterrupt):
            store.acquire_sequencer_lock()
        event.remove(store.engine, "commit", interrupted)

        def takes() -> bool:
            try:
                other.acquire_sequencer_lock()
            except Conflict:
                return False
            return True

        # Free once the server has ended the discarded session: its backend exits after the
        # client closed the connection, not at the same instant (the CI at 175a0b2 found it
        # still held once). A lock left on a pooled session would never be freed.
        wait_for(takes, "the lock stayed on a session of the pool", timeout=30)
    finally:
        store.close()
        other.close()


def test_a_sequencer_stopped_after_its_lock_session_ended_stops_cleanly(
        pg_server: PostgresServer, signer: FileSigner) -> None:
    """The lock's session ends and the sequencer is stopped before any block finds it out:
    the unlock the database refuses is the lock given up all the same, so stopping and
    closing go on (before, the refusal was raised out of `stop`, and `close` left the pools
    open), and another process can take the lock."""
    with session_ended(pg_server, signer) as (s, other):
        s.stop()
        s.store.close()
        other.acquire_sequencer_lock()


def lost_on_this_side(store: Store, monkeypatch: pytest.MonkeyPatch) -> Any:
    """This side lets the lock's connection go while the server keeps its session: the next
    check finds it lost, once. The driver connection, which the test may still use."""
    raw = store._lock_conn.connection.dbapi_connection  # type: ignore[union-attr]
    monkeypatch.setattr(raw, "close", lambda: None)  # this side lets go, the server not
    real = store_mod._session_ended
    found = iter([True])
    monkeypatch.setattr(store_mod, "_session_ended",
                        lambda c, ping: next(found, False) or real(c, ping=ping))
    return raw


def test_an_orphaned_lock_session_of_this_process_is_ended_and_the_lock_taken_again(
        pg_server: PostgresServer, signer: FileSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    """This side loses the lock's connection while the server keeps its session (a
    middlebox's reset: the server would hold the lock until its keepalive noticed, hours).
    The retake is refused by that orphan, which the store recognises as its own (server
    process and start time), ends, and then takes the lock: the block is written, not
    refused as if another process held the lock."""
    with session_ended(pg_server, signer, end=False) as (s, other):
        raw = lost_on_this_side(s.store, monkeypatch)
        orphan = raw.info.backend_pid
        assert s.submit(pending(2)).result(60).seq == 1
        with psycopg.connect(pg_dsn(other.engine.url), autocommit=True) as admin:
            assert admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                 (orphan,)).fetchone() is None
        with pytest.raises(Conflict):
            other.acquire_sequencer_lock()
        del raw


def test_an_old_lock_session_that_no_longer_holds_the_lock_is_not_ended(
        pg_server: PostgresServer, signer: FileSigner, monkeypatch: pytest.MonkeyPatch) -> None:
    """D126: as above, this side loses the lock's connection while the server keeps its
    session; but that session has let the lock go (as a pooler's DISCARD ALL does, which
    keeps the server session and may hand it to another client) and another process took
    it. The old session is not ended: it no longer holds the lock, so ending it could only
    cut off someone else. The block is refused, nothing written."""
    with session_ended(pg_server, signer, end=False) as (s, other):
        raw = lost_on_this_side(s.store, monkeypatch)
        old = raw.info.backend_pid
        raw.execute("SELECT pg_advisory_unlock(%s)", (store_mod.SEQUENCER_LOCK_ID,))
        raw.commit()
        other.acquire_sequencer_lock()
        with pytest.raises(Unavailable) as refused:
            s.submit(pending(2)).result(60)
        assert "another process took the lock" in str(refused.value)
        with psycopg.connect(pg_dsn(other.engine.url), autocommit=True) as admin:
            assert admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                 (old,)).fetchone() is not None
        assert LogState.load(other).size == 1
        other.release_sequencer_lock()
        del raw


def test_a_process_starting_while_the_database_is_down_follows_then_leads(
        own_pg_server: PostgresServer, signer: FileSigner, tmp_path: Path) -> None:
    """D111: `Handoff.start` (a worker's startup under `serve --workers N`) with the database
    down does not fail: a worker whose startup fails makes uvicorn's supervisor stop every
    process, which happened once under test when a worker started in place of one that had
    stepped down met the database restarting. It follows, and its elector takes the lock once
    the database is back; the log then goes on."""
    url = own_pg_server.new_database()
    store = Store.open(url)
    s = make(store, signer, linger=0.001)
    h = handoff.Handoff(s, tmp_path, step_down=lambda: None)
    own_pg_server.crash()
    try:
        h.start()  # before D111: psycopg's OperationalError, "Connection refused"
        assert not h.leading
        own_pg_server.start()
        wait_for(lambda: h.leading, "the elector did not take the lock once the database was back")
        assert s.submit(pending(1)).result(60).seq == 0
    finally:
        h.stop()
        store.close()


def test_every_session_and_the_lock_s_own_has_the_server_probe_a_vanished_host(
        pg_server: PostgresServer) -> None:
    """D112: the server's side of each session over TCP is probed after 10 s idle and ended
    after 25 s unanswered, so a host that vanished gives the lock up in about 25 s, not after
    the operating system's two hours. The lock's own session, a pooled one and a hot read's."""
    st = Store.open(pg_server.new_database())
    expect = {name: str(v) for name, v in store_mod.PG_SERVER_KEEPALIVE.items()}
    show = ("SELECT name, setting FROM pg_settings WHERE name IN "
            "('tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count', "
            "'tcp_user_timeout')")
    try:
        st.acquire_sequencer_lock()
        assert st._lock_conn is not None
        assert dict(st._lock_conn.exec_driver_sql(show).all()) == expect
        with st.engine.connect() as conn:
            assert dict(conn.exec_driver_sql(show).all()) == expect
        assert st._reads is not None
        with st._reads.connect() as conn:
            assert dict(conn.exec_driver_sql(show).all()) == expect
    finally:
        st.close()


def _user_timeout(conn: Any) -> int:
    """The TCP user timeout (ms) of a SQLAlchemy connection's psycopg socket."""
    return _socket_state(conn.connection.driver_connection.pgconn.socket)[0]


def _socket_state(fd: int) -> tuple[int, int]:
    """A TCP socket's user timeout (ms) and the bytes in its send queue not yet acknowledged
    (SIOCOUTQ, which is TIOCOUTQ's number)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        return (int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)),
                struct.unpack("i", queued)[0])


def test_a_url_that_tunes_its_keepalives_gets_no_user_timeout_it_did_not_name(
        pg_server: PostgresServer) -> None:
    """D127: each connection gets `PG_CLIENT_KEEPALIVE`, less what the URL names; a URL that
    names a keepalive setting gets no user timeout it did not name (on Linux one would also
    decide when unanswered keepalives end the connection)."""
    url = pg_server.new_database()
    for query, want in (("", 25000), ("?keepalives_idle=60", 0),
                        ("?keepalives_idle=60&tcp_user_timeout=7000", 7000),
                        ("?tcp_user_timeout=7000", 7000)):
        engine = store_mod.make_engine(url + query)
        try:
            with engine.connect() as conn:
                assert _user_timeout(conn) == want, query
        finally:
            engine.dispose()


def test_a_copy_into_a_server_waiting_on_a_lock_outlasts_the_user_timeout(
        pg_server: PostgresServer) -> None:
    """D127: every connection's TCP user timeout (1 s here, named in the URL) ends a statement
    whose bytes stay unacknowledged, as on a dead link. A COPY whose server stops reading in
    the middle (here a row waits on another transaction's row of the same key; a slow disk
    would do the same) fills the window and stays unacknowledged while the server answers the
    zero-window probes, for far longer than that; the COPY lifts the timeout for its
    duration, so it waits and is written, and the connection has its timeout back after."""
    url = pg_server.new_database()
    st = Store.open(url + "?tcp_user_timeout=1000")
    # A binary COPY's server inserts the rows it holds at 1,000 (or at the end), so it waits
    # at seq 4 with the 1,000 small rows read and the 64 MiB after them, more than both sides'
    # buffers hold, still to send.
    rows = [(i, bytes(32), bytes(100 if i < 1000 else 1 << 20), "work",
             hashlib.sha256(b"%d" % i).digest(), "r", 0) for i in range(1064)]
    locked, waiting = threading.Event(), threading.Event()
    failed: list[BaseException] = []
    seen: list[tuple[int, int]] = []  # (user timeout, bytes unacknowledged) while it waits

    def hold(copying: Any) -> None:
        try:
            with psycopg.connect(pg_dsn(url)) as c:
                c.execute("INSERT INTO entries VALUES (%s, %s, %s, %s, %s, %s, %s)",
                          (4, *rows[0][1:]))
                locked.set()
                wait_for(lambda: c.execute(
                    "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted",
                    (copying.info.backend_pid,)).fetchone() != (0,),
                    "the COPY to wait at seq 4", 30)
                waiting.set()
                time.sleep(4)  # four user timeouts with the window shut
                seen.append(_socket_state(copying.pgconn.socket))
                c.rollback()
        except BaseException as e:
            failed.append(e)
            locked.set()

    try:
        with st.engine.begin() as conn:
            assert _user_timeout(conn) == 1000
            holder = threading.Thread(target=hold, args=(conn.connection.driver_connection,))
            holder.start()
            try:
                assert locked.wait(30) and not failed, failed
                st._insert_many(conn, "entries", store_mod._ENTRY_COLS, rows)
            finally:
                holder.join()
            assert waiting.is_set() and not failed, failed
            # the COPY waited with its timeout lifted and megabytes it could not hand over
            assert seen[0][0] == 0 and seen[0][1] > 1 << 20, seen
            assert _user_timeout(conn) == 1000
        with st.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM entries").scalar() == 1064
    finally:
        st.close()


def test_a_single_serve_that_steps_down_leaves_its_successor_s_pid_file_and_socket(
        pg_server: PostgresServer, signer: FileSigner, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Two single `serve`s on one data directory (each believes it is the directory's only
    process, D112): A leads, B follows; A's lock session ends and B takes the log over,
    writing the pid file and binding the socket. A, stepping down and stopping, removes
    neither of them: they are B's now (before, A removed B's pid file)."""
    monkeypatch.setattr(store_mod, "LOCK_IDLE_PING_S", 0.0, raising=False)
    url = pg_server.new_database()
    steps: list[int] = []
    a = handoff.Handoff(make(Store.open(url), signer, linger=0.001), tmp_path,
                        step_down=lambda: steps.append(1))
    b = handoff.Handoff(make(Store.open(url), signer, linger=0.001), tmp_path)
    a.alone = b.alone = True
    pid, sock = tmp_path / handoff.PID_NAME, handoff.socket_path(tmp_path)
    a.start()
    try:
        assert a.leading and pid.exists()
        b.start()
        assert not b.leading
        end_lock_session(a.local.store)
        wait_for(lambda: b.leading, "B took the log over")
        with pytest.raises(Unavailable):  # A's next block finds the lock taken
            a.local.submit(pending(2)).result(60)
        assert steps == [1]
        b_pid, b_sock = pid.stat().st_ino, sock.stat().st_ino
        a.stop()
        assert pid.stat().st_ino == b_pid and sock.stat().st_ino == b_sock
        b.stop()
        assert not pid.exists() and not sock.exists()  # B's own, removed on its stop
    finally:
        a.stop()
        b.stop()
        a.local.store.close()
        b.local.store.close()
