"""Claim checks over HTTP against a registry holding N works with perceptual fingerprints.

1. Registers N works (default 1,000,000), each with a random PDQ and pHash fingerprint, through
   the sequencer in blocks of 10,000 (the HTTP path is measured by http_bench.py).
2. Starts `copyledger serve` on that data directory and times the fingerprint index rebuild
   (start of the server until /healthz says the index is ready).
3. Sends Q claim checks (POST /v1/claims/check, JSON, one at a time from one client), half of
   them near-duplicates of registered works, half random; reports p50/p99/max latency, and
   checks that the near-duplicates were found.

With `--orb`, every work also carries the 128 ORB keypoints of a real photo (scikit-image's
astronaut), and every claim check sends what the CLI sends for a disputed image: PDQ views (the
dihedral and content-region hashes, as random codes here) and the 2 x 512 ORB keypoints of a
crop of that photo, so the latency includes the geometric stage (entry reads and RANSAC fits
against the claimed work and the closest candidates).

With `--keep DIR`, the registry is built in DIR and kept, with the key and the sampled works in
DIR/bench.json; a later run with the same `--keep DIR` skips step 1 and measures steps 2-3 on the
same data (registering 1,000,000 works with keypoints takes far longer than the checks). An
interrupted registration resumes where the kept registry stops; `--works` below what is kept
measures the checks at the registry's size.

With `--videos N`, the works are instead N videos, each a random vpdq fingerprint of 160
frames (one random PDQ code a second, as bench/av_bench.py's scale part), and every near
claim check sends a 60-frame clip of one with each frame ~26 of 256 bits flipped (a 'match' for
that video is required); the other half send random clips.

With `--tracks N`, the works are N audio tracks of 3.5 minutes, each a random chromaprint
(1,700 random sub-fingerprints), and every near claim check sends 121 of them (15 s) with 5 %
of them one bit off (a 'match' for that track is required). `--keep` is for images only.

With `--in-process` (and a `--keep` registry), no server: the index is rebuilt in this
process and the same checks call service.claims.check_claim directly, reporting the CPU
(`time.process_time`) per check, the rebuild's CPU and wall time, and the resident memory the
index added with its arrays' sizes (D76); `--profile FILE` adds cProfile stats on the CPU clock.

Prints one JSON object (progress goes to stderr). Usage:
python bench/claim_bench.py [--works 1000000] [--queries 1000] [--orb] [--keep DIR]
       [--videos 10000 | --tracks 100000] [--in-process [--profile FILE]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.ledger import entry as entry_mod
from copyledger.ledger.fingerprint import VIEW_TRANSFORMS
from copyledger.ledger.sequencer import Pending
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from copyledger.service.settings import Settings, load
from tests.server import ServerProcess


def fps(rng: random.Random, orb: dict[str, object] | None = None
        ) -> tuple[dict[str, object], int, int]:
    pdq, ph = rng.getrandbits(256), rng.getrandbits(64)
    out: dict[str, object] = {
        "pdq": {"algorithm": "pdq", "hash": f"{pdq:064x}", "quality": 100,
                "version": "pdqhash-0.2.8", "low_quality": False},
        "phash": {"algorithm": "phash", "hash": f"{ph:016x}", "version": "imagehash-4.3.2"}}
    if orb is not None:
        out["orb"] = orb
    return out, pdq, ph


def photo_keypoints() -> tuple[dict[str, object], dict[str, object]]:
    """(a registration's orb fingerprint, a disputed crop's orb) of one real photo."""
    from bench.image_edits import EDITS, encode, photos
    from copyledger.matching.compute import image_fingerprints, query_fingerprints

    _, im = photos(1)[0]
    crop = EDITS["crop_70"](im, random.Random(1), im)
    return image_fingerprints(encode(im))["orb"], query_fingerprints(encode(crop))["orb"]


def vpdq(rows: bytes, seconds: int) -> dict[str, object]:
    """A vpdq fingerprint of frame rows (time uint16 LE, PDQ, quality)."""
    import base64

    from copyledger.ledger.fingerprint import VPDQ_SCHEME

    return {"algorithm": "vpdq", "version": "bench", "scheme": VPDQ_SCHEME,
            "duration": seconds, "frames": base64.b64encode(rows).decode("ascii")}


def chromaprint(items: list[int], seconds: int) -> dict[str, object]:
    """A chromaprint fingerprint of 16-bit sub-fingerprints."""
    import base64

    from copyledger.ledger.fingerprint import CHROMAPRINT_SCHEME

    raw = b"".join(v.to_bytes(2, "little") for v in items)
    return {"algorithm": "chromaprint", "version": "bench", "scheme": CHROMAPRINT_SCHEME,
            "duration": seconds, "items": base64.b64encode(raw).decode("ascii")}


def film(rng: random.Random, frames: int) -> list[bytes]:
    """A random PDQ code a second."""
    return [rng.getrandbits(256).to_bytes(32, "big") for _ in range(frames)]


def film_rows(codes: list[bytes]) -> bytes:
    return b"".join((4 * t).to_bytes(2, "little") + c + bytes([100])
                    for t, c in enumerate(codes))


def flip(value: int, bits: int, n: int, rng: random.Random) -> int:
    for b in rng.sample(range(bits), n):
        value ^= 1 << b
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--works", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--orb", action="store_true", help="keypoints in works and queries")
    ap.add_argument("--keep", type=Path, help="build (or reuse) the registry here and keep it")
    ap.add_argument("--register-only", action="store_true",
                    help="grow the --keep registry to --works and stop (no checks)")
    ap.add_argument("--videos", type=int, default=0,
                    help="register this many random-vpdq videos instead of --works images")
    ap.add_argument("--tracks", type=int, default=0,
                    help="register this many random-chromaprint tracks instead")
    ap.add_argument("--in-process", action="store_true",
                    help="no server: rebuild the index and run the checks in this process, "
                         "reporting CPU (process_time) per check and the index's memory")
    ap.add_argument("--profile", type=Path,
                    help="with --in-process: write the checks' cProfile stats here")
    args = ap.parse_args()
    if args.videos or args.tracks:
        if args.keep:
            ap.error("--keep is for images only")
        args.works = args.videos or args.tracks
    orb, query_orb = photo_keypoints() if args.orb else (None, None)
    rng = random.Random(4242)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="copyledger-claim-bench-"))
    s = load(tmp / "data", heartbeat_s=3600.0, max_batch=10_000)
    saved = tmp / "bench.json"
    kept = json.loads(saved.read_text()) if saved.exists() else None
    if kept is not None and kept["works"] >= args.works:
        key, load_s, works = kept["key"], kept["register_seconds"], kept["works"]
        sample = [tuple(x) for x in kept["sample"]]
    else:  # a new registry, or a kept one grown to --works (replaying the draws it holds)
        key, load_s, sample, works = register(args, s, rng, orb)
        if kept is not None:
            key, load_s = kept["key"], kept["register_seconds"] + load_s
        if args.keep:
            saved.write_text(json.dumps({"key": key, "register_seconds": load_s, "works": works,
                                         "sample": sample, "query_seed": 4343}))
    if args.register_only:
        print(json.dumps({"works_registered": works, "register_seconds": round(load_s, 1)}))
        return
    rng.seed(4343)
    if args.in_process:
        print(json.dumps(in_process(args, s, sample, rng, query_orb), indent=2))
        return
    lat, found, n_near, index_s = check(args, s, key, sample, rng, query_orb)
    lat.sort()
    out = {
        "benchmark": "POST /v1/claims/check over HTTP, one client, sequential",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "works_registered": works,
        "register_seconds": round(load_s, 1),
        "index_rebuild_seconds_at_start": round(index_s, 2),
        "queries": args.queries,
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "latency_ms": {"p50": round(lat[len(lat) // 2], 2),
                       "p95": round(lat[int(len(lat) * 0.95) - 1], 2),
                       "p99": round(lat[int(len(lat) * 0.99) - 1], 2),
                       "max": round(lat[-1], 2)},
        "server_cpu_ms_per_check": round(SERVER_CPU_MS[0], 1),
        "near_duplicates_found": f"{found}/{n_near}",
        "orb": args.orb,
        "videos": args.videos,
        "tracks": args.tracks,
        "target": {"p99_ms": "< 50" if args.orb else "< 20"},
    }
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))



CLIPS: dict[int, list[bytes]] = {}  # --videos: work number -> 60 of its frames
TUNES: dict[int, list[int]] = {}  # --tracks: work number -> 121 of its sub-fingerprints


def media_work(args: argparse.Namespace, i: int, rng: random.Random,
               orb: dict[str, object] | None) -> tuple[dict[str, object], int, int, str]:
    """Work `i`'s fingerprints, its (pdq, phash) for sampling, and its work type; a video's
    clip or a track's excerpt is kept for the claim checks."""
    if args.tracks:
        values = [rng.getrandbits(16) for _ in range(1_700)]
        TUNES[i] = values[500:621]
        return {"chromaprint": chromaprint(values, 210)}, 0, i, "audio"
    if args.videos:
        codes = film(rng, 160)
        CLIPS[i] = codes[20:80]
        return {"vpdq": vpdq(film_rows(codes), 160)}, int.from_bytes(codes[20], "big"), i, \
            "video"
    f, pdq, ph = fps(rng, orb)
    return f, pdq, ph, "image"


