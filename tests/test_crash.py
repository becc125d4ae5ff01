"""No acknowledged entry is ever lost: SIGKILL the server during a burst of concurrent
registrations, restart it, and check every receipt against what survived."""

from __future__ import annotations

import asyncio
import json
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
