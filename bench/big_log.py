"""A big log, measured: what issue 13 item 5 asks of a registry of millions of entries.

Run it on a registry filled by `copyledger import --local` (stop anything serving it first).
It prints one JSON object: entries, database bytes per entry, start-up time of `copyledger
serve` to its first 200 on /healthz and its memory then, and p50/p99 latencies of inclusion
and consistency proofs, search by hash and bundle building, both in the server (the service
call, in this process) and over HTTP (against the started server), with the load average.

Server side, the first --first-pass inclusion proofs are timed apart ("first_pass": cold
caches, after the start-up warming `serve` does) from the --samples measured after them
("server_side": the steady state); on PostgreSQL each phase states the blocks the server found
in its buffers and those it had to read. Start the database server just before the run to
measure a cold first pass.

On PostgreSQL the database's size is `pg_total_relation_size` of every table; inclusion
proofs are also timed side by side with each read on its own pooled connection (as before
D80). The in-memory read caches' sizes are stated.

Start-up is measured --starts times, each beside the start of a fresh empty registry (the
floor: imports and key loading, what the log's size does not change), as wall seconds and as
the server process's CPU seconds at its first answer (on a loaded machine the CPU figure is the
one that compares). How long the near-duplicate index's background rebuild takes (it reads
every entry) is stated too, and how long the sequencer's content-hash filter took to read the
log, each from the first answer, up to --index-wait seconds: the requests over HTTP are
measured after both.

Usage: python bench/big_log.py --data-dir DIR [--database URL] [--samples 2000] [--starts 3]
                                [--first-pass 500] [--server-side-only]
       python bench/big_log.py --data-dir DIR --startup-only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.service import reads
from copyledger.service import settings as settings_mod
from copyledger.service.memory import rss_split
from copyledger.service.node import Node
from tests.server import ServerProcess


def pct(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {"p50_ms": round(1000 * s[len(s) // 2], 3),
            "p99_ms": round(1000 * s[min(len(s) - 1, int(len(s) * 0.99))], 3)}


def timed(calls: list[Callable[[], Any]]) -> dict[str, float]:
    out = []
    for call in calls:
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return pct(out)


def warm_start(node: Node, size: int) -> dict[str, Any]:
    """What `copyledger serve` does in the background at start (D89: the tree's upper levels
    read into the proofs' cache), done here before timing, with how long it took; code from
    before D89 has no such step (the same bench file measures both)."""
    warm = getattr(node.store, "warm_upper", None)
    if warm is None:
        return {"upper_nodes_read": None}
    t0 = time.perf_counter()
    got = warm(size)
    out: dict[str, Any] = {"upper_nodes_read": got,
                           "wall_ms": round(1000 * (time.perf_counter() - t0), 1)}
    lower = getattr(node.store, "warm_levels", None)  # (D148; code before it has none)
    if lower is not None:
        t0 = time.perf_counter()
        out["lower_level_nodes_kept"] = lower(size)
        out["lower_levels_wall_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    return out


def block_reads(node: Node) -> dict[str, int] | None:
    """PostgreSQL's buffer counters of this database (blocks found in its shared buffers, and
    blocks it had to read from the kernel: its page cache or the disk). None on SQLite. A
    busy server process reports them at most once a second and an idle one within ten
    seconds (PostgreSQL 15), so wait for that first."""
    if node.store.dialect != "postgresql":
        return None
    time.sleep(11)
    with node.store.engine.connect() as conn:
        hit, read = conn.exec_driver_sql(
            "SELECT blks_hit, blks_read FROM pg_stat_database "
            "WHERE datname = current_database()").one()
    return {"hit": int(hit), "read": int(read)}


def phase(node: Node, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`call()`'s figures, with the load average and (PostgreSQL) the blocks it found in the
    server's buffers and those it read."""
    load, before = os.getloadavg()[0], block_reads(node)
    out = call()
    after = block_reads(node)
    out["load_1m"] = round(load, 2)
    if before is not None and after is not None:
        out["postgresql_blocks"] = {k: after[k] - before[k] for k in before}
    return out


def first_pass(node: Node, size: int, rng: random.Random, n: int) -> dict[str, Any]:
    """The first `n` inclusion proofs this process makes, timed apart from the steady state:
    the proofs' caches as start-up left them and, right after the database server started,
    its buffers cold too. Never mixed into the measured samples."""
    seqs = [rng.randrange(size) for _ in range(n)]
    return {"proofs": n,
            "inclusion_proof": timed([lambda s=s: reads.proof(node, s, None) for s in seqs])}