def register(args: argparse.Namespace, s: Settings, rng: random.Random,
             orb: dict[str, object] | None
             ) -> tuple[str, float, list[tuple[int, int, int]], int]:
    """Register `args.works` works through the sequencer: (a platform key, seconds, a sample,
    the works held).
    A registry kept from an interrupted run is resumed: the random draws of the works it holds
    are replayed (without registering them) so the sample and the rest are the same."""
    reg = Node.open(s)
    key, _ = create_key(reg.store, "platform", "bench")
    done = reg.sequencer.state.size
    reg.start()
    t0 = time.monotonic()
    sample: list[tuple[int, int, int]] = []  # (seq, pdq, phash) of some registered works
    for i in range(done):
        _, pdq, ph = fps(rng)
        rng.getrandbits(256)
        if len(sample) < args.queries and rng.random() < 0.01:
            sample.append((i, pdq, ph))
    for start in range(done, args.works, 10_000):
        futs = []
        for i in range(start, min(args.works, start + 10_000)):
            f, pdq, ph, work_type = media_work(args, i, rng, orb)
            e, data = entry_mod.encode(entry_mod.build_work(
                registrant=f"owner{i % 97}", received_at=entry_mod.utc_now(),
                sha256=f"{rng.getrandbits(256):064x}", title=f"work {i}", creators=["Bench"],
                work_type=work_type, fingerprints=f, check=False))
            futs.append(reg.sequencer.submit(Pending(data, "work", entry_mod.content_sha256(e),
                                                     str(e["registrant"]))))
            if len(sample) < args.queries and rng.random() < 0.01:
                sample.append((i, pdq, ph))
            else:  # only the sampled works' clips are sent as claims
                CLIPS.pop(i, None)
                TUNES.pop(i, None)
        for fut in futs:
            fut.result(600)
        print(f"registered {start + len(futs)} in {time.monotonic() - t0:.0f} s",
              file=sys.stderr, flush=True)
    load_s = time.monotonic() - t0
    reg.stop()
    return key, load_s, sample, max(done, args.works)


