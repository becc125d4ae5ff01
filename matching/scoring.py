"""Scoring fingerprints: how close two of them are, and what that closeness means.

PDQ and pHash are compared by Hamming distance, MinHash by estimated Jaccard similarity. Each
algorithm's verdict bands live in ONE table, THRESHOLDS, used by a one-to-one `compare()` and by
the near-duplicate index alike, so a search and a compare always agree.

Thresholds were chosen with bench/fingerprint_rates.py; docs/platforms.md holds the measured
miss and false-match rates behind them. numpy is imported inside functions: importing this
module costs nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal, Self

from copyledger.ledger.errors import InvalidInput, said

__all__ = [
    "CHROMAPRINT_MATCH",
    "CHROMAPRINT_POSSIBLE",
    "GEOMETRIC_CANDIDATES",
    "MINHASH_MATCH",
    "MINHASH_POSSIBLE",
    "ORB_MATCH",
    "ORB_POSSIBLE",
    "PDQ_MATCH",
    "PDQ_POSSIBLE",
    "PHASH_LOW_BITS",
    "PHASH_MATCH",
    "PHASH_POSSIBLE",
    "THRESHOLDS",
    "VERDICT_RANK",
    "VPDQ_MATCH",
    "VPDQ_POSSIBLE",
    "Candidate",
    "Match",
    "Score",
    "Thresholds",
    "Verdict",
    "compare",
    "estimated_jaccard",
    "geometric_candidates",
    "hamming",
    "minhash_hashvalues",
    "minhash_similarity",
    "overall_verdict",
    "phash_low_information",
    "score_json",
]

Verdict = Literal["match", "possible", "none"]

VERDICT_RANK: Mapping[str, int] = MappingProxyType({"none": 0, "possible": 1, "match": 2})
"""How strong a verdict is: the best of several is the one ranked highest."""

# ---------------------------------------------------------------- thresholds (measured)
# Hamming distances are "at most"; similarities are "at least". Measured by
# bench/fingerprint_rates.py on 300 generated originals x 5 transforms (1,500 variants, 44,850
# unrelated original pairs, 448,500 unrelated variant/original pairs) and on 140 prose texts;
# the tables are in docs/platforms.md.

PDQ_MATCH = 31
"""Meta's reference PDQ threshold (of 256 bits), kept so hashes from other PDQ tools compare
the same way. Measured: 97 % of variants within it; PDQ's misses are smooth gradients (JPEG 30,
+20 % brightness) and text shrunk to 25 % (up to 42 bits)."""
PDQ_POSSIBLE = 63
"""Up to a quarter of the bits: worth a human look. No unrelated pair came closer than 74;
4 of 1,500 variants (smooth gradients after JPEG 30 or brightening, 64 to 84 bits) fell
outside; pHash matched three of them and rated the fourth (10 bits) "possible"."""
PHASH_MATCH = 8
"""pHash (of 64 bits), the second opinion: 99.8 % of variants within 8 (max 10, after
brightening); no unrelated pair within 9."""
PHASH_POSSIBLE = 10
"""pHash 'possible' radius. Not 12: among a million registrations a random 64-bit code has
~0.22 neighbours within 12 bits by chance alone, ~0.01 within 10 (binomial tails; measured
0.25 at 12 by bench/index_bench.py). 3 of 448,500 unrelated variant pairs fell within 10."""
PHASH_LOW_BITS = 16
"""A pHash with fewer bits set is low-information, no evidence. imagehash sets a bit per
DCT coefficient above the median of 64, so 32 unless coefficients tie at the median; fewer
than 16 means at least 18 equal (zero): a flat or near-flat picture, a plain gradient. All of
these have codes within a few bits of each other (every flat picture's is 8000000000000000 or
0), so a flat grey picture "matched" a flat white one; and no code with 16 bits or more is
within the 'possible' radius of a flat picture's. Measured: 60 generated originals of
tests/test_fingerprint.py and their 300 variants (PDQ's low-quality gradients included) all
have 32."""
MINHASH_MATCH = 0.8
"""Estimated Jaccard similarity of word 5-shingles for a match: measured 100 % of texts with
1 % of words changed, 98 % at 1.5 %, 41 % at 2.5 % (the rest 'possible')."""
MINHASH_POSSIBLE = 0.5
"""Estimated Jaccard similarity for 'possible': 5 % of words changed lands here (99 %)."""
ORB_MATCH = 18
"""Geometrically consistent ORB keypoints (distinct upload locations agreeing on one
similarity transform under RANSAC) for a match. Measured by bench/image_edits_bench.py on 29
real photos x 22 edits: unrelated pairs gave 0 inliers in 99 %, chance fits of 4-6 in the
rest; the right work's median was 21-49 for every geometric edit (docs/platforms.md)."""
ORB_POSSIBLE = 10
"""Inliers for 'possible': above the chance fits of unrelated photos (4-6, rarely more). A
count from the guided second pass (matching.local, D62) reaches 'possible' at most."""
CHROMAPRINT_MATCH = 0.85
"""Share of Chromaprint bits agreeing over the aligned overlap (matching.avindex). Measured by
bench/av_bench.py on synthesised music (docs/platforms.md): 15 s excerpts under the five
degradations agreed at 0.93 or more; the closest unrelated track reached 0.74."""
CHROMAPRINT_POSSIBLE = 0.76
"""Above every unrelated alignment measured (0.74), below every degraded excerpt (0.93)."""
VPDQ_MATCH = 0.5
"""Share of the registered frames in the aligned span that the probe reproduces (within
avindex.VPDQ_FRAME_RADIUS bits). Measured: edited copies 0.5 to 1.0 (a 10 % crop is the weak
case); no unrelated video came within 'possible'."""
VPDQ_POSSIBLE = 0.3


@dataclass(frozen=True, slots=True)
class Thresholds:
    """One algorithm's verdict bands: `match` and, beyond it, the edge of 'possible'.

    For a distance (`similarity` false) closer means smaller, and the bands are "at most";
    for a similarity they are "at least".
    """

    match: float
    possible: float
    similarity: bool = False
    measure: str = ""
    """The answer's field for the value: `distance` or `similarity` unless named here."""
    low_is_evidence: bool = True
    """Whether a low-quality score keeps its verdict (PDQ: flagged for a human look) or is
    'none' (pHash: a low-information code says nothing, PHASH_LOW_BITS)."""

    @property
    def field(self) -> str:
        return self.measure or ("similarity" if self.similarity else "distance")

    def verdict(self, value: float) -> Verdict:
        """The band `value` (a distance or a similarity, as this algorithm measures) falls in."""
        if self.similarity:
            within_match, within_possible = value >= self.match, value >= self.possible
        else:
            within_match, within_possible = value <= self.match, value <= self.possible
        if within_match:
            return "match"
        return "possible" if within_possible else "none"


THRESHOLDS: Mapping[str, Thresholds] = MappingProxyType({
    "pdq": Thresholds(PDQ_MATCH, PDQ_POSSIBLE),
    "phash": Thresholds(PHASH_MATCH, PHASH_POSSIBLE, low_is_evidence=False),
    "minhash": Thresholds(MINHASH_MATCH, MINHASH_POSSIBLE, similarity=True),
    "orb": Thresholds(ORB_MATCH, ORB_POSSIBLE, similarity=True, measure="inliers"),
    "chromaprint": Thresholds(CHROMAPRINT_MATCH, CHROMAPRINT_POSSIBLE, similarity=True),
    "vpdq": Thresholds(VPDQ_MATCH, VPDQ_POSSIBLE, similarity=True),
})
"""The verdict bands of every algorithm in ledger.fingerprint.ALGORITHMS."""


# ---------------------------------------------------------------- scores


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    """One algorithm's opinion on how close two fingerprints are.

    `distance` (Hamming bits) is set for pdq/phash, `similarity` (estimated Jaccard) for minhash.
    `threshold` is the match threshold, `possible_threshold` the edge of the 'possible' band.
    `low_quality` means a PDQ hash involved has quality below PDQ_LOW_QUALITY: the verdict
    stands but needs a human look; or a pHash involved is low-information (PHASH_LOW_BITS):
    the verdict is 'none', the distance no evidence. `inliers` (orb) counts geometrically
    consistent keypoints; `explanation` says in words which transform or region of the
    original was found, and `transform` the same as numbers (orb).
    """

    algorithm: str
    verdict: Verdict
    threshold: float
    possible_threshold: float
    distance: int | None = None
    similarity: float | None = None
    inliers: int | None = None
    low_quality: bool = False
    explanation: str | None = None
    transform: Mapping[str, object] | None = None

    @classmethod
    def rate(cls, algorithm: str, value: float, *, low_quality: bool = False,
             **identity: Any) -> Self:
        """`value` (a distance, or a similarity for minhash) with its verdict from THRESHOLDS.

        `identity` holds the subclass's own fields (a Match's version, a Candidate's seq).
        """
        bands = THRESHOLDS[algorithm]
        measure: dict[str, Any] = {bands.field: value}
        verdict: Verdict = ("none" if low_quality and not bands.low_is_evidence
                            else bands.verdict(value))
        return cls(algorithm=algorithm, verdict=verdict, threshold=bands.match,
                   possible_threshold=bands.possible, low_quality=low_quality, **measure,
                   **identity)


@dataclass(frozen=True, slots=True, kw_only=True)
class Match(Score):
    """A one-to-one comparison: what a claim check reports per algorithm.

    `version` is the hasher version that produced the fingerprints (see compare()).
    """

    version: str

    def to_json(self) -> dict[str, object]:
        return {**score_json(self), "version": self.version}


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate(Score):
    """A registered entry (`seq`) whose fingerprint is within the 'possible' band of a query."""

    seq: int

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, **score_json(self)}


