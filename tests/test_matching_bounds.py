"""D174's leftovers in matching: a flat picture's pHash is no evidence, and a search builds
candidates for the `limit` oldest works only, whatever the index holds."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from copyledger.api.app import create_app
from copyledger.ledger import fingerprint as schema
from copyledger.matching import compute, scoring
from copyledger.matching import index as index_mod
from copyledger.matching.index import FingerprintIndex
from copyledger.matching.scoring import VERDICT_RANK, Candidate
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.helpers import sha, wait_for

Fingerprints = dict[str, Any]


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def flat(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    return png(Image.new("RGB", size, colour))


def textured(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return png(Image.fromarray(blocks).resize((640, 480), Image.Resampling.BICUBIC))


def near_flat() -> bytes:
    """Grey 128 with a faint step to 129 and +-2 noise: nearly uniform."""
    rng = np.random.default_rng(3)
    pixels = np.full((480, 640, 3), 128, np.int16)
    pixels[:, 320:] += 1
    pixels += rng.integers(-2, 3, pixels.shape, dtype=np.int16)
    return png(Image.fromarray(pixels.astype(np.uint8)))


def gradient() -> bytes:
    return png(Image.linear_gradient("L").resize((640, 480)).convert("RGB"))


# ---------------------------------------------------------------- 1. flat pictures' pHash


def test_two_flat_pictures_are_no_phash_match() -> None:
    """A flat grey picture and a flat white one had the same pHash (8000000000000000): a
    'match', with no low-quality flag. Any two flat or near-flat pictures, or a plain gradient,
    are now 'none' by pHash, flagged low-quality as PDQ's low quality is."""
    lows = [compute.image_fingerprints(data)["phash"] for data in (
        flat((128, 128, 128)), flat((255, 255, 255)), flat((0, 0, 0), (33, 77)),
        flat((200, 30, 30)), near_flat(), gradient())]
    for a in lows:
        for b in lows:
            got = scoring.compare("phash", a, b)
            assert (got.verdict, got.low_quality) == ("none", True), (a, b, got)
            assert got.to_json()["low_quality"] is True
    # A textured picture against itself, and against a flat one: unchanged / flagged.
    ok = compute.image_fingerprints(textured(1))["phash"]
    same = scoring.compare("phash", ok, ok)
    assert (same.verdict, same.distance, same.low_quality) == ("match", 0, False)
    assert scoring.compare("phash", ok, lows[0]).low_quality is True


def test_phash_low_information_is_fewer_than_sixteen_bits() -> None:
    assert scoring.phash_low_information("0000000000000000")
    assert scoring.phash_low_information(f"{(1 << 15) - 1:016x}")  # 15 bits set
    assert not scoring.phash_low_information(f"{(1 << 16) - 1:016x}")  # 16
    assert not scoring.phash_low_information("ffffffff00000000")
    assert scoring.phash_low_information(bytes(8))
    # PDQ's low quality keeps its verdict, flagged (unchanged).
    low = Candidate.rate("pdq", 3, low_quality=True, seq=1)
    assert (low.verdict, low.low_quality) == ("match", True)


def test_the_index_finds_no_flat_picture_by_phash() -> None:
    """A flat white query found every registered flat picture through pHash (distance 0 or
    1, 'match'); PDQ, low quality, is 'none' for grey (96 bits) and 'possible' for black (60),
    flagged. Low-information pHash codes are neither searched nor indexed now; a textured
    picture's pHash still is."""
    index = FingerprintIndex()
    grey = compute.image_fingerprints(flat((128, 128, 128)))
    black = compute.image_fingerprints(flat((0, 0, 0)))
    picture = compute.image_fingerprints(textured(2))
    index.add_many([(1, grey), (2, black), (3, picture)])
    assert index.stats()["phash"] == 1
    white = compute.image_fingerprints(flat((255, 255, 255)))
    found = index.search(white)
    assert [(c.seq, c.algorithm, c.verdict, c.low_quality) for c in found] == [
        (2, "pdq", "possible", True)]
    # Not even a PDQ-less query of a flat picture's pHash alone.
    assert index.search({"phash": white["phash"]}) == []
    assert [(c.seq, c.algorithm, c.verdict) for c in index.search({"phash": picture["phash"]})] \
        == [(3, "phash", "match")]


