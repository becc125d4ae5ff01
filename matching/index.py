"""The near-duplicate index: which registered entries does this fingerprint (nearly) match?

The server rebuilds one FingerprintIndex from the log at start and its index thread adds the
works the log appends after (matching/live.py, D130); a claim check waits for it to have read
the tree it signs for. PDQ and pHash codes live
in faiss binary indexes searched by Hamming radius (exact: every code within the 'possible'
radius is found); MinHash fingerprints go through an LSH with datasketch's bands, whose
candidates are then scored by their exact estimated Jaccard similarity. Verdicts, thresholds
and the similarity itself come from copyledger.matching.scoring, so a search and a
one-to-one compare() always agree.

Results are ordered oldest registration first (lowest seq): on a claim, priority is what matters.

One lock guards everything: the index thread adds while request threads search. A search
holds it for a millisecond or two; faiss itself may use OpenMP threads inside that.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from copyledger.ledger.errors import InvalidInput, said
from copyledger.ledger.fingerprint import (
    ALGORITHMS,
    MINHASH_NUM_PERM,
)
from copyledger.matching.avindex import AVIndex
from copyledger.matching.scoring import (
    THRESHOLDS,
    VERDICT_RANK,
    Candidate,
    estimated_jaccard,
    minhash_hashvalues,
    phash_low_information,
)

__all__ = [
    "DEFAULT_LIMIT",
    "FAISS_THREADS",
    "LSH_THRESHOLD",
    "MULTIHASH_FROM",
    "MULTIHASH_RADIUS",
    "FingerprintIndex",
    "bind_faiss_threads",
    "explain_view",
]

MULTIHASH_FROM = 2_000_000
"""PDQ codes past which the disputed image's own PDQ, too, is searched with the multi-index
(_MultiIndex) at the match radius instead of the exact flat scan at the 'possible' radius: PDQ
then reports 'match' candidates only (pHash still reports its 'possible' band). The flat scan
grows linearly, ~2.5 ms per million codes and query (bench/index_bench.py); below the switch
one such scan per check is affordable, eleven (the upload and its ten views) are not (D67)."""
MULTIHASH_TABLES = 16
"""256 bits as 16 substrings of 16 bits: a code within radius r differs from the query by at
most r // 16 bits in some substring, so probing every key within 1 bit of each substring finds
every code within 31 bits (the PDQ match radius) exactly."""
MULTIHASH_RADIUS = MULTIHASH_TABLES * 2 - 1
"""The largest radius the multi-index searches exactly (one flipped bit per substring)."""
MULTIHASH_TAIL = 4096
"""Codes the multi-index scans flat before merging them into its tables (or a 64th of the
codes, if more): ten view queries scan the tail ten times, ~1.8 ms of CPU at the eighth
(~90,000 codes at 1 M) the tables were once re-sorted at; the tail is now at most a sixth of
that (D76)."""
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


class _MultiIndex:
    """Exact Hamming search within `radius` over codes of 16-bit substrings (multi-index
    hashing, Norouzi et al.): per substring a table of code ids sorted by that substring's
    value, so the codes sharing a key are one slice; a query probes its keys and their
    neighbours within `flips` bits and measures only those codes exactly. PDQ (16 keys, one
    flip: radius 31) probes 272 slices, ~4,000 random codes at 1 M; pHash (4 keys, two flips:
    radius 11) 548 slices, ~8,400 codes.

    Codes added since the tables were last merged (MULTIHASH_TAIL, or a 64th of them) are
    scanned flat. Ten PDQ queries at 1 M random codes cost 5.4 ms of CPU, ten flat scans
    54.8 ms (load 25-28; faiss' IndexBinaryMultiHash measured 1.9 ms a query on a quieter
    machine, D67)."""

    def __init__(self, code_bytes: int = 32, flips: int = 1) -> None:
        import faiss

        self.tables = code_bytes // 2
        self.flips = _flips(flips)
        self.radius = self.tables * (flips + 1) - 1
        """The largest radius searched exactly: a code within it differs from the query by
        at most `flips` bits in some substring."""
        self.codes = np.empty((1024, code_bytes), np.uint8)
        self.n = 0
        self.built = 0  # codes[:built] are in the tables, the rest in `tail`
        self.ids = np.empty((self.tables, 0), np.int32)
        self.offsets = np.zeros((self.tables, (1 << 16) + 1), np.int64)
        self.tail: Any = faiss.IndexBinaryFlat(8 * code_bytes)
        self.measured = 0  # codes measured in the tables by every search so far (a count)

    def add(self, codes: np.ndarray) -> None:
        end = self.n + len(codes)
        if end > len(self.codes):
            grown = np.empty((max(end, 2 * len(self.codes)), self.codes.shape[1]), np.uint8)
            grown[:self.n] = self.codes[:self.n]
            self.codes = grown
        self.codes[self.n:end] = codes
        self.n = end
        if end - self.built > max(MULTIHASH_TAIL, end // 64):
            self._merge()
        else:
            self.tail.add(codes)

    def _merge(self) -> None:
        """Merge the tail's codes into the tables and empty the tail.

        Within a key's slice ids ascend, and every tail id is above every tabled one, so a tail
        code goes at the end of its key's slice: one np.insert per table (a copy of the table,
        ~50 ms for the 16 at 1 M) gives the tables a full stable sort would. A radix sort of
        everything (0.7 s at 1 M) is done only for the first codes."""
        new = np.ascontiguousarray(self.codes[self.built:self.n].view(np.uint16).T)
        order = np.argsort(new, axis=1, kind="stable").astype(np.int32)
        if self.built:
            ids = np.empty((self.tables, self.n), np.int32)
            for t in range(self.tables):
                keys = new[t, order[t]].astype(np.int64)
                ids[t] = np.insert(self.ids[t], self.offsets[t, keys + 1], order[t] + self.built)
            self.ids = ids
        else:
            self.ids = order
        for t in range(self.tables):
            self.offsets[t, 1:] += np.cumsum(np.bincount(new[t], minlength=1 << 16))
        self.built = self.n
        self.tail.reset()

    def search_many(self, queries: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
        """(code id, distance) of every code within `radius` (<= self.radius) of each row of
        `queries`, ids ascending."""
        return [list(zip(ids.tolist(), distances.tolist(), strict=True))
                for ids, distances in self.search_arrays(queries, radius)[0]]

    def search_arrays(self, queries: np.ndarray, radius: int, start: int = 0,
                      cap: int | None = None
                      ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int | None]]:
        """search_many() as arrays (ids, distances) per row: no Python object per code found,
        so a caller keeping a few of 300,000 flat images' codes does not build them all.

        With `cap`, only the ids at positions `start` to `cap` of each probed slice are
        measured (and the tail only with `start` 0), and each row comes with its frontier:
        every code within the radius whose id is at most the frontier is in the rows of this
        call and the calls before it for positions below `start` (those past it may be
        missing), or None where no slice was cut (the row is complete). Within a slice ids
        ascend, so a row's frontier is the last id measured in its most cut slice."""
        assert radius <= self.radius
        empty = np.empty(0, np.int64)
        found: list[tuple[np.ndarray, np.ndarray]] = [(empty, empty)] * len(queries)
        frontiers: list[int | None] = [None] * len(queries)
        if self.built:
            table = np.arange(self.tables)[None, :, None]
            keys = (queries.view(np.uint16)[:, :, None] ^ self.flips).astype(np.int64)
            lo, hi = self.offsets[table, keys], self.offsets[table, keys + 1]
            if cap is not None and (cut := hi - lo > cap).any():
                last = np.where(cut, self.ids[table, np.minimum(lo + cap - 1, self.built - 1)],
                                self.built)
                frontiers = [None if f == self.built else f
                             for f in last.reshape(len(queries), -1).min(1).tolist()]
                hi = np.minimum(hi, lo + cap)
            lo = np.minimum(lo + start, hi)
            lengths = (hi - lo).ravel()
            firsts = (lo + table * self.built).ravel()
            before = np.cumsum(lengths) - lengths
            at = np.repeat(firsts - before, lengths) + np.arange(int(lengths.sum()))
            per_query = self.tables * len(self.flips)
            owner = np.repeat(np.repeat(np.arange(len(queries)), per_query), lengths)
            ids = np.take(self.ids.ravel(), at)
            self.measured += len(ids)
            # np.take, not fancy indexing: 7x faster on rows. A code met through several
            # tables is measured each time; only the few within the radius are deduplicated.
            bits = np.take(self.codes[:self.built].view(np.uint64), ids, axis=0)
            bits ^= np.take(queries.view(np.uint64), owner, axis=0)
            distance = np.bitwise_count(bits).sum(1, dtype=np.int32)
            near = distance <= radius
            pairs, first = np.unique(owner[near] * self.built + ids[near], return_index=True)
            near_distance = distance[near][first].astype(np.int64)
            bounds = np.searchsorted(pairs, np.arange(len(queries) + 1) * self.built)
            for q, (a, b) in enumerate(itertools.pairwise(bounds.tolist())):
                found[q] = (pairs[a:b] % self.built, near_distance[a:b])
        if self.tail.ntotal and not start:
            limits, distances, tail_ids = self.tail.range_search(queries, radius + 1)
            for q, (a, b) in enumerate(itertools.pairwise(limits.tolist())):
                order = np.argsort(tail_ids[a:b], kind="stable")
                found[q] = (np.concatenate([found[q][0], self.built + tail_ids[a:b][order]]),
                            np.concatenate([found[q][1],
                                            distances[a:b][order].astype(np.int64)]))
        return found, frontiers