def score_json(m: Score) -> dict[str, object]:
    """A score as JSON: distance (pdq/phash) or similarity (minhash), thresholds, verdict."""
    out: dict[str, object] = {"algorithm": m.algorithm}
    if m.distance is not None:
        out["distance"] = m.distance
    if m.similarity is not None:
        out["similarity"] = m.similarity
    if m.inliers is not None:
        out["inliers"] = m.inliers
    out.update(threshold=m.threshold, possible_threshold=m.possible_threshold,
               verdict=m.verdict, low_quality=m.low_quality)
    if m.explanation is not None:
        out["explanation"] = m.explanation
    if m.transform is not None:
        out["transform"] = dict(m.transform)
    return out


def overall_verdict(scores: Iterable[Score]) -> Verdict:
    """The best verdict among the algorithms (PDQ, pHash, MinHash) that were compared.

    Measured, not assumed: PDQ misses some smooth images and heavily shrunk text that pHash
    catches, and neither produced a false 'match' on unrelated pairs (docs/platforms.md).
    """
    best: Verdict = "none"
    for s in scores:
        if VERDICT_RANK[s.verdict] > VERDICT_RANK[best]:
            best = s.verdict
    return best


# ---------------------------------------------------------------- measures


def hamming(a_hex: str, b_hex: str) -> int:
    """Bits that differ between two equal-length hex hashes."""
    if len(a_hex) != len(b_hex):
        raise InvalidInput(said("hash lengths differ ({a} vs {b} hex digits)", a=len(a_hex),
                                b=len(b_hex)))
    try:
        return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()
    except ValueError as exc:
        raise InvalidInput("hash is not hex") from exc