@pytest.fixture
def client(reg: Node) -> Iterator[TestClient]:
    with TestClient(create_app(reg)) as c:
        wait_for(lambda: reg.index.ready, "the index was not built")
        yield c


def test_a_claim_check_of_a_flat_picture_against_another_is_none(
        client: TestClient, reg: Node) -> None:
    """The signed claim check said "match" for a flat white picture against a registered flat
    grey one, on pHash alone (PDQ: 96 bits, 'none')."""
    key, _ = create_key(reg.store, "creator", "bob")
    plat, _ = create_key(reg.store, "platform", "tube")
    grey = compute.image_fingerprints(flat((128, 128, 128)))
    r = client.post("/v1/works", headers={"Authorization": f"Bearer {key}"}, json={
        "sha256": sha("grey"), "title": "Grey", "creators": ["Bob"], "work_type": "image",
        "fingerprints": {"pdq": grey["pdq"], "phash": grey["phash"]}})
    assert r.status_code == 201, r.text
    work = r.json()["seq"]
    white = compute.image_fingerprints(flat((255, 255, 255)))
    r = client.post("/v1/claims/check", headers={"Authorization": f"Bearer {plat}"}, json={
        "claimant": "bob", "work_seq": work,
        "content": {"pdq": white["pdq"]["hash"], "phash": white["phash"]["hash"]}})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["verdict"], answer["matches"]) == ("none", []), answer


# ---------------------------------------------------------------- 2. bounded candidates


def _pdq(code: str, quality: int = 100) -> Fingerprints:
    return {"pdq": {"algorithm": "pdq", "version": "1", "hash": code, "quality": quality,
                    "low_quality": quality < schema.PDQ_LOW_QUALITY}}


def _phash(code: str) -> Fingerprints:
    return {"phash": {"algorithm": "phash", "version": "1", "hash": code}}


FLAT_PDQ = "00" * 32
FLAT_PHASH = "8000000000000000"
TEXT = compute.text_fingerprints(" ".join(f"w{i}" for i in range(300)))


def test_a_search_builds_candidates_for_the_limit_oldest_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """300 flat pictures (one PDQ code) and 300 copies of a text: a search with limit 5 built
    a Candidate for each of the 300 under the index lock, then kept 5; it builds 5 per
    algorithm now, and answers the same."""
    index = FingerprintIndex()
    # Added newest first, so the oldest seqs are not the first codes found.
    index.add_many((seq, {**_pdq(FLAT_PDQ, quality=0), **TEXT}) for seq in range(300, 0, -1))
    built: dict[str, int] = {}
    rate = Candidate.rate.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Candidate], /, algorithm: str, value: float, **kw: Any) -> Candidate:
        built[algorithm] = built.get(algorithm, 0) + 1
        return rate(cls, algorithm, value, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Candidate, "rate", classmethod(counted))
    found = index.search({**_pdq(FLAT_PDQ, quality=0), **TEXT}, limit=5)
    assert [(c.seq, c.algorithm) for c in found] == [
        (seq, algorithm) for seq in range(1, 6) for algorithm in ("pdq", "minhash")]
    assert built == {"pdq": 5, "minhash": 5}


# A small index of codes near a few centres, flat and low-quality ones among them, seqs
# added out of order and some twice: each search compared with every registered fingerprint
# one by one (the brute force), sorted and cut as the search has always done.

