"""How fast the audit recomputes a log: full, and incremental after growth.

1. Builds a log of N entries through the sequencer (valid work entries that differ in their
   content hash) in blocks of random size 1..2*mean-1 (default mean 2.15, as a lightly loaded
   registry seals them: 70,000 entries in about 32,500 blocks), each block with its two signed
   notes and its RFC 3161 token from the node's own TSA, and some transfers so chains of title
   are replayed.
2. Times the full audit (`service.admin.audit_registry`) in one process and with one worker
   process per CPU: entries/s and blocks/s, of wall time and of the CPU time of every process
   (what compares on a machine others are using).
3. Appends --grow more entries and times the incremental audit (`--incremental`) that resumes
   from the state the full audit saved.

Prints one JSON object. Usage:
    python bench/audit_bench.py [--entries 70000] [--mean-block 2.15] [--grow 10000]
                                [--workers N] [--keep DIR]
    python bench/audit_bench.py --state-at N --keep DIR
    python bench/audit_bench.py --audit DIR [--database URL] [--workers N] [--incremental]

`--state-at N` only writes, into the SQLite registry DIR/data (a copy), the audit state a clean
audit ending at the block of tree size N would have saved, so that `copyledger audit
--incremental` then checks everything after N (how D73 timed the last 10,000 entries of a
large log; the incremental audit's own checks of the head, the frontier and the node and
link counts refuse a wrong state).

`--audit DIR` only times the audit of an existing registry (data directory DIR, a copy or one
whose `audit-state.json` may be replaced; `--database URL` reads another database, e.g. a
read-only log, while the state goes to DIR) with one worker per CPU (or --workers): the
main process's CPU seconds beside every process's show how much of the audit is serial
(D85), and the load average before and after is printed with it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import merkle
from copyledger.ledger.audit import AuditState
from copyledger.ledger.sequencer import Pending
from copyledger.service.admin import AUDIT_STATE, audit_registry
from copyledger.service.node import Node
from copyledger.service.settings import Settings, load


def sha(i: int) -> str:
    return hashlib.sha256(b"audit bench %d" % i).hexdigest()


def fill(node: Node, n: int, mean_block: float, rng: random.Random) -> None:
    """n entries in blocks of 1..2*mean_block-1 entries; every 50th block also transfers a work."""
    model_sha = sha(-1)
    model = entry_mod.canonical_bytes(entry_mod.build_work(
        registrant="bench", received_at=entry_mod.utc_now(), sha256=model_sha, title="bench",
        creators=["Bench"], work_type="text"))
    start = node.sequencer.state.size
    top = max(1, round(2 * mean_block - 1))
    i = start
    while i < start + n:
        k = min(rng.randint(1, top), start + n - i)
        futs = [node.sequencer.submit(
            Pending(model.replace(model_sha.encode(), sha(j).encode()), "work", sha(j), "bench"))
            for j in range(i, i + k)]
        for f in futs:
            f.result(timeout=600)
        i += k


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_audit(s: Settings, **kw: Any) -> dict[str, Any]:
    """One audit: wall seconds, this process's CPU seconds, and the CPU seconds of every
    process (the workers' are counted once they have exited, which the audit waits for).
    On a busy machine the CPU figures are what compares: the wall time is the share of the
    cores the audit was given."""
    t, c, k = time.perf_counter(), time.process_time(), _children_cpu()
    rep = audit_registry(s, **kw)
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    all_cpu = cpu + _children_cpu() - k
    if not rep.ok:
        raise SystemExit(f"audit failed: {rep.problem}")
    new = rep.entries - (rep.resumed_from or 0)
    return {"workers": kw.get("workers"), "incremental": kw.get("incremental", False),
            "entries": rep.entries, "blocks": rep.blocks, "entries_checked": new,
            "seconds": round(secs, 3), "main_process_cpu_seconds": round(cpu, 3),
            "all_processes_cpu_seconds": round(all_cpu, 3),
            "entries_per_cpu_s": round(new / all_cpu), "blocks_per_cpu_s":
            round(rep.blocks / all_cpu) if not rep.resumed_from else None,
            "entries_per_s": round(new / secs), "blocks_per_s": round(rep.blocks / secs)
            if not rep.resumed_from else None}


def state_at(data_dir: Path, n: int) -> AuditState:
    """The state a clean audit ending at the first block of tree size `n` saves, from the
    stored rows of the SQLite registry in `data_dir` (which must have such a block)."""
    db = sqlite3.connect(data_dir / "ledger.sqlite3")
    try:
        height, block_hash, root = db.execute(
            "SELECT height, hash, tree_root FROM blocks WHERE tree_size = ? ORDER BY height "
            "LIMIT 1", (n,)).fetchone()
        frontier = tuple(db.execute("SELECT hash FROM merkle_nodes WHERE level = ? AND idx = ?",
                                    node).fetchone()[0].hex() for node in merkle.frontier_ids(n))
        nodes = db.execute("SELECT count(*) FROM merkle_nodes WHERE ((idx + 1) << level) <= ?",
                           (n,)).fetchone()[0]
        links = db.execute("SELECT count(*) FROM entry_links WHERE seq < ?", (n,)).fetchone()[0]
    finally:
        db.close()
    return AuditState(n, bytes(root).hex(), height, bytes(block_hash).hex(), frontier, nodes,
                      links)


def primitives(batches: int = 40, per: int = 100) -> dict[str, Any]:
    """CPU microseconds per call of what every block and entry must compute, over `batches`
    batches: the median (what this run paid, load and all) and the minimum (the closest this
    machine came to running alone). Their ratio converts the audit's CPU seconds measured
    here into a quiet machine's."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from copyledger.ledger import sodium

    ed = ed25519.Ed25519PrivateKey.generate()
    ed_sig, ed_pub = ed.sign(b"note" * 40), ed.public_key()
    ed_raw = ed_pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    p256 = ec.generate_private_key(ec.SECP256R1())
    ec_sig = p256.sign(b"attrs" * 40, ec.ECDSA(hashes.SHA256()))
    ec_pub = p256.public_key()
    data = b"x" * 300
    calls = {
        "ed25519_verify": lambda: ed_pub.verify(ed_sig, b"note" * 40),
        "ed25519_verify_libsodium": lambda: sodium.verify(ed_raw, ed_sig, b"note" * 40),
        "ecdsa_p256_verify": lambda: ec_pub.verify(ec_sig, b"attrs" * 40,
                                                   ec.ECDSA(hashes.SHA256())),
        "sha256_300_bytes": lambda: hashlib.sha256(data).digest(),
    }
    out: dict[str, Any] = {}
    for name, call in calls.items():
        costs = []
        for _ in range(batches):
            c = time.process_time()
            for _ in range(per):
                call()
            costs.append((time.process_time() - c) / per * 1e6)
        costs.sort()
        out[name] = {"median_us": round(costs[len(costs) // 2], 2),
                     "min_us": round(costs[0], 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=70_000)
    ap.add_argument("--mean-block", type=float, default=2.15)
    ap.add_argument("--grow", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", help="build (or reuse) the log in this directory and keep it")
    ap.add_argument("--state-at", type=int, help="only write the audit state at this tree "
                    "size into the registry --keep DIR holds (DIR/data)")
    ap.add_argument("--audit", help="only time the audit of the existing registry DIR")
    ap.add_argument("--database", help="with --audit: the database URL to audit")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--incremental", action="store_true")
    args = ap.parse_args()
    if args.audit is not None:
        before = os.getloadavg()
        timed = timed_audit(load(args.audit, database=args.database), workers=args.workers,
                            incremental=args.incremental)
        timed["cores_used"] = round(timed["all_processes_cpu_seconds"] / timed["seconds"], 2)
        timed["load_average_before_after"] = [round(before[0], 2),
                                              round(os.getloadavg()[0], 2)]
        print(json.dumps(timed))
        return
    if args.state_at is not None:
        data = Path(args.keep) / "data"
        (data / AUDIT_STATE).write_text(json.dumps(state_at(data, args.state_at).to_dict()))
        return
    rng = random.Random(args.seed)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="copyledger-audit-"))
    s = load(tmp / "data", heartbeat_s=3600.0)

    def grow(n: int) -> float:
        node = Node.open(s)
        node.start()
        try:
            t = time.perf_counter()
            fill(node, n, args.mean_block, rng)
            return time.perf_counter() - t
        finally:
            node.stop()
            node.store.close()

    try:
        node = Node.open(s)
        have = node.sequencer.state.size
        node.store.close()
        fill_s = grow(max(0, args.entries - have))
        one = timed_audit(s, workers=1)
        both = timed_audit(s, workers=os.cpu_count() or 1)
        grow(args.grow)
        incremental = timed_audit(s, workers=os.cpu_count() or 1, incremental=True)
        print(json.dumps({
            "benchmark": "audit",
            "entries": one["entries"],
            "blocks": one["blocks"],
            "fill_seconds": round(fill_s, 1),
            "full_audit_one_process": one,
            "full_audit_all_cpus": both,
            "incremental_after_growth": incremental,
            "primitives_cpu": primitives(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "database": "sqlite",
            "python": platform.python_version(),
            "machine": platform.machine(),
        }, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
