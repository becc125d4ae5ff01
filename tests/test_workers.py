"""`serve --workers N` (D48): several API processes, one sequencer, and takeover when the
sequencer is killed. Everything here is a real process: uvicorn's supervisor, its workers, and
a client that keeps writing from threads while the process holding the lock is SIGKILLed."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from copyledger.ledger import jcs, merkle, note
from copyledger.ledger.store import SEQUENCER_LOCK_ID, Store
from copyledger.service.handoff import socket_path
from tests.conftest import PostgresServer
from tests.helpers import pg_dsn, wait_for, work_body
from tests.server import ServerProcess, cli, init_with_creator

pytestmark = pytest.mark.slow

KILLS = 20
WORKERS = 3
# The sessions holding the log's sequencer lock (a bigint advisory key is classid, the high 32
# bits, and objid, the low 32, with objsubid 1). Not any advisory lock: a worker uvicorn starts
# in place of one that ended takes D115's migration lock for a moment as it starts.
SEQUENCER_HOLDERS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
    f"AND classid = {SEQUENCER_LOCK_ID >> 32} AND objid = {SEQUENCER_LOCK_ID & 0xFFFFFFFF} "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


class Load:
    """Writers in threads, each registering new works until told to stop; every 201 is kept."""

    def __init__(self, url: str, key: str, threads: int = 6, prefix: str = "w",
                 keyed: bool = False, fresh: bool = False) -> None:
        self.url, self.key, self.prefix = url, key, prefix
        # fresh: a new connection for each request, so the processes still accepting take them
        # all (they share one listening socket); kept-alive ones stay with the process they met.
        self.fresh = fresh
        # keyed: each work sent with `again` under an Idempotency-Key of its own name, so only
        # the key keeps a resend from being recorded anew; `sent` keeps each name and answer.
        self.keyed = keyed
        self.sent: dict[str, httpx.Response | None] = {}
        self.acked: list[dict[str, Any]] = []
        self.refused: dict[int, int] = {}  # status -> count (503s while the lock moves)
        self.lost = 0  # connections that failed: the killed process's own clients
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self, n: int) -> None:
        i = 0
        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"Authorization": f"Bearer {self.key}"}) as c:
            while not self._stop.is_set():
                i += 1
                name = f"{self.prefix}{n}-{i}"
                self.sent[name] = None
                try:
                    r = c.post("/v1/works", json=work_body(name, again=True) if self.keyed
                               else work_body(name),
                               headers=({"Idempotency-Key": name} if self.keyed else {})
                               | ({"Connection": "close"} if self.fresh else {}))
                except httpx.HTTPError:
                    with self._lock:
                        self.lost += 1
                    continue
                with self._lock:
                    self.sent[name] = r
                    if r.status_code == 201:
                        self.acked.append(r.json())
                    else:
                        self.refused[r.status_code] = self.refused.get(r.status_code, 0) + 1

    def wait_for(self, n: int, timeout: float = 180.0) -> None:
        """Until at least `n` writes have been acknowledged."""
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} of {n} acknowledged"
            time.sleep(0.02)


def leader(data: Path, other_than: int = 0, timeout: float = 300.0) -> int:
    """The pid of the process that holds the sequencer lock (once it is not `other_than`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int((data / "sequencer.pid").read_text())
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid and pid != other_than:
            return pid
        time.sleep(0.02)
    raise AssertionError("no process took over the sequencer")


def joined(data: Path) -> int:
    """How many processes are connected to the sequencer's hand-over socket now: the accepted
    ends of its Unix socket, which carry its path (Linux `/proc/net/unix`, state 03)."""
    path = str(socket_path(data))
    return sum(1 for line in Path("/proc/net/unix").read_text().splitlines()[1:]
               if line.split()[5:6] == ["03"] and line.endswith(" " + path))


def check_log(data: Path, database_url: str, acked: list[dict[str, Any]]) -> None:
    """Every acknowledged entry is in the log, at its seq, with its bytes; every checkpoint a
    client was shown and every block's checkpoint is consistent with the next; audit clean."""
    dburl = database_url if database_url.startswith("postgresql") else \
        f"sqlite:///{data / 'ledger.sqlite3'}"
    seqs = [a["seq"] for a in acked]
    assert len(set(seqs)) == len(seqs)
    store = Store.open(dburl, migrate_schema=False)
    try:
        rows = {r.seq: r for r in store.get_entries(sorted(seqs))}
        for a in acked:
            row = rows[a["seq"]]
            assert row.data == jcs.canonicalize(a["entry"])
            assert row.leaf_hash == merkle.leaf_hash(row.data) == bytes.fromhex(a["leaf_hash"])
        blocks = list(store.iter_blocks())
        size = blocks[-1].header.tree_size
        trees = sorted({(b.header.tree_size, b.header.tree_root) for b in blocks}
                       | {(a["receipt"]["tree_size"], bytes.fromhex(a["receipt"]["root"]))
                          for a in acked})
        assert len({s for s, _ in trees}) == len(trees)  # one root per size: no fork
        assert trees[-1][0] == size
        for (old, old_root), (new, new_root) in itertools.pairwise(trees):
            if old == 0:
                continue  # the empty tree is a prefix of every tree
            merkle.verify_consistency(old, new, old_root, new_root,
                                      merkle.consistency_proof(old, new, store))
    finally:
        store.close()
    db = [] if database_url.startswith("sqlite") else ["--database", database_url]
    rep = cli("audit", "--data-dir", str(data), *db, "--json")
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert json.loads(rep.stdout)["ok"] is True


def test_sigkill_the_sequencer_twenty_times(tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "d"
    _, key, dburl = init_with_creator(data, database_url)
    srv = ServerProcess(data, dburl, COPYLEDGER_WORKERS=str(WORKERS))
    try:
        srv.start(timeout=300)
        pid = leader(data)
        with Load(srv.url, key) as load:
            for _ in range(KILLS):
                load.wait_for(len(load.acked) + 30)  # a short burst through the sequencer
                os.kill(pid, signal.SIGKILL)
                pid = leader(data, other_than=pid)
            load.wait_for(len(load.acked) + 30)  # and it still takes writes
        log = httpx.get(srv.url + "/v1/log", timeout=30).json()
        verifier = note.parse_verifier_key(log["verifier_key"])
        # A process that is not the sequencer learns of the newest block moments after it is
        # durable (the receipt waits for durability, not for every reader), so the checkpoint
        # any process serves must catch up with every acknowledged entry, and soon.
        want = max(a["seq"] for a in load.acked) + 1
        deadline = time.monotonic() + 120  # bounds a hang; ends when every process caught up
        while True:
            n, _ = note.verify_note(httpx.get(srv.url + "/v1/log/checkpoint", timeout=30,
                                              headers={"Connection": "close"}).text, [verifier])
            size = note.parse_checkpoint(n.text).size
            if size >= want:
                break
            assert time.monotonic() < deadline, f"checkpoint stayed at {size} < {want}"
            time.sleep(0.05)
    finally:
        srv.stop()
    assert set(load.refused) <= {503}, load.refused  # pushback while the lock moves, no 5xx else
    check_log(data, database_url, load.acked)


def test_sigkill_the_sequencer_then_every_keyed_write_resent_is_recorded_once(
        tmp_path: Path, database_url: str) -> None:
    """D135 under real SIGKILLs: writers send works with `again`, each under its own
    Idempotency-Key, while the process holding the sequencer is stopped and then killed. The
    other processes answer what they had handed it 503 "may or may not be recorded" and keep
    that answer; what was handed to it while it was stopped is not recorded.
    Once the dead process's claims are abandoned, every request sent is resent under its key:
    each must get a 201 (the acknowledged ones their first answer, replayed) and be in the log
    exactly once. Before D135 a kept 503 whose request was not recorded stayed a 503 for the
    key's lifetime, a day."""
    from sqlalchemy import func, select, update

    from copyledger.ledger.schema import idempotency_keys as keys
    from copyledger.service.idempotency import ABANDONED_S, IN_FLIGHT, _was_written

    data = tmp_path / "d"
    _, key, dburl = init_with_creator(data, database_url)
    url = dburl or f"sqlite:///{data / 'ledger.sqlite3'}"
    # The supervisor's check of the stopped process waits this long (not the default minute)
    # before it starts another in place of the killed one, and holds a stop meanwhile.
    srv = ServerProcess(data, dburl, COPYLEDGER_WORKERS=str(WORKERS),
                        COPYLEDGER_WORKER_HEALTHCHECK_S="5")
    store = Store.open(url, migrate_schema=False)

    def unrecorded_503s() -> int:
        """Kept 503s whose request has no entry: D135's case (a recorded one is D132's)."""
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(keys).where(
                keys.c.status == 503, ~_was_written(0))).scalar_one())

    try:
        srv.start(timeout=300)
        pid = leader(data)
        with Load(srv.url, key, keyed=True, fresh=True, prefix="k") as load:
            for _ in range(10):  # until a kill has left a kept 503 of a request not recorded
                load.wait_for(len(load.acked) + 30)
                # Every other process joined to the sequencer, which is then stopped: they take
                # every new connection and hand it entries it never reads. Kills at random
                # moments left no kept 503 in 10 tries once in CI (SQLite); here, the writers'
                # kept-alive connections were on the killed process (D136: CI's not known).
                wait_for(lambda: joined(data) >= WORKERS - 1,
                         "the other processes to join the sequencer")
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
                pid = leader(data, other_than=pid)
                load.wait_for(len(load.acked) + 30)  # settled: the next sequencer writes
                if unrecorded_503s() >= 1:
                    break
        assert unrecorded_503s() >= 1
        with store.engine.begin() as conn:  # a minute on: the dead processes' claims abandoned
            conn.execute(update(keys).where(keys.c.status == IN_FLIGHT)
                         .values(created=int(time.time()) - ABANDONED_S - 5))
        with httpx.Client(base_url=srv.url, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            resent = {name: c.post("/v1/works", json=work_body(name, again=True),
                                   headers={"Idempotency-Key": name}) for name in load.sent}
            bad = {n: (r.status_code, r.text[:120]) for n, r in resent.items()
                   if r.status_code != 201}
            assert not bad, list(bad.items())[:3]
            for name, first in load.sent.items():
                if first is not None and first.status_code == 201:
                    assert resent[name].json() == first.json()
                    assert resent[name].headers["idempotent-replayed"] == "true"
                found = c.get("/v1/search", params={"sha256": work_body(name)["sha256"]}).json()
                assert [e["seq"] for e in found["results"]] == [resent[name].json()["seq"]]
    finally:
        srv.stop()
        store.close()
    check_log(data, database_url, [r.json() for r in resent.values()])


def test_workers_share_one_log(tmp_path: Path) -> None:
    """Writes through any process land in one tree; reads in every process keep up with it;
    stopping leaves no socket or pid file behind."""
    data = tmp_path / "d"
    assert cli("init", "--data-dir", str(data)).returncode == 0
    key = json.loads(cli("keys", "create", "--role", "creator", "--data-dir", str(data),
                         "--json").stdout)["key"]
    srv = ServerProcess(data, COPYLEDGER_WORKERS="2")
    try:
        srv.start(timeout=300)
        with httpx.Client(base_url=srv.url, timeout=30, headers={
                "Authorization": f"Bearer {key}"}) as c:
            for i in range(40):
                # A new connection each time, so the kernel spreads them over the processes.
                r = httpx.post(srv.url + "/v1/works", json=work_body(f"share-{i}"), timeout=30,
                               headers={"Authorization": f"Bearer {key}",
                                        "Connection": "close"})
                assert r.status_code == 201, r.text
                # Another process learns of the block from the sequencer, within moments.
                seq = r.json()["seq"]
                wait_for(lambda seq=seq: httpx.get(
                    srv.url + "/healthz", headers={"Connection": "close"}, timeout=30,
                ).json()["tree_size"] > seq, "a process's reads stayed behind")
            assert c.get("/v1/log").json()["tree_size"] == 40
        assert (data / "sequencer.pid").exists() and (data / "sequencer.sock").exists()
    finally:
        srv.stop()
    assert not (data / "sequencer.sock").exists() and not (data / "sequencer.pid").exists()


def first_block_known(srv: ServerProcess) -> int:
    """The log's size once every process of a new registry's `serve --workers` answers it.
    The first block is sealed by the process that takes the lock at its start. Another
    process can answer /healthz before that block is committed; until then it answers "the
    log has no block yet" (404). Once the block is in the database, every process reads it
    from there if the hand-over has not brought it yet (D128; before that a process answered
    404 until it had joined the sequencer, seen once in CI)."""
    wait_for(lambda: all(httpx.get(srv.url + "/v1/log", timeout=30, headers={
        "Connection": "close"}).status_code == 200 for _ in range(10)),
             "every process to know the log's first block", 60)
    return int(httpx.get(srv.url + "/v1/log", timeout=30).json()["tree_size"])


def test_the_same_content_through_several_processes_is_registered_once(
        tmp_path: Path) -> None:
    """D36 across processes (D94): simultaneous registrations of one content by one account,
    with no Idempotency-Key, spread over the processes of `serve --workers 2`, make one entry;
    one request is answered 201 and the others 200 with that entry (`already_registered`).
    Before D94 each process checked on its own, so two processes could both write it."""
    data = tmp_path / "d"
    _, key, _ = init_with_creator(data, "")
    srv = ServerProcess(data, COPYLEDGER_WORKERS="2")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        srv.start(timeout=300)
        n = first_block_known(srv)
        rounds = 6
        for r in range(rounds):
            raw = json.dumps(work_body(f"raced {r}")).encode()
            gate = threading.Barrier(16)
            answers: list[httpx.Response] = []

            def post(gate: threading.Barrier, raw: bytes, answers: list[httpx.Response]
                     ) -> None:
                gate.wait(60)
                answers.append(httpx.post(srv.url + "/v1/works", content=raw, timeout=60,
                                          headers={**auth, "Connection": "close"}))

            threads = [threading.Thread(target=post, args=(gate, raw, answers))
                       for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert len(answers) == 16
            assert sorted(a.status_code for a in answers) == [200] * 15 + [201], [
                a.text for a in answers]
            assert len({a.json()["seq"] for a in answers}) == 1
            assert sum(bool(a.json().get("already_registered")) for a in answers) == 15
        assert httpx.get(srv.url + "/v1/log", timeout=30).json()["tree_size"] == n + rounds
    finally:
        srv.stop()


def test_one_idempotency_key_through_several_processes(tmp_path: Path) -> None:
    """An Idempotency-Key holds across processes (D59): requests with one key and body racing
    through the processes make one entry and all get its answer; a request held in flight by
    another process (its claim in the database) is waited for and replayed; the key with
    another body is refused."""
    from copyledger.service.idempotency import Answer, Claim, Keys, request_hash

    data = tmp_path / "d"
    _, key, _ = init_with_creator(data, "")
    srv = ServerProcess(data, COPYLEDGER_WORKERS="2")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    raw = json.dumps(work_body("raced")).encode()
    try:
        srv.start(timeout=300)
        n = first_block_known(srv)
        gate = threading.Barrier(12)
        answers: list[httpx.Response] = []

        def post() -> None:
            gate.wait(60)
            # A new connection each, so the kernel spreads them over the processes.
            answers.append(httpx.post(srv.url + "/v1/works", content=raw, timeout=60, headers={
                **auth, "Idempotency-Key": "race-1", "Connection": "close"}))

        threads = [threading.Thread(target=post) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(answers) == 12
        assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
        assert len({r.content for r in answers}) == 1  # one receipt, the first, for all
        assert sum("idempotent-replayed" not in r.headers for r in answers) == 1
        assert httpx.get(srv.url + "/v1/log", timeout=30).json()["tree_size"] == n + 1
        other = httpx.post(srv.url + "/v1/works", json=work_body("not raced"), timeout=30,
                           headers={**auth, "Idempotency-Key": "race-1"})
        assert other.status_code == 422 and "different request" in other.json()["detail"]

        # A request with the key is running in another process (here: its claim, made
        # straight in the database); the retry waits for its answer and writes nothing.
        store = Store.open(f"sqlite:///{data / 'ledger.sqlite3'}", migrate_schema=False)
        try:
            keys = Keys(store, 3600)
            digest = request_hash(b"/v1/works", b"", raw)
            held = keys.claim("alice", "held-1", digest)
            assert isinstance(held, Claim)
            kept = Answer(201, b'{"seq":4321}')
            timer = threading.Timer(0.5, keys.keep, (held, kept))
            timer.start()
            r = httpx.post(srv.url + "/v1/works", content=raw, timeout=60,
                           headers={**auth, "Idempotency-Key": "held-1"})
            timer.join()
        finally:
            store.close()
        assert (r.status_code, r.content) == (201, kept.body), r.text
        assert httpx.get(srv.url + "/v1/log", timeout=30).json()["tree_size"] == n + 1
    finally:
        srv.stop()


@pytest.mark.postgres
def test_a_sequencer_whose_lock_session_ends_leaves_one_sequencer(
        tmp_path: Path, pg_server: PostgresServer) -> None:
    """D109, with every part real: `serve --workers 2` on PostgreSQL, and three times a burst
    of writes, then the database session holding the log's lock ended (as a PostgreSQL
    restart ends it) while the sequencer is idle, so the follower takes the free lock first.
    The old sequencer, at the next write it gets, must write nothing, end itself without
    removing its successor's socket and pid file, and uvicorn start a follower in its place
    that reaches the new sequencer: writes then succeed through every process (new
    connections reach both), and the log is one tree, every acknowledged entry in it."""
    data = tmp_path / "d"
    _, key, dburl = init_with_creator(data, pg_server.new_database())
    srv = ServerProcess(data, dburl, COPYLEDGER_WORKERS="2")
    auth = {"Authorization": f"Bearer {key}", "Connection": "close"}
    fresh = itertools.count()
    acked: list[dict[str, Any]] = []
    refused: set[int] = set()
    dropped: list[int] = []

    def on_new_connections() -> bool:
        """Ten writes, each on a connection of its own (the kernel gives each to either
        process): whether all were recorded."""
        ok = True
        for _ in range(10):
            try:
                r = httpx.post(srv.url + "/v1/works", json=work_body(f"new-{next(fresh)}"),
                               headers=auth, timeout=30)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A connection the old sequencer had accepted when it stepped down: uvicorn's
                # shutdown closed it unanswered (seen once in CI's SoftHSM pass), or reset it
                # (ECONNRESET, seen in session 50's CI). Counted, never acked; `check_log`
                # asks only that every acked entry is there.
                dropped.append(1)
                ok = False
                continue
            if r.status_code == 201:
                acked.append(r.json())
            else:
                refused.add(r.status_code)
                ok = False
        return ok

    try:
        srv.start(timeout=300)
        pid = leader(data)
        with psycopg.connect(pg_dsn(dburl), autocommit=True) as admin:
            for round_no in range(3):
                with Load(srv.url, key, prefix=f"r{round_no}-") as load:
                    load.wait_for(30)
                acked += load.acked
                refused |= set(load.refused)
                pids = [p for (p,) in admin.execute(SEQUENCER_HOLDERS).fetchall()]
                assert len(pids) == 1, pids
                admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
                old, pid = pid, leader(data, other_than=pid)  # the follower took over
                # Until the old sequencer has had a write (new connections reach either
                # process), stepped down and been replaced, and ten in a row are recorded.
                wait_for(lambda old=old: on_new_connections() and not _alive(old),
                         "the old sequencer did not step down, or a process could not write")
                assert (data / "sequencer.pid").read_text().strip() == str(pid)
                assert (data / "sequencer.sock").exists()
                assert len(admin.execute(SEQUENCER_HOLDERS).fetchall()) == 1
    finally:
        srv.stop()
    assert refused <= {503}, refused
    assert len(dropped) <= 3, dropped  # at most one a step-down
    check_log(data, dburl, acked)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.postgres
def test_postgresql_crashing_under_load_loses_no_acknowledged_entry(
        tmp_path: Path, own_pg_server: PostgresServer) -> None:
    """`serve --workers 2` on PostgreSQL under steady writes while the database crashes and
    comes back three times (`pg_ctl -m immediate`: every session, the lock's among them, ends
    at once; only what was committed survives). While it is down writers get 503s, never
    another 5xx; after each restart the log goes on taking writes without a restart of ours;
    at the end one process holds the lock, and every acknowledged entry is in the log with
    its seq and bytes, every checkpoint consistent with the next, and the audit is clean."""
    data = tmp_path / "d"
    _, key, dburl = init_with_creator(data, own_pg_server.new_database())
    srv = ServerProcess(data, dburl, COPYLEDGER_WORKERS="2")
    try:
        srv.start(timeout=300)
        with Load(srv.url, key) as load:
            for _ in range(3):
                load.wait_for(len(load.acked) + 30)
                own_pg_server.crash_and_restart(down_s=1.0)
                load.wait_for(len(load.acked) + 30)  # and the log goes on
        with psycopg.connect(pg_dsn(dburl), autocommit=True) as admin:
            assert len(admin.execute(SEQUENCER_HOLDERS).fetchall()) == 1
    finally:
        srv.stop()
    assert set(load.refused) <= {503}, load.refused
    check_log(data, dburl, load.acked)