_RNG = np.random.default_rng(7)
_PDQ_CENTRES = [bytes(_RNG.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(2)]
_PHASH_CENTRES = ["ff00ff00f0f0cc33", "0f0f3c3c5a5a9966"]  # 32 bits set each
_TEXTS = [compute.text_fingerprints(" ".join(f"{word}{i}" for i in range(200)))
          for word in ("a", "b")]
_EDITED = compute.text_fingerprints(" ".join(
    ("x" if i in (50, 150) else f"a{i}") for i in range(200)))  # ~0.9 of _TEXTS[0]


def _near(centre: str, flips: list[int]) -> str:
    value = int(centre, 16)
    for bit in flips:
        value ^= 1 << bit
    return f"{value:0{len(centre)}x}"


@st.composite
def _fingerprints(draw: st.DrawFn) -> Fingerprints:
    out: Fingerprints = {}
    if draw(st.booleans()):
        code = FLAT_PDQ if draw(st.integers(0, 5)) == 0 else _near(
            draw(st.sampled_from(_PDQ_CENTRES)),
            draw(st.lists(st.integers(0, 255), max_size=80)))
        out.update(_pdq(code, quality=draw(st.sampled_from([100, 100, 10]))))
    if draw(st.booleans()):
        code = FLAT_PHASH if draw(st.integers(0, 5)) == 0 else _near(
            draw(st.sampled_from(_PHASH_CENTRES)), draw(st.lists(st.integers(0, 63),
                                                                 max_size=14)))
        out.update(_phash(code))
    if draw(st.integers(0, 3)) == 0:
        out.update(draw(st.sampled_from([*_TEXTS, _EDITED])))
    return out


def _brute(registered: list[tuple[int, Fingerprints]], query: Fingerprints, limit: int,
           pdq_radius: int) -> list[Candidate]:
    """Every registered fingerprint compared with the query's, kept as the index keeps them
    (the closest per seq and algorithm, the first met on a tie: own PDQ, then each view, in
    the order added), sorted by seq, verdict and algorithm, cut after `limit` seqs."""
    best: dict[tuple[int, str], Candidate] = {}

    def keep(c: Candidate) -> None:
        old = best.get((c.seq, c.algorithm))
        if old is None or index_mod._closeness(c) > index_mod._closeness(old):
            best[(c.seq, c.algorithm)] = c

    pdq_queries = [(query["pdq"]["hash"], None, pdq_radius)] if "pdq" in query else []
    pdq_queries += [(v["hash"], v["transform"], scoring.PDQ_MATCH) for v in query.get("views", [])]
    query_low = bool(query.get("pdq", {}).get("low_quality"))
    for code, transform, radius in pdq_queries:
        for seq, fps in registered:
            if "pdq" in fps and (d := scoring.hamming(code, fps["pdq"]["hash"])) <= radius:
                keep(Candidate.rate("pdq", d, seq=seq, explanation=transform,
                                    low_quality=fps["pdq"]["low_quality"] or query_low))
    if "phash" in query:
        for seq, fps in registered:
            if "phash" in fps:
                score = scoring.compare("phash", fps["phash"], query["phash"])
                if score.verdict != "none":
                    keep(Candidate.rate("phash", score.distance or 0, seq=seq))
    if "minhash" in query:
        texts: dict[int, Mapping[str, object]] = {}
        for seq, fps in registered:
            if "minhash" in fps:
                texts.setdefault(seq, fps["minhash"])  # the index keeps a seq's first text
        for seq, registered_text in texts.items():
            similarity = scoring.minhash_similarity(registered_text, query["minhash"])
            candidate = Candidate.rate("minhash", similarity, seq=seq)
            if candidate.verdict != "none":
                keep(candidate)
    ordered = sorted(best.values(), key=lambda c: (
        c.seq, -VERDICT_RANK[c.verdict], index_mod._ORDER[c.algorithm]))
    seqs = sorted({c.seq for c in ordered})[:limit]
    return [c for c in ordered if c.seq in seqs]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registered=st.lists(st.tuples(st.integers(0, 20), _fingerprints()), max_size=40),
       query=_fingerprints(),
       views=st.lists(st.tuples(st.sampled_from([*_PDQ_CENTRES, FLAT_PDQ]),
                                st.lists(st.integers(0, 255), max_size=40)), max_size=3),
       limit=st.integers(1, 8),
       multihash_from=st.sampled_from([index_mod.MULTIHASH_FROM, 0, 10]),
       in_log_order=st.booleans(), first_cut=st.sampled_from([1, 2, 3]))