def check(args: argparse.Namespace, s: Settings, key: str, sample: list[tuple[int, int, int]],
          rng: random.Random, query_orb: dict[str, object] | None
          ) -> tuple[list[float], int, int, float]:
    """Start the server, wait for its index, send the checks: (latencies, found, near, index s)."""
    srv = ServerProcess(s.data_dir, COPYLEDGER_LOG_LEVEL="warning")
    t1 = time.monotonic()
    srv.start(timeout=120)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        while not c.get("/healthz").json()["fingerprint_index"]["ready"]:
            time.sleep(0.05)
        index_s = time.monotonic() - t1
        lat, found, n_near = [], 0, 0
        h = {"Authorization": f"Bearer {key}"}
        cpu0 = server_cpu(srv.proc.pid)
        for seq, near, body in bodies(args, sample, rng, query_orb):
            n_near += near
            t = time.perf_counter()
            r = c.post("/v1/claims/check", json=body, headers=h)
            lat.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
            if near and any(m["seq"] == seq for m in r.json()["matches"]):
                found += 1
            elif near and (args.videos or args.tracks):
                raise AssertionError(f"work {seq} not found: {r.text[:400]}")
        SERVER_CPU_MS.append((server_cpu(srv.proc.pid) - cpu0) * 1000 / args.queries)
    srv.stop()
    return lat, found, n_near, index_s


