"""The near-duplicate index: which registered entries does this fingerprint (nearly) match?

The server rebuilds one FingerprintIndex from the log at start and adds each sealed block's
fingerprints, so a registration is matchable as soon as it is sealed. PDQ and pHash codes live
in faiss binary indexes searched by Hamming radius (exact: every code within the 'possible'
radius is found); MinHash fingerprints go through datasketch's LSH, whose candidates are then
scored by their exact estimated Jaccard similarity. Verdicts, thresholds and the similarity
itself come from copyledger.matching.scoring, so a search and a one-to-one compare() always
agree.

Results are ordered oldest registration first (lowest seq): on a claim, priority is what matters.

One lock guards everything: the sequencer thread adds while request threads search. A search
holds it for a millisecond or two; faiss itself may use OpenMP threads inside that.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from copyledger.ledger.errors import InvalidInput, said
from copyledger.ledger.fingerprint import (
    ALGORITHMS,
    MINHASH_NUM_PERM,
    MINHASH_SCHEME,
    MINHASH_SEED,
)
from copyledger.matching.avindex import AVIndex
from copyledger.matching.scoring import (
    THRESHOLDS,
    VERDICT_RANK,
    Candidate,
    estimated_jaccard,
    minhash_hashvalues,
)

__all__ = [
    "DEFAULT_LIMIT",
    "FAISS_THREADS",
    "LSH_THRESHOLD",
    "MULTIHASH_FROM",
    "FingerprintIndex",
    "explain_view",
]

MULTIHASH_FROM = 2_000_000
"""PDQ codes past which the exact flat scan gives way to IndexBinaryMultiHash, searched at the
match radius only. Measured at 1 M (bench/index_bench.py): flat range search 2.4 ms p50 at any
radius, 31 MiB; multi-hash 1.9 ms at radius 31 but 18 ms at 47 and 184 ms at 63, 5.6 s to
build and +314 MiB. So past the switch PDQ reports 'match' candidates only (pHash still reports
its 'possible' band); the flat scan grows linearly, ~2.5 ms per million codes."""
MULTIHASH_TABLES = 16
"""256 bits as 16 substrings of 16 bits: a code within radius r differs from the query by at
most r // 16 bits in some substring, so flipping that many bits per table keeps search exact."""
LSH_THRESHOLD = 0.4
"""Below scoring.MINHASH_POSSIBLE on purpose: LSH misses some pairs near its threshold, and exact
scoring afterwards drops whatever falls under the 'possible' similarity."""
DEFAULT_LIMIT = 50
FAISS_THREADS = 1
"""faiss parallelises over queries, and we send one at a time: with OpenMP's default team of
one thread per core, a search alternating between two indexes measured ~48 ms instead of
~0.4 ms (idle workers sleeping and waking). One thread is the fast setting."""
# omp_set_num_threads() only binds the calling thread; searches run in the server's worker
# threads, which would otherwise get OpenMP's default team. The variable binds them all, as
# long as it is set before faiss (and its OpenMP runtime) is first loaded; search() also sets
# it once per calling thread, in case faiss was loaded first.
os.environ.setdefault("OMP_NUM_THREADS", str(FAISS_THREADS))
_omp = threading.local()

_ORDER = {name: i for i, name in enumerate(ALGORITHMS)}