def phash_low_information(code: str | bytes) -> bool:
    """Whether a pHash (hex, or its 8 bytes) has fewer than PHASH_LOW_BITS bits set."""
    value = int(code, 16) if isinstance(code, str) else int.from_bytes(code, "big")
    return value.bit_count() < PHASH_LOW_BITS


def minhash_hashvalues(fingerprint: Mapping[str, object]) -> Any:
    """The uint64 numpy array inside a (validated) minhash fingerprint."""
    import numpy as np

    raw = base64.b64decode(str(fingerprint["hashvalues"]))
    return np.frombuffer(raw, dtype="<u8")


def estimated_jaccard(a: Any, b: Any) -> float:
    """The share of MinHash minima that agree (two numpy arrays): the Jaccard estimate."""
    import numpy as np

    if a.shape != b.shape:
        raise InvalidInput("minhash fingerprints have different num_perm")
    return float(np.count_nonzero(a == b)) / float(len(a))


def minhash_similarity(a: Mapping[str, object], b: Mapping[str, object]) -> float:
    """Estimated Jaccard similarity of two minhash fingerprints (of their 128 minima)."""
    return estimated_jaccard(minhash_hashvalues(a), minhash_hashvalues(b))


def compare(algorithm: str, a: Mapping[str, object], b: Mapping[str, object]) -> Match:
    """Compare two validated fingerprints of one algorithm; `a` is the registered one.

    The reported version is `a`'s (the registered hash), or "a-version/b-version" when the two
    were computed by different hasher versions.
    """
    if algorithm not in THRESHOLDS:
        raise InvalidInput(said("unknown algorithm {algorithm!r}", algorithm=algorithm))
    version = _versions(a, b)
    if algorithm == "orb":
        return _compare_orb(a, b, version)
    if algorithm == "minhash":
        return Match.rate(algorithm, minhash_similarity(a, b), version=version)
    if algorithm in ("chromaprint", "vpdq"):
        from copyledger.matching.avindex import aligned_similarity

        return Match.rate(algorithm, aligned_similarity(algorithm, a, b), version=version)
    distance = hamming(str(a["hash"]), str(b["hash"]))
    if algorithm == "phash":
        low = phash_low_information(str(a["hash"])) or phash_low_information(str(b["hash"]))
    else:
        low = bool(a.get("low_quality")) or bool(b.get("low_quality"))
    return Match.rate(algorithm, distance, low_quality=low, version=version)


