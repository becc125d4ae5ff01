"""Batch registration over HTTP: entries per second through `POST /v1/works/batch` on a real
`copyledger serve` (SQLite unless --database), every receipt verified by the client
(`Client.register_works`: entry hash, inclusion proof, checkpoint signature).

Prints one JSON object: entries/s end to end (request + verification), the server's share
(time waiting for answers) and the client's verification share, per-batch p50/p99, and the CPU
time (user + system) of the server process and of the client an entry: the figure that holds
on a shared, loaded machine, where wall-clock rates mostly measure the neighbours.

Sustained: the client sends the next batch while it verifies the answer to the one before
(one batch ahead), so the server and the verifying client each use a core; `entries_per_s`
is entries with every receipt verified over the wall time of the whole run.

Warm-up: `--warmup` batches (2 unless told) are sent and verified before any clock or CPU
counter starts, so the server's first requests (lazy imports, the matching index built at
start) are not counted in its CPU an entry (D82); they were 10-20 µs an entry of a 20-batch run.

Usage: python bench/batch_bench.py [--batches 20] [--size 1000] [--clients 1] [--warmup 2]
       [--database URL | --postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import queue
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
    """Sustained: a sender thread keeps the next batch in flight while this thread verifies
    every receipt of the answer before it, so the server and the verifying client each have
    a core (one batch ahead at most: the server is never sent more than the client checks)."""
    waits: list[float] = []
    verifies: list[float] = []
    send_cpu: list[float] = []  # the sender thread's CPU: building requests, HTTP, JSON
    entries = 0
    answers: queue.Queue[tuple[Any, Any] | BaseException] = queue.Queue(maxsize=1)
    with Client(url, api_key=key, timeout=300) as c:
        trust = c._trusted()  # the log's key, fetched once

        def send() -> None:
            cpu0 = time.thread_time()
            try:
                for b in range(batches):
                    call = calls.register_works(works(no, b, size))
                    t0 = time.perf_counter()
                    answer = c._send(call)  # the HTTP exchange alone
                    waits.append(time.perf_counter() - t0)
                    answers.put((call, answer))
            except BaseException as e:  # handed to the verifying thread, which raises it
                answers.put(e)
            send_cpu.append(time.thread_time() - cpu0)

        sender = threading.Thread(target=send)
        sender.start()
        verify_cpu0 = time.thread_time()
        for b in range(batches):
            got = answers.get()
            if isinstance(got, BaseException):
                raise got
            call, answer = got
            t1 = time.perf_counter()
            results = call.finish(answer, trust)  # every receipt verified
            verifies.append(time.perf_counter() - t1)
            if not all(isinstance(r, Receipt) and not r.already_registered for r in results):
                raise SystemExit(f"batch {b}: not every item registered: {results[:3]}")
            entries += len(results)
        verify_cpu = time.thread_time() - verify_cpu0
        sender.join()
    out[no] = {"waits": waits, "verifies": verifies, "entries": entries,
               "send_cpu": sum(send_cpu), "verify_cpu": verify_cpu}


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cluster_cpu(datadir: Path | None) -> float:
    """CPU seconds of a PostgreSQL cluster's processes (the postmaster and its children)."""
    if datadir is None:
        return 0.0
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    total = _cpu(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                total += _cpu(int(stat.parent.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20, help="batches per client")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2, help="batches sent before measuring")
    ap.add_argument("--database", default="")
    ap.add_argument("--postgres", action="store_true",
                    help="run on a throw-away PostgreSQL cluster started here (its CPU counted)")
    args = ap.parse_args()
    pg = None
    if args.postgres:
        from tests.conftest import PostgresServer

        pg = PostgresServer()
        args.database = pg.new_database()
    try:
        run(args, pg.datadir if pg else None)
    finally:
        if pg is not None:
            pg.stop()


def run(args: argparse.Namespace, datadir: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        _, key, url = init_with_creator(data, args.database or "sqlite")
        srv = ServerProcess(data, url, COPYLEDGER_LOG_LEVEL="warning").start()
        try:
            assert srv.proc is not None
            if args.warmup:  # its own hashes (client 10,000), not counted
                run_client(srv.url, key, 10_000, args.warmup, args.size, {})
            out: dict[int, Any] = {}
            threads = [threading.Thread(target=run_client, args=(
                srv.url, key, n, args.batches, args.size, out)) for n in range(args.clients)]
            server0, client0, t0 = _cpu(srv.proc.pid), time.process_time(), time.perf_counter()
            db0 = _cluster_cpu(datadir)
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            server_cpu, client_cpu = _cpu(srv.proc.pid) - server0, time.process_time() - client0
            db_cpu = _cluster_cpu(datadir) - db0
        finally:
            srv.stop()
    entries = sum(o["entries"] for o in out.values())
    waits = sorted(w for o in out.values() for w in o["waits"])
    verifies = [v for o in out.values() for v in o["verifies"]]
    print(json.dumps({
        "engine": "postgresql" if args.database else "sqlite",
        "clients": args.clients, "batch_size": args.size, "entries": entries,
        "warmup_batches": args.warmup,
        "wall_s": round(wall, 3),
        "entries_per_s": round(entries / wall),
        "server_entries_per_s": round(entries / (sum(waits) / args.clients)),
        "verify_ms_per_batch": round(1000 * statistics.mean(verifies), 1),
        "batch_p50_ms": round(1000 * waits[len(waits) // 2], 1),
        "batch_p99_ms": round(1000 * waits[min(len(waits) - 1, int(len(waits) * 0.99))], 1),
        "server_cpu_us_per_entry": round(1e6 * server_cpu / entries, 1),
        "client_cpu_us_per_entry": round(1e6 * client_cpu / entries, 1),
        # the client's two threads: building, sending and reading requests; verifying answers
        "client_send_cpu_us_per_entry": round(
            1e6 * sum(o["send_cpu"] for o in out.values()) / entries, 1),
        "client_verify_cpu_us_per_entry": round(
            1e6 * sum(o["verify_cpu"] for o in out.values()) / entries, 1),
        **({"postgresql_cpu_us_per_entry": round(1e6 * db_cpu / entries, 1)}
           if datadir else {}),
        "every_receipt_verified": True,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "cpus": platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
