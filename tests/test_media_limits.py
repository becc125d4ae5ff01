"""Bounds on what one hostile upload or query can cost: FFmpeg's stderr never stalls a decode,
the FFmpeg process dies with its consumer, oversized video frames are refused before they are
decoded, and an audio query of one repeated common value cannot read the postings table."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from copyledger.ledger.errors import InvalidInput
from copyledger.matching import audio, avindex, compute, video
from copyledger.matching.avindex import AVIndex

# ---------------------------------------------------------------- FFmpeg's process


def _fake_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """An `ffmpeg` first on PATH that runs the shell `body`; returns where it writes its pid."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "ffmpeg"
    pidfile = tmp_path / "ffmpeg.pid"
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(audio, "DECODE_TIMEOUT", 10.0)
    return pidfile


def _gone(pidfile: Path) -> bool:
    """True once the fake FFmpeg has exited and been reaped (no zombie left)."""
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


_NOISY = "head -c 262144 /dev/zero | tr '\\0' 'e' >&2\necho >&2\necho 'frame 7: corrupt' >&2\n"
"""256 KiB of log, four times a pipe's buffer, then a last line."""


def test_a_long_error_log_does_not_stall_the_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FFmpeg logging far more than a pipe holds before its output still finishes at once
    (it stalled until DECODE_TIMEOUT killed it, and the 422 said "took too long")."""
    _fake_ffmpeg(tmp_path, monkeypatch, _NOISY + "printf 'PCMPCM'\nexit 0")
    start = time.monotonic()
    assert b"".join(audio.ffmpeg_stream(tmp_path / "a.wav", ["-f", "s16le"])) == b"PCMPCM"
    assert time.monotonic() - start < 5


def test_a_failed_decode_with_a_long_log_says_its_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ffmpeg(tmp_path, monkeypatch, _NOISY + "exit 1")
    start = time.monotonic()
    with pytest.raises(InvalidInput, match="does not decode: frame 7: corrupt") as caught:
        list(audio.ffmpeg_stream(tmp_path / "a.wav", ["-f", "s16le"]))
    assert "too long" not in str(caught.value)
    assert time.monotonic() - start < 5


def test_ffmpeg_is_killed_and_reaped_when_its_consumer_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that raises mid-stream does not leave FFmpeg blocked on a full pipe until the
    decode deadline: it is killed and reaped before the error leaves frames_of (the error's
    traceback would otherwise keep the stream, and its process, alive)."""
    pidfile = _fake_ffmpeg(tmp_path, monkeypatch, "exec cat /dev/zero")

    class Broken:
        @staticmethod
        def compute(image: Any) -> Any:
            raise RuntimeError("hasher failed")

    monkeypatch.setattr(video, "load", lambda name, part: Broken)
    with pytest.raises(RuntimeError, match="hasher failed"):
        video.frames_of(tmp_path / "v.mp4")
    assert _gone(pidfile)


