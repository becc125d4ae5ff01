"""What a retried upload under an Idempotency-Key costs, with and without D140's early answer.

An upload is sent once under a key (its answer kept), then R times again under the same key,
each a retry whose first send was answered. Timed, per retry, in one run on the same files:
- `d140`: as the server answers it now: identified (hashes, media type), answered from the key
  (`Keys.kept`), never fingerprinted;
- `before_d140`: the same request with the early answer switched off, which is the path from
  before D140: fingerprinted again, then answered by `deps.once` from the key;
- `fingerprint_only`: the file's fingerprints alone (`service.operations._facts`), the floor
  of what D140 saves.
The files: one real photo (scikit-image's `astronaut`, a JPEG of 512x512), a generated 60 s
song (FLAC) and a generated 60 s video with sound (H.264 MP4, 320x240), made by the test
suite's generators (tests/test_av.py; no real music or video ships in a package we may use).
The registry is SQLite in a temporary directory, the API in process (FastAPI's TestClient),
so the times are the server's work plus the in-process transport, no network.

Prints one JSON object. Usage: python bench/upload_retry_bench.py [--retries 7]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _photo() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retries", type=int, default=7)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from copyledger.api import deps
    from copyledger.api.app import create_app
    from copyledger.service import operations
    from tests.helpers import bearer, open_registry
    from tests.test_av import make_video, write_song

    tmp = Path(tempfile.mkdtemp(prefix="upload-retry-"))
    files = {
        "photo": ("astronaut.jpg", _photo(), "image/jpeg", "image"),
        "song": ("song.flac", write_song(3, tmp / "song.flac", 60).read_bytes(), "audio/flac",
                 "audio"),
        "video": ("film.mp4", make_video(5, tmp / "film.mp4", scenes=10, scene_seconds=6.0,
                                         sound=True).read_bytes(), "video/mp4", "video"),
    }
    reg = open_registry(tmp / "reg")
    out: dict[str, Any] = {"retries": args.retries, "machine": platform.machine(),
                           "cpus": os.cpu_count(), "files": {}}
    real = deps.answered_before

    async def never(*_: Any) -> None:
        return None

    with TestClient(create_app(reg)) as client:
        auth = bearer(reg, "ada")

        def send(name: str, key: str) -> float:
            filename, body, media, kind = files[name]
            t = time.perf_counter()
            r = client.post("/v1/works", files={"file": (filename, body, media)},
                            data={"title": name, "creators": "Ada", "work_type": kind,
                                  "again": "true"}, headers={**auth, "Idempotency-Key": key})
            took = time.perf_counter() - t
            assert r.status_code == 201, r.text
            return took

        for name, (_, body, media, _) in files.items():
            first = send(name, f"{name}-key")
            timed: dict[str, list[float]] = {"d140": [], "before_d140": []}
            for _ in range(args.retries):
                deps.answered_before = real  # type: ignore[assignment]
                timed["d140"].append(send(name, f"{name}-key"))
                deps.answered_before = never  # type: ignore[assignment]
                timed["before_d140"].append(send(name, f"{name}-key"))
            deps.answered_before = real  # type: ignore[assignment]
            floor = []
            for _ in range(args.retries):
                t = time.perf_counter()
                operations._facts(io.BytesIO(body), "", len(body), media)
                floor.append(time.perf_counter() - t)
            ms = {k: round(statistics.median(v) * 1000, 2) for k, v in
                  {**timed, "fingerprint_only": floor}.items()}
            out["files"][name] = {
                "bytes": len(body), "media_type": media, "first_send_ms": round(first * 1000, 2),
                "median_ms": ms,
                "saved_ratio": round(ms["before_d140"] / ms["d140"], 1)}
            print(name, ms, file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    out["load_average"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
