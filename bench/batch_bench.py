"""Batch registration over HTTP: entries per second through `POST /v1/works/batch` on a real
`copyledger serve` (SQLite unless --database), every receipt verified by the client
(`Client.register_works`: entry hash, inclusion proof, checkpoint signature).

Prints one JSON object: entries/s end to end (request + verification), the server's share
(time waiting for answers) and the client's verification share, per-batch p50/p99, and the CPU
time (user + system) of the server process and of the client an entry: the figure that holds
on a shared, loaded machine, where wall-clock rates mostly measure the neighbours.

Usage: python bench/batch_bench.py [--batches 20] [--size 1000] [--clients 1] [--database URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.client import BatchWork, Client, Receipt
from copyledger.client import _calls as calls
from tests.server import ServerProcess, init_with_creator


def works(client_no: int, batch_no: int, size: int) -> list[BatchWork]:
    return [BatchWork(sha256=hashlib.sha256(f"{client_no}/{batch_no}/{i}".encode()).hexdigest(),
                      title=f"Work {i}", creators=["Bench"], work_type="image")
            for i in range(size)]


def run_client(url: str, key: str, no: int, batches: int, size: int,
               out: dict[str, Any]) -> None:
    waits, verifies, entries = [], [], 0
    with Client(url, api_key=key, timeout=300) as c:
        c.verifiers()  # the log's key, fetched once
        trust = c._trusted()
        for b in range(batches):
            call = calls.register_works(works(no, b, size))
            t0 = time.perf_counter()
            answer = c._send(call)  # the HTTP exchange alone
            t1 = time.perf_counter()
            results = call.finish(answer, trust)  # every receipt verified
            t2 = time.perf_counter()
            if not all(isinstance(r, Receipt) and not r.already_registered for r in results):
                raise SystemExit(f"batch {b}: not every item registered: {results[:3]}")
            waits.append(t1 - t0)
            verifies.append(t2 - t1)
            entries += len(results)
    out[no] = {"waits": waits, "verifies": verifies, "entries": entries}


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20, help="batches per client")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--database", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        _, key, url = init_with_creator(data, args.database or "sqlite")
        srv = ServerProcess(data, url, COPYLEDGER_LOG_LEVEL="warning").start()
        try:
            assert srv.proc is not None
            out: dict[int, Any] = {}
            threads = [threading.Thread(target=run_client, args=(
                srv.url, key, n, args.batches, args.size, out)) for n in range(args.clients)]
            server0, client0, t0 = _cpu(srv.proc.pid), time.process_time(), time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            server_cpu, client_cpu = _cpu(srv.proc.pid) - server0, time.process_time() - client0
        finally:
            srv.stop()
    entries = sum(o["entries"] for o in out.values())
    waits = sorted(w for o in out.values() for w in o["waits"])
    verifies = [v for o in out.values() for v in o["verifies"]]
    print(json.dumps({
        "engine": "postgresql" if args.database else "sqlite",
        "clients": args.clients, "batch_size": args.size, "entries": entries,
        "wall_s": round(wall, 3),
        "entries_per_s": round(entries / wall),
        "server_entries_per_s": round(entries / (sum(waits) / args.clients)),
        "verify_ms_per_batch": round(1000 * statistics.mean(verifies), 1),
        "batch_p50_ms": round(1000 * waits[len(waits) // 2], 1),
        "batch_p99_ms": round(1000 * waits[min(len(waits) - 1, int(len(waits) * 0.99))], 1),
        "server_cpu_us_per_entry": round(1e6 * server_cpu / entries, 1),
        "client_cpu_us_per_entry": round(1e6 * client_cpu / entries, 1),
        "every_receipt_verified": True,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "cpus": platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