def server_side(node: Node, size: int, shas: list[str], rng: random.Random, n: int
                ) -> dict[str, Any]:
    seqs = [rng.randrange(size) for _ in range(n)]
    olds = [rng.randrange(1, size) for _ in range(n)]
    return {
        "inclusion_proof": timed([lambda s=s: reads.proof(node, s, None) for s in seqs]),
        "consistency_proof": timed([lambda o=o: reads.consistency(node, o, None) for o in olds]),
        "search_by_hash": timed([lambda h=h: reads.search(node, h) for h in shas]),
        "bundle": timed([lambda s=s: reads.bundle(node, s) for s in seqs[: n // 4]]),
    }


def per_read_connections(node: Node, size: int, rng: random.Random, n: int
                         ) -> dict[str, Any]:
    """Inclusion proofs with their reads on one connection (`Store.reading`, D80) and, in
    the same run and alternating, with each read checking out its own (before D80): on
    PostgreSQL each checkout cost a ping and a rollback. Since D84 a proof is one read on a
    connection that is neither pinged nor rolled back, so the two should agree."""
    seqs = [rng.randrange(size) for _ in range(n)]
    shared, apart = [], []
    real = node.store.reading
    try:
        ways: list[tuple[list[float], Any]] = [(shared, real), (apart, contextlib.nullcontext)]
        for i, s in enumerate(seqs):
            for out, reading in ways if i % 2 else ways[::-1]:  # each goes first half the time
                node.store.reading = reading  # type: ignore[method-assign]
                t0 = time.perf_counter()
                reads.proof(node, s, None)
                out.append(time.perf_counter() - t0)
    finally:
        node.store.reading = real  # type: ignore[method-assign]
    return {"one_connection": pct(shared), "a_connection_per_read": pct(apart)}


def in_memory(node: Node) -> dict[str, Any]:
    """What the process keeps in memory for reads: the proofs' upper-node cache and the
    blocks found by size (both bounded, D70), measured with sys.getsizeof."""
    upper = node.store._upper
    by_size = node.store._by_size
    levels = getattr(node.store, "_levels", {})  # (D148)
    return {
        "upper_nodes": len(upper),
        "upper_nodes_mib": round((sys.getsizeof(upper) + sum(
            sys.getsizeof(k) + sys.getsizeof(v) for k, v in upper.items())) / 2**20, 2),
        "lower_levels": sorted(levels),
        "lower_level_nodes": sum(map(len, levels.values())) // 32,
        "lower_levels_mib": round((sys.getsizeof(levels) + sum(
            sys.getsizeof(v) for v in levels.values())) / 2**20, 2),
        "blocks_by_size": len(by_size),
        "blocks_by_size_mib": round((sys.getsizeof(by_size) + sum(
            len(b.checkpoint) + len(b.block_note) + 400 for b in by_size.values())) / 2**20, 2),
    }


def postgresql_bytes(node: Node) -> dict[str, int]:
    """pg_total_relation_size of every table (heap, indexes, TOAST)."""
    with node.store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = current_schema()::regnamespace ORDER BY 2 DESC").all()
    return {str(name): int(size) for name, size in rows}


def over_http(url: str, size: int, shas: list[str], rng: random.Random, n: int
              ) -> dict[str, Any]:
    seqs = [rng.randrange(size) for _ in range(n)]
    olds = [rng.randrange(1, size) for _ in range(n)]
    with httpx.Client(base_url=url, timeout=60) as c:
        def get(path: str, **params: Any) -> None:
            r = c.get(path, params=params)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
        return {
            "inclusion_proof": timed([lambda s=s: get(f"/v1/entries/{s}/proof") for s in seqs]),
            "consistency_proof": timed([lambda o=o: get("/v1/log/consistency", **{"from": o})
                                        for o in olds]),
            "search_by_hash": timed([lambda h=h: get("/v1/search", sha256=h) for h in shas]),
            "bundle": timed([lambda s=s: get(f"/v1/entries/{s}/bundle") for s in seqs[: n // 4]]),
        }


def rss_of(pid: int) -> dict[str, float]:
    return rss_split(Path(f"/proc/{pid}/status").read_text())


def cpu_of(pid: int) -> float:
    """User plus system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def start_once(data_dir: Path, database: str, port: int) -> tuple[ServerProcess, dict[str, Any]]:
    """Start `copyledger serve` and wait for its first 200 on /healthz: wall and CPU seconds."""
    srv = ServerProcess(data_dir, database, port=port, COPYLEDGER_LOG_LEVEL="warning")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    srv.start(timeout=300)
    wall = time.perf_counter() - t0
    assert srv.proc is not None
    return srv, {"wall_s": round(wall, 2), "server_cpu_s": cpu_of(srv.proc.pid),
                 "load_1m": round(load, 2)}


def startups(data_dir: Path, database: str, port: int, n: int) -> dict[str, Any]:
    """n starts of the big registry, each after a start of a fresh empty one (its floor)."""
    fresh = Path(tempfile.mkdtemp(prefix="copyledger-fresh-"))
    big, floor = [], []
    try:
        start_once(fresh / "data", "", port)[0].stop()  # creates it: keys, schema (not timed)
        for _ in range(n):
            for where, db, out in ((fresh / "data", "", floor), (data_dir, database, big)):
                srv, got = start_once(where, db, port)
                srv.stop()
                out.append(got)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return {"big_log": big, "fresh_registry": floor}


def background(url: str, pid: int, wait: float) -> dict[str, dict[str, Any]]:
    """What the server builds in the background after its first answer, each polled from
    then (every 0.5 s, both in one loop): the near-duplicate index's rebuild (on /healthz) and
    the sequencer's content-hash filter (`copyledger_content_filter_ready` on /metrics, D103;
    until it is ready each block reads its works from the database). Seconds since the first
    /healthz 200 and server CPU seconds when each was first seen ready; not ready within
    `wait` is said so."""
    t0 = time.perf_counter()
    out: dict[str, dict[str, Any]] = {}
    while len(out) < 2 and time.perf_counter() - t0 < wait:
        if "index" not in out:
            fp = httpx.get(url + "/healthz", timeout=30).json().get("fingerprint_index", {})
            if fp.get("ready"):
                out["index"] = {"ready": True, "after_s": round(time.perf_counter() - t0, 1),
                                "server_cpu_s": cpu_of(pid), "entries": fp.get("entries")}
        if "filter" not in out and "copyledger_content_filter_ready 1.0" in httpx.get(
                url + "/metrics", timeout=30).text:
            out["filter"] = {"ready": True, "after_s": round(time.perf_counter() - t0, 1),
                             "server_cpu_s": cpu_of(pid)}
        time.sleep(0.5)
    for name in ("index", "filter"):
        out.setdefault(name, {"ready": False, "waited_s": wait, "server_cpu_s": cpu_of(pid)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--database", default="")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--port", type=int, default=8977)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--index-wait", type=float, default=600.0)
    ap.add_argument("--first-pass", type=int, default=500,
                    help="inclusion proofs timed apart first (cold), before the samples")
    ap.add_argument("--startup-only", action="store_true")
    ap.add_argument("--seed", type=int, default=13,
                    help="the random picks' seed: another one reads other pages (a page cache "
                         "outside this machine's, such as a virtual disk's host, keeps those read)")
    ap.add_argument("--server-side-only", action="store_true",
                    help="no start-up and no HTTP: the reads in this process only")
    args = ap.parse_args()
    if args.startup_only:
        print(json.dumps(startups(args.data_dir, args.database, args.port, args.starts),
                         indent=2))
        return
    rng = random.Random(args.seed)
    s = settings_mod.load(args.data_dir, database=args.database or None)
    node = Node.open(s)
    size = node.store.latest_block().header.tree_size  # type: ignore[union-attr]
    db_file = args.data_dir / "ledger.sqlite3"
    engine = node.store.dialect
    picks = [node.store.get_entry(rng.randrange(size)).sha256 for _ in range(args.samples // 4)]
    out: dict[str, Any] = {"engine": engine, "entries": size, "load_before": os.getloadavg()}
    if engine == "sqlite":
        db_bytes = sum(p.stat().st_size for p in args.data_dir.glob("ledger.sqlite3*"))
        out["database_file"] = str(db_file)
    else:
        out["table_bytes"] = tables = postgresql_bytes(node)
        db_bytes = sum(tables.values())
    out |= {"database_bytes": db_bytes, "bytes_per_entry": round(db_bytes / size, 1)}
    out["start_warm"] = warm_start(node, size)
    out["first_pass"] = phase(node, lambda: first_pass(node, size, rng, args.first_pass))
    out["server_side"] = phase(node, lambda: server_side(node, size, picks, rng, args.samples))
    out["server_side_proof_connections"] = per_read_connections(node, size, rng, args.samples)
    out["server_side_process_rss_mib"] = rss_split()
    out["in_memory_read_caches"] = in_memory(node)
    node.store.close()
    if args.server_side_only:
        out["load_after"] = os.getloadavg()
        print(json.dumps(out, indent=2))
        return
    out["startup"] = startups(args.data_dir, args.database, args.port, args.starts)
    srv, first = start_once(args.data_dir, args.database, args.port)
    assert srv.proc is not None
    proc = srv.proc
    url = f"http://127.0.0.1:{args.port}"
    try:
        out["startup_to_first_healthz_s"] = first["wall_s"]
        out["server_rss_at_start_mib"] = rss_of(proc.pid)
        built = background(url, proc.pid, args.index_wait)
        out["fingerprint_index_rebuild"], out["content_filter"] = built["index"], built["filter"]
        out["server_rss_after_index_mib"] = rss_of(proc.pid)
        out["over_http"] = over_http(url, size, picks, rng, args.samples)
        out["server_rss_after_requests_mib"] = rss_of(proc.pid)
        ready = httpx.get(url + "/healthz", timeout=10).json()
        out["healthz"] = ready
    finally:
        srv.stop()
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
