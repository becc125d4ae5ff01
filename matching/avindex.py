"""Finding registered audio and video from an excerpt, and where in the original it sits.

Audio follows AcoustID: an inverted index from each 16-bit sub-fingerprint value to the
(track, position) pairs holding it; a query's values vote for (track, offset) pairs, and the
few best are then aligned and scored by the share of bits that agree over the overlap (a
degraded 15 s excerpt kept 93-99 % in bench/av_bench.py, unrelated music at most 74 %). The
index is a CSR table (one sorted array of postings and 65,537 bucket starts): new tracks go to
a small `fresh` table first, merged into the main one when it reaches a tenth of its size.

Video: every registered frame's PDQ code in a faiss binary index (frames of low PDQ quality
left out); each query frame's neighbours within VPDQ_FRAME_RADIUS vote for (video, time
offset); the similarity is the share of the registered frames in the aligned span that some
query frame reproduces at the best offset.
Up to IVF_MIN_FRAMES frames the index is a flat scan; beyond, an inverted file (IndexBinaryIVF:
frames bucketed by their nearest of `nlist` k-means centroids, a query frame reads the
IVF_PROBE_SHARE of buckets nearest it), retrained whenever the frames have grown fourfold (D63).

Both answer `Aligned` candidates: a Candidate plus the offset and the aligned time ranges, which
is what a platform needs to act on a claim (Content ID and Pex report the same).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from copyledger.matching.audio import ITEM_SECONDS, items_of
from copyledger.matching.scoring import THRESHOLDS, Candidate, score_json
from copyledger.matching.video import frame_codes

__all__ = [
    "MAX_QUERY_VOTES",
    "MIN_OVERLAP_ITEMS",
    "MIN_VOTES",
    "VOTE_ITEMS",
    "VPDQ_FRAME_RADIUS",
    "AVIndex",
    "Aligned",
    "align_audio",
    "aligned_similarity",
]

MIN_VOTES = 3
"""Exact 16-bit agreements at one (track, offset) needed before aligning: a 15 s excerpt has
121 values, and even at 15 % bit errors ~10 of them survive whole."""
MIN_OVERLAP_ITEMS = 40
"""An alignment is scored only over at least this many sub-fingerprints (~5 s)."""
VOTE_ITEMS = 512
"""Query values that vote (spread evenly over a long query): bounds the postings read."""
CANDIDATES = 16
STOP_SHARE = 0.002
"""A value held by more than this share of all postings (silence, a steady tone) does not vote."""
MAX_QUERY_VOTES = 1 << 20
"""Votes (a posting for each query position holding its value) one query may cast: past this
the most common values are dropped first. A query repeating one value held just under
STOP_SHARE read ~the whole table without it (4.4 s and 840 MB at 5,000 tracks)."""
VPDQ_FRAME_RADIUS = 52
"""PDQ bits within which two frames count as the same picture: wider than the still-image
match (31) because a frame sampled half a second apart or trimmed slightly differently moves
further; the alignment of many frames at one offset, not any single frame, makes the verdict."""
VPDQ_QUERY_FRAMES = 160
IVF_MIN_FRAMES = 50_000
"""Frames (~300 160-second videos) below which the flat scan (exact, ~5.5 ns a pair) is
cheap enough."""
IVF_LISTS = 1_024
IVF_PROBE_SHARE = 1 / 16
"""Buckets a query frame reads: a copy's frame is ~25-50 bits from its original, so its
nearest centroids are mostly the original's; the recall bench measures what this costs."""
IVF_TRAIN_PER_LIST = 40
IVF_TRAIN_ITERATIONS = 5
"""k-means rounds: centroids only bucket frames, and 5 rounds cost a fifth of faiss's 25
(~10 s for 1,024 lists on this loaded machine) for little worse buckets."""
ALIGN_TOLERANCE = 0.5
"""Seconds by which a query frame's offset may differ from the alignment's (frames are sampled
at whole seconds in the original, at quarters in a probe)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Aligned(Candidate):
    """A candidate with its alignment: the query's span `query_range` (seconds from the
    query's start) sits at `registered_range` in the registered work; `offset` is the
    registered time of the query's first second."""

    offset: float
    query_range: tuple[float, float]
    registered_range: tuple[float, float]
    compared: int

    def to_json(self) -> dict[str, object]:
        audio = self.algorithm == "chromaprint"
        kind, unit = ("audio", "bits of") if audio else ("video", "registered frames in")
        q0, q1 = self.query_range
        r0, r1 = self.registered_range
        return {
            "seq": self.seq, **score_json(self),
            "offset_seconds": round(self.offset, 2),
            "query_range": [round(q0, 2), round(q1, 2)],
            "registered_range": [round(r0, 2), round(r1, 2)],
            "explanation": (
                f"{kind} {q0:.1f}-{q1:.1f} s of the disputed content align with "
                f"{r0:.1f}-{r1:.1f} s of entry {self.seq}; {self.similarity:.0%} of the "
                f"{unit} the {self.compared} {'sub-fingerprints' if audio else 'seconds'} "
                "compared agree"
            ),
        }


