"""What a client computes from a file on its own machine, so the file need not leave it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from copyledger.matching import MAX_FINGERPRINT_BYTES, fingerprints_for


def fingerprint_file(path: Path, media_type: str, *, query: bool = False) -> dict[str, Any]:
    """The perceptual fingerprints of a file (PDQ, pHash and ORB keypoints for images, MinHash
    for text), as the server would compute them from an upload; empty for other types and for
    files over MAX_FINGERPRINT_BYTES. `query`: a claim check's disputed content (an image also
    gets PDQ views and more keypoints). InvalidInput if a file of an image type does not
    decode."""
    if path.stat().st_size > MAX_FINGERPRINT_BYTES:
        return {}
    return dict(fingerprints_for(path.read_bytes(), media_type, query=query))
