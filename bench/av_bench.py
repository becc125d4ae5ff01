"""Measure audio and video matching: recall per degradation, false matches, speed, latency.

Audio: N registered tracks and U unrelated ones, synthesised by the test suite's generator
(tests/test_av.py: random key, scale, tempo, six-harmonic timbre, bass, drums; no real music
ships in a package we may use), all registered in one index. From every registered track a
15 s excerpt at a random offset is cut and degraded five ways (MP3 32 kbit/s, Ogg Vorbis q0,
-10 dB, pink noise ~15 dB below, resampled to 8 kHz); a hit is a 'match' for the right track
with the offset within 0.5 s. False matches: any 'match' for another track, over those queries
and over Q excerpts of tracks that were never registered. Every alignment is kept (not only
those in the 'possible' band), so the weakest true one and the closest false one are reported,
and each excerpt's result is listed. Unrelated tracks are fingerprinted from their PCM in
memory (the fingerprint a FLAC file of it gets, tests/test_av_bench.py), optionally cached by
seed (--cache); the registered tracks and every degraded excerpt go through FFmpeg's real
encoders. --jobs processes synthesise, encode and fingerprint (D66).

Video: V videos (tests/test_av.py: scenes panning and zooming over generated photo-like
images, a moving object, hard cuts, a soundtrack), each edited six ways (VP9 re-encode at
160x120 with libvpx's realtime preset, a 10 s clip, a 12 s letterboxed clip, pillarboxed, a
10 % crop, a 6 % crop); a hit is a 'match' for the right video with the offset within 1 s.
False matches as for audio; each edited copy's best alignment with its original is listed;
--cache keeps the renders by seed.

Scale (--scale-tracks, --scale-videos): random fingerprints of 3.5-minute tracks and
160-frame videos fill an index to that size, and a query's search latency is timed (p50/p99
over 200 noisy 15 s excerpts and 100 noisy 60-frame clips, each asserted found); memory is the
process's resident growth, per registered minute. --flat-video keeps the frames in the flat
scan, the floor the IVF is compared with; --video-filler N registers N random videos before
the recall run's real ones, so they are found through the frame index at that size. Prints
JSON, with the load average.

Usage: python bench/av_bench.py [--tracks 50] [--unrelated 1000] [--videos 50] [--jobs 2]
       [--cache DIR] [--edits crop_6pct,...] [--probe-crops 1,0.96,0.92,0.88,0.85]
       [--scale-tracks 100000] [--scale-videos 10000] [--flat-video] [--video-filler N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from copyledger.ledger import fingerprint as schema
from copyledger.matching import compute, scoring
from copyledger.matching.avindex import AVIndex
from tests.test_av import (
    AUDIO_DEGRADATIONS,
    RATE,
    excerpt,
    ffmpeg,
    make_song,
    make_video,
    write_song,
)

VIDEO_EDITS: dict[str, tuple[float, float | None, str]] = {
    "reencode_vp9_160x120": (0.0, None, "scale=160:120"),
    "clip_10s": (7.4, 10.0, "null"),
    "letterbox_clip_12s": (3.2, 12.0, "scale=320:180,pad=320:240:0:30"),
    "pillarbox": (0.0, None, "pad=428:240:54:0"),
    "crop_10pct": (5.0, 14.0, "crop=iw*0.90:ih*0.90,scale=288:216"),
    "crop_6pct": (2.0, 14.0, "crop=iw*0.94:ih*0.94"),
}


def rss_mib() -> float:
    """Resident memory now (not the peak: the build's transient copies are reported apart)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_T0 = time.monotonic()


def progress(what: str, done: int, total: int, every: int = 10) -> None:
    """A line on stderr every `every` items, so a long run's finish time can be estimated."""
    if total and (done % every == 0 or done == total):
        print(f"[{time.monotonic() - _T0:8.0f} s] {what} {done}/{total}", file=sys.stderr,
              flush=True)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4) if values else float("nan")


