"""vPDQ-style video fingerprints: a PDQ hash of one frame a second, and of the soundtrack.

Our own on pdqhash (already the image hasher) rather than Meta's `vpdq` package, which builds
C++ against FFmpeg's development libraries: FFmpeg here only decodes (a subprocess, streamed,
bounded by DECODE_TIMEOUT, MAX_MEDIA_SECONDS and MAX_PIXELS a frame), and we add one step vPDQ
lacks: dark borders are trimmed from each frame before hashing, so a letterboxed or
pillarboxed copy hashes like its original (D38). Frames are scaled to FRAME_PX square grey
first: PDQ downsamples to 64x64 anyway, and a fixed small frame bounds memory per frame
(16 KiB) whatever the resolution.
A probe is decoded at PROBE_DECODE_PX instead, its bars trimmed there, and the picture then
scaled to FRAME_PX square, as a registered frame's whole picture was (D72).
"""

from __future__ import annotations

import base64
from contextlib import closing
from typing import Any

from copyledger.ledger.components import MATCHING, PDQHASH, load, require
from copyledger.ledger.fingerprint import (
    MAX_AUDIO_ITEMS,
    MAX_VIDEO_FRAMES,
    PDQ_LOW_QUALITY,
    VPDQ_FRAME_BYTES,
    VPDQ_SCHEME,
    Fingerprints,
)
from copyledger.matching.audio import Progress, Source, audio_fingerprints, ffmpeg_stream

__all__ = [
    "BORDER_LEVEL",
    "CENTRE",
    "FRAME_PX",
    "PROBE_CROPS",
    "PROBE_DECODE_PX",
    "PROBE_FPS",
    "SOUNDTRACK_ITEMS",
    "frame_codes",
    "frames_of",
    "scaled",
    "trim_borders",
    "video_fingerprints",
]

FRAME_PX = 128
PROBE_FPS = 2
CENTRE = 0.85
"""A registered frame's hash covers its central 85 % (each way, after trimming borders): a copy
cropped by up to 15 % still shows all of it."""
PROBE_CROPS = (1.0, 0.96, 0.92, 0.88, 0.85)
"""Crops a probe allows for: for a copy showing the central c of the original, the original's
hashed centre is the copy's central CENTRE / c, and the probe hashes each of those. Steps of
4 %: a 6 % crop hashed at the 8 % step of a coarser ladder kept 4 of 14 frames within the
radius (D66). Each step is a hash per probe frame, out of MAX_VIDEO_FRAMES: five steps at
PROBE_FPS cover the probe's first 16 seconds (three covered 26)."""
PROBE_DECODE_PX = 4 * FRAME_PX
"""A probe's frames are decoded this size square, so bars are trimmed before the picture is
scaled down: trimmed at FRAME_PX, a pillarboxed 4:3 picture kept 96 of 128 columns and hashed
unlike its registered frames (D72). 256 KiB a frame."""
BORDER_LEVEL = 24
"""Rows and columns at the frame's edges whose brightest pixel is below this (of 255) are
border; bars from encoders are near 16, and a dark scene keeps its middle."""
SOUNDTRACK_ITEMS = MAX_AUDIO_ITEMS // 2
"""A video's soundtrack keeps half an audio work's items (4.2 minutes), so the entry, with
MAX_VIDEO_FRAMES frames beside it, stays under 16 KiB."""


