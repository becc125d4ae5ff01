"""The hand-over's transport, measured (D110): registrations per second through an API process
that does not sequence, its entries crossing to the sequencing process over this host's Unix
socket (`serve --workers N`'s way) or over TCP with the handshake and a tag on every frame
(several hosts' way), with everything else the same; and, as the floor in the same run, the
sequencing process taking the same load itself (no hand-over).

Two `serve` processes on one PostgreSQL database, one uvicorn worker each: A holds the lock
and sequences; B follows. For "unix" B shares A's data directory (so it finds A's socket);
for "tcp" B has a copy of it (as another host would), so it reaches A at the address A
published. wrk sends POST /v1/works to B (to A for "none"), 50 connections, in the order
given, each run on fresh content. Prints one JSON object with each run, its ratio to the
floor, and TCP's to Unix's.

    python bench/handoff_bench.py [--database postgresql+psycopg://...] [--seconds 10]
                                  [--connections 50] [--rounds 2]

Without `--database` it runs its own throw-away PostgreSQL cluster (fsync on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.http_bench import BENCH_WRITE_RATE, cpu_s
from tests.server import ServerProcess, cli, free_port

HERE = Path(__file__).resolve().parent
SECRET = "bench-handoff-secret-" + "x" * 32


def _server(data: Path, database: str) -> ServerProcess:
    return ServerProcess(data, database, COPYLEDGER_LOG_LEVEL="warning",
                         COPYLEDGER_WRITE_RATE_PER_S=str(BENCH_WRITE_RATE),
                         COPYLEDGER_WRITE_BURST=str(BENCH_WRITE_RATE),
                         COPYLEDGER_HANDOFF_LISTEN=f"127.0.0.1:{free_port()}",
                         COPYLEDGER_HANDOFF_SECRET=SECRET)


def _wrk(wrk: str, url: str, key: str, seconds: int, connections: int, run: int
         ) -> dict[str, Any]:
    r = subprocess.run([wrk, "-t1", "-c", str(connections), "-d", f"{seconds}s", "--timeout",
                        "10s", "-s", str(HERE / "wrk_register.lua"), url, "--", key, str(run)],
                       capture_output=True, text=True, check=True)
    return dict(json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", default="",
                    help="a PostgreSQL URL (an empty database); default: a throw-away cluster")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("handoff_bench: needs wrk (apt-get install wrk)")
    pg = None
    if not args.database:
        from tests.conftest import PostgresServer

        pg = PostgresServer()
        args.database = pg.new_database()
    try:
        print(json.dumps(measure(args, wrk), indent=2))
    finally:
        if pg is not None:
            pg.stop()


def measure(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="copyledger-hbench-"))
    data, copy = tmp / "a", tmp / "b"
    db = ["--database", args.database]
    cli("init", "--data-dir", str(data), *db)
    key = json.loads(cli("keys", "create", "--role", "creator", "--account", "bench",
                         "--data-dir", str(data), *db, "--json").stdout)["key"]
    shutil.copytree(data, copy)
    a = _server(data, args.database)
    runs: list[dict[str, Any]] = []
    run_no = 0
    try:
        a.start(timeout=300)
        for _ in range(args.rounds):
            for transport in ("none", "unix", "tcp"):
                b = None if transport == "none" else _server(
                    data if transport == "unix" else copy, args.database)
                try:
                    if b is not None:
                        b.start(timeout=300)
                    url = (b or a).url
                    run_no += 1
                    _wrk(wrk, url, key, 3, args.connections, 1000 + run_no)  # warm-up
                    pids = [s.proc.pid for s in (a, b) if s is not None and s.proc]
                    cpu0, t0 = {p: cpu_s(p) for p in pids}, time.monotonic()
                    res = _wrk(wrk, url, key, args.seconds, args.connections, run_no)
                    wall = time.monotonic() - t0
                    cpu = {p: cpu_s(p) - cpu0[p] for p in pids}
                finally:
                    if b is not None:
                        b.stop()
                done = res["requests"] - res["errors"]["status"]
                runs.append({
                    "transport": transport,
                    "registrations_per_s": round(done / res["duration_s"], 1),
                    "latency_ms": {k[:-3]: res[k] for k in ("p50_ms", "p99_ms", "max_ms")},
                    "errors": res["errors"],
                    "cores_used": {"sequencer": round(cpu[pids[0]] / wall, 2),
                                   **({"follower": round(cpu[pids[1]] / wall, 2)}
                                      if len(pids) > 1 else {})},
                })
        size = httpx.get(a.url + "/v1/log", timeout=30).json()["tree_size"]
    finally:
        a.stop()
    audit = json.loads(cli("audit", "--data-dir", str(data), *db, "--json").stdout)
    shutil.rmtree(tmp, ignore_errors=True)

    def best(t: str) -> float:
        return max(float(r["registrations_per_s"]) for r in runs if r["transport"] == t)

    return {
        "benchmark": "POST /v1/works through a process that does not sequence: hand-over by "
                     "Unix socket or by TCP (D110); 'none' = the sequencing process itself",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
        "connections": args.connections, "seconds": args.seconds,
        "runs": runs,
        "ratio_tcp_to_unix": round(best("tcp") / best("unix"), 3),
        "ratio_unix_to_none": round(best("unix") / best("none"), 3),
        "ratio_tcp_to_none": round(best("tcp") / best("none"), 3),
        "audit_after": {"ok": audit["ok"], "entries": audit["entries"], "tree_size": size},
    }


if __name__ == "__main__":
    main()
