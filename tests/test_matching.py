"""The near-duplicate index: exact radius search, oldest-first order, LSH for text, threads."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.ledger import fingerprint as schema
from copyledger.ledger.errors import InvalidInput
from copyledger.matching import compute, scoring
from copyledger.matching import index as index_mod
from copyledger.matching.index import FingerprintIndex
from copyledger.matching.scoring import Candidate

Fingerprints = dict[str, dict[str, object]]
RNG = np.random.default_rng(11)


def random_hex(bits: int, rng: np.random.Generator = RNG) -> str:
    return bytes(rng.integers(0, 256, bits // 8, dtype=np.uint8)).hex()


def flip(hex_code: str, count: int, rng: np.random.Generator = RNG) -> str:
    """The same code with `count` distinct bits flipped."""
    bits = len(hex_code) * 4
    value = int(hex_code, 16)
    for bit in rng.choice(bits, count, replace=False):
        value ^= 1 << int(bit)
    return f"{value:0{len(hex_code)}x}"


def pdq(hex_code: str, quality: int = 100) -> Fingerprints:
    return {
        "pdq": {
            "algorithm": "pdq",
            "version": "0.2.8",
            "hash": hex_code,
            "quality": quality,
            "low_quality": quality < schema.PDQ_LOW_QUALITY,
        }
    }


def phash(hex_code: str) -> Fingerprints:
    return {"phash": {"algorithm": "phash", "version": "4.3.2", "hash": hex_code}}


def text(words: list[str]) -> Fingerprints:
    return compute.text_fingerprints(" ".join(words))


VOCABULARY = [f"w{i}" for i in range(5000)]


def random_words(n: int, rng: random.Random) -> list[str]:
    return [rng.choice(VOCABULARY) for _ in range(n)]


@pytest.fixture
def index() -> FingerprintIndex:
    return FingerprintIndex()


def test_empty_index_finds_nothing(index: FingerprintIndex) -> None:
    assert len(index) == 0
    assert index.search(pdq(random_hex(256))) == []
    assert index.search({}) == []
    assert index.search(text(["nothing", "indexed", "here", "at", "all", "yet"])) == []


def test_pdq_radius_search_and_verdicts(index: FingerprintIndex) -> None:
    base = random_hex(256)
    index.add(10, pdq(base))
    for seq in range(11, 200):
        index.add(seq, pdq(random_hex(256)))
    assert len(index) == 190
    for distance, verdict in [(0, "match"), (31, "match"), (32, "possible"), (63, "possible")]:
        found = index.search(pdq(flip(base, distance)))
        assert [(c.seq, c.algorithm, c.distance, c.verdict) for c in found] == [
            (10, "pdq", distance, verdict)
        ]
        assert found[0].threshold == scoring.PDQ_MATCH
        assert found[0].possible_threshold == scoring.PDQ_POSSIBLE
    assert index.search(pdq(flip(base, 64))) == []


def test_verdicts_agree_with_compare(index: FingerprintIndex) -> None:
    base = random_hex(256)
    index.add(1, pdq(base))
    for distance in range(0, 64, 7):
        query = pdq(flip(base, distance))
        (candidate,) = index.search(query)
        assert candidate.verdict == scoring.compare("pdq", pdq(base)["pdq"], query["pdq"]).verdict


def test_oldest_registration_first(index: FingerprintIndex) -> None:
    base = random_hex(256)
    # Added out of order, at different distances: order is by seq, not distance or arrival.
    for seq, distance in [(50, 0), (7, 20), (31, 5), (2, 40), (99, 1)]:
        index.add(seq, pdq(flip(base, distance)))
    found = index.search(pdq(base))
    assert [c.seq for c in found] == [2, 7, 31, 50, 99]
    assert [c.verdict for c in found] == ["possible", "match", "match", "match", "match"]
    assert [c.seq for c in index.search(pdq(base), limit=2)] == [2, 7]
    with pytest.raises(InvalidInput):
        index.search(pdq(base), limit=0)


def test_limit_counts_seqs_and_algorithms_are_ordered(index: FingerprintIndex) -> None:
    p, h = random_hex(256), random_hex(64)
    for seq in (3, 1, 2):
        index.add(seq, {**pdq(flip(p, seq)), **phash(flip(h, 10))})
    found = index.search({**pdq(p), **phash(h)}, limit=2)
    # seq 1 and 2, each with PDQ (match) before pHash (possible at 10 bits).
    assert [(c.seq, c.algorithm, c.verdict) for c in found] == [
        (1, "pdq", "match"), (1, "phash", "possible"),
        (2, "pdq", "match"), (2, "phash", "possible"),
    ]


def test_phash_index(index: FingerprintIndex) -> None:
    base = random_hex(64)
    index.add(5, phash(base))
    index.add(6, phash(flip(base, 10)))
    index.add(8, phash(flip(base, 11)))
    found = index.search(phash(base))
    assert [(c.seq, c.distance, c.verdict) for c in found] == [(5, 0, "match"), (6, 10, "possible")]


def test_low_quality_pdq_is_indexed_with_a_caveat(index: FingerprintIndex) -> None:
    base = random_hex(256)
    index.add(1, pdq(base, quality=20))
    index.add(2, pdq(flip(base, 3)))
    found = index.search(pdq(base))
    assert [(c.seq, c.verdict, c.low_quality) for c in found] == [
        (1, "match", True), (2, "match", False)
    ]
    # A low-quality query makes every PDQ candidate carry the caveat.
    assert all(c.low_quality for c in index.search(pdq(base, quality=10)))


def test_adding_a_seq_twice_reports_it_once(index: FingerprintIndex) -> None:
    base = random_hex(256)
    index.add(4, pdq(flip(base, 9)))
    index.add(4, pdq(base))
    words = random_words(100, random.Random(1))
    index.add(4, text(words))
    index.add(4, text(words))
    found = index.search({**pdq(base), **text(words)})
    assert [(c.seq, c.algorithm, c.distance) for c in found] == [
        (4, "pdq", 0), (4, "minhash", None)
    ]


def test_add_many_counts_and_ignores_unknown_algorithms(index: FingerprintIndex) -> None:
    items = [
        (1, pdq(random_hex(256))),
        (2, {}),
        (3, {"future-hash": {"algorithm": "future-hash", "hash": "00"}}),
        (4, {**pdq(random_hex(256)), **phash(random_hex(64))}),
    ]
    assert index.add_many(items) == 2
    assert len(index) == 2
    assert index.stats() == {
        "entries": 2, "pdq": 2, "pdq_index": "flat", "phash": 1, "minhash": 0
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"pdq": {"algorithm": "pdq", "hash": "00"}},
        {"pdq": {"algorithm": "pdq", "hash": "zz" * 32}},
        {"pdq": {"algorithm": "pdq"}},
        {"phash": {"algorithm": "phash", "hash": "00" * 32}},
        {"minhash": {"algorithm": "minhash", "hashvalues": "AAAA"}},
    ],
)
def test_malformed_batch_changes_nothing(index: FingerprintIndex, bad: Fingerprints) -> None:
    good = pdq(random_hex(256))
    with pytest.raises(InvalidInput):
        index.add_many([(1, good), (2, bad)])
    assert len(index) == 0
    assert index.search(good) == []
    with pytest.raises(InvalidInput):
        index.search(bad)


@pytest.mark.parametrize("seq", [-1, True, 1.0, "1"])
def test_seq_must_be_a_non_negative_int(index: FingerprintIndex, seq: object) -> None:
    with pytest.raises(InvalidInput):
        index.add(seq, pdq(random_hex(256)))  # type: ignore[arg-type]


def test_switches_to_multihash_at_the_match_radius() -> None:
    """Past multihash_from, PDQ is searched exactly up to the match radius; the 'possible'
    band is not searched any more (too slow with multi-hash, see MULTIHASH_FROM)."""
    index = FingerprintIndex(multihash_from=300)
    rng = np.random.default_rng(5)
    codes = [random_hex(256, rng) for _ in range(500)]
    index.add_many((seq, pdq(code)) for seq, code in enumerate(codes[:250]))
    assert index.stats()["pdq_index"] == "flat"
    assert [c.seq for c in index.search(pdq(flip(codes[7], 63, rng)))] == [7]
    index.add_many((seq, pdq(code)) for seq, code in enumerate(codes[250:], start=250))
    assert index.stats()["pdq_index"] == "multihash"
    assert index.stats()["pdq"] == 500
    for seq in (0, 249, 250, 499):  # codes from before and after the switch
        for distance in (0, 16, 31):
            found = index.search(pdq(flip(codes[seq], distance, rng)))
            assert [(c.seq, c.distance) for c in found] == [(seq, distance)]
        assert index.search(pdq(flip(codes[seq], 32, rng))) == []


def test_minhash_lsh_finds_edited_text(index: FingerprintIndex) -> None:
    rng = random.Random(3)
    documents = [random_words(300, rng) for _ in range(200)]
    index.add_many((1000 + i, text(words)) for i, words in enumerate(documents))
    target = documents[42]
    edited = list(target)
    for position in (30, 120, 250):  # three words changed in 300: Jaccard ~0.9
        edited[position] = "changed"
    found = index.search(text(edited))
    assert [(c.seq, c.algorithm, c.verdict) for c in found] == [(1042, "minhash", "match")]
    assert found[0].similarity is not None and found[0].similarity >= scoring.MINHASH_MATCH
    assert found[0].threshold == scoring.MINHASH_MATCH
    # Half the text copied into a new one: 'possible'.
    mixed = target[:200] + random_words(100, rng)
    found = index.search(text(mixed))
    assert [(c.seq, c.verdict) for c in found] == [(1042, "possible")]
    # An unrelated text: nothing.
    assert index.search(text(random_words(300, rng))) == []


def test_minhash_search_agrees_with_compare(index: FingerprintIndex) -> None:
    rng = random.Random(9)
    words = random_words(200, rng)
    index.add(1, text(words))
    for changed in (0, 2, 6, 12):
        edited = list(words)
        for position in rng.sample(range(200), changed):
            edited[position] = "x"
        query = text(edited)
        expected = scoring.compare("minhash", text(words)["minhash"], query["minhash"])
        found = index.search(query)
        if expected.verdict == "none":
            assert found == []
        else:
            assert [(c.similarity, c.verdict) for c in found] == [
                (expected.similarity, expected.verdict)
            ]


def test_candidate_json() -> None:
    c = Candidate(seq=3, algorithm="pdq", verdict="match", threshold=31, possible_threshold=63,
                  distance=4)
    assert c.to_json() == {
        "seq": 3, "algorithm": "pdq", "distance": 4, "threshold": 31,
        "possible_threshold": 63, "verdict": "match", "low_quality": False,
    }


def test_concurrent_adds_and_searches() -> None:
    """A sequencer-like writer adds batches while readers search: no errors, nothing lost,
    and every search sees a consistent index (each planted copy found once it is added)."""
    index = FingerprintIndex(multihash_from=3000)  # the switch happens mid-run
    rng = np.random.default_rng(1)
    planted = random_hex(256, rng)
    batches = [
        [(b * 100 + i, pdq(random_hex(256, rng))) for i in range(100)] for b in range(40)
    ]
    batches[5][50] = (550, pdq(flip(planted, 3, rng)))
    errors: list[BaseException] = []
    done = threading.Event()
    seen_counts: list[int] = []
    go = threading.Barrier(4, timeout=600)  # the writer starts once every reader is running

    def writer() -> None:
        try:
            go.wait()
            for batch in batches:
                index.add_many(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            go.wait()
            while True:  # at least once, even if the writer is done first
                finished = done.is_set()
                found = index.search(pdq(planted))
                seen_counts.append(len(found))
                assert [c.seq for c in found] in ([], [550])
                if finished:
                    break
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)  # bounds a hang; a loaded machine is slow
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    assert len(index) == 4000
    assert index.stats()["pdq_index"] == "multihash"
    assert [c.seq for c in index.search(pdq(planted))] == [550]
    assert seen_counts  # the readers really ran


def _views(*codes: str) -> Fingerprints:
    return {"views": [{"transform": "mirrored", "hash": code} for code in codes]}  # type: ignore[dict-item]


def _hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@pytest.mark.parametrize("size", [300, 9_000])  # all in the flat tail; mostly in the tables
def test_views_are_found_exactly_within_the_match_radius(size: int) -> None:
    """A claim check's views go through the multi-index: every registered code within the PDQ
    match radius (31) of a view is found, with its distance, and none farther (D67). Codes are
    clustered (shared substrings) so its slices hold many codes, not one."""
    rng = np.random.default_rng(size)
    centres = [random_hex(256, rng) for _ in range(20)]
    codes = [flip(centres[i % 20], int(rng.integers(0, 80)), rng) for i in range(size)]
    index = FingerprintIndex()
    for at in range(0, size, 1000):  # as sealed blocks arrive: sorts happen in between
        index.add_many((seq, pdq(code)) for seq, code in enumerate(codes[at:at + 1000], at))
    queries = [flip(codes[int(rng.integers(size))], d, rng) for d in (0, 5, 20, 31, 32, 40)]
    queries += centres[:4]
    found = index.search(_views(*queries), limit=10 ** 6)
    got = {(c.seq, c.distance) for c in found}
    want = {(seq, min(_hamming(q, code) for q in queries)) for seq, code in enumerate(codes)
            if min(_hamming(q, code) for q in queries) <= scoring.PDQ_MATCH}
    assert got == want and want
    assert all(c.verdict == "match" and c.explanation == "mirrored" for c in found)


def test_views_search_the_match_radius_and_the_upload_the_possible_band() -> None:
    """The upload's own PDQ still reaches the 'possible' band; its views stop at 'match'."""
    index = FingerprintIndex()
    rng = np.random.default_rng(3)
    code = random_hex(256, rng)
    index.add(1, pdq(code))
    far = flip(code, 50, rng)
    assert [(c.seq, c.verdict) for c in index.search(pdq(far))] == [(1, "possible")]
    assert index.search(_views(far)) == []
    assert [c.distance for c in index.search(_views(flip(code, 31, rng)))] == [31]


