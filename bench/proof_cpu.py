"""CPU time of an inclusion proof in this process, with its reads on one connection
(`Store.reading`, D80) and with a connection checked out per read (as before D80), the two
alternating over the same random entries; with their wall-time p50 and p99 (since D84 a proof
is one read, so the two ways should agree; run it on the code before and after a change to
compare those).

On a loaded machine the wall time of a proof on PostgreSQL is mostly waiting (for the
PostgreSQL server process's turn on a core); this process's CPU is what the change moves.

Usage: python bench/proof_cpu.py --data-dir DIR [--database URL] [--proofs 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.big_log import warm_start
from copyledger.service import reads
from copyledger.service import settings as settings_mod
from copyledger.service.node import Node


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--database", default="")
    ap.add_argument("--proofs", type=int, default=1000)
    args = ap.parse_args()
    node = Node.open(settings_mod.load(args.data_dir, database=args.database or None))
    size = node.store.tree_size()
    rng = random.Random(80)
    warmed = warm_start(node, size)  # what `serve` does at start (D89), if this code does it
    for _ in range(50):  # warm the pool (and, before D89, begin on the upper-node cache)
        reads.proof(node, rng.randrange(size), None)
    real = node.store.reading
    ways: list[tuple[str, Any]] = [("one_connection", real),
                                   ("a_connection_per_read", contextlib.nullcontext)]
    cpu = {name: 0.0 for name, _ in ways}
    walls: dict[str, list[float]] = {name: [] for name, _ in ways}
    load = os.getloadavg()[0]
    for i in range(args.proofs):
        seq = rng.randrange(size)
        for name, reading in ways if i % 2 else ways[::-1]:  # each goes first half the time
            node.store.reading = reading  # type: ignore[method-assign]
            c0, w0 = time.process_time(), time.perf_counter()
            reads.proof(node, seq, None)
            walls[name].append(time.perf_counter() - w0)
            cpu[name] += time.process_time() - c0
    node.store.reading = real  # type: ignore[method-assign]
    node.store.close()
    n = args.proofs
    print(json.dumps({**{k: {"cpu_ms_per_proof": round(1000 * cpu[k] / n, 3),
                             "wall_ms_mean": round(1000 * sum(w) / n, 3),
                             "wall_ms_p50": round(1000 * statistics.median(w), 3),
                             "wall_ms_p99": round(1000 * statistics.quantiles(w, n=100)[98], 3)}
                         for k, w in walls.items()},
                      "engine": node.store.dialect, "entries": size, "proofs_each": n,
                      "start_warm": warmed,
                      "load_before": load, "load_after": os.getloadavg()[0]}, indent=2))


if __name__ == "__main__":
    main()
