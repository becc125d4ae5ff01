"""Near-duplicate index at scale: build time and single-query latency over 1 M fingerprints.

Three measurements, each printed as JSON:

1. faiss alone, PDQ (256-bit codes): IndexBinaryFlat (exact scan) against IndexBinaryMultiHash
   (16 tables of 16 bits, nflip chosen so the search stays exact), range search at the match
   radius (31) and at the 'possible' radius (63); build seconds, p50/p99 per query, recall of
   the planted near-duplicates, resident memory added.
2. faiss alone, pHash (64-bit codes): IndexBinaryFlat at radius 12.
3. matching.index.FingerprintIndex as the server uses it: add_many() of 1 M entries with a PDQ
   and a pHash fingerprint each (hex parsing included), then search() with both.

Queries are answered one at a time, in process: half are near-duplicates of indexed codes
(a random number of bits flipped, up to the match radius), half are random codes. Random codes
are uniformly distributed; real PDQ hashes are not, which flatters the multi-hash buckets.

Usage: python bench/index_bench.py [--size 1000000] [--queries 1000] [--only flat,multihash,...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.matching import scoring
from copyledger.matching.index import FingerprintIndex


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def flip_bits(codes: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copy of codes with counts[i] distinct random bits flipped in row i."""
    out = codes.copy()
    bits = codes.shape[1] * 8
    for row, k in enumerate(counts):
        for bit in rng.choice(bits, int(k), replace=False):
            out[row, bit // 8] ^= np.uint8(1 << (bit % 8))
    return out


def make_queries(
    codes: np.ndarray, n: int, max_flip: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n queries: the first half near-duplicates of random indexed codes, then random ones."""
    half = n // 2
    targets = rng.integers(0, len(codes), half)
    near = flip_bits(codes[targets], rng.integers(0, max_flip + 1, half), rng)
    rand = rng.integers(0, 256, (n - half, codes.shape[1]), dtype=np.uint8)
    return np.vstack([near, rand]), targets


def latency(fn: Any, queries: np.ndarray) -> tuple[dict[str, float], list[Any]]:
    times, results = [], []
    for q in queries:
        started = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - started)
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }, results


def recall(results: list[Any], targets: np.ndarray) -> float:
    """Share of near-duplicate queries whose source code came back."""
    found = sum(int(t) in set(ids.tolist()) for ids, t in zip(results, targets, strict=False))
    return round(found / max(len(targets), 1), 4)


def bench_faiss(
    kind: str,
    codes: np.ndarray,
    queries: np.ndarray,
    targets: np.ndarray,
    radii: list[int],
    nflips: tuple[int, ...] = (1, 2, 3),
) -> dict[str, Any]:
    import faiss

    bits = codes.shape[1] * 8
    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexBinaryFlat(bits)
    else:
        index = faiss.IndexBinaryMultiHash(bits, 16, bits // 16)
    index.add(codes)
    build = time.perf_counter() - started
    out: dict[str, Any] = {
        "index": type(index).__name__,
        "build_s": round(build, 3),
        "rss_added_mib": round(rss_mib() - before, 1),
    }
    runs: list[tuple[int, int | None]] = [(r, None) for r in radii]
    if kind == "multihash":  # nflip k is exact up to radius 16 * (k + 1) - 1
        runs = [(min(16 * (k + 1) - 1, max(radii)), k) for k in nflips]
    for radius, nflip in runs:
        if nflip is not None:
            index.nflip = nflip

        def one(q: np.ndarray, radius: int = radius) -> np.ndarray:
            _, _, ids = index.range_search(q.reshape(1, -1), radius + 1)
            return ids

        stats, results = latency(one, queries)
        stats["recall_near_duplicates"] = recall(results[: len(targets)], targets)
        stats["mean_hits_random_queries"] = round(
            float(np.mean([len(r) for r in results[len(targets) :]])), 3
        )
        name = f"radius_{radius}" if nflip is None else f"radius_{radius}_nflip_{nflip}"
        out[name] = stats
    return out


def bench_fingerprint_index(
    pdq: np.ndarray, phash: np.ndarray, n_queries: int, rng: np.random.Generator
) -> dict[str, Any]:
    gc.collect()
    before = rss_mib()
    index = FingerprintIndex()
    started = time.perf_counter()
    batch = 100_000
    for start in range(0, len(pdq), batch):
        index.add_many(
            (
                seq,
                {
                    "pdq": {"algorithm": "pdq", "hash": p.tobytes().hex(), "quality": 100,
                            "low_quality": False},
                    "phash": {"algorithm": "phash", "hash": h.tobytes().hex()},
                },
            )
            for seq, p, h in zip(
                range(start, start + batch), pdq[start : start + batch],
                phash[start : start + batch], strict=False,
            )
        )
    build = time.perf_counter() - started
    q_pdq, targets = make_queries(pdq, n_queries, scoring.PDQ_MATCH, rng)
    q_phash = phash[rng.integers(0, len(phash), n_queries)]
    q_phash[: len(targets)] = flip_bits(phash[targets], rng.integers(0, 5, len(targets)), rng)
    queries = [
        {"pdq": {"algorithm": "pdq", "hash": a.tobytes().hex()},
         "phash": {"algorithm": "phash", "hash": b.tobytes().hex()}}
        for a, b in zip(q_pdq, q_phash, strict=True)
    ]
    times, hits = [], 0
    for i, q in enumerate(queries):
        started = time.perf_counter()
        found = index.search(q)
        times.append(time.perf_counter() - started)
        if i < len(targets):
            hits += any(c.seq == int(targets[i]) and c.algorithm == "pdq" for c in found)
    ms = np.array(times) * 1000
    return {
        "entries": len(index),
        "stats": index.stats(),
        "add_many_s": round(build, 2),
        "rss_added_mib": round(rss_mib() - before, 1),
        "search_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "search_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "recall_near_duplicates": round(hits / len(targets), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", default="flat,multihash,phash,fingerprint_index")
    parser.add_argument("--omp-threads", type=int, default=1,
                        help="faiss OpenMP threads for the raw faiss runs (FingerprintIndex "
                        "sets its own: 1)")
    parser.add_argument("--nflips", default="1,2,3",
                        help="multi-hash nflip values to try (exact up to 16*(nflip+1)-1 bits)")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.omp_threads)

    only = set(args.only.split(","))
    rng = np.random.default_rng(args.seed)
    pdq = rng.integers(0, 256, (args.size, 32), dtype=np.uint8)
    phash = rng.integers(0, 256, (args.size, 8), dtype=np.uint8)
    report: dict[str, Any] = {
        "bench": "index_bench",
        "size": args.size,
        "queries": args.queries,
        "query_mix": "half near-duplicates (0..31 bits flipped for PDQ, 0..8 for pHash), "
        "half random",
        "faiss": faiss.__version__,
        "omp_threads": args.omp_threads,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    pdq_queries, pdq_targets = make_queries(pdq, args.queries, scoring.PDQ_MATCH, rng)
    ph_queries, ph_targets = make_queries(phash, args.queries, scoring.PHASH_MATCH, rng)
    radii = [scoring.PDQ_MATCH, scoring.PDQ_POSSIBLE]
    nflips = tuple(int(k) for k in args.nflips.split(","))
    for kind in ("flat", "multihash"):
        if kind in only:
            report[f"pdq_{kind}"] = isolated(
                bench_faiss, kind, pdq, pdq_queries, pdq_targets, radii, nflips
            )
    if "phash" in only:
        report["phash_flat"] = isolated(
            bench_faiss, "flat", phash, ph_queries, ph_targets, [scoring.PHASH_POSSIBLE]
        )
    if "fingerprint_index" in only:
        report["fingerprint_index"] = isolated(
            bench_fingerprint_index, pdq, phash, args.queries, rng
        )
    print(json.dumps(report, indent=2))


def isolated(fn: Any, *args: Any) -> Any:
    """Run one measurement in a forked child, so its memory figure is its own (freed memory
    of an earlier index would otherwise be reused and hide the growth) and its peak RSS too."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(_with_peak, (fn, *args))


def _with_peak(fn: Any, *args: Any) -> Any:
    import resource

    out = fn(*args)
    out["child_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


if __name__ == "__main__":
    main()