def trim_borders(frame: Any) -> Any:
    """The frame (2-D uint8) without its uniform dark rows and columns; whole if all dark."""
    import numpy as np

    rows = np.flatnonzero(frame.max(axis=1) >= BORDER_LEVEL)
    cols = np.flatnonzero(frame.max(axis=0) >= BORDER_LEVEL)
    if len(rows) < 8 or len(cols) < 8:
        return frame
    return frame[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def video_fingerprints(source: Source, progress: Progress | None = None, *,
                       probe: bool = False) -> Fingerprints:
    """{"vpdq": ..., "chromaprint": ...} of a video ("chromaprint" only if it has sound, and
    only "chromaprint" for a video container holding sound alone); {} if neither decodes to
    anything. Progress is reported for the picture pass, then the sound pass.

    A `probe` (the disputed content of a claim check) samples PROBE_FPS frames a second: a
    clip cut between two of the original's sampled frames then still has a frame within a
    quarter second of each (at each if cut on a whole second), where panning or motion has
    moved the picture little."""
    from importlib.metadata import version

    require(MATCHING, "numpy")

    frames = (frames_of(source, progress, fps=PROBE_FPS,
                        centres=tuple(CENTRE / c for c in PROBE_CROPS),
                        decode_px=PROBE_DECODE_PX) if probe
              else frames_of(source, progress))
    out: Fingerprints = {}
    if frames:
        packed = b"".join(s.to_bytes(2, "little") + h + bytes([q]) for s, h, q in frames)
        assert len(packed) == VPDQ_FRAME_BYTES * len(frames)
        out["vpdq"] = {
            "algorithm": "vpdq",
            "version": version("pdqhash"),
            "scheme": VPDQ_SCHEME,
            "duration": frames[-1][0] // 4 + 1,
            "frames": base64.b64encode(packed).decode("ascii"),
        }
    out.update(audio_fingerprints(source, progress, max_items=SOUNDTRACK_ITEMS))
    return out


def frames_of(source: Source, progress: Progress | None = None, limit: int = MAX_VIDEO_FRAMES,
              fps: int = 1, centres: tuple[float, ...] = (CENTRE,),
              decode_px: int = FRAME_PX) -> list[tuple[int, bytes, int]]:
    """(time in quarter seconds, PDQ hash, PDQ quality) of `fps` frames a second (1, 2 or 4),
    one hash per central fraction in `centres`, at most `limit` hashes. Frames are decoded
    `decode_px` square and trimmed; past FRAME_PX, the trimmed picture is then scaled to
    FRAME_PX square (at FRAME_PX, as registration decodes, it is hashed as trimmed)."""
    import numpy as np

    pdqhash = load("pdqhash", PDQHASH)
    size = decode_px * decode_px
    out: list[tuple[int, bytes, int]] = []
    # FFmpeg's fps filter (round=near) takes the frame just before k + 1/2 s at 1 a second;
    # at 2 or 4 a second it is asked for round=up, frames at k / fps, and the first half
    # second's are dropped, so each is labelled as a registered frame at that instant was
    # and a copy cut on a whole second is sampled where its original was (D72).
    rounding, n = ("", 0) if fps == 1 else (":round=up", -(fps // 2))
    filters = f"fps={fps}{rounding},scale={decode_px}:{decode_px}:flags=area,format=gray"
    pending = b""
    seconds = str(limit / fps / len(centres) + 0.5)
    with closing(ffmpeg_stream(source, ["-map", "0:v:0?", "-an", "-t", seconds, "-vf",
                                        filters, "-f", "rawvideo"], chunk=size)) as blocks:
        for block in blocks:
            pending += block
            while len(pending) >= size and len(out) + len(centres) <= limit:
                frame = np.frombuffer(pending[:size], np.uint8).reshape(decode_px, decode_px)
                pending = pending[size:]
                if n < 0:
                    n += 1
                    continue
                trimmed = trim_borders(frame)
                if decode_px != FRAME_PX:
                    trimmed = scaled(trimmed)
                for centre in centres:
                    grey = np.ascontiguousarray(_centre(trimmed, centre))
                    bits, quality = pdqhash.compute(np.dstack([grey, grey, grey]))
                    code = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()
                    out.append((n * 4 // fps, code, int(quality)))
                n += 1
                if progress is not None:
                    progress(n / fps)
            if len(out) + len(centres) > limit:
                break  # all the hashes wanted: FFmpeg is stopped, not read to its end
    return out


def scaled(picture: Any) -> Any:
    """A grey picture scaled to FRAME_PX square by pixel area, as FFmpeg's `flags=area` scales
    a registered video's frames."""
    import cv2
    import numpy as np

    return cv2.resize(np.ascontiguousarray(picture), (FRAME_PX, FRAME_PX),
                      interpolation=cv2.INTER_AREA)


def _centre(frame: Any, share: float) -> Any:
    """The central `share` of a frame each way."""
    h, w = frame.shape
    dy, dx = round(h * (1 - share) / 2), round(w * (1 - share) / 2)
    return frame[dy : h - dy, dx : w - dx]


def frame_codes(fingerprint: dict[str, object] | Any) -> tuple[Any, Any, Any]:
    """(seconds, codes (n x 32 uint8), low-quality flags) of a validated vpdq fingerprint."""
    import numpy as np

    raw = np.frombuffer(base64.b64decode(str(fingerprint["frames"])), np.uint8)
    rows = raw.reshape(-1, VPDQ_FRAME_BYTES)
    seconds = (rows[:, 0].astype(np.int64) | (rows[:, 1].astype(np.int64) << 8)) / 4.0
    return seconds, np.ascontiguousarray(rows[:, 2:34]), rows[:, 34] < PDQ_LOW_QUALITY