class _BinaryCodes:
    """One faiss binary index plus the seq (and low-quality flag) of every code in it."""

    def __init__(
        self, bits: int, radius: int, multihash_from: int | None = None, multihash_radius: int = 0
    ) -> None:
        import faiss

        self.bits = bits
        self.radius = radius  # inclusive Hamming radius searched
        self.multihash_from = multihash_from
        self.multihash_radius = multihash_radius
        self.index: Any = faiss.IndexBinaryFlat(bits)
        self.multihash = False
        self.seqs = np.empty(1024, np.int64)
        self.low: set[int] = set()  # faiss ids of low-quality codes (rare)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, codes: np.ndarray, seqs: list[int], low: list[bool]) -> None:
        start = len(self)
        end = start + len(seqs)
        if self.multihash_from is not None and not self.multihash and end > self.multihash_from:
            self._to_multihash()
        if end > len(self.seqs):
            grown = np.empty(max(end, 2 * len(self.seqs)), np.int64)
            grown[:start] = self.seqs[:start]
            self.seqs = grown
        self.seqs[start:end] = seqs
        self.low.update(start + i for i, flag in enumerate(low) if flag)
        self.index.add(codes)

    def _to_multihash(self) -> None:
        """Rebuild as IndexBinaryMultiHash (once, under the caller's lock; seconds at 2 M)."""
        import faiss

        old = self.index
        new = faiss.IndexBinaryMultiHash(self.bits, MULTIHASH_TABLES, self.bits // MULTIHASH_TABLES)
        new.nflip = self.multihash_radius // MULTIHASH_TABLES
        if old.ntotal:
            new.add(old.reconstruct_n(0, old.ntotal))
        self.index = new
        self.radius = self.multihash_radius
        self.multihash = True

    def search(self, code: np.ndarray) -> list[tuple[int, int, bool]]:
        """(seq, distance, low_quality) of every code within the radius."""
        return self.search_many(code.reshape(1, -1))[0]

    def search_many(self, codes: np.ndarray) -> list[list[tuple[int, int, bool]]]:
        """search() of each row of `codes`, in one faiss call (one pass over the codes)."""
        if not len(self):
            return [[] for _ in range(len(codes))]
        limits, distances, ids = self.index.range_search(codes, self.radius + 1)
        found = list(zip(distances.tolist(), ids.tolist(), strict=True))
        return [[(int(self.seqs[i]), int(d), int(i) in self.low) for d, i in found[a:b]]
                for a, b in itertools.pairwise(limits.tolist())]


class FingerprintIndex:
    """Near-duplicate search over every registered fingerprint; thread-safe.

    `add(seq, fingerprints)` takes the `fingerprints` object of an entry (as image_fingerprints,
    text_fingerprints or validate_fingerprints return it); algorithms it does not know are
    ignored, so older servers can index newer entries. Adding a seq twice is harmless: search
    reports each (seq, algorithm) once, at its best score.
    """

    def __init__(
        self,
        *,
        multihash_from: int = MULTIHASH_FROM,
        lsh_threshold: float = LSH_THRESHOLD,
        faiss_threads: int | None = FAISS_THREADS,
    ) -> None:
        import faiss
        from datasketch import MinHashLSH  # type: ignore[import-untyped]

        self._faiss_threads = faiss_threads
        if faiss_threads is not None:
            faiss.omp_set_num_threads(faiss_threads)  # this thread; search() does the others
        self._lock = threading.Lock()
        # Hamming radii searched: the edge of 'possible' (of 'match' once PDQ is multi-hash).
        pdq, phash = THRESHOLDS["pdq"], THRESHOLDS["phash"]
        self._pdq = _BinaryCodes(256, int(pdq.possible), multihash_from, int(pdq.match))
        self._phash = _BinaryCodes(64, int(phash.possible))
        self._lsh: Any = MinHashLSH(threshold=lsh_threshold, num_perm=MINHASH_NUM_PERM)
        self._minhashes: dict[int, bytes] = {}
        self._count = 0
        self._av = AVIndex()  # chromaprint and vpdq, with their own lock

    def __len__(self) -> int:
        """Number of add() calls that brought at least one fingerprint."""
        with self._lock:
            return self._count

    def stats(self) -> dict[str, object]:
        """Sizes per algorithm and which PDQ index is in use (for metrics and /admin)."""
        with self._lock:
            return {
                "entries": self._count,
                "pdq": len(self._pdq),
                "pdq_index": "multihash" if self._pdq.multihash else "flat",
                "phash": len(self._phash),
                "minhash": len(self._minhashes),
            }

    def media_stats(self) -> dict[str, int]:
        """Audio tracks, videos, postings and frames indexed (matching.avindex)."""
        return self._av.stats()

    def add(self, seq: int, fingerprints: Mapping[str, Mapping[str, object]]) -> None:
        self.add_many([(seq, fingerprints)])

    def add_many(
        self, items: Iterable[tuple[int, Mapping[str, Mapping[str, object]]]]
    ) -> int:
        """Add a batch (a sealed block, or the log at start); returns entries with fingerprints.

        Everything is parsed before anything is added, so a malformed fingerprint (InvalidInput)
        leaves the index unchanged.
        """
        pdq: list[tuple[int, bytes, bool]] = []
        phash: list[tuple[int, bytes]] = []
        texts: list[tuple[int, bytes]] = []
        media: list[tuple[int, Mapping[str, Mapping[str, object]]]] = []
        count = 0
        for seq, fingerprints in items:
            if not _is_seq(seq):
                raise InvalidInput(said("seq must be a non-negative integer, not {seq!r}",
                                        seq=seq))
            seen = False
            if "pdq" in fingerprints:
                item = fingerprints["pdq"]
                pdq.append((seq, _code(item, 32, "pdq"), bool(item.get("low_quality"))))
                seen = True
            if "phash" in fingerprints:
                phash.append((seq, _code(fingerprints["phash"], 8, "phash")))
                seen = True
            if "minhash" in fingerprints:
                texts.append((seq, _minhash_bytes(fingerprints["minhash"])))
                seen = True
            if "chromaprint" in fingerprints or "vpdq" in fingerprints:
                media.append((seq, fingerprints))
                seen = True
            count += seen
        if media:  # parses all before adding any; nothing below can fail
            self._av.add_many(media)
        with self._lock:
            if pdq:
                self._pdq.add(_stack([c for _, c, _ in pdq]), [s for s, _, _ in pdq],
                              [low for _, _, low in pdq])
            if phash:
                self._phash.add(_stack([c for _, c in phash]), [s for s, _ in phash],
                                [False] * len(phash))
            for seq, values in texts:
                if seq not in self._minhashes:
                    self._lsh.insert(seq, _lean(values), check_duplication=False)
                    self._minhashes[seq] = values
            self._count += count
        return count

    def search(
        self, fingerprints: Mapping[str, Mapping[str, object]], *, limit: int = DEFAULT_LIMIT
    ) -> list[Candidate]:
        """Registered entries within the 'possible' band of any given fingerprint.

        A claim check's PDQ `views` (the upload mirrored, rotated, trimmed) are searched with
        its own PDQ; a candidate found through one names it in `explanation`.

        Sorted by seq (oldest registration first), then verdict (match first), then algorithm.
        `limit` counts distinct seqs: all algorithms' candidates for the `limit` oldest seqs are
        returned.
        """
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        queries: dict[str, Any] = {}
        pdq_views: list[tuple[bytes, str | None]] = []  # (code, the view's transform)
        if "pdq" in fingerprints:
            pdq_views.append((_code(fingerprints["pdq"], 32, "pdq"), None))
        for view in _views(fingerprints):
            pdq_views.append((_code(view, 32, "views"), explain_view(view)))
        if "phash" in fingerprints:
            queries["phash"] = np.frombuffer(_code(fingerprints["phash"], 8, "phash"), np.uint8)
        if "minhash" in fingerprints:
            queries["minhash"] = _minhash_bytes(fingerprints["minhash"])
        query_low = bool(fingerprints.get("pdq", {}).get("low_quality"))
        if self._faiss_threads is not None and getattr(_omp, "n", None) != self._faiss_threads:
            import faiss

            faiss.omp_set_num_threads(self._faiss_threads)  # binds this (worker) thread
            _omp.n = self._faiss_threads
        best: dict[tuple[int, str], Candidate] = {}
        for aligned in self._av.search(fingerprints):
            _keep(best, aligned)
        with self._lock:
            if pdq_views:
                codes = _stack([code for code, _ in pdq_views])
                for (_, transform), hits in zip(pdq_views, self._pdq.search_many(codes),
                                                strict=True):
                    for seq, d, low in hits:
                        _keep(best, Candidate.rate("pdq", d, low_quality=low or query_low,
                                                   seq=seq, explanation=transform))
            if "phash" in queries:
                for seq, d, _ in self._phash.search(queries["phash"]):
                    _keep(best, Candidate.rate("phash", d, seq=seq))
            if "minhash" in queries:
                for candidate in self._search_text(queries["minhash"]):
                    _keep(best, candidate)
        ordered = sorted(
            best.values(),
            key=lambda c: (c.seq, -VERDICT_RANK[c.verdict], _ORDER[c.algorithm]),
        )
        out: list[Candidate] = []
        seqs: set[int] = set()
        for candidate in ordered:
            if candidate.seq not in seqs:
                if len(seqs) == limit:
                    break
                seqs.add(candidate.seq)
            out.append(candidate)
        return out

    def _search_text(self, values: bytes) -> list[Candidate]:
        query = np.frombuffer(values, np.uint32)
        out = []
        for seq in self._lsh.query(_lean(values)):
            other = np.frombuffer(self._minhashes[seq], np.uint32)
            candidate = Candidate.rate("minhash", estimated_jaccard(query, other), seq=int(seq))
            if candidate.verdict != "none":
                out.append(candidate)
        return out


def explain_view(view: Mapping[str, object]) -> str:
    """A PDQ view in words: its transform, and for a content region how it sat in the upload
    ("shown at 58 % inside a larger image", or which bars or borders were trimmed)."""
    transform = str(view["transform"])
    region = view.get("region")
    if not isinstance(region, list):
        return transform
    left, top, right, bottom = region
    if right - left >= 970 or bottom - top >= 970:
        return f"{transform}: bars, borders or captions trimmed"
    return f"{transform}: shown at {round((right - left) / 10)} % inside a larger image"


def _views(fingerprints: Mapping[str, object]) -> list[Mapping[str, object]]:
    """A claim check's extra PDQ views (validated by ledger.fingerprint); none elsewhere."""
    views = fingerprints.get("views", [])
    if not isinstance(views, list) or not all(isinstance(v, Mapping) for v in views):
        raise InvalidInput("views must be a list of objects")
    return views


def _keep(best: dict[tuple[int, str], Candidate], candidate: Candidate) -> None:
    """Keep one candidate per (seq, algorithm): the closest (a seq added twice)."""
    key = (candidate.seq, candidate.algorithm)
    old = best.get(key)
    if old is None or _closeness(candidate) > _closeness(old):
        best[key] = candidate


def _closeness(c: Candidate) -> float:
    return c.similarity if c.similarity is not None else -float(c.distance or 0)


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _code(item: Mapping[str, object], size: int, name: str) -> bytes:
    value = item.get("hash") if isinstance(item, Mapping) else None
    try:
        if not isinstance(value, str):
            raise ValueError
        code = bytes.fromhex(value)
    except ValueError:
        raise InvalidInput(said("{name}.hash must be {digits} hex digits", name=name,
                                digits=2 * size)) from None
    if len(code) != size:
        raise InvalidInput(said("{name}.hash must be {digits} hex digits", name=name,
                                digits=2 * size))
    return code


def _minhash_bytes(item: Mapping[str, object]) -> bytes:
    """The 128 minima as uint32 (datasketch keeps 32-bit values in its uint64 array)."""
    if not isinstance(item, Mapping) or "hashvalues" not in item:
        raise InvalidInput("minhash.hashvalues is required")
    try:
        values = minhash_hashvalues(item)
    except ValueError:
        raise InvalidInput("minhash.hashvalues must be base64") from None
    if len(values) != MINHASH_NUM_PERM or int(values.max()) >= 1 << 32:
        raise InvalidInput("minhash.hashvalues must hold 128 values below 2**32")
    return bytes(values.astype("<u4").tobytes())


def _lean(values: bytes) -> Any:
    from datasketch import LeanMinHash

    return LeanMinHash(
        seed=MINHASH_SEED,
        hashvalues=np.frombuffer(values, "<u4").astype(np.uint64),
        scheme=MINHASH_SCHEME,
    )


def _stack(codes: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(codes), np.uint8).reshape(len(codes), -1)