def in_process(args: argparse.Namespace, s: Settings, sample: list[tuple[int, int, int]],
               rng: random.Random, query_orb: dict[str, object] | None) -> dict[str, object]:
    """The index rebuild and the checks in this process, no HTTP: CPU seconds (which a loaded
    machine does not inflate as it does wall time), the resident memory the rebuilt index
    added, its arrays' sizes, and the CPU of each check (service.claims.check_claim)."""
    import cProfile
    import gc

    from copyledger.service.claims import check_claim
    from copyledger.service.operations import CheckIn

    node = Node.open(s)
    import faiss  # noqa: F401  (loaded before the RSS baseline, as the server has it)
    import numpy  # noqa: F401

    from copyledger.matching.index import FingerprintIndex

    FingerprintIndex()  # the libraries' own first-use allocations, outside the measure
    gc.collect()
    rss0 = rss_bytes()
    c0, t0 = time.process_time(), time.monotonic()
    node.index.build(node.store)
    rebuild_cpu, rebuild_wall = time.process_time() - c0, time.monotonic() - t0
    gc.collect()
    rss1 = rss_bytes()
    index = node.index._index
    assert index is not None
    size = len(index)
    cpu, found, n_near = [], 0, 0
    prof = cProfile.Profile(time.process_time) if args.profile else None
    for seq, near, body in bodies(args, sample, rng, query_orb):
        n_near += near
        q = CheckIn(**body)
        c = time.process_time()
        if prof is not None:
            prof.enable()
        answer = check_claim(node, q)
        if prof is not None:
            prof.disable()
        cpu.append((time.process_time() - c) * 1000)
        found += near and any(m["seq"] == seq for m in answer["matches"])
    if prof is not None:
        prof.dump_stats(str(args.profile))
    node.store.close()
    cpu.sort()
    return {
        "benchmark": "service.claims.check_claim in process, sequential (CPU, not wall)",
        "works_indexed": size,
        "queries": args.queries,
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "rebuild": {"cpu_s": round(rebuild_cpu, 1), "wall_s": round(rebuild_wall, 1)},
        "index_memory": {"rss_added_bytes": rss1 - rss0,
                         "rss_bytes_per_work": round((rss1 - rss0) / size, 1),
                         "arrays": index.nbytes(),
                         "array_bytes_per_work": round(sum(index.nbytes().values()) / size, 1)},
        "cpu_ms_per_check": {"mean": round(sum(cpu) / len(cpu), 2),
                             "p50": round(cpu[len(cpu) // 2], 2),
                             "p99": round(cpu[int(len(cpu) * 0.99) - 1], 2)},
        "near_duplicates_found": f"{found}/{n_near}",
    }


def rss_bytes() -> int:
    """This process's resident set (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def bodies(args: argparse.Namespace, sample: list[tuple[int, int, int]], rng: random.Random,
           query_orb: dict[str, object] | None
           ) -> Iterator[tuple[int, bool, dict[str, object]]]:
    """(the near work's seq or -1, near, the claim check's JSON body) of each query: half of
    them near-duplicates of sampled works, half random."""
    for q in range(args.queries):
        near = bool(q % 2 == 0 and sample)
        if near:
            seq, pdq, ph = sample[(q // 2) % len(sample)]
            pdq, ph = flip(pdq, 256, rng.randint(0, 20), rng), flip(ph, 64, 2, rng)
        else:
            seq, pdq, ph = -1, rng.getrandbits(256), rng.getrandbits(64)
        content: dict[str, object] = {"pdq": f"{pdq:064x}", "phash": f"{ph:016x}"}
        if args.tracks:
            items = [v ^ (1 << 3) if rng.random() < 0.05 else v for v in TUNES[seq]] \
                if near else [rng.getrandbits(16) for _ in range(121)]
            content = {"chromaprint": chromaprint(items, 15)}
        elif args.videos:
            codes = CLIPS[seq] if near else film(rng, 60)
            if near:
                codes = [flip(int.from_bytes(c, "big"), 256, 26, rng).to_bytes(32, "big")
                         for c in codes]
            content = {"vpdq": vpdq(film_rows(codes), 60)}
        if query_orb is not None:
            content["orb"] = query_orb
            content["views"] = [{"transform": t, "hash": f"{rng.getrandbits(256):064x}"}
                                for t in VIEW_TRANSFORMS]
        yield seq, near, {"claimant": "owner1", "work_seq": max(seq, 0), "content": content}


SERVER_CPU_MS: list[float] = []


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server process has used: latency on a loaded machine
    measures the queue for the cores, this measures the work."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
