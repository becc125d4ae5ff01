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

With `--videos N`, the works are instead N videos, each a random vpdq fingerprint of 160
frames (one random PDQ code a second, as bench/av_bench.py's scale part), and every near
claim check sends a 60-frame clip of one with each frame ~26 of 256 bits flipped (a 'match' for
that video is required); the other half send random clips.

With `--tracks N`, the works are N audio tracks of 3.5 minutes, each a random chromaprint
(1,700 random sub-fingerprints), and every near claim check sends 121 of them (15 s) with 5 %
of them one bit off (a 'match' for that track is required).

Prints one JSON object. Usage:
python bench/claim_bench.py [--works 1000000] [--queries 1000] [--orb] [--videos 10000]
       [--tracks 100000]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.ledger import entry as entry_mod
from copyledger.ledger.fingerprint import VIEW_TRANSFORMS
from copyledger.ledger.sequencer import Pending
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from copyledger.service.settings import load
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
    ap.add_argument("--videos", type=int, default=0,
                    help="register this many random-vpdq videos instead of --works images")
    ap.add_argument("--tracks", type=int, default=0,
                    help="register this many random-chromaprint tracks instead")
    args = ap.parse_args()
    media = args.videos or args.tracks
    if media:
        args.works = media
    orb, query_orb = photo_keypoints() if args.orb else (None, None)
    rng = random.Random(4242)
    tmp = Path(tempfile.mkdtemp(prefix="copyledger-claim-bench-"))
    s = load(tmp / "data", heartbeat_s=3600.0, max_batch=10_000)
    reg = Node.open(s)
    key, _ = create_key(reg.store, "platform", "bench")
    reg.start()
    t0 = time.monotonic()
    sample: list[tuple[int, int, int]] = []  # (seq, pdq, phash) of some registered works
    clips: dict[int, list[bytes]] = {}  # --videos: work number -> 60 of its frames
    tunes: dict[int, list[int]] = {}  # --tracks: work number -> 121 of its sub-fingerprints
    for start in range(0, args.works, 10_000):
        futs = []
        for i in range(start, min(args.works, start + 10_000)):
            if args.tracks:
                values = [rng.getrandbits(16) for _ in range(1_700)]
                f = {"chromaprint": chromaprint(values, 210)}
                pdq, ph = 0, i
                tunes[i] = values[500:621]
            elif args.videos:
                codes = film(rng, 160)
                f: dict[str, object] = {"vpdq": vpdq(film_rows(codes), 160)}
                pdq, ph = int.from_bytes(codes[20], "big"), i  # unused for videos
                clips[i] = codes[20:80]
            else:
                f, pdq, ph = fps(rng, orb)
            e, data = entry_mod.encode(entry_mod.build_work(
                registrant=f"owner{i % 97}", received_at=entry_mod.utc_now(),
                sha256=f"{rng.getrandbits(256):064x}", title=f"work {i}", creators=["Bench"],
                work_type="audio" if args.tracks else "video" if args.videos else "image",
                fingerprints=f, check=False))
            futs.append(reg.sequencer.submit(Pending(data, "work", entry_mod.content_sha256(e),
                                                     str(e["registrant"]))))
            if len(sample) < args.queries and rng.random() < 0.01:
                sample.append((i, pdq, ph))
            elif media:
                clips.pop(i, None)
                tunes.pop(i, None)
        for fut in futs:
            fut.result(600)
    load_s = time.monotonic() - t0
    reg.stop()

    srv = ServerProcess(s.data_dir, COPYLEDGER_LOG_LEVEL="warning")
    t1 = time.monotonic()
    srv.start(timeout=120)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        while not c.get("/healthz").json()["fingerprint_index"]["ready"]:
            time.sleep(0.05)
        index_s = time.monotonic() - t1
        lat, found, n_near = [], 0, 0
        h = {"Authorization": f"Bearer {key}"}
        for q in range(args.queries):
            near = q % 2 == 0 and sample
            if near:
                seq, pdq, ph = sample[(q // 2) % len(sample)]
                pdq, ph = flip(pdq, 256, rng.randint(0, 20), rng), flip(ph, 64, 2, rng)
                n_near += 1
            else:
                seq, pdq, ph = -1, rng.getrandbits(256), rng.getrandbits(64)
            content: dict[str, object] = {"pdq": f"{pdq:064x}", "phash": f"{ph:016x}"}
            if args.tracks:
                items = [v ^ (1 << 3) if rng.random() < 0.05 else v for v in tunes[seq]] if near \
                    else [rng.getrandbits(16) for _ in range(121)]
                content = {"chromaprint": chromaprint(items, 15)}
            elif args.videos:
                codes = clips[seq] if near else film(rng, 60)
                if near:
                    codes = [flip(int.from_bytes(c, "big"), 256, 26, rng).to_bytes(32, "big")
                             for c in codes]
                content = {"vpdq": vpdq(film_rows(codes), 60)}
            if query_orb is not None:
                content["orb"] = query_orb
                content["views"] = [{"transform": t, "hash": f"{rng.getrandbits(256):064x}"}
                                    for t in VIEW_TRANSFORMS]
            body = {"claimant": "owner1", "work_seq": max(seq, 0), "content": content}
            t = time.perf_counter()
            r = c.post("/v1/claims/check", json=body, headers=h)
            lat.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
            if near and any(m["seq"] == seq for m in r.json()["matches"]):
                found += 1
            elif near and media:
                raise AssertionError(f"video {seq} not found: {r.text[:400]}")
    srv.stop()
    lat.sort()
    out = {
        "benchmark": "POST /v1/claims/check over HTTP, one client, sequential",
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "works_registered": args.works,
        "register_seconds": round(load_s, 1),
        "index_rebuild_seconds_at_start": round(index_s, 2),
        "queries": args.queries,
        "latency_ms": {"p50": round(lat[len(lat) // 2], 2),
                       "p99": round(lat[int(len(lat) * 0.99) - 1], 2),
                       "max": round(lat[-1], 2)},
        "near_duplicates_found": f"{found}/{n_near}",
        "orb": args.orb,
        "videos": args.videos,
        "tracks": args.tracks,
        "load_average_end": list(__import__("os").getloadavg()),
        "target": {"p99_ms": "< 50" if args.orb else "< 20"},
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
