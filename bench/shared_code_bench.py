"""A claim check's search when one code is shared by many registered works (D192, D209).

Anyone can register the same picture many times (a flat or near-flat image, a logo), so a
search for it must not cost what others registered. This builds a FingerprintIndex in the
multi-index mode (the mode past 2,000,000 PDQ codes) holding `--random` random works plus
`--shared` copies of each of three codes, interleaved in log order:

- a flat PDQ code (every flat picture's: all zeroes);
- a textured PDQ code (random bits);
- a textured pHash code (32 bits set); and two PDQ queries that match nothing: one sharing a
  16-bit key with the flat code (the cut search then reads that slice to its end), and a
  random one;

and, in a second index, `--texts` random texts (MinHash minima) plus `--shared` copies of one
real text's MinHash (D210); and in a third, `--videos` 40-second videos (a random PDQ frame a
second) that share a ten-second intro, searched with one of them (D211: every video found is
aligned, from its own hits; timed alone).

It then times `search(limit=50)` of each, as a claim check calls it, two ways in the same run:
`cut` (D209: the first codes of each multi-index slice measured, cut longer until complete)
and `whole` (every code of each probed slice measured, as before D209; forced by marking the
index as not in log order). The two answers are compared: they must be equal. Output: JSON,
median and max seconds of `--repeat` searches each, and the ratio whole / cut.

Usage: python bench/shared_code_bench.py [--random 2000000] [--shared 300000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.matching import compute
from copyledger.matching.index import FingerprintIndex

TEXTURED_PHASH = "ff00ff00f0f0cc33"  # 32 bits set: not low-information


def _works(random: int, shared: int, rng: np.random.Generator) -> tuple[list[Any], dict[str, str]]:
    flat = "00" * 32
    textured = bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex()
    total = random + 3 * shared
    kinds = np.zeros(total, np.int8)  # 0 random, 1 flat, 2 textured PDQ, 3 textured pHash
    kinds[rng.choice(total, 3 * shared, replace=False)] = np.repeat([1, 2, 3], shared)
    codes = rng.integers(0, 256, (total, 32), dtype=np.uint8)
    phashes = rng.integers(0, 256, (total, 8), dtype=np.uint8)
    items: list[Any] = []
    for seq in range(total):
        kind = int(kinds[seq])
        pdq = flat if kind == 1 else textured if kind == 2 else codes[seq].tobytes().hex()
        phash = TEXTURED_PHASH if kind == 3 else phashes[seq].tobytes().hex()
        items.append((seq, {"pdq": {"algorithm": "pdq", "version": "1", "hash": pdq,
                                    "quality": 100, "low_quality": False},
                            "phash": {"algorithm": "phash", "version": "1", "hash": phash}}))
    return items, {"flat PDQ": flat, "textured PDQ": textured}


def _texts(random: int, shared: int, rng: np.random.Generator) -> tuple[list[Any], Any]:
    text = compute.text_fingerprints(" ".join(f"word{i}" for i in range(400)))
    total = random + shared
    is_shared = np.zeros(total, bool)
    is_shared[rng.choice(total, shared, replace=False)] = True
    items: list[Any] = []
    for seq in range(total):
        if is_shared[seq]:
            items.append((seq, text))
            continue
        minima = rng.integers(0, 2**32, 128, dtype=np.uint64).astype("<u8").tobytes()
        items.append((seq, {"minhash": {**text["minhash"],
                                        "hashvalues": base64.b64encode(minima).decode()}}))
    return items, text


def _videos(count: int, rng: np.random.Generator) -> list[Any]:
    intro = rng.integers(0, 256, (10, 32), dtype=np.uint8)
    items = []
    for seq in range(count):
        rows = np.zeros((40, 35), np.uint8)
        rows[:, 0:2] = (np.arange(40, dtype="<u2") * 4).view(np.uint8).reshape(-1, 2)
        rows[:, 2:34] = rng.integers(0, 256, (40, 32), dtype=np.uint8)
        rows[:10, 2:34] = intro
        rows[:, 34] = 100
        items.append((seq, {"vpdq": {"frames": base64.b64encode(rows.tobytes()).decode()}}))
    return items


def _time(index: FingerprintIndex, query: dict[str, Any], repeat: int) -> tuple[list[float], Any]:
    times, answer = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        answer = index.search(query, limit=50)
        times.append(time.perf_counter() - start)
    return times, answer


def _row(cut: list[float], whole: list[float], answer: Any) -> dict[str, Any]:
    return {"found": len({c.seq for c in answer}),
            "cut_s": {"median": statistics.median(cut), "max": max(cut)},
            "whole_s": {"median": statistics.median(whole), "max": max(whole)},
            "ratio_whole_over_cut": statistics.median(whole) / statistics.median(cut)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--random", type=int, default=2_000_000)
    parser.add_argument("--shared", type=int, default=300_000)
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    items, pdq_codes = _works(args.random, args.shared, rng)
    index = FingerprintIndex(multihash_from=0)
    start = time.perf_counter()
    for at in range(0, len(items), 10_000):
        index.add_many(items[at:at + 10_000])
    built = time.perf_counter() - start
    del items
    queries = {name: {"pdq": {"algorithm": "pdq", "version": "1", "hash": code,
                              "quality": 100, "low_quality": False}}
               for name, code in pdq_codes.items()}
    queries["textured pHash"] = {"phash": {"algorithm": "phash", "version": "1",
                                           "hash": TEXTURED_PHASH}}
    # The cut search's hard cases: no match, but one 16-bit key shared with the flat code
    # (its slice read to the end); and a random code, the common case.
    lone = rng.integers(0, 256, 32, dtype=np.uint8)
    lone[:2] = 0
    for name, code in (("no match, a key of the flat code", lone),
                       ("random PDQ", rng.integers(0, 256, 32, dtype=np.uint8))):
        queries[name] = {"pdq": {"algorithm": "pdq", "version": "1", "hash": bytes(code).hex(),
                                 "quality": 100, "low_quality": False}}
    results: dict[str, Any] = {}
    for name, query in queries.items():
        index._pdq.ascending = index._phash.ascending = True
        cut, cut_answer = _time(index, query, args.repeat)
        index._pdq.ascending = index._phash.ascending = False
        whole, whole_answer = _time(index, query, args.repeat)
        index._pdq.ascending = index._phash.ascending = True
        assert cut_answer == whole_answer, name
        results[name] = _row(cut, whole, cut_answer)
    pdq_index = index.stats()["pdq_index"]
    del index
    texts, text = _texts(args.texts, args.shared, rng)
    index = FingerprintIndex()
    for at in range(0, len(texts), 10_000):
        index.add_many(texts[at:at + 10_000])
    del texts
    cut, cut_answer = _time(index, text, args.repeat)
    index._lsh.ascending = False
    whole, whole_answer = _time(index, text, args.repeat)
    assert cut_answer == whole_answer
    results["shared text"] = _row(cut, whole, cut_answer)
    del index
    videos = _videos(args.videos, rng)
    index = FingerprintIndex()
    for at in range(0, len(videos), 1_000):
        index.add_many(videos[at:at + 1_000])
    query = videos[-1][1]
    del videos
    times, answer = _time(index, query, args.repeat)
    assert args.videos - 1 in {c.seq for c in answer}  # the query's own video
    results["video sharing an intro"] = {  # (every video found is aligned: no cut, D211)
        "found": len(answer), "search_s": {"median": statistics.median(times),
                                           "max": max(times)}}
    print(json.dumps({
        "bench": "shared_code", "random": args.random, "shared": args.shared,
        "codes": args.random + 3 * args.shared, "pdq_index": pdq_index,
        "texts": args.texts + args.shared, "videos": args.videos,
        "build_s": round(built, 1), "repeat": args.repeat, "results": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_1min": os.getloadavg()[0]},
    }, indent=2))


if __name__ == "__main__":
    main()
