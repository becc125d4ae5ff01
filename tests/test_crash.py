"""No acknowledged entry is ever lost: SIGKILL the server during a burst of concurrent
registrations, restart it, and check every receipt against what survived."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from copyledger.ledger import merkle, note
from tests.helpers import work_body
from tests.server import ServerProcess, cli, init_with_creator

pytestmark = pytest.mark.slow


async def burst(url: str, key: str, acked: list[dict[str, Any]], stop_after: int) -> int:
    """50 concurrent clients register until the server dies; returns errors seen."""
    errors = 0
    counter = iter(range(10**9))
    done = asyncio.Event()

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors
        while not done.is_set():
            i = next(counter)
            try:
                r = await c.post("/v1/works", json=work_body(f"crash-{i}"))
            except httpx.HTTPError:
                errors += 1
                return
            if r.status_code == 201:
                acked.append(r.json())
                if len(acked) >= stop_after:
                    done.set()

    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        await asyncio.gather(*(client(c) for _ in range(50)), return_exceptions=True)
    return errors


def test_sigkill_loses_no_acknowledged_entry(tmp_path: Path, database_url: str) -> None:
    data = tmp_path / "data"
    db, key, dburl = init_with_creator(data, database_url)
    srv = ServerProcess(data, dburl).start()
    acked: list[dict[str, Any]] = []

    async def run() -> None:
        # Kill the server while the burst is in full flight, from another task.
        task = asyncio.create_task(burst(srv.url, key, acked, stop_after=10**9))
        while len(acked) < 600:
            await asyncio.sleep(0.01)
        srv.kill9()
        await asyncio.wait_for(task, 60)

    asyncio.run(run())
    assert len(acked) >= 600

    srv2 = ServerProcess(data, dburl).start()
    try:
        with httpx.Client(base_url=srv2.url, timeout=30) as c:
            log = c.get("/v1/log").json()
            verifier = note.parse_verifier_key(log["verifier_key"])
            seqs = [a["seq"] for a in acked]
            assert len(set(seqs)) == len(seqs)
            assert log["tree_size"] >= max(seqs) + 1
            for a in acked:
                got = c.get(f"/v1/entries/{a['seq']}").json()
                assert got["leaf_hash"] == a["leaf_hash"] and got["entry"] == a["entry"]
            # Every checkpoint a client was shown is consistent with the one after restart.
            n, _ = note.verify_note(c.get("/v1/log/checkpoint").text, [verifier])
            new = note.parse_checkpoint(n.text)
            seen = {(a["receipt"]["tree_size"], a["receipt"]["root"]) for a in acked}
            for size, root in [*sorted(seen)[::max(1, len(seen) // 25)], max(seen)]:
                p = c.get("/v1/log/consistency", params={"from": size, "to": new.size}).json()
                merkle.verify_consistency(size, new.size, bytes.fromhex(root), new.root,
                                          [bytes.fromhex(h) for h in p["proof"]])
            # The log still takes writes after the crash.
            r = c.post("/v1/works", json=work_body("after"),
                       headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 201 and r.json()["seq"] == log["tree_size"]
    finally:
        srv2.stop()
    rep = cli("audit", "--data-dir", str(data), *db, "--json")
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert json.loads(rep.stdout)["ok"] is True


_NO_KEEPS = {  # the database refuses to keep any answer (a keep sets the row's status)
    "sqlite": ["CREATE TRIGGER no_keeps BEFORE UPDATE OF status ON idempotency_keys "
               "BEGIN SELECT RAISE(ABORT, 'no keeps'); END"],
    "postgresql": ["CREATE FUNCTION no_keeps() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'no keeps'; END $$",
                   "CREATE TRIGGER no_keeps BEFORE UPDATE OF status ON idempotency_keys "
                   "FOR EACH ROW EXECUTE FUNCTION no_keeps()"]}
_KEEPS_AGAIN = {"sqlite": ["DROP TRIGGER no_keeps"],
                "postgresql": ["DROP TRIGGER no_keeps ON idempotency_keys",
                               "DROP FUNCTION no_keeps()"]}


def test_sigkill_then_every_keyed_write_resent_is_recorded_once(
        tmp_path: Path, database_url: str) -> None:
    """D132 under a real SIGKILL: 50 writers send works with `again` (so nothing but the key
    keeps a resend from recording anew), each under its own Idempotency-Key, while the
    database refuses to keep their answers (D69: the writer still gets its receipt, the keep is
    tried again later). The server is killed mid-burst, started again, and once the dead
    process's claims are abandoned (made a minute old) every request sent is resent under its
    key. Each must be in the log exactly once, every acknowledged one answered with its own
    receipt. Before D132 the taken-over claims ran every acknowledged write a second time."""
    from sqlalchemy import select, update

    from copyledger.ledger.schema import idempotency_keys
    from copyledger.ledger.store import Store
    from copyledger.service.idempotency import ABANDONED_S, IN_FLIGHT

    data = tmp_path / "data"
    db, key, dburl = init_with_creator(data, database_url)
    store = Store.open(dburl or f"sqlite:///{data / 'ledger.sqlite3'}", migrate_schema=False)
    engine = store.engine.dialect.name

    def execute(statements: list[str]) -> None:
        with store.engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)

    execute(_NO_KEEPS[engine])
    srv = ServerProcess(data, dburl).start()
    auth = {"Authorization": f"Bearer {key}"}
    sent: list[int] = []
    acked: dict[int, dict[str, Any]] = {}

    async def burst() -> None:
        counter = iter(range(10**9))

        async def client(c: httpx.AsyncClient) -> None:
            while True:
                i = next(counter)
                sent.append(i)
                try:
                    r = await c.post("/v1/works", json=work_body(f"keyed-{i}", again=True),
                                     headers={"Idempotency-Key": f"k-{i}"})
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    acked[i] = r.json()

        async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=auth,
                                     limits=httpx.Limits(max_connections=50)) as c:
            await asyncio.gather(*(client(c) for _ in range(50)), return_exceptions=True)

    async def run() -> None:
        task = asyncio.create_task(burst())
        while len(acked) < 300:
            await asyncio.sleep(0.01)
        srv.kill9()
        await asyncio.wait_for(task, 60)

    try:
        asyncio.run(run())
        execute(_KEEPS_AGAIN[engine])
        with store.engine.begin() as conn:
            kept = conn.execute(select(idempotency_keys.c.key).where(
                idempotency_keys.c.status != IN_FLIGHT)).scalars().all()
            # A minute on: the dead process's claims are abandoned.
            conn.execute(update(idempotency_keys).where(idempotency_keys.c.status == IN_FLIGHT)
                         .values(created=int(time.time()) - ABANDONED_S - 5))
    finally:
        store.close()
    assert kept == [] and len(acked) >= 300
    srv2 = ServerProcess(data, dburl).start()
    try:
        with httpx.Client(base_url=srv2.url, timeout=60, headers=auth) as c:
            answers = {i: c.post("/v1/works", json=work_body(f"keyed-{i}", again=True),
                                 headers={"Idempotency-Key": f"k-{i}"}) for i in sent}
            assert all(a.status_code == 201 for a in answers.values()), [
                a.text for a in answers.values() if a.status_code != 201][:3]
            for i, a in acked.items():
                assert answers[i].json() == a
                assert answers[i].headers["idempotent-replayed"] == "true"
            for i in sent:
                found = c.get("/v1/search", params={"sha256": work_body(f"keyed-{i}")["sha256"]})
                assert [e["seq"] for e in found.json()["results"]] == [answers[i].json()["seq"]]
    finally:
        srv2.stop()
    rep = cli("audit", "--data-dir", str(data), *db, "--json")
    assert rep.returncode == 0, rep.stdout + rep.stderr
