"""Building an RFC 6962 tree over N entries: copyledger's ledger.merkle against the physical floor
(the tightest plain-Python hashlib loop: N leaf hashes + N-1 node hashes, nothing else) and
against two Python peers, pymerkle and merkletools. Prints one JSON object.

    python bench/merkle_bench.py [--leaves 1000000] [--peer-leaves 200000] [--repeat 3]

Ours and the floor are timed best of --repeat, interleaved, with each result kept alive until the
clock has stopped (freeing 2 M node tuples is not part of building them). The peers are much
slower, so they run once on min(N, --peer-leaves) entries; their time is also extrapolated
linearly to N, and the JSON says which leaf count each number was measured on.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import ssl
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.ledger import merkle

BATCH = 1000


def entries(n: int) -> list[bytes]:
    """Small distinct entries, so that the tree (not the leaf data) is what gets measured."""
    return [b"copyledger bench entry %012d" % i for i in range(n)]


def floor_root(datas: Sequence[bytes]) -> bytes:
    """The physical limit: every hash RFC 6962 needs, in the tightest comprehension, no bookkeeping.

    (Tried and slower here: map() chains over bound methods, one joined buffer sliced per node,
    prefix-hash .copy(), b"".join((b"\\x01", l, r)), the builtin _sha256 module for 2-block input.)
    """
    sha256 = hashlib.sha256
    level = [sha256(b"\x00" + d).digest() for d in datas]
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = [
            sha256(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2], strict=False)
        ]
        if odd is not None:
            level.append(odd)
    return level[0] if level else merkle.EMPTY_ROOT


def copyledger_one_shot(datas: Sequence[bytes]) -> tuple[merkle.Appended, float]:
    """leaf_hashes() + append() from empty, one call each; returns the time spent in append."""
    leaves = merkle.leaf_hashes(datas)
    t = time.perf_counter()
    appended = merkle.append(0, [], leaves)
    return appended, time.perf_counter() - t


def copyledger_batched(datas: Sequence[bytes]) -> tuple[int, bytes]:
    """A sequencer's pattern: blocks of 1000 entries, keeping only size and frontier between them
    (each block's new nodes would be written to the store and dropped)."""
    size, frontier, root = 0, list[bytes](), merkle.EMPTY_ROOT
    nodes = 0
    for lo in range(0, len(datas), BATCH):
        a = merkle.append(size, frontier, merkle.leaf_hashes(datas[lo : lo + BATCH]))
        size, frontier, root = a.size, a.frontier, a.root
        nodes += len(a.nodes)
    return nodes, root


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def rates(n_measured: int, seconds: float, n_target: int, floor_per_leaf: float) -> dict[str, Any]:
    per_leaf = seconds / n_measured
    return {
        "leaves": n_measured,
        "seconds": round(seconds, 4),
        "leaves_per_s": round(n_measured / seconds),
        "seconds_at_n": round(per_leaf * n_target, 3),
        "ratio_vs_floor": round(per_leaf / floor_per_leaf, 3),
    }


def bench_pymerkle(datas: Sequence[bytes]) -> tuple[float, bytes, str]:
    from pymerkle import InmemoryTree  # type: ignore[import-untyped]

    def run() -> bytes:
        tree = InmemoryTree(algorithm="sha256")
        for d in datas:
            tree.append_entry(d)
        root: bytes = tree.get_root()
        return root

    seconds, root = timed(run)
    return seconds, root, metadata.version("pymerkle")


def bench_merkletools(datas: Sequence[bytes]) -> tuple[float, bytes, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sha3 is not working!": its pysha3 dependency is absent
        import merkletools  # type: ignore[import-untyped]

    texts = [d.decode("ascii") for d in datas]  # it hashes str.encode("utf-8"): the same bytes

    def run() -> bytes:
        mt = merkletools.MerkleTools(hash_type="sha256")
        mt.add_leaf(texts, do_hash=True)
        mt.make_tree()
        return bytes.fromhex(mt.get_merkle_root())

    seconds, root = timed(run)
    return seconds, root, metadata.version("merkletools")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--peer-leaves", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()
    n = args.leaves
    if n < 1:
        ap.error("--leaves must be at least 1")
    datas = entries(n)
    stored = 2 * n - n.bit_count()  # complete subtrees; the floor also hashes the ephemeral ones

    best: dict[str, float] = {"floor": float("inf"), "one_shot": float("inf")}
    best |= {"one_shot_leaf_hashes": float("inf"), "one_shot_append": float("inf")}
    best["batched"] = float("inf")
    want = b""
    for _ in range(args.repeat):
        seconds, want = timed(lambda: floor_root(datas))
        best["floor"] = min(best["floor"], seconds)

        seconds, (appended, in_append) = timed(lambda: copyledger_one_shot(datas))
        if appended.root != want or len(appended.nodes) != stored:
            sys.exit("merkle_bench: copyledger one-shot root differs from the floor's")
        best["one_shot"] = min(best["one_shot"], seconds)
        best["one_shot_append"] = min(best["one_shot_append"], in_append)
        best["one_shot_leaf_hashes"] = min(best["one_shot_leaf_hashes"], seconds - in_append)
        del appended

        seconds, (nodes, root) = timed(lambda: copyledger_batched(datas))
        if root != want or nodes != stored:
            sys.exit("merkle_bench: copyledger batched root differs from the floor's")
        best["batched"] = min(best["batched"], seconds)

    floor_per_leaf = best["floor"] / n
    one_shot = rates(n, best["one_shot"], n, floor_per_leaf)
    one_shot |= {
        "leaf_hashes_seconds": round(best["one_shot_leaf_hashes"], 4),
        "append_seconds": round(best["one_shot_append"], 4),
        "nodes_returned": stored,
        "root_matches_floor": True,
    }
    batched = rates(n, best["batched"], n, floor_per_leaf)
    batched |= {"batch": BATCH, "root_matches_floor": True}
    out: dict[str, Any] = {
        "benchmark": "merkle tree build (RFC 6962, SHA-256)",
        "leaves": n,
        "entry_bytes": len(datas[0]),
        "repeat": args.repeat,
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "floor": {
            **rates(n, best["floor"], n, floor_per_leaf),
            "hashes": 2 * n - 1,
            "hashes_per_s": round((2 * n - 1) / best["floor"]),
            "what": "plain hashlib comprehensions: N leaf + N-1 node hashes, nothing kept",
        },
        "copyledger_one_shot": one_shot,
        "copyledger_batched": batched,
        "target": {
            "one_shot_within_x_floor": 1.5,
            "met": one_shot["ratio_vs_floor"] <= 1.5,
        },
    }

    if not args.no_peers:
        m = min(n, args.peer_leaves)
        peer_datas = datas[:m]
        rfc_root = merkle.root(merkle.leaf_hashes(peer_datas))
        seconds, root, version = bench_pymerkle(peer_datas)
        out["pymerkle"] = {
            "version": version,
            **rates(m, seconds, n, floor_per_leaf),
            "scaled_to_n": m != n,
            "runs": 1,
            "root_matches_rfc6962": root == rfc_root,
            "how": "InmemoryTree(algorithm='sha256'), append_entry() per entry, get_root()",
        }
        seconds, root, version = bench_merkletools(peer_datas)
        out["merkletools"] = {
            "version": version,
            **rates(m, seconds, n, floor_per_leaf),
            "scaled_to_n": m != n,
            "runs": 1,
            "root_matches_rfc6962": root == rfc_root,
            "how": "MerkleTools('sha256'), add_leaf(list, do_hash=True), make_tree(); "
            "not RFC 6962 (no 0x00/0x01 domain prefixes, hex strings)",
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