def _bits_agreeing(a: Any, b: Any) -> float:
    """Share of equal bits between two equal-length uint16 arrays."""
    diff = np.bitwise_xor(a, b).astype(">u2").view(np.uint8)
    return 1.0 - float(np.unpackbits(diff).mean())


def align_audio(query: Any, track: Any, offsets: Any) -> tuple[float, int, int] | None:
    """The best of `offsets` (track position of the query's first value): (agreement, offset,
    overlap) over the overlap, or None if no offset overlaps by MIN_OVERLAP_ITEMS."""
    best: tuple[float, int, int] | None = None
    for off in offsets:
        start, q0 = max(int(off), 0), max(-int(off), 0)
        n = min(len(query) - q0, len(track) - start)
        if n < MIN_OVERLAP_ITEMS:
            continue
        agree = _bits_agreeing(query[q0 : q0 + n], track[start : start + n])
        if best is None or agree > best[0]:
            best = (agree, int(off), n)
    return best


class _Postings:
    """CSR postings of some tracks: `starts[v]:starts[v+1]` index the (track, position) pairs
    of value v."""

    def __init__(self, tracks: list[int], items: list[Any]) -> None:
        sizes = [len(i) for i in items]
        values = np.concatenate(items) if items else np.empty(0, np.uint16)
        owner = np.repeat(np.asarray(tracks, np.int32), sizes)
        pos = np.concatenate([np.arange(s, dtype=np.uint16) for s in sizes]) if sizes else \
            np.empty(0, np.uint16)  # MAX_AUDIO_ITEMS < 2**16
        order = np.argsort(values, kind="stable")
        self.track = owner[order]
        self.pos = pos[order]
        self.starts = np.zeros(65_537, np.int64)
        np.cumsum(np.bincount(values, minlength=65_536), out=self.starts[1:])
        self.tracks = list(tracks)

    def __len__(self) -> int:
        return len(self.track)

    def sizes(self, values: Any) -> Any:
        """How many postings each of `values` (int64) has."""
        return self.starts[values + 1] - self.starts[values]

    def votes(self, values: Any, which: Any, at: Any) -> tuple[Any, Any]:
        """(track, offset) of every posting of the query: `values` are distinct (int64), and
        query position `at[j]` holds `values[which[j]]`. Each value's postings are read once,
        then shifted for every position holding it."""
        lo = self.starts[values]
        counts = self.starts[values + 1] - lo
        total = int(counts.sum())
        if not total or not len(at):
            return np.empty(0, np.int32), np.empty(0, np.int64)
        first = np.cumsum(counts) - counts  # where each value's postings start in `track`
        read = np.repeat(lo - first, counts) + np.arange(total)
        track, pos = self.track[read], self.pos[read].astype(np.int64)
        n = counts[which]
        pick = np.repeat(first[which] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        return track[pick], pos[pick] - np.repeat(at, n)


class AVIndex:
    """Audio and video fingerprints of registered works; thread-safe."""

    def __init__(self, *, ivf_min_frames: int = IVF_MIN_FRAMES) -> None:
        import faiss

        self._ivf_min_frames = ivf_min_frames
        self._trained_on = 0  # frames when the IVF was last trained; 0 while flat
        self._codes = np.empty((0, 32), np.uint8)  # every frame, to retrain from
        self._lock = threading.Lock()
        self._adding = threading.Lock()  # one batch added at a time (outside `_lock`)
        self._items: list[Any] = []  # per track, uint16 sub-fingerprints
        self._track_seq: list[int] = []
        self._main = _Postings([], [])
        self._fresh: list[int] = []
        self._fresh_postings = _Postings([], [])
        self._frames: Any = faiss.IndexBinaryFlat(256)
        self._frame_seq = np.empty(0, np.int64)
        self._frame_sec = np.empty(0, np.int64)
        self._video_secs: dict[int, Any] = {}  # seq -> its frames' times

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"chromaprint": len(self._items), "vpdq": len(self._video_secs),
                    "postings": len(self._main) + len(self._fresh_postings),
                    "frames": int(self._frames.ntotal)}

    def add(self, seq: int, fingerprints: Mapping[str, Mapping[str, object]]) -> bool:
        """Index an entry's chromaprint and vpdq (validated); True if it had either."""
        return bool(self.add_many([(seq, fingerprints)]))

    def add_many(self, items: list[tuple[int, Mapping[str, Mapping[str, object]]]]) -> int:
        """Index a batch (a sealed block, or the log at start); returns entries with audio or
        video. Everything is decoded before anything is added.

        What costs seconds at scale (the postings of every track, every tenth growth; the
        frames' inverted file, retrained at every fourfold growth) is built outside the lock
        searches take, then swapped in: a search meanwhile reads the tables before the batch
        (D212). One batch is added at a time (`_adding`), so what is built stays current."""
        audio = [(seq, items_of(f["chromaprint"])) for seq, f in items if "chromaprint" in f]
        video = [(seq, frame_codes(f["vpdq"])) for seq, f in items if "vpdq" in f]
        with self._adding:
            if audio:
                self._add_audio(audio)
            # Frames of little texture (PDQ quality < PDQ_LOW_QUALITY) are not indexed: a
            # flat picture's hash is mostly noise, lost by most edits, so such a frame
            # counted only in an alignment's denominator (D72).
            new = [(seq, secs[~low], codes[~low]) for seq, (secs, codes, low) in video
                   if seq not in self._video_secs]
            if new:
                self._add_video(new)
        return len({seq for seq, _ in audio} | {seq for seq, _ in video})

    def _add_audio(self, audio: list[tuple[int, Any]]) -> None:
        """Build the postings with the batch's tracks, then add the tracks and swap the
        postings in at once: a build that fails (memory) changes nothing."""
        items = self._items + [values for _, values in audio]  # (only `_adding` writes)
        fresh = self._fresh + list(range(len(self._items), len(items)))
        if len(fresh) * 10 >= max(len(items), 2_000):  # all in the main table
            main, fresh = _Postings(list(range(len(items))), items), []
        else:
            main = self._main
        postings = _Postings(fresh, [items[t] for t in fresh])
        track_seq = self._track_seq + [seq for seq, _ in audio]
        with self._lock:  # (assignments only: nothing here can fail half-way)
            self._items, self._track_seq = items, track_seq  # (replaced, never changed)
            self._main, self._fresh, self._fresh_postings = main, fresh, postings

    def _add_video(self, new: list[tuple[int, Any, Any]]) -> None:
        codes = np.concatenate([codes for _, _, codes in new])  # one a batch: the log's
        every = np.concatenate([self._codes, codes])  # rebuild adds 10,000 at a time
        n = len(every)
        ivf = _frame_ivf(every) if n >= self._ivf_min_frames and n >= 4 * self._trained_on \
            else None
        frame_seq = np.concatenate([self._frame_seq,
                                    *(np.full(len(s), seq) for seq, s, _ in new)])
        frame_sec = np.concatenate([self._frame_sec, *(s for _, s, _ in new)])
        with self._lock:  # what can fail first (faiss' add), then only assignments
            if ivf is None:
                self._frames.add(codes)
            else:
                self._frames, self._trained_on = ivf, n
            self._codes, self._frame_seq, self._frame_sec = every, frame_seq, frame_sec
            self._video_secs.update((seq, secs) for seq, secs, _ in new)

    def search(self, fingerprints: Mapping[str, Mapping[str, object]], *,
               keep_none: bool = False) -> list[Aligned]:
        """Registered works the query aligns with, within the 'possible' band (or at any
        similarity with `keep_none`)."""
        out: list[Aligned] = []
        if "chromaprint" in fingerprints:
            out += self._search_audio(items_of(fingerprints["chromaprint"]))
        if "vpdq" in fingerprints:
            out += self._search_video(frame_codes(fingerprints["vpdq"]))
        return out if keep_none else [c for c in out if c.verdict != "none"]

    def _search_audio(self, query: Any) -> list[Aligned]:
        if len(query) < MIN_OVERLAP_ITEMS:
            return []
        at = np.unique(np.linspace(0, len(query) - 1, min(VOTE_ITEMS, len(query))).astype(
            np.int64))
        with self._lock:
            tables = [self._main, self._fresh_postings]
            items, track_seq = self._items, self._track_seq
            total = sum(len(t) for t in tables)
        stop = max(2_000, int(total * STOP_SHARE))
        values, which = np.unique(query[at].astype(np.int64), return_inverse=True)
        which = which.reshape(-1)
        sizes = [table.sizes(values) for table in tables]
        held = sum(np.where(size <= stop, size, 0) for size in sizes)  # postings that vote
        cost = held * np.bincount(which, minlength=len(values))  # votes each value casts
        rare_first = np.argsort(held, kind="stable")
        voting = np.zeros(len(values), bool)
        voting[rare_first[np.cumsum(cost[rare_first]) <= MAX_QUERY_VOTES]] = True
        tracks, offsets = [], []
        for table, size in zip(tables, sizes, strict=True):
            mine = voting & (size <= stop)
            ask = mine[which]
            t, o = table.votes(values[mine], (np.cumsum(mine) - 1)[which[ask]], at[ask])
            tracks.append(t)
            offsets.append(o)
        track = np.concatenate(tracks).astype(np.int64)
        offset = np.concatenate(offsets)
        if not len(track):
            return []
        key = (track << 32) + (offset + (1 << 31))
        keys, counts = np.unique(key, return_counts=True)
        top = np.argsort(-counts, kind="stable")[:CANDIDATES]
        best: dict[int, tuple[float, int, int, int]] = {}
        for k in top[counts[top] >= MIN_VOTES]:
            t, off = int(keys[k] >> 32), int(keys[k] & 0xFFFFFFFF) - (1 << 31)
            found = align_audio(query, items[t], (off - 1, off, off + 1))
            if found and (t not in best or found[0] > best[t][0]):
                best[t] = (*found, t)
        out = []
        for agree, off, n, t in best.values():
            q0 = max(-off, 0)
            r0 = max(off, 0)
            candidate = _rated(
                "chromaprint", agree, seq=track_seq[t], offset=off * ITEM_SECONDS,
                query_range=(q0 * ITEM_SECONDS, (q0 + n) * ITEM_SECONDS),
                registered_range=(r0 * ITEM_SECONDS, (r0 + n) * ITEM_SECONDS), compared=n)
            out.append(candidate)
        return out

    def _search_video(self, query: tuple[Any, Any, Any]) -> list[Aligned]:
        seconds, codes, _ = query
        pick = np.unique(np.linspace(0, len(codes) - 1, min(VPDQ_QUERY_FRAMES, len(codes)))
                         .astype(np.int64))
        seconds, codes = seconds[pick], codes[pick]
        with self._lock:
            if not self._frames.ntotal:
                return []
            lims, _, ids = self._frames.range_search(np.ascontiguousarray(codes),
                                                     VPDQ_FRAME_RADIUS + 1)
            seqs, secs = self._frame_seq[ids], self._frame_sec[ids]
        offs = secs - seconds[np.repeat(np.arange(len(codes)), np.diff(lims).astype(np.int64))]
        order = np.argsort(seqs, kind="stable")
        seqs, secs, offs = seqs[order], secs[order], offs[order]
        if not len(seqs):
            return []
        firsts = np.flatnonzero(np.r_[True, seqs[1:] != seqs[:-1]])  # each video's first hit
        with self._lock:  # (a video's times never change once added)
            registered = [(seq, self._video_secs[seq]) for seq in seqs[firsts].tolist()]
        out = []
        for (seq, frames), (a, b) in zip(registered, itertools.pairwise([*firsts.tolist(),
                                                                         len(seqs)]),
                                         strict=True):
            o, t = offs[a:b], secs[a:b]
            # The offset at which the most registered frames are reproduced by the query.
            hits, off = max((len(np.unique(t[np.abs(o - c) <= ALIGN_TOLERANCE])), float(c))
                            for c in np.unique(o))
            matched = np.unique(t[np.abs(o - off) <= ALIGN_TOLERANCE])
            span = (frames >= seconds.min() + off - ALIGN_TOLERANCE) & \
                (frames <= seconds.max() + off + ALIGN_TOLERANCE)
            compared = int(span.sum())
            if compared < 3:
                continue
            r0, r1 = float(matched.min()), float(matched.max()) + 1
            candidate = _rated(
                "vpdq", min(hits / compared, 1.0), seq=seq, offset=off,
                query_range=(r0 - off, r1 - off), registered_range=(r0, r1), compared=compared)
            out.append(candidate)
        return out