def test_a_limited_search_answers_as_comparing_every_fingerprint(
        registered: list[tuple[int, Fingerprints]], query: Fingerprints,
        views: list[tuple[str, list[int]]], limit: int, multihash_from: int,
        in_log_order: bool, first_cut: int) -> None:
    """Random small indexes (flat codes shared, seqs out of order and repeated, the flat and
    the multi-index, its tables merged): a search answers what comparing every registered
    fingerprint one by one answers, for every limit, more or fewer than the candidates. In
    log order (seqs ascending, some repeated), the multi-index's slices are cut after
    `first_cut` codes and cut longer until each row is complete (D209)."""
    if in_log_order:
        registered = sorted(registered, key=lambda item: item[0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(index_mod, "MULTIHASH_TAIL", 4)
        mp.setattr(index_mod, "_FIRST_CUT", first_cut)
        index = FingerprintIndex(multihash_from=multihash_from)
        for at in range(0, len(registered), 7):  # in batches, as blocks are sealed
            index.add_many(registered[at:at + 7])
        query = {**query, "views": [{"transform": f"view {i}", "hash": _near(centre, flips)}
                                    for i, (centre, flips) in enumerate(views)]}
        radius = scoring.PDQ_MATCH if index.stats()["pdq_index"] == "multihash" \
            else scoring.PDQ_POSSIBLE
        assert index.search(query, limit=limit) == _brute(registered, query, limit, radius)


def test_a_search_of_a_code_thousands_share_measures_the_first_of_each_slice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 flat pictures in the multi-index: a search with limit 5 measured all 3,000
    through each of the flat code's 16 slices of its own keys (D192's 1.61 s at 300,000); it
    measures the first `_FIRST_CUT` (here 16) of each now, once, and answers what the whole
    search answers."""
    monkeypatch.setattr(index_mod, "MULTIHASH_TAIL", 4)
    monkeypatch.setattr(index_mod, "_FIRST_CUT", 16)
    index = FingerprintIndex(multihash_from=0)
    rng = np.random.default_rng(3)
    index.add_many((seq, _pdq(FLAT_PDQ if seq % 3 else bytes(
        rng.integers(0, 256, 32, dtype=np.uint8)).hex(), quality=0)) for seq in range(1, 4501))
    assert index.stats()["pdq_index"] == "multihash"
    multi = index._pdq.multi
    assert multi is not None and multi.built == 4500
    full = index._pdq.search_many(np.frombuffer(bytes(32), np.uint8).reshape(1, -1),
                                  None, None)[0]
    assert len(full) == 3000  # every flat picture, found the whole way
    assert multi.measured >= 16 * 3000  # (each through the 16 slices of its own keys)
    multi.measured = 0
    found = index.search(_pdq(FLAT_PDQ, quality=0), limit=5)
    assert [c.seq for c in found] == [1, 2, 4, 5, 7]
    assert multi.measured <= 272 * 16  # the first 16 of each of the 272 slices probed, once
    oldest = sorted(full, key=lambda hit: hit[0])[:5]
    assert [(c.seq, c.distance) for c in found] == [(seq, d) for seq, d, _ in oldest]


def test_a_search_that_reads_on_measures_no_code_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query with no match whose keys 4,000 far codes share: every row stays incomplete,
    so the slices are read to their ends, eight times as far each time, from where the last
    reading stopped. The codes measured are those the whole search measures, not more (a
    reading from the start each time measured up to about twice as many: the first review of
    D209)."""
    monkeypatch.setattr(index_mod, "MULTIHASH_TAIL", 4)
    monkeypatch.setattr(index_mod, "_FIRST_CUT", 2)
    rng = np.random.default_rng(4)
    far = rng.integers(0, 256, (4000, 32), dtype=np.uint8)
    far[:, :2] = 0  # one key shared with the query, all else random: none within the radius
    index = FingerprintIndex(multihash_from=0)
    index.add_many((seq, _pdq(bytes(code).hex())) for seq, code in enumerate(far.tolist()))
    multi = index._pdq.multi
    assert multi is not None
    query = np.zeros((1, 32), np.uint8)
    query[0, 2:] = rng.integers(0, 256, 30, dtype=np.uint8)
    whole = index._pdq.search_many(query, None, None)
    measured, multi.measured = multi.measured, 0
    assert index._pdq.search_many(query, None, 5) == whole == [[]]
    assert 4000 <= multi.measured <= measured


def test_a_search_after_codes_out_of_log_order_measures_every_code(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Codes added out of log order (a start's scan racing a new block), across batches or
    within one: the lowest ids are no longer the oldest seqs, so no slice is cut, and the
    oldest seq is still found (cut after one code, seq 1's would be)."""
    monkeypatch.setattr(index_mod, "MULTIHASH_TAIL", 1)
    monkeypatch.setattr(index_mod, "_FIRST_CUT", 1)
    index = FingerprintIndex(multihash_from=0)
    index.add_many([(10, _pdq(FLAT_PDQ, quality=0))])
    assert index._pdq.ascending
    index.add_many([(4, _pdq(FLAT_PDQ, quality=0)), (12, _pdq(FLAT_PDQ, quality=0))])
    assert not index._pdq.ascending
    assert [c.seq for c in index.search(_pdq(FLAT_PDQ, quality=0), limit=1)] == [4]
    within = FingerprintIndex(multihash_from=0)
    within.add_many([(1, _pdq(FLAT_PDQ)), (5, _pdq(FLAT_PDQ)), (0, _pdq(FLAT_PDQ))])
    assert not within._pdq.ascending
    assert within._pdq.multi is not None and within._pdq.multi.built == 3
    assert [c.seq for c in within.search(_pdq(FLAT_PDQ), limit=1)] == [0]


def test_the_oldest_seqs_are_chosen_with_repeats() -> None:
    """A seq added twice is one of the `limit` (a partition alone would count it twice)."""
    seqs = np.array([9, 1, 4, 1, 3, 7, 3, 2], np.int64)
    assert index_mod._oldest(seqs, 8) is None  # as many codes as the limit: all kept
    assert index_mod._oldest(seqs, 6) is None  # only 6 distinct seqs
    assert index_mod._oldest(seqs, 3).tolist() == [s <= 3 for s in seqs.tolist()]  # type: ignore[union-attr]
    assert index_mod._oldest(seqs, 1).tolist() == [s == 1 for s in seqs.tolist()]  # type: ignore[union-attr]
    assert index_mod._oldest(np.array([5, 6, 2, 8]), 2).tolist() == [True, False, True, False]  # type: ignore[union-attr]


_FEW_CODES = [FLAT_PDQ, _PDQ_CENTRES[0], _near(_PDQ_CENTRES[0], [3]),
              _near(_PDQ_CENTRES[0], [3, 40, 77]), _near(FLAT_PDQ, [0, 17, 250])]


@settings(max_examples=300, deadline=None)
@example(codes=[(1, FLAT_PDQ), (0, FLAT_PDQ), (0, FLAT_PDQ), *[(1, FLAT_PDQ)] * 6],
         queries=[FLAT_PDQ], limit=1, first_cut=1, radius=0)  # a seq's codes across the cut
@given(codes=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(_FEW_CODES)), max_size=60),
       queries=st.lists(st.sampled_from(_FEW_CODES), min_size=1, max_size=3),
       limit=st.integers(1, 6), first_cut=st.sampled_from([1, 2, 3]),
       radius=st.sampled_from([0, 3, scoring.PDQ_MATCH]))
def test_a_cut_search_keeps_what_the_whole_search_keeps(
        codes: list[tuple[int, str]], queries: list[str], limit: int, first_cut: int,
        radius: int) -> None:
    """Few distinct codes, so every slice is shared and cut; seqs ascending with repeats (a
    seq's gap drawn 0-3): the cut search keeps, per query, the same codes of the `limit` oldest
    seqs as measuring every code does (D209)."""
    seqs = list(itertools.accumulate(gap for gap, _ in codes))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(index_mod, "MULTIHASH_TAIL", 4)
        mp.setattr(index_mod, "_FIRST_CUT", first_cut)
        index = FingerprintIndex(multihash_from=0)
        for at in range(0, len(codes), 9):
            index.add_many((seq, _pdq(code)) for seq, (_, code) in
                           zip(seqs[at:at + 9], codes[at:at + 9], strict=True))
        pdq = index._pdq
        assert pdq.ascending
        stacked = np.stack([np.frombuffer(bytes.fromhex(q), np.uint8) for q in queries])
        cut = pdq.search_many(stacked, radius, limit)
        pdq.ascending = False  # as if added out of order: every code measured
        assert cut == pdq.search_many(stacked, radius, limit)


def _minima(rng: np.random.Generator, like: bytes | None, keep: float) -> bytes:
    """128 uint32 minima: random, or `like`'s with each band of 4 kept with chance `keep`,
    and some bands' first 3 (not a shared band: no candidate by it)."""
    values = rng.integers(0, 2**32, 128, dtype=np.uint32)
    if like is not None:
        old = np.frombuffer(like, np.uint32)
        for band in range(32):
            share = rng.random()
            if share < keep:
                values[4 * band:4 * band + 4] = old[4 * band:4 * band + 4]
            elif share < 2 * keep:
                values[4 * band:4 * band + 3] = old[4 * band:4 * band + 3]
    return values.astype("<u4").tobytes()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 40),
       keep=st.sampled_from([0.0, 0.05, 0.3, 1.0]), in_log_order=st.booleans())