def song_wav(seed: int, seconds: float) -> bytes:
    """tests/test_av.py's song as WAV bytes: the PCM write_song would encode to FLAC, losslessly,
    so its fingerprint is the FLAC file's (tests/test_av_bench.py checks) without that encode."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(make_song(seed, seconds).tobytes())
    return buf.getvalue()


def _cached(cache: Path | None, key: str, make: Any) -> tuple[dict[str, Any], float]:
    """(fingerprints, seconds spent fingerprinting) of `make()`, kept under `cache` by key
    (seed and length), so a stopped run resumes without synthesising its corpus again."""
    if cache is not None and (cache / f"{key}.json").exists():
        kept = json.loads((cache / f"{key}.json").read_text())
        return kept["fingerprints"], kept["seconds"]
    fps, spent = make()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / f"{key}.tmp").write_text(json.dumps({"fingerprints": fps, "seconds": spent}))
        (cache / f"{key}.tmp").replace(cache / f"{key}.json")
    return fps, spent


def _timed(data: Any, media_type: str, query: bool = False) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    fps = compute.fingerprints_for(data, media_type, query=query)
    return dict(fps), time.perf_counter() - t0


def _registered_track(job: tuple[int, Path, float]) -> tuple[dict[str, Any], float]:
    """A registered track: written as FLAC (its excerpts are cut from the file), fingerprinted."""
    seed, path, length = job
    write_song(seed, path, length)
    return _timed(path, "audio/flac")


def _unrelated_track(job: tuple[int, float, Path | None]) -> tuple[dict[str, Any], float]:
    """An unrelated track: only its fingerprint is needed, taken from the PCM in memory."""
    seed, length, cache = job
    return _cached(cache, f"song-{seed}-{length}",
                   lambda: _timed(io.BytesIO(song_wav(seed, length)), "audio/wav"))


def _degraded(job: tuple[Path, float, str]) -> dict[str, Any]:
    """A 15 s excerpt from `start`, through the real encoder of the degradation."""
    path, start, name = job
    return dict(compute.fingerprints_for(excerpt(path, start, 15.0, name), "audio/wav"))


def _unregistered(job: tuple[int, Path]) -> dict[str, Any]:
    seed, path = job
    write_song(seed, path, 30.0)
    return dict(compute.fingerprints_for(excerpt(path, 5.0, 15.0, "mp3_32k"), "audio/mpeg"))


def _mapped(pool: Any, fn: Any, jobs: list[Any], what: str, every: int = 10) -> list[Any]:
    """fn over jobs through the pool, in order, with progress lines."""
    out = []
    for n, result in enumerate(pool.map(fn, jobs, chunksize=1), 1):
        out.append(result)
        progress(what, n, len(jobs), every)
    return out


def audio_part(tmp: Path, tracks: int, unrelated: int, unregistered: int,
               seed: int, pool: Any, cache: Path | None = None) -> dict[str, Any]:
    index = AVIndex()  # what FingerprintIndex searches audio with, asked for every alignment
    rng = np.random.default_rng(seed)
    paths = [tmp / f"t{seq}.flac" for seq in range(tracks)]
    done = _mapped(pool, _registered_track,
                   [(seed * 100_000 + seq, paths[seq], 60.0) for seq in range(tracks)],
                   "audio registered")
    done += _mapped(pool, _unrelated_track,
                    [(seed * 100_000 + seq, 30.0, cache)
                     for seq in range(tracks, tracks + unrelated)], "audio unrelated", 50)
    for seq, (fps, _) in enumerate(done):
        index.add(seq, schema.validate_fingerprints(fps))
    decoded = 60.0 * tracks + 30.0 * unrelated
    wall = sum(spent for _, spent in done)
    per: dict[str, dict[str, Any]] = {}
    false: list[dict[str, Any]] = []
    true_sim: list[float] = []
    other_sim: list[float] = []
    closest: dict[str, Any] = {}
    for name in sorted(AUDIO_DEGRADATIONS):
        starts = [round(float(rng.uniform(0, 44)), 2) for _ in range(tracks)]
        queries = _mapped(pool, _degraded, [(paths[seq], starts[seq], name)
                                            for seq in range(tracks)], f"audio {name}")
        hits, errors, items = 0, [], []
        for seq, (start, q) in enumerate(zip(starts, queries, strict=True)):
            item: dict[str, Any] = {"track": seq, "start_s": start, "similarity": None,
                                    "offset_s": None, "verdict": "none"}
            for c in index.search(schema.validate_fingerprints(q), keep_none=True):
                j = c.to_json()
                if c.seq == seq:
                    true_sim.append(float(c.similarity or 0))
                    item.update(similarity=c.similarity, offset_s=j["offset_seconds"],
                                verdict=c.verdict)
                    if c.verdict == "match" and abs(float(j["offset_seconds"]) - start) <= 0.5:  # type: ignore[arg-type]
                        hits += 1
                        errors.append(abs(float(j["offset_seconds"]) - start))  # type: ignore[arg-type]
                else:
                    other_sim.append(float(c.similarity or 0))
                    if float(c.similarity or 0) >= closest.get("similarity", 0):
                        closest = {"query": seq, "degradation": name, "found": c.seq,
                                   "similarity": c.similarity}
                    if c.verdict == "match":
                        false.append({"query": seq, "degradation": name, "found": c.seq})
            items.append(item)
        per[name] = {"recall": hits / tracks, "excerpts": tracks,
                     "offset_error_p95_s": pct(errors, 95), "items": items}
        print(json.dumps({name: per[name]}), file=sys.stderr, flush=True)  # kept if stopped
    queries = _mapped(pool, _unregistered, [(seed * 100_000 + 90_000 + k, tmp / f"u{k}.flac")
                                            for k in range(unregistered)], "audio unregistered")
    for k, q in enumerate(queries):
        for c in index.search(schema.validate_fingerprints(q), keep_none=True):
            other_sim.append(float(c.similarity or 0))
            if float(c.similarity or 0) >= closest.get("similarity", 0):
                closest = {"query": f"unregistered {k}", "found": c.seq,
                           "similarity": c.similarity}
            if c.verdict == "match":
                false.append({"query": f"unregistered {k}", "found": c.seq})
    return {
        "registered_tracks": tracks + unrelated,
        "queries": tracks * len(AUDIO_DEGRADATIONS) + unregistered,
        "per_degradation": per,
        "false_matches": false,
        "similarity_true_min": min(true_sim, default=None),
        "similarity_true_p5": pct(true_sim, 5),
        "similarity_other_max": max(other_sim, default=None),
        "closest_other": closest,
        "thresholds": {"match": scoring.CHROMAPRINT_MATCH,
                       "possible": scoring.CHROMAPRINT_POSSIBLE},
        "fingerprint_speed_x_realtime": round(decoded / wall, 1) if wall else None,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }


def _registered_video(job: tuple[int, Path, Path | None]) -> tuple[dict[str, Any], float]:
    """A registered video, rendered (or its render kept under `cache` by seed), fingerprinted."""
    seed, path, cache = job
    kept = cache / "videos" / f"v{seed}.mp4" if cache is not None else None
    if kept is not None and kept.exists():
        shutil.copyfile(kept, path)
    else:
        make_video(seed, path, sound=True)
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, kept.with_suffix(".tmp"))
            kept.with_suffix(".tmp").replace(kept)
    return _timed(path, "video/mp4")


def _edited(job: tuple[Path, str, Path]) -> dict[str, Any]:
    """The edit of VIDEO_EDITS named, re-encoded, fingerprinted as a claim's probe."""
    path, name, out = job
    start, length, vf = VIDEO_EDITS[name]
    span = ["-ss", str(start)] + (["-t", str(length)] if length else [])
    codec = (["-c:v", "libvpx-vp9", "-b:v", "150k", "-deadline", "realtime", "-cpu-used", "8"]
             if name.startswith("reencode") else ["-c:v", "libx264", "-crf", "32"])
    ffmpeg(*span, "-i", str(path), "-vf", vf, *codec, "-c:a", "libopus", "-b:a", "48k",
           str(out))
    q = dict(compute.fingerprints_for(out, "video/webm", query=True))
    out.unlink()
    return q