GEOMETRIC_CANDIDATES = 4
"""Registered works whose keypoints a claim check compares with the disputed image's: the
claimed work and the closest hash candidates. Each costs an entry read and a RANSAC fit."""


def geometric_candidates(found: Iterable[Mapping[str, Any]], claimed: int | None,
                         limit: int = GEOMETRIC_CANDIDATES) -> list[int]:
    """The seqs to verify geometrically: the claimed work first, then the hash candidates
    (`Candidate.to_json()` dicts), best verdict and closest (relative to its threshold) first."""
    ranked = sorted((m for m in found if m["algorithm"] in ("pdq", "phash")),
                    key=lambda m: (-VERDICT_RANK[m["verdict"]], m["distance"] / m["threshold"]))
    seqs = [claimed] if claimed is not None else []
    for m in ranked:
        if len(seqs) >= limit:
            break
        if m["seq"] not in seqs:
            seqs.append(m["seq"])
    return seqs


def _compare_orb(a: Mapping[str, object], b: Mapping[str, object], version: str) -> Match:
    """Geometric verification (matching.local.verify) rated by its inliers."""
    from copyledger.matching.local import verify

    found = verify(dict(a), dict(b))
    if found is None:
        return Match.rate("orb", 0, version=version)
    rated = Match.rate("orb", found.inliers, version=version, explanation=found.explain(),
                       transform=found.to_json())
    if found.guided and rated.verdict == "match":  # the guided pass is never a 'match' (D62)
        return replace(rated, verdict="possible")
    return rated


def _versions(a: Mapping[str, object], b: Mapping[str, object]) -> str:
    va, vb = str(a.get("version", "unknown")), str(b.get("version", "unknown"))
    return va if va == vb or vb == "unknown" else f"{va}/{vb}"
