"""What a client computes from a file on its own machine, so the file need not leave it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from copyledger.matching import MAX_FINGERPRINT_BYTES, fingerprints_for


def fingerprint_file(path: Path, media_type: str,
                     progress: Callable[[float], None] | None = None, *,
                     query: bool = False) -> dict[str, Any]:
    """The perceptual fingerprints of a file (PDQ, pHash and ORB keypoints for images, MinHash
    for text, Chromaprint for audio, vPDQ and Chromaprint for video), as the server would
    compute them from an upload; empty for other types and for files over
    MAX_FINGERPRINT_BYTES. InvalidInput if an image, audio or video file does not decode.
    `progress` hears the seconds of audio or video decoded (audio and video are streamed from
    the file). `query`: a claim check's disputed content (an image also gets PDQ views and
    more keypoints; a video is sampled more densely)."""
    if path.stat().st_size > MAX_FINGERPRINT_BYTES:
        return {}
    if media_type.split("/", 1)[0] in ("audio", "video"):
        return dict(fingerprints_for(path, media_type, progress, query=query))
    return dict(fingerprints_for(path.read_bytes(), media_type, query=query))