def _probe_crops(crops: tuple[float, ...] | None) -> None:
    """A worker's initializer: an experimental crop ladder for the probes it fingerprints."""
    if crops:
        from copyledger.matching import video

        video.PROBE_CROPS = crops


def video_part(tmp: Path, videos: int, seed: int, pool: Any, filler: int = 0,
               cache: Path | None = None, edits: list[str] | None = None) -> dict[str, Any]:
    """With `filler`, that many random 160-frame videos are registered first, so the real
    videos are found through the frame index at that size (the IVF past IVF_MIN_FRAMES)."""
    index = AVIndex()
    rng = np.random.default_rng(seed)
    fill = [(-1 - k, {"vpdq": {"frames": _b64(random_video(rng).tobytes())}})
            for k in range(filler)]
    for at in range(0, filler, 5_000):
        index.add_many(fill[at : at + 5_000])
    del fill
    paths = [tmp / f"v{seq}.mp4" for seq in range(videos)]
    done = _mapped(pool, _registered_video, [(seed * 1_000 + seq, paths[seq], cache)
                                             for seq in range(videos)], "video registered", 5)
    for seq, (fps, _) in enumerate(done):
        index.add(seq, schema.validate_fingerprints(fps))
    decoded = 24.0 * videos
    wall = sum(spent for _, spent in done)
    per: dict[str, Any] = {}
    false: list[dict[str, Any]] = []
    true_sim: list[float] = []
    other_sim: list[float] = []
    closest: dict[str, Any] = {}
    closest_by: dict[str, dict[str, Any]] = {}  # per algorithm: the frames' own closest
    for name, (start, _, _) in VIDEO_EDITS.items():
        if edits and name not in edits:
            continue
        hits = sound = 0
        items: list[dict[str, Any]] = []
        queries = _mapped(pool, _edited, [(path, name, tmp / f"e{seq}.mkv")
                                          for seq, path in enumerate(paths)],
                          f"video {name}", 5)
        for seq, q in enumerate(queries):
            item: dict[str, Any] = {"video": seq, "vpdq": None, "offset_s": None}
            for c in index.search(schema.validate_fingerprints(q), keep_none=True):
                j = c.to_json()
                if c.seq != seq:
                    other_sim.append(float(c.similarity or 0))
                    near = {"query": seq, "edit": name, "found": c.seq,
                            "algorithm": c.algorithm, "similarity": c.similarity}
                    if float(c.similarity or 0) >= closest.get("similarity", 0):
                        closest = near
                    if float(c.similarity or 0) >= closest_by.get(c.algorithm, {}).get(
                            "similarity", 0):
                        closest_by[c.algorithm] = near
                    if c.verdict == "match":
                        false.append({"query": seq, "edit": name, "found": c.seq,
                                      "algorithm": c.algorithm})
                elif c.algorithm == "vpdq":
                    true_sim.append(float(c.similarity or 0))
                    off = float(j["offset_seconds"])  # type: ignore[arg-type]
                    item.update(vpdq=c.similarity, offset_s=off)
                    hits += c.verdict == "match" and abs(off - start) <= 1.0
                elif c.verdict == "match":
                    sound += 1
            items.append(item)
        per[name] = {"recall_vpdq": hits / videos, "recall_soundtrack": sound / videos,
                     "items": items}
        print(json.dumps({name: per[name]}), file=sys.stderr, flush=True)  # kept if stopped
    return {
        "registered_videos": videos, "random_filler_videos": filler,
        "frame_index": type(index._frames).__name__, "per_edit": per, "false_matches": false,
        "similarity_true_min": min(true_sim, default=None),
        "similarity_other_max": max(other_sim, default=None),
        "closest_other": closest, "closest_other_by_algorithm": closest_by,
        "thresholds": {"match": scoring.VPDQ_MATCH, "possible": scoring.VPDQ_POSSIBLE},
        "fingerprint_speed_x_realtime": round(decoded / wall, 1) if wall else None,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }


def scale_part(tracks: int, videos: int, seed: int, flat: bool = False) -> dict[str, Any]:
    """Search latency with `tracks` and `videos` random fingerprints registered (`flat`: the
    video frames scanned whole, the floor the IVF is measured against)."""
    rng = np.random.default_rng(seed)
    items = 1_700  # 3.5 minutes
    index = AVIndex(ivf_min_frames=2**62) if flat else AVIndex()
    before = rss_mib()
    t0 = time.perf_counter()
    batch = []
    stored = []
    for seq in range(tracks):
        values = rng.integers(0, 1 << 16, items, dtype=np.uint16)
        if seq % max(1, tracks // 200) == 0:
            stored.append((seq, values))
        batch.append((seq, {"chromaprint": {"items": _b64(values.tobytes())}}))
        if len(batch) == 20_000:
            index.add_many(batch)
            batch = []
    index.add_many(batch)
    batch = []
    build_audio = time.perf_counter() - t0
    audio_grown = rss_mib() - before
    t0 = time.perf_counter()
    video_queries = []
    for seq in range(tracks, tracks + videos):
        rows = random_video(rng)
        batch.append((seq, {"vpdq": {"frames": _b64(rows.tobytes())}}))
        if (seq - tracks) % max(1, videos // 100) == 0:
            clip = rows[20:80].copy()  # a 15 s clip, each frame ~25 of 256 bits off
            clip[:, 2:34] ^= np.packbits(rng.random((60, 256)) < 0.1, axis=1)
            video_queries.append((seq, clip))
    index.add_many(batch)
    build_video = time.perf_counter() - t0
    grown = rss_mib() - before
    audio_ms, video_ms = [], []
    for seq, values in stored:
        noisy = values[500:621] ^ (rng.random(121) < 0.05).astype(np.uint16) << 3
        t1 = time.perf_counter()
        found = index.search({"chromaprint": {"items": _b64(noisy.tobytes())}})
        audio_ms.append((time.perf_counter() - t1) * 1000)
        assert any(c.seq == seq for c in found)
    for seq, clip in video_queries:
        t1 = time.perf_counter()
        found = index.search({"vpdq": {"frames": _b64(clip.tobytes())}})
        video_ms.append((time.perf_counter() - t1) * 1000)
        assert any(c.seq == seq and c.verdict == "match" for c in found)
    audio_minutes = tracks * items * 0.12384 / 60
    return {"tracks": tracks, "videos": videos, "build_audio_s": round(build_audio, 1),
            "build_video_s": round(build_video, 1),
            "rss_growth_audio_mib": round(audio_grown), "rss_growth_mib": round(grown),
            "audio_bytes_per_registered_minute": round(audio_grown * 2**20 / audio_minutes)
            if tracks else None,
            "video_bytes_per_registered_minute": round((grown - audio_grown) * 2**20
                                                       / (videos * 160 / 60)) if videos else None,
            "audio_queries": len(audio_ms),
            "audio_search_ms_p50": pct(audio_ms, 50), "audio_search_ms_p99": pct(audio_ms, 99),
            "video_queries": len(video_ms),
            "video_search_ms_p50": pct(video_ms, 50), "video_search_ms_p99": pct(video_ms, 99),
            "peak_rss_mib": round(peak_mib()),
            "stats": index.stats(), "registered_audio_minutes": round(audio_minutes),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def random_video(rng: Any) -> Any:
    """vpdq frame rows of a 160 s video: a time, a random PDQ code and quality 100 a second."""
    rows = np.zeros((160, 35), np.uint8)
    rows[:, 0] = (np.arange(160) * 4) & 0xFF
    rows[:, 1] = (np.arange(160) * 4) >> 8
    rows[:, 2:34] = rng.integers(0, 256, (160, 32), dtype=np.uint8)
    rows[:, 34] = 100
    return rows


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode("ascii")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--unrelated", type=int, default=1_000)
    parser.add_argument("--unregistered", type=int, default=100)
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--scale-tracks", type=int, default=0)
    parser.add_argument("--scale-videos", type=int, default=0)
    parser.add_argument("--video-filler", type=int, default=0,
                        help="random videos registered beside the real ones (recall at scale)")
    parser.add_argument("--flat-video", action="store_true",
                        help="scale: keep the video frames in a flat scan (the floor)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2,
                        help="processes that synthesise, encode and fingerprint")
    parser.add_argument("--edits", default="",
                        help="only these video edits (comma-separated names of VIDEO_EDITS)")
    parser.add_argument("--probe-crops", default="",
                        help="try another matching.video.PROBE_CROPS, e.g. 1,0.96,0.92,0.88,0.85")
    parser.add_argument("--cache", default="",
                        help="a folder keeping unrelated tracks' fingerprints by seed")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": "2 cores shared with other jobs",
                              "load_average_start": list(os.getloadavg())}
    cache = Path(args.cache) if args.cache else None
    crops = tuple(float(c) for c in args.probe_crops.split(",")) if args.probe_crops else None
    with tempfile.TemporaryDirectory() as tmp, \
            ProcessPoolExecutor(args.jobs, initializer=_probe_crops, initargs=(crops,)) as pool:
        if args.tracks:
            report["audio"] = audio_part(Path(tmp), args.tracks, args.unrelated,
                                         args.unregistered, args.seed, pool, cache)
            print(json.dumps(report["audio"]), file=sys.stderr)
        if args.videos:
            report["video"] = video_part(Path(tmp), args.videos, args.seed, pool,
                                         args.video_filler, cache,
                                         args.edits.split(",") if args.edits else None)
            print(json.dumps(report["video"]), file=sys.stderr)
    if args.scale_tracks or args.scale_videos:
        report["scale"] = scale_part(args.scale_tracks, args.scale_videos, args.seed,
                                     args.flat_video)
    report["load_average_end"] = list(os.getloadavg())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
