"""Registrations per second through POST /v1/works: one uvicorn worker on the embedded SQLite
default, 50 concurrent connections from wrk (a C load generator, so the client is not the
bottleneck), p50/p99 latency. Prints one JSON object.

    python bench/http_bench.py [--seconds 20] [--connections 50] [--database URL]
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server import ServerProcess, cli

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--database", default="")
    args = ap.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("http_bench: needs wrk (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="copyledger-bench-"))
    data = tmp / "data"
    db = ["--database", args.database] if args.database else []
    cli("init", "--data-dir", str(data), *db)
    key = json.loads(cli("keys", "create", "--role", "creator", "--account", "bench",
                         "--data-dir", str(data), *db, "--json").stdout)["key"]
    srv = ServerProcess(data, args.database, COPYLEDGER_LOG_LEVEL="warning").start()
    try:
        before = httpx.get(srv.url + "/v1/log").json()
        # warm-up, then the measured run
        subprocess.run([wrk, "-t1", "-c", str(args.connections), "-d", "3s", "-s",
                        str(HERE / "wrk_register.lua"), srv.url, "--", key],
                       capture_output=True, check=True)
        mid = httpx.get(srv.url + "/v1/log").json()
        t0 = time.monotonic()
        r = subprocess.run([wrk, "-t1", "-c", str(args.connections), "-d",
                            f"{args.seconds}s", "--timeout", "10s", "-s",
                            str(HERE / "wrk_register.lua"), srv.url, "--", key],
                           capture_output=True, text=True, check=True)
        wall = time.monotonic() - t0
        after = httpx.get(srv.url + "/v1/log").json()
    finally:
        srv.stop()
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
    res = json.loads(line)
    entries = after["tree_size"] - mid["tree_size"]
    blocks = after["block_height"] - mid["block_height"]
    audit = json.loads(cli("audit", "--data-dir", str(data), *db, "--json").stdout)
    out = {
        "benchmark": "POST /v1/works, one uvicorn worker",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "database": "postgresql" if args.database else "sqlite (WAL, synchronous=FULL)",
        "connections": args.connections,
        "seconds": res["duration_s"],
        "registrations": res["requests"],
        "registrations_per_s": round(res["requests"] / res["duration_s"], 1),
        "latency_ms": {k[:-3]: res[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
        "errors": res["errors"],
        "entries_sealed": entries,
        "blocks_sealed": blocks,
        "mean_entries_per_block": round(entries / blocks, 1) if blocks else None,
        "audit_after": {"ok": audit["ok"], "entries": audit["entries"]},
        "warmup_entries": mid["tree_size"] - before["tree_size"],
        "wall_s": round(wall, 2),
        "targets": {"registrations_per_s": ">= 3000", "p99_ms": "< 250"},
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
