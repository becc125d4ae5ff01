"""Soak: a real `copyledger serve` under 50 connections of mixed reads and writes for a long
time (default 600 s), to show that memory stays flat, nothing fails and the log audits clean.
Samples the server's RSS every few seconds; prints one JSON object.

    python bench/soak.py [--seconds 600] [--connections 50] [--sample 5] [--database URL]
                         [--server-log FILE] [--server-env NAME=VALUE ...]

`--server-env` sets variables for the server alone, e.g. `PYTHONTRACEMALLOC=25` with
`COPYLEDGER_MEMWATCH=FILE` and `COPYLEDGER_MEMWATCH_BASE_S=60` (docs/operations.md §8): traced
in the client too, the load it makes would fall.

RSS drift is measured from the first sample after the warm-up (the first 10 % of the run, at
most 60 s: caches, the index and the allocator settle) to the last sample.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server import ServerProcess, cli

# The client waits this long for a PDF: past the server's wait for a render slot (60 s, D75)
# and the render, so a request the server still serves is not abandoned and counted as failed.
PDF_TIMEOUT_S = 120.0
KEYS = 5  # creator keys the connections share (each key has its own write quota)
# kind -> (weight, expected status): what one request of the mix is
MIX: dict[str, tuple[int, int]] = {
    "register": (35, 201), "evidence": (5, 201), "entry": (15, 200), "bundle": (10, 200),
    "log": (10, 200), "checkpoint": (5, 200), "search": (5, 200), "history": (5, 200),
    "certificate_html": (5, 200), "certificate_pdf": (2, 200), "healthz": (3, 200),
}


def latency(seconds: list[float]) -> dict[str, float]:
    """Median, 99th percentile and maximum, in seconds."""
    xs = sorted(seconds)
    return {"p50": round(xs[len(xs) // 2], 3), "p99": round(xs[int(len(xs) * 0.99)], 3),
            "max": round(xs[-1], 3)} if xs else {}


def rss_mib(pid: int) -> float:
    """The process's resident set size, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Soak:
    def __init__(self, url: str, keys: list[str], seconds: float) -> None:
        self.url = url
        self.keys = keys
        self.deadline = time.monotonic() + seconds
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.works: list[int] = []  # seqs of registered works, for reads
        self.seconds: dict[str, list[float]] = {}  # kind -> each answered request's latency
        self.n = 0

    def _request(self, kind: str, worker: int) -> tuple[str, str, dict[str, Any]]:
        """(method, path, httpx keyword arguments) for one request of `kind`."""
        h = {"Authorization": f"Bearer {self.keys[worker % len(self.keys)]}"}
        seq = random.choice(self.works) if self.works else 0
        self.n += 1
        sha = hashlib.sha256(f"soak-{worker}-{self.n}-{time.time_ns()}".encode()).hexdigest()
        return {
            "register": ("POST", "/v1/works", {"headers": h, "json": {
                "sha256": sha, "title": f"Soak work {self.n}", "creators": ["Soak Tester"],
                "work_type": "image"}}),
            "evidence": ("POST", "/v1/evidence", {"headers": h, "json": {
                "sha256": sha, "source_url": "https://example.org/listing",
                "captured_at": "2026-11-20T10:00:00Z", "capture_method": "screenshot",
                "description": "soak", "related_work": seq}}),
            "entry": ("GET", f"/v1/entries/{seq}", {}),
            "bundle": ("GET", f"/v1/entries/{seq}/bundle", {}),
            "log": ("GET", "/v1/log", {}),
            "checkpoint": ("GET", "/v1/log/checkpoint", {}),
            "search": ("GET", "/v1/search", {"params": {"sha256": sha}}),
            "history": ("GET", f"/v1/works/{seq}/history", {}),
            "certificate_html": ("GET", f"/v1/entries/{seq}/certificate", {}),
            "certificate_pdf": ("GET", f"/v1/entries/{seq}/certificate",
                                {"params": {"format": "pdf"}}),
            "healthz": ("GET", "/healthz", {}),
        }[kind]

    async def worker(self, client: httpx.AsyncClient, i: int) -> None:
        kinds = list(MIX)
        weights = [MIX[k][0] for k in kinds]
        while time.monotonic() < self.deadline:
            kind = "register" if not self.works else random.choices(kinds, weights)[0]
            method, path, kw = self._request(kind, i)
            if kind == "certificate_pdf":  # may queue for a render slot up to the server's bound
                kw["timeout"] = PDF_TIMEOUT_S
            began = time.monotonic()
            try:
                r = await client.request(method, path, **kw)
            except httpx.HTTPError as e:
                self._error(kind, f"{type(e).__name__}: {e}")
                continue
            self.seconds.setdefault(kind, []).append(time.monotonic() - began)
            self.counts[kind] += 1
            if r.status_code != MIX[kind][1]:
                self._error(kind, f"{r.status_code} {r.text[:200]}")
            elif kind == "register":
                self.works.append(r.json()["seq"])

    def _error(self, kind: str, what: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {what}")


async def run(url: str, keys: list[str], seconds: float, connections: int, pid: int,
              sample_s: float) -> tuple[Soak, list[tuple[float, float]]]:
    soak = Soak(url, keys, seconds)
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()

    async def sampler() -> None:
        while time.monotonic() < soak.deadline:
            samples.append((round(time.monotonic() - t0, 1), round(rss_mib(pid), 1)))
            await asyncio.sleep(sample_s)
        samples.append((round(time.monotonic() - t0, 1), round(rss_mib(pid), 1)))

    # Drop idle connections before the server's keep-alive timeout (5 s) does, so a request is
    # never sent on a connection the server is closing (a client-side race, not a server error).
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(sampler(), *(soak.worker(client, i) for i in range(connections)))
    return soak, samples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--database", default="")
    ap.add_argument("--server-log", default="", help="copy the server's log here at the end "
                    "(it holds the traceback of any 5xx)")
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the server process only (repeatable)")
    args = ap.parse_args()
    server_env = dict(v.split("=", 1) for v in args.server_env)
    tmp = Path(tempfile.mkdtemp(prefix="copyledger-soak-"))
    data = tmp / "data"
    db = ["--database", args.database] if args.database else []
    cli("init", "--data-dir", str(data), *db)
    keys = [json.loads(cli("keys", "create", "--role", "creator", "--account", f"soak{i}",
                           "--data-dir", str(data), *db, "--json").stdout)["key"]
            for i in range(KEYS)]
    srv = ServerProcess(data, args.database,
                        **{"COPYLEDGER_LOG_LEVEL": "warning", **server_env}).start(timeout=180)
    assert srv.proc is not None
    load_start = os.getloadavg()
    try:
        t0 = time.monotonic()
        soak, samples = asyncio.run(run(srv.url, keys, args.seconds, args.connections,
                                        srv.proc.pid, args.sample))
        wall = time.monotonic() - t0
        load_end = os.getloadavg()
        tree_size = httpx.get(srv.url + "/v1/log").json()["tree_size"]
    finally:
        srv.stop()
        if args.server_log:
            shutil.copyfile(srv.log, args.server_log)
    audit = json.loads(cli("audit", "--data-dir", str(data), *db, "--json").stdout)
    warmup = min(60.0, args.seconds / 10)
    settled = [rss for t, rss in samples if t >= warmup] or [samples[-1][1]]
    start, end = settled[0], settled[-1]
    total = sum(soak.counts.values())
    out = {
        "benchmark": "soak: mixed reads and writes against one `copyledger serve`",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "database": "postgresql" if args.database else "sqlite (WAL, synchronous=FULL)",
        "connections": args.connections,
        "seconds": round(wall, 1),
        "requests": total,
        "requests_per_s": round(total / wall, 1),
        "requests_by_kind": dict(sorted(soak.counts.items())),
        "errors": sum(soak.errors.values()),
        "errors_by_kind": dict(soak.errors),
        "seconds_by_kind": {k: latency(v) for k, v in sorted(soak.seconds.items())},
        "load_average": {"start": [round(x, 2) for x in load_start],
                         "end": [round(x, 2) for x in load_end]},
        "error_samples": soak.error_samples,
        "rss_mib": {"first": samples[0][1], "start_after_warmup": start, "end": end,
                    "max": max(settled), "warmup_s": warmup},
        "rss_drift_pct": round(100 * (end - start) / start, 1),
        "rss_samples": samples,
        "tree_size": tree_size,
        "audit": {"ok": audit["ok"], "entries": audit["entries"]},
        "targets": {"rss_drift_pct": "within 10", "errors": 0, "audit": "ok"},
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