def test_the_text_bands_find_what_datasketch_finds(
        seed: int, size: int, keep: float, in_log_order: bool) -> None:
    """The LSH's bands against datasketch's MinHashLSH at the index's threshold, the same
    texts in both: the same candidates for every text, oldest first and each once (D210)."""
    from datasketch import LeanMinHash, MinHashLSH

    rng = np.random.default_rng(seed)
    texts: list[bytes] = []
    for _ in range(size):
        like = texts[int(rng.integers(len(texts)))] if texts and keep else None
        texts.append(_minima(rng, like, keep))
    seqs = list(range(size)) if in_log_order else [int(s) for s in rng.permutation(size)]

    def lean(values: bytes) -> Any:
        return LeanMinHash(seed=1, hashvalues=np.frombuffer(values, "<u4").astype(np.uint64),
                           scheme="legacy")

    bands = index_mod._Bands(index_mod.LSH_THRESHOLD, 128)
    theirs = MinHashLSH(threshold=index_mod.LSH_THRESHOLD, num_perm=128)
    for seq, values in zip(seqs, texts, strict=True):
        bands.insert(seq, values)
        theirs.insert(seq, lean(values))
    assert bands.ascending == (in_log_order or size < 2 or seqs == sorted(seqs))
    for values in texts:
        found = list(bands.candidates(values))
        assert found == sorted(theirs.query(lean(values)))


def test_a_text_thousands_share_is_scored_for_the_limit_oldest_only() -> None:
    """3,000 copies of one text: datasketch's query built all 3,000 candidates (from each of
    its 32 bands) before the search scored the oldest; the bands now read only the first few
    seqs of each band's list (D210). Counted as the seqs the band lists hand over."""
    index = FingerprintIndex()
    index.add_many((seq, TEXT) for seq in range(1, 3001))
    read = [0]

    class Counted(list[int]):
        def __iter__(self) -> Iterator[int]:
            for seq in super().__iter__():
                read[0] += 1
                yield seq

    for table in index._lsh.tables:
        for key, seqs in table.items():
            table[key] = Counted(seqs)
    found = index.search(TEXT, limit=5)
    assert [c.seq for c in found] == [1, 2, 3, 4, 5]
    assert read[0] <= 32 * 6  # each band's first 5, and one ahead
    read[0] = 0
    index._lsh.ascending = False  # as if added out of order: every candidate gathered first
    assert [c.seq for c in index.search(TEXT, limit=5)] == [1, 2, 3, 4, 5]
    assert read[0] == 32 * 3000