@pytest.mark.parametrize("size", [300, 9_000])  # all in the flat tail; mostly in the tables
def test_phash_is_found_exactly_within_the_possible_radius(size: int) -> None:
    """pHash goes through a multi-index of four 16-bit keys probed within two bits: every
    registered code within the 'possible' radius (10) is found, with its distance, and none
    farther (D76). Clustered codes, so its slices hold many codes."""
    rng = np.random.default_rng(size + 1)
    centres = [random_hex(64, rng) for _ in range(20)]
    codes = [flip(centres[i % 20], int(rng.integers(0, 20)), rng) for i in range(size)]
    index = FingerprintIndex()
    for at in range(0, size, 1000):
        index.add_many((seq, phash(code)) for seq, code in enumerate(codes[at:at + 1000], at))
    for query in [flip(codes[int(rng.integers(size))], d, rng) for d in (0, 3, 8, 10, 11, 14)]:
        got = {(c.seq, c.distance) for c in index.search(phash(query), limit=10 ** 6)}
        want = {(seq, _hamming(query, code)) for seq, code in enumerate(codes)
                if _hamming(query, code) <= scoring.PHASH_POSSIBLE}
        assert got == want


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.integers(1, 40), min_size=1, max_size=12),
       seed=st.integers(0, 2 ** 32 - 1))
def test_multi_index_merges_are_exact(batches: list[int], seed: int) -> None:
    """However the codes arrive (merged into the tables after a few, D76), a search finds
    exactly the codes within the radius, ids ascending, for PDQ and pHash widths."""
    rng = np.random.default_rng(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(index_mod, "MULTIHASH_TAIL", 16)
        for size, flips, radius in ((32, 1, 31), (8, 2, 10)):
            centre = rng.integers(0, 256, size, dtype=np.uint8)
            multi = index_mod._MultiIndex(size, flips)
            codes = np.empty((0, size), np.uint8)
            for n in batches:
                noise = np.packbits(rng.random((n, 8 * size)) < 0.06, axis=1)
                batch = centre ^ noise
                multi.add(batch)
                codes = np.concatenate([codes, batch])
            query = centre ^ np.packbits(rng.random((1, 8 * size)) < 0.03, axis=1)
            distances = np.bitwise_count(codes ^ query).sum(1)
            want = [(int(i), int(distances[i])) for i in np.flatnonzero(distances <= radius)]
            assert multi.search_many(query, radius) == [want]
