"""A monitor catching up on a served log of N entries through its tiles.

1. Appends N entries (default 20,000) through the sequencer in blocks of 10,000 (the same valid
   work entries as tiles_bench.py), then stops the node.
2. Starts `copyledger serve` on that data directory (a separate process, as in production).
3. Times one `Follower.poll` of an empty mirror over HTTP (`client.tiles.TileFetcher`): every
   entry bundle and hash tile fetched, every entry hashed, validated and stored, the root and
   all hash tiles compared. Reports entries/second, requests, bytes and the mirror's size, and
   the time of a second poll that finds nothing new.

Prints one JSON object. Usage: python bench/monitor_bench.py [--entries 20000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.tiles_bench import BLOCK, fill
from copyledger.client.tiles import TileFetcher
from copyledger.service.monitor import MIRROR_FILE, Follower, Mirror
from copyledger.service.node import Node
from copyledger.service.settings import load
from tests.server import ServerProcess


class Counting:
    """A TileFetcher that counts requests and bytes."""

    def __init__(self, fetch: TileFetcher) -> None:
        self.fetch, self.requests, self.bytes = fetch, 0, 0

    def __call__(self, path: str) -> bytes:
        data = self.fetch(path)
        self.requests += 1
        self.bytes += len(data)
        return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="copyledger-monitor-bench-"))
    s = load(tmp / "data", heartbeat_s=3600.0, max_batch=BLOCK)
    reg = Node.open(s)
    reg.start()
    t = time.perf_counter()
    fill(reg, args.entries)
    fill_s = time.perf_counter() - t
    vkey = reg.verifier_key
    reg.stop()
    srv = ServerProcess(tmp / "data").start()
    mirror = Mirror(tmp / "monitor")
    try:
        with TileFetcher(srv.url) as http:
            fetch = Counting(http)
            follower = Follower(mirror, fetch, vkey)
            t = time.perf_counter()
            up = follower.poll()
            catch_up_s = time.perf_counter() - t
            requests, fetched = fetch.requests, fetch.bytes
            t = time.perf_counter()
            follower.poll()
            idle_ms = (time.perf_counter() - t) * 1000
        assert up.tree_size == args.entries, up
        print(json.dumps({
            "benchmark": "monitor_catch_up",
            "entries": args.entries,
            "fill_seconds": round(fill_s, 3),
            "catch_up_seconds": round(catch_up_s, 3),
            "entries_per_s": round(args.entries / catch_up_s),
            "requests": requests,
            "bytes_fetched": fetched,
            "mirror_bytes": (tmp / "monitor" / MIRROR_FILE).stat().st_size,
            "idle_poll_ms": round(idle_ms, 3),
            "python": platform.python_version(),
            "machine": platform.machine(),
        }, indent=2))
    finally:
        mirror.close()
        srv.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