def test_frames_of_stops_ffmpeg_once_it_has_its_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `limit` hashes the rest of the stream is not read: FFmpeg is stopped at once."""
    pidfile = _fake_ffmpeg(tmp_path, monkeypatch, "exec cat /dev/zero")
    start = time.monotonic()
    frames = video.frames_of(tmp_path / "v.mp4", limit=3)
    assert len(frames) == 3 and time.monotonic() - start < 5
    assert _gone(pidfile)


# ---------------------------------------------------------------- frame size


@pytest.fixture(scope="module")
def huge_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 8192x8192 frames of H.264 (~200 KB): 64 Mpixel pictures from a tiny file."""
    path = tmp_path_factory.mktemp("huge") / "huge.mp4"
    subprocess.run(["ffmpeg", "-y", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "color=c=red:s=8192x8192:r=25", "-frames:v", "2", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_oversized_video_frames_are_refused_before_decoding(huge_clip: Path) -> None:
    start = time.monotonic()
    with pytest.raises(InvalidInput, match="8192x8192 pixels are too large") as caught:
        video.frames_of(huge_clip)
    assert time.monotonic() - start < 5
    assert caught.value.extra["errors"] == [{"field": "file", "message": caught.value.detail}]
    with huge_clip.open("rb") as upload, pytest.raises(InvalidInput, match="too large"):
        compute.fingerprints_for(upload, "video/mp4")


def test_a_large_cover_picture_does_not_refuse_the_sound(tmp_path: Path) -> None:
    """An MP3 whose ID3 cover is 8000x5000: FFmpeg logs the picture as too large while it
    probes it, then decodes the sound; the upload is fingerprinted, not refused."""
    path = tmp_path / "song.mp3"
    subprocess.run(["ffmpeg", "-y", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=f=440:d=5", "-f", "lavfi", "-i", "color=c=blue:s=8000x5000:d=0.04",
                    "-map", "0:a", "-map", "1:v", "-frames:v", "1", "-c:a", "libmp3lame",
                    "-c:v", "mjpeg", "-disposition:v", "attached_pic", "-id3v2_version", "3",
                    str(path)], check=True)
    items, seconds = audio.chromaprint_items(path)
    assert items and seconds > 4


def test_video_within_the_pixel_bound_still_decodes(tmp_path: Path) -> None:
    path = tmp_path / "small.mp4"
    subprocess.run(["ffmpeg", "-y", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=s=320x240:r=25:d=3", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    assert len(video.frames_of(path)) == 3


# ---------------------------------------------------------------- audio lookup


def _fingerprint(items: Any) -> dict[str, object]:
    return {"items": base64.b64encode(np.asarray(items, "<u2").tobytes()).decode("ascii")}


def test_a_query_of_one_common_value_reads_a_bounded_number_of_postings(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 tracks of 2,000 values, one value held 4 times by each (4,000 postings, just
    within the 0.2 % that may vote): a query repeating it at 512 voting positions produced
    2,048,000 votes; at most 2**20 are read now, the most common values dropped first, and
    the query's informative part still finds its track."""
    rng = np.random.default_rng(3)
    common = 4242
    tracks = rng.integers(0, 65_536, (1_000, 2_000), dtype=np.uint16)
    tracks[tracks == common] = common + 1
    tracks[:, [100, 600, 1_100, 1_600]] = common
    index = AVIndex()
    index.add_many([(seq, {"chromaprint": _fingerprint(t)}) for seq, t in enumerate(tracks)])
    votes = [0]
    real = avindex._Postings.votes

    def counted(self: Any, *args: Any) -> tuple[Any, Any]:
        track, offset = real(self, *args)
        votes[0] += len(track)
        return track, offset

    monkeypatch.setattr(avindex._Postings, "votes", counted)
    assert index.search({"chromaprint": _fingerprint([common] * 600)}) == []
    assert votes[0] <= 2**20
    votes[0] = 0
    query = np.concatenate([tracks[7][:300], np.full(600, common, np.uint16)])
    found = index.search({"chromaprint": _fingerprint(query)}, keep_none=True)
    assert votes[0] <= 2**20
    best = max(found, key=lambda c: c.similarity or 0.0)
    assert (best.seq, best.offset) == (7, 0.0)


def test_the_verdict_is_decided_before_the_similarity_is_rounded() -> None:
    """9,831 of 65,536 bits differ: 0.849991 agree, under the 0.85 match threshold, which
    rounding to 4 places first turned into a 'match'."""
    rng = np.random.default_rng(5)
    track = rng.integers(0, 65_536, 4_096, dtype=np.uint16)
    query = track.copy()
    flipped = rng.choice(4_096, 3_277, replace=False)  # 3 bits in each: 9,831 bits
    query[flipped] ^= np.uint16(0b0000_0100_0010_0001)
    assert int(np.unpackbits((track ^ query).view(np.uint8)).sum()) == 9_831
    index = AVIndex()
    index.add(1, {"chromaprint": _fingerprint(track)})
    [found] = index.search({"chromaprint": _fingerprint(query)})
    assert (found.seq, found.offset, found.verdict) == (1, 0.0, "possible")
    assert found.similarity is not None and found.similarity < found.threshold == 0.85
    assert found.to_json()["verdict"] == "possible"