def _flips(bits: int) -> np.ndarray:
    """The masks of every flip of at most `bits` of a 16-bit key (1, 17, 137 of them)."""
    masks = [sum(1 << b for b in chosen) for k in range(bits + 1)
             for chosen in itertools.combinations(range(16), k)]
    return np.array(masks, np.uint16)


class _BinaryCodes:
    """One faiss binary index plus the seq (and low-quality flag) of every code in it.

    With `multi`, the codes are also in a _MultiIndex (probing keys within `flips` bits):
    `search_many(..., radius)` within its exact radius uses it, and past `multihash_from` codes
    the flat index is dropped and every search is at `multihash_radius` (0: never flat)."""

    def __init__(self, bits: int, radius: int, multihash_from: int | None = None,
                 multihash_radius: int = 0, flips: int = 1) -> None:
        import faiss

        self.bits = bits
        self.radius = radius  # inclusive Hamming radius searched
        self.multihash_from = multihash_from
        self.multihash_radius = multihash_radius
        self.index: Any = faiss.IndexBinaryFlat(bits)
        self.multi = _MultiIndex(bits // 8, flips) if multihash_from is not None else None
        self.multihash = False
        self.count = 0
        self.seqs = np.empty(1024, np.int64)
        self.low: set[int] = set()  # ids of low-quality codes (rare)
        self.ascending = True
        """Whether seqs never fall as ids rise (codes added in log order, as always so far):
        then the oldest seqs are the lowest ids, and a search with a limit measures only the
        first codes of each multi-index slice (`_cut_search`)."""

    def __len__(self) -> int:
        return self.count

    def add(self, codes: np.ndarray, seqs: list[int], low: list[bool]) -> None:
        start = self.count
        end = start + len(seqs)
        if end > len(self.seqs):
            grown = np.empty(max(end, 2 * len(self.seqs)), np.int64)
            grown[:start] = self.seqs[:start]
            self.seqs = grown
        self.seqs[start:end] = seqs
        if self.ascending and (np.diff(self.seqs[max(start - 1, 0):end]) < 0).any():
            self.ascending = False  # (a start's scan and a new block could race)
        self.low.update(start + i for i, flag in enumerate(low) if flag)
        if self.multi is not None:
            self.multi.add(codes)
        if self.multihash_from is not None and end > self.multihash_from:
            if not self.multihash:  # the flat scan is too slow now: match radius only
                self.index.reset()
                self.radius = self.multihash_radius
                self.multihash = True
        else:
            self.index.add(codes)
        self.count = end

    def nbytes(self, name: str) -> dict[str, int]:
        """Bytes held by each array, allocated capacity included (item 4 of issue 11)."""
        out = {f"{name}_flat": int(self.index.ntotal) * self.bits // 8,
               f"{name}_seqs": self.seqs.nbytes}
        if self.multi is not None:
            m = self.multi
            out[f"{name}_multi_codes"] = m.codes.nbytes
            out[f"{name}_multi_tables"] = m.ids.nbytes + m.offsets.nbytes
            out[f"{name}_multi_tail"] = int(m.tail.ntotal) * self.bits // 8
        return out

    def search(self, code: np.ndarray, limit: int | None = None
               ) -> list[tuple[int, int, bool]]:
        """(seq, distance, low_quality) of every code within the radius (of the `limit` oldest
        seqs among them, if given)."""
        return self.search_many(code.reshape(1, -1), limit=limit)[0]

    def search_many(self, codes: np.ndarray, radius: int | None = None,
                    limit: int | None = None) -> list[list[tuple[int, int, bool]]]:
        """search() of each row of `codes` (within `radius`, at most the index's), in one
        pass over the codes. With `limit`, a row keeps only the codes of its `limit` oldest
        (lowest) seqs, chosen as arrays: all 300,000 flat images share one PDQ code, and a
        tuple and a Candidate each, under the index lock, cost 1.46 s (D174)."""
        radius = self.radius if radius is None else min(radius, self.radius)
        if not self.count:
            return [[] for _ in range(len(codes))]
        if self.multi is not None and radius <= self.multi.radius:
            if limit is not None and self.ascending:
                rows = self._cut_search(codes, radius, limit)
            else:
                rows = self.multi.search_arrays(codes, radius)[0]
        else:
            limits, distances, ids = self.index.range_search(codes, radius + 1)
            rows = [(ids[a:b], distances[a:b]) for a, b in itertools.pairwise(limits.tolist())]
        out = []
        for ids, distances in rows:
            seqs = self.seqs[ids]
            if limit is not None and (keep := _oldest(seqs, limit)) is not None:
                ids, distances, seqs = ids[keep], distances[keep], seqs[keep]
            out.append([(s, d, i in self.low) for s, d, i in
                        zip(seqs.tolist(), distances.tolist(), ids.tolist(), strict=True)])
        return out

    def _cut_search(self, codes: np.ndarray, radius: int, limit: int
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The multi-index's rows for `codes`, each holding every code within `radius` of its
        `limit` oldest seqs (and maybe more), measuring only the first codes of each slice:
        300,000 flat pictures share every one of a flat code's 272 slices, and measuring them
        all cost 1.61 s a search (D192). A row is complete once, below its frontier, it holds
        `limit` distinct seqs all older than the frontier's (the codes past it are no older,
        as seqs ascend with ids). The slices of the rows not yet complete are read on, eight
        times as far each time, from where the last reading stopped: no code is measured
        twice, so a search never measures more than the whole search would (D209)."""
        assert self.multi is not None
        rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(codes))]
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(codes)
        start, cap = 0, max(limit, _FIRST_CUT)
        while pending := [q for q, row in enumerate(out) if row is None]:
            found, frontiers = self.multi.search_arrays(codes[pending], radius, start, cap)
            for q, part, frontier in zip(pending, found, frontiers, strict=True):
                rows[q].append(part)
                ids, first = np.unique(np.concatenate([i for i, _ in rows[q]]),
                                       return_index=True)
                distances = np.concatenate([d for _, d in rows[q]])[first]
                if frontier is None:
                    out[q] = (ids, distances)
                    continue
                inside = ids <= frontier
                oldest = np.unique(self.seqs[ids[inside]])[:limit]
                if len(oldest) == limit and oldest[-1] < self.seqs[frontier]:
                    out[q] = (ids[inside], distances[inside])
            start, cap = cap, cap * 8
        return [row for row in out if row is not None]


_FIRST_CUT = 256
"""Codes measured first in each probed slice by a search with a limit (`_cut_search`): a few
times DEFAULT_LIMIT; a PDQ code probes 272 slices (~70,000 codes at most), a pHash 548."""


class _Bands:
    """MinHash LSH by banding, with datasketch's MinHashLSH's bands for the threshold: a text
    is a candidate of another if, in any band, their `rows` minima are all equal. Per band, a
    dict from the band's bytes to the seqs holding it in the order added: while they ascend
    (log order), a query walks its candidates oldest first and stops when it has enough.
    datasketch's query built the whole candidate set first: a text registered 100,000 times
    cost 0.28 s a claim check (D192, D210)."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        from datasketch import MinHashLSH  # type: ignore[import-untyped]

        bands = MinHashLSH(threshold=threshold, num_perm=num_perm)  # (its choice of bands)
        assert bands.b * bands.r <= num_perm
        self.width = 4 * bands.r  # a band's bytes: `rows` little-endian uint32 minima
        self.tables: list[dict[bytes, list[int]]] = [{} for _ in range(bands.b)]
        self.ascending = True
        self.last = -1

    def _keys(self, values: bytes) -> Iterator[tuple[dict[bytes, list[int]], bytes]]:
        w = self.width
        return ((table, values[i * w:(i + 1) * w]) for i, table in enumerate(self.tables))

    def insert(self, seq: int, values: bytes) -> None:
        """Index the text of `seq` (its minima as MINHASH_NUM_PERM little-endian uint32)."""
        if seq < self.last:
            self.ascending = False  # (a start's scan racing a new block could do it)
        self.last = max(self.last, seq)
        for table, key in self._keys(values):
            table.setdefault(key, []).append(seq)

    def candidates(self, values: bytes) -> Iterator[int]:
        """Every seq sharing a band with `values`, each once, oldest first: lazily from the
        band lists while they ascend, else all of them sorted."""
        lists = [found for table, key in self._keys(values) if (found := table.get(key))]
        if not self.ascending:
            yield from sorted(set().union(*lists))
            return
        last = -1
        for seq in heapq.merge(*lists):
            if seq != last:
                yield seq
                last = seq


def _oldest(seqs: np.ndarray, limit: int) -> np.ndarray | None:
    """Which of `seqs` are among its `limit` lowest distinct values (a mask), or None for all.

    A partition (linear) finds them unless a seq came twice among the lowest (a work added
    twice, rare); then a sort of the distinct ones."""
    if len(seqs) <= limit:
        return None
    lowest = np.partition(seqs, limit - 1)[:limit]
    if len(np.unique(lowest)) < limit:
        distinct = np.unique(seqs)
        if len(distinct) <= limit:
            return None
        lowest = distinct[:limit]
    keep: np.ndarray = seqs <= lowest.max()
    return keep


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

        self._faiss_threads = faiss_threads
        if faiss_threads is not None:
            faiss.omp_set_num_threads(faiss_threads)  # this thread; search() does the others
        self._lock = threading.Lock()
        # Hamming radii searched: the edge of 'possible' (of 'match' once PDQ is multi-hash).
        pdq, phash = THRESHOLDS["pdq"], THRESHOLDS["phash"]
        self._pdq = _BinaryCodes(256, int(pdq.possible), multihash_from, int(pdq.match))
        self._views_radius = int(pdq.match)
        """A claim check's extra PDQ views are searched at the match radius, by the
        multi-index: ten flat scans at 1 M would cost ~25 ms of a check's 50 (D67)."""
        self._phash = _BinaryCodes(64, int(phash.possible), 0, int(phash.possible), flips=2)
        """pHash only by a multi-index: 4 keys of 16 bits, each probed within 2 bits, find
        every code within 11 (the 'possible' radius is 10) in ~8,400 codes at 1 M random
        ones, where the flat scan reads all (D76)."""
        self._lsh = _Bands(lsh_threshold, MINHASH_NUM_PERM)
        self._minhashes: dict[int, bytes] = {}
        self._count = 0
        self._av = AVIndex()  # chromaprint and vpdq, with their own lock

    def __len__(self) -> int:
        """Number of add() calls that brought at least one fingerprint."""
        with self._lock:
            return self._count

    def stats(self) -> dict[str, object]:
        """Sizes per algorithm (pHash: the codes indexed, low-information ones are not) and
        which PDQ index is in use (for metrics and /admin)."""
        with self._lock:
            return {
                "entries": self._count,
                "pdq": len(self._pdq),
                "pdq_index": "multihash" if self._pdq.multihash else "flat",
                "phash": len(self._phash),
                "minhash": len(self._minhashes),
            }

    def nbytes(self) -> dict[str, int]:
        """Bytes of the image indexes' arrays (codes, seqs, the multi-index's tables), by
        name: the memory a work costs, not counting Python objects and allocator slack."""
        with self._lock:
            return {**self._pdq.nbytes("pdq"), **self._phash.nbytes("phash")}

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
                code = _code(fingerprints["phash"], 8, "phash")
                if not phash_low_information(code):  # no evidence: not indexed
                    phash.append((seq, code))
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
                    self._lsh.insert(seq, values)
                    self._minhashes[seq] = values
            self._count += count
        return count

    def search(
        self, fingerprints: Mapping[str, Mapping[str, object]], *, limit: int = DEFAULT_LIMIT
    ) -> list[Candidate]:
        """Registered entries within the 'possible' band of any given fingerprint.

        A claim check's PDQ `views` (the upload mirrored, rotated, trimmed) are searched with
        its own PDQ, at the match radius only (D67); a candidate found through one names it in
        `explanation`.

        Sorted by seq (oldest registration first), then verdict (match first), then algorithm.
        `limit` counts distinct seqs: all algorithms' candidates for the `limit` oldest seqs are
        returned. Each code's or text's hits are cut to their own `limit` oldest seqs before
        any candidate is built (the answer's are among them): a query sharing its code with
        300,000 flat pictures built all 300,000 under the lock (D174). A low-information pHash
        (scoring.PHASH_LOW_BITS) is not searched: it would be no evidence.
        """
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        queries: dict[str, Any] = {}
        own: list[tuple[bytes, str | None]] = []  # (code, the view's transform)
        if "pdq" in fingerprints:
            own.append((_code(fingerprints["pdq"], 32, "pdq"), None))
        views = [(_code(view, 32, "views"), explain_view(view)) for view in _views(fingerprints)]
        if "phash" in fingerprints:
            code = _code(fingerprints["phash"], 8, "phash")
            if not phash_low_information(code):  # it would be no evidence (PHASH_LOW_BITS)
                queries["phash"] = np.frombuffer(code, np.uint8)
        if "minhash" in fingerprints:
            queries["minhash"] = _minhash_bytes(fingerprints["minhash"])
        query_low = bool(fingerprints.get("pdq", {}).get("low_quality"))
        if self._faiss_threads is not None:
            bind_faiss_threads(self._faiss_threads)
        best: dict[tuple[int, str], Candidate] = {}
        for aligned in self._av.search(fingerprints):
            _keep(best, aligned)
        with self._lock:
            for group, radius in ((own, None), (views, self._views_radius)):
                if not group:
                    continue
                codes = _stack([code for code, _ in group])
                hits_per_code = self._pdq.search_many(codes, radius, limit)
                for (_, transform), hits in zip(group, hits_per_code, strict=True):
                    for seq, d, low in hits:
                        _keep(best, Candidate.rate("pdq", d, low_quality=low or query_low,
                                                   seq=seq, explanation=transform))
            if "phash" in queries:
                for seq, d, _ in self._phash.search(queries["phash"], limit):
                    _keep(best, Candidate.rate("phash", d, seq=seq))
            if "minhash" in queries:
                for candidate in self._search_text(queries["minhash"], limit):
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

    def _search_text(self, values: bytes, limit: int) -> list[Candidate]:
        """The LSH's candidates within the 'possible' band: the `limit` oldest, scored oldest
        first until that many are, not all of them (a text registered 300,000 times)."""
        query = np.frombuffer(values, np.uint32)
        out = []
        for seq in self._lsh.candidates(values):
            other = np.frombuffer(self._minhashes[seq], np.uint32)
            candidate = Candidate.rate("minhash", estimated_jaccard(query, other), seq=int(seq))
            if candidate.verdict != "none":
                out.append(candidate)
                if len(out) == limit:
                    break
        return out


def bind_faiss_threads(threads: int = FAISS_THREADS) -> None:
    """Give the calling thread faiss' OpenMP team of `threads` (FAISS_THREADS: one), once
    per thread: omp_set_num_threads binds only its caller, and a server's worker threads
    would otherwise get OpenMP's default of one per core."""
    if getattr(_omp, "n", None) != threads:
        import faiss

        faiss.omp_set_num_threads(threads)
        _omp.n = threads


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


def _stack(codes: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(codes), np.uint8).reshape(len(codes), -1)
