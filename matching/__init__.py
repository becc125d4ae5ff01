"""Perceptual fingerprints: compute, compare (one threshold table), the near-duplicate index.

Public modules: `compute` (fingerprints of image and text bytes), `scoring` (distances,
similarities, THRESHOLDS and verdicts), `index` (FingerprintIndex, faiss and datasketch LSH)
and `live` (LiveIndex, the server's index rebuilt from the log). What an entry's fingerprints
may look like is the log's business: copyledger.ledger.fingerprint.

Importing this package loads no heavy library; FingerprintIndex is not re-exported here because
its module loads numpy (and faiss when one is built).
"""

from copyledger.matching.compute import (
    MAX_FINGERPRINT_BYTES,
    fingerprints_for,
    image_fingerprints,
    text_fingerprints,
)
from copyledger.matching.live import LiveIndex
from copyledger.matching.scoring import (
    THRESHOLDS,
    Candidate,
    Match,
    Verdict,
    compare,
    overall_verdict,
)

__all__ = [
    "MAX_FINGERPRINT_BYTES",
    "THRESHOLDS",
    "Candidate",
    "LiveIndex",
    "Match",
    "Verdict",
    "compare",
    "fingerprints_for",
    "image_fingerprints",
    "overall_verdict",
    "text_fingerprints",
]
