"""CPU time of `client.verify.check_receipts` a receipt, on a captured batch answer (D83, D90).

`capture` registers 1,000 works in one batch on a registry (in this process, through the
API) and writes the answer's registrations and the log's verifier key to a JSON file.
`measure` checks that answer `--rounds` times with the code of `--tree` (a checkout of this
repository; default this one) and prints the best and median CPU µs a receipt: run it for the
code before and after a change, alternately, on the same file.

Usage: python bench/verify_cpu.py capture --data-dir DIR --out FILE
       python bench/verify_cpu.py measure --answer FILE [--tree DIR] [--rounds 7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path


def capture(data_dir: Path, out: Path, n: int) -> None:
    from fastapi.testclient import TestClient

    from copyledger.api.app import create_app
    from copyledger.service import settings as settings_mod
    from copyledger.service.apikeys import create_key
    from copyledger.service.node import Node

    node = Node.open(settings_mod.load(data_dir))
    key, _ = create_key(node.store, "creator", "bench")
    salt = os.urandom(8).hex()  # new content each capture
    works = [{"sha256": hashlib.sha256(f"{salt}{i}".encode()).hexdigest(), "title": f"W {i}",
              "creators": ["A"], "work_type": "image"} for i in range(n)]
    with TestClient(create_app(node)) as c:
        r = c.post("/v1/works/batch", json={"works": works},
                   headers={"Authorization": f"Bearer {key}"})
    r.raise_for_status()
    regs = [x["registration"] for x in r.json()["results"]]
    out.write_text(json.dumps({"registrations": regs, "keys": [node.verifier_key]}))
    print(f"{len(regs)} receipts, tree size {regs[-1]['receipt']['tree_size']}")


def measure(answer: Path, tree: Path, rounds: int) -> None:
    sys.path.insert(0, str(tree))
    import gc

    from copyledger.client.verify import check_receipts

    got = json.loads(answer.read_text())
    regs, keys = got["registrations"], got["keys"]
    load = os.getloadavg()[0]
    per: list[float] = []
    for _ in range(rounds):
        fresh = json.loads(json.dumps(regs))  # nothing cached on the objects from a round before
        gc.collect()
        c0 = time.process_time()
        out = check_receipts(fresh, keys)
        per.append((time.process_time() - c0) / len(regs) * 1e6)
        assert all(type(x).__name__ == "Receipt" for x in out), out[:1]
    import copyledger.ledger.merkle as merkle

    print(json.dumps({"tree": str(tree), "merkle": merkle.__file__, "receipts": len(regs),
                      "best_us": round(min(per), 2), "median_us": round(statistics.median(per), 2),
                      "load_before": load, "load_after": os.getloadavg()[0]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--data-dir", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--works", type=int, default=1000)
    m = sub.add_parser("measure")
    m.add_argument("--answer", type=Path, required=True)
    m.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    m.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if args.cmd == "capture":
        capture(args.data_dir, args.out, args.works)
    else:
        measure(args.answer, args.tree, args.rounds)


if __name__ == "__main__":
    main()
