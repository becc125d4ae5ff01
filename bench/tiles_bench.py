"""Exporting a log of N entries as static C2SP tlog-tiles, and reading single tiles.

1. Appends N entries (default 1,000,000) through the sequencer in blocks of 10,000 (valid work
   entries that differ in their content hash; the HTTP path is measured by http_bench.py).
2. Times `service.tiles.export` into an empty directory: files and bytes written.
3. Appends --grow more entries and times the incremental export (only new tiles, new partial
   tiles and the checkpoint are written).
4. Times --reads single-tile reads (`read_tile`, one range query each, as GET /tile/... does)
   of random full hash tiles and entry bundles: p50 and p99.

Prints one JSON object. Usage:
    python bench/tiles_bench.py [--entries 1000000] [--grow 10000] [--reads 500] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import tiles
from copyledger.ledger.sequencer import Pending
from copyledger.service.node import Node
from copyledger.service.settings import load
from copyledger.service.tiles import ExportReport, export, read_tile

BLOCK = 10_000


def sha(i: int) -> str:
    return hashlib.sha256(b"tiles bench %d" % i).hexdigest()


def fill(reg: Node, n: int) -> None:
    """n entries: one validated work entry, the rest differing only in their content hash."""
    model_sha = sha(-1)
    model = entry_mod.canonical_bytes(entry_mod.build_work(
        registrant="bench", received_at=entry_mod.utc_now(), sha256=model_sha, title="bench",
        creators=["Bench"], work_type="text"))
    start = reg.sequencer.state.size
    for lo in range(start, start + n, BLOCK):
        futs = []
        for i in range(lo, min(start + n, lo + BLOCK)):
            h = sha(i)
            futs.append(reg.sequencer.submit(
                Pending(model.replace(model_sha.encode(), h.encode()), "work", h, "bench")))
        for f in futs:
            f.result(timeout=600)


def summary(rep: ExportReport, seconds: float) -> dict[str, Any]:
    return {"tree_size": rep.tree_size, "previous_size": rep.previous_size,
            "seconds": round(seconds, 3), "files": rep.files, "bytes": rep.bytes,
            "hash_tiles": rep.tiles, "entry_bundles": rep.bundles,
            "entries_per_s": round((rep.tree_size - rep.previous_size) / seconds)}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--grow", type=int, default=10_000)
    ap.add_argument("--reads", type=int, default=500)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="copyledger-tiles-bench-"))
    reg = Node.open(load(tmp / "data", heartbeat_s=3600.0, max_batch=BLOCK))
    reg.start()
    try:
        t = time.perf_counter()
        fill(reg, args.entries)
        fill_s = time.perf_counter() - t

        out = tmp / "tiles"
        t = time.perf_counter()
        first = export(reg.store, out)
        first_s = time.perf_counter() - t

        fill(reg, args.grow)
        t = time.perf_counter()
        second = export(reg.store, out)
        second_s = time.perf_counter() - t

        size = reg.sequencer.state.size
        full = size // tiles.WIDTH
        rng = random.Random(7)
        reads: dict[str, dict[str, float]] = {}
        for name, level in (("hash_tile", 0), ("entry_bundle", tiles.ENTRIES)):
            times = []
            for _ in range(args.reads if full else 0):
                tile = tiles.Tile(level, rng.randrange(full))
                t = time.perf_counter()
                read_tile(reg.store, tile, size)
                times.append((time.perf_counter() - t) * 1000)
            if times:
                reads[name] = {"p50_ms": round(statistics.median(times), 3),
                               "p99_ms": round(percentile(times, 0.99), 3)}
        on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(json.dumps({
            "benchmark": "tiles_export",
            "entries": args.entries,
            "fill_seconds": round(fill_s, 3),
            "first_export": summary(first, first_s),
            "incremental_export": summary(second, second_s),
            "directory_bytes": on_disk,
            "single_tile_reads": reads,
            "database": reg.store.dialect,
            "python": platform.python_version(),
            "machine": platform.machine(),
        }, indent=2))
    finally:
        reg.stop()
        reg.store.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