def _rated(algorithm: str, similarity: float, **identity: Any) -> Aligned:
    """An Aligned whose verdict is judged on the exact `similarity`, which is then shown to 4
    places: rounded first, 0.849976 would read 0.85 and be a 'match' under the 0.85 threshold.
    Where rounding would cross into a better band, the shown value is cut down instead."""
    candidate = Aligned.rate(algorithm, similarity, **identity)
    shown = round(similarity, 4)
    if THRESHOLDS[algorithm].verdict(shown) != candidate.verdict:
        shown = math.floor(similarity * 10_000) / 10_000
    return replace(candidate, similarity=shown)


def _frame_ivf(codes: Any) -> Any:
    """An IndexBinaryIVF over `codes`, its centroids trained on an even sample of them."""
    import faiss

    nlist = max(1, min(IVF_LISTS, len(codes) // IVF_TRAIN_PER_LIST))
    index: Any = faiss.index_binary_factory(256, f"BIVF{nlist}")  # an IndexBinaryIVF
    index.cp.niter = IVF_TRAIN_ITERATIONS
    sample = codes[np.linspace(0, len(codes) - 1, min(len(codes), nlist * IVF_TRAIN_PER_LIST))
                   .astype(np.int64)]
    index.train(np.ascontiguousarray(sample))
    index.add(np.ascontiguousarray(codes))
    index.nprobe = max(1, round(nlist * IVF_PROBE_SHARE))
    return index


def aligned_similarity(algorithm: str, a: Mapping[str, object], b: Mapping[str, object]) -> float:
    """How well a query `b` aligns with a registered `a` (a one-to-one compare): the best
    alignment's similarity, 0.0 where nothing aligns."""
    index = AVIndex()
    index.add(0, {algorithm: a})
    found = index.search({algorithm: b}, keep_none=True)
    return max((c.similarity or 0.0 for c in found), default=0.0)
