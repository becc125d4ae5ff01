"""ledger.merkle against public vectors and against the RFC 6962 recursions, written naively here.

The naive definitions below are transcriptions of RFC 6962 section 2.1 (MTH, PATH, PROOF /
SUBPROOF) with no cleverness, so that they are easy to check by eye; the module's iterative,
store-backed versions must agree with them byte for byte.
"""

from __future__ import annotations

import base64
import gc
import json
import math
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.ledger import merkle
from copyledger.ledger.errors import InvalidInput, NotFound, ProofError
from copyledger.ledger.merkle import (
    EMPTY_ROOT,
    MemoryReader,
    NodeId,
    append,
    appended_proofs,
    consistency_proof,
    frontier_ids,
    inclusion_proof,
    inclusion_proofs,
    leaf_hash,
    leaf_hashes,
    node_hash,
    root,
    root_from_frontier,
    root_from_inclusion_proof,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors" / "transparency-dev-merkle"
INCLUSION_FILES = sorted((VECTORS / "testdata" / "inclusion").rglob("*.json"))
CONSISTENCY_FILES = sorted((VECTORS / "testdata" / "consistency").rglob("*.json"))

FAST = settings(max_examples=60, deadline=None)


# --- the naive RFC 6962 definitions ------------------------------------------------------------


def _k(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(d: Sequence[bytes]) -> bytes:
    if len(d) == 0:
        return EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(naive_mth(d[:k]), naive_mth(d[k:]))


def naive_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*naive_path(m, d[:k]), naive_mth(d[k:])]
    return [*naive_path(m - k, d[k:]), naive_mth(d[:k])]


def naive_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = _k(n)
    if m <= k:
        return [*naive_subproof(m, d[:k], b), naive_mth(d[k:])]
    return [*naive_subproof(m - k, d[k:], False), naive_mth(d[:k])]


def naive_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return naive_subproof(m, d, True) if 0 < m < len(d) else []


def naive_nodes(d: Sequence[bytes]) -> dict[NodeId, bytes]:
    """Every complete subtree of the tree over d, by (level, index)."""
    out: dict[NodeId, bytes] = {}
    level = 0
    while (1 << level) <= len(d):
        w = 1 << level
        for index in range(len(d) // w):
            out[(level, index)] = naive_mth(d[index * w : (index + 1) * w])
        level += 1
    return out


def make_leaves(n: int, seed: int = 0) -> list[bytes]:
    return leaf_hashes([seed.to_bytes(4, "big") + i.to_bytes(4, "big") for i in range(n)])


def build(d: Sequence[bytes]) -> MemoryReader:
    reader = MemoryReader()
    reader.update(append(0, [], d).nodes)
    return reader


class CountingReader:
    def __init__(self, inner: MemoryReader) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def read_hashes(self, ids: Sequence[NodeId]) -> list[bytes]:
        self.calls.append(len(ids))
        return self.inner.read_hashes(ids)


# --- hashes and small helpers ------------------------------------------------------------------


def test_hash_primitives() -> None:
    assert merkle.HASH_SIZE == 32
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root([]) == EMPTY_ROOT == root_from_frontier([])
    assert leaf_hash(b"").hex().startswith("6e340b9c")
    assert leaf_hashes([b"", b"\x00"]) == [leaf_hash(b""), leaf_hash(b"\x00")]
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) != node_hash(b, a)
    assert root([a]) == a


def test_frontier_ids() -> None:
    assert frontier_ids(0) == []
    assert frontier_ids(1) == [(0, 0)]
    assert frontier_ids(6) == [(2, 0), (1, 2)]
    assert frontier_ids(7) == [(2, 0), (1, 2), (0, 6)]
    assert frontier_ids(8) == [(3, 0)]
    with pytest.raises(InvalidInput):
        frontier_ids(-1)


# --- transparency-dev/merkle reference tree and probes -----------------------------------------


def _ref() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "reference-tree.json").read_text())
    return data


def test_reference_tree_roots() -> None:
    ref = _ref()
    leaves = leaf_hashes([bytes.fromhex(h) for h in ref["leaf_inputs_hex"]])
    want = [bytes.fromhex(h) for h in ref["root_hashes_by_tree_size_hex"]]
    assert len(want) == 9
    size: int = 0
    frontier: list[bytes] = []
    reader = MemoryReader()
    for n in range(9):
        assert root(leaves[:n]) == want[n]
        if n:
            a = append(size, frontier, leaves[n - 1 : n])
            size, frontier = a.size, a.frontier
            reader.update(a.nodes)
            assert a.root == want[n]
        assert tree_hash(n, reader) == want[n]


def test_reference_tree_nodes() -> None:
    ref = _ref()
    leaves = leaf_hashes([bytes.fromhex(h) for h in ref["leaf_inputs_hex"]])
    a = append(0, [], leaves)
    by_level: dict[int, list[tuple[int, bytes]]] = {}
    for level, index, h in a.nodes:
        by_level.setdefault(level, []).append((index, h))
    got = [[h.hex() for _, h in sorted(by_level[lvl])] for lvl in sorted(by_level)]
    assert got == ref["node_hashes_by_level_hex"]
    assert a.size == 8 and a.frontier == [a.root]


def _b64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _probe(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_vectors_present() -> None:
    # Every file from transparency-dev/merkle @ 417fb0c testdata/{inclusion,consistency}.
    assert len(INCLUSION_FILES) == 98
    assert len(CONSISTENCY_FILES) == 98


@pytest.mark.parametrize(
    "path", INCLUSION_FILES, ids=[str(p.relative_to(VECTORS)) for p in INCLUSION_FILES]
)
def test_inclusion_vector(path: Path) -> None:
    p = _probe(path)
    proof = [_b64(h) for h in p["proof"] or []]
    args = (p["leafIdx"], p["treeSize"], _b64(p["leafHash"]), proof, _b64(p["root"]))
    if p["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize(
    "path", CONSISTENCY_FILES, ids=[str(p.relative_to(VECTORS)) for p in CONSISTENCY_FILES]
)
def test_consistency_vector(path: Path) -> None:
    p = _probe(path)
    proof = [_b64(h) for h in p["proof"] or []]
    args = (p["size1"], p["size2"], _b64(p["root1"]), _b64(p["root2"]), proof)
    if p["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_happy_vectors_match_our_proofs() -> None:
    """The vectors' good proofs are exactly the ones we produce over the reference tree."""
    ref = _ref()
    leaves = leaf_hashes([bytes.fromhex(h) for h in ref["leaf_inputs_hex"]])
    reader = build(leaves)
    checked = 0
    for path in INCLUSION_FILES + CONSISTENCY_FILES:
        p = _probe(path)
        if p["wantErr"]:
            continue
        proof = [_b64(h) for h in p["proof"] or []]
        if "leafIdx" in p and p["treeSize"] <= 8:
            assert inclusion_proof(p["leafIdx"], p["treeSize"], reader) == proof
            checked += 1
        elif "size1" in p and p["size1"] > 0 and p["size2"] <= 8:
            assert consistency_proof(p["size1"], p["size2"], reader) == proof
            checked += 1
    assert checked >= 8


# --- against the naive recursions --------------------------------------------------------------


@FAST
@given(st.integers(0, 200), st.integers(0, 3))
def test_root_matches_naive(n: int, seed: int) -> None:
    d = make_leaves(n, seed)
    assert root(d) == naive_mth(d)
    assert append(0, [], d).root == naive_mth(d)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    n = draw(st.integers(0, 130))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=8)))
    return make_leaves(n, draw(st.integers(0, 3))), cuts


@FAST
@given(chunked())
def test_append_in_chunks(case: tuple[list[bytes], list[int]]) -> None:
    d, cuts = case
    size, frontier = 0, list[bytes]()
    nodes: dict[NodeId, bytes] = {}
    for lo, hi in zip([0, *cuts], [*cuts, len(d)], strict=True):
        a = append(size, frontier, d[lo:hi])
        assert a.size == hi
        new = {(lvl, i): h for lvl, i, h in a.nodes}
        assert len(new) == len(a.nodes)
        assert not new.keys() & nodes.keys(), "a node was reported twice"
        nodes.update(new)
        want = naive_nodes(d[:hi])
        assert nodes == want
        assert a.frontier == [want[i] for i in frontier_ids(hi)]
        assert a.root == naive_mth(d[:hi])
        size, frontier = a.size, a.frontier
    once = append(0, [], d)
    assert sorted(once.nodes) == sorted((lvl, i, h) for (lvl, i), h in nodes.items())
    assert once.frontier == frontier and once.root == root(d)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    n = draw(st.integers(1, 100))
    size = draw(st.integers(1, n))
    index = draw(st.integers(0, size - 1))
    return make_leaves(n, draw(st.integers(0, 3))), index, size


@FAST
@given(tree_and_index())
def test_inclusion_proof_matches_naive(case: tuple[list[bytes], int, int]) -> None:
    d, index, size = case
    reader = build(d)  # a bigger tree: proofs for older sizes come from the same store
    proof = inclusion_proof(index, size, reader)
    assert proof == naive_path(index, d[:size])
    r = naive_mth(d[:size])
    assert tree_hash(size, reader) == r
    assert root_from_inclusion_proof(index, size, d[index], proof) == r
    verify_inclusion(index, size, d[index], proof, r)


@FAST
@given(st.integers(1, 200), st.data())
def test_batch_inclusion_proofs_equal_single_ones(n: int, data: st.DataObject) -> None:
    d = make_leaves(n)
    size = data.draw(st.integers(1, n))
    lo = data.draw(st.integers(0, size - 1))
    hi = data.draw(st.integers(lo + 1, size))
    counting = CountingReader(build(d))
    proofs = inclusion_proofs(list(range(lo, hi)), size, counting)
    assert len(counting.calls) <= 1  # one read for the whole batch
    assert proofs == [naive_path(i, d[:size]) for i in range(lo, hi)]


@FAST
@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 3))
def test_appended_proofs_equal_the_stored_tree_ones(size: int, count: int, seed: int) -> None:
    """The sequencer proves a block's entries from the old frontier and the new nodes alone:
    the same proofs, byte for byte, as reading every node from the store, and as the RFC's."""
    d = make_leaves(size + count, seed)
    before = append(0, [], d[:size])
    a = append(size, before.frontier, d[size:])
    proofs = appended_proofs(size, before.frontier, a)
    assert len(proofs) == count
    assert proofs == inclusion_proofs(list(range(size, size + count)), a.size, build(d))
    assert proofs == [naive_path(i, d) for i in range(size, size + count)]
    assert len({id(p) for p in proofs}) == count  # no two receipts share a list


@st.composite
def tree_and_sizes(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    n = draw(st.integers(1, 100))
    new = draw(st.integers(1, n))
    old = draw(st.integers(1, new))
    return make_leaves(n, draw(st.integers(0, 3))), old, new


@FAST
@given(tree_and_sizes())
def test_consistency_proof_matches_naive(case: tuple[list[bytes], int, int]) -> None:
    d, old, new = case
    reader = build(d)
    proof = consistency_proof(old, new, reader)
    assert proof == naive_proof(old, d[:new])
    verify_consistency(old, new, naive_mth(d[:old]), naive_mth(d[:new]), proof)


def _flip(proof: list[bytes], which: int, byte: int, mask: int) -> list[bytes]:
    out = list(proof)
    h = bytearray(out[which])
    h[byte] ^= mask
    out[which] = bytes(h)
    return out


@FAST
@given(tree_and_index(), st.data())
def test_tampered_inclusion_fails(case: tuple[list[bytes], int, int], data: st.DataObject) -> None:
    d, index, size = case
    reader = build(d)
    proof = inclusion_proof(index, size, reader)
    r = naive_mth(d[:size])
    byte, mask = data.draw(st.integers(0, 31)), data.draw(st.integers(1, 255))
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            verify_inclusion(index, size, d[index], _flip(proof, which, byte, mask), r)
        with pytest.raises(ProofError):  # too short
            verify_inclusion(index, size, d[index], proof[:-1], r)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, _flip([d[index]], 0, byte, mask)[0], proof, r)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, d[index], proof, _flip([r], 0, byte, mask)[0])
    with pytest.raises(ProofError):  # too long
        verify_inclusion(index, size, d[index], [*proof, r], r)
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index)) if size > 1 else None
    if other is not None:
        with pytest.raises(ProofError):  # right leaf, wrong position
            verify_inclusion(other, size, d[other], proof, r)
        with pytest.raises(ProofError):
            verify_inclusion(other, size, d[index], proof, r)
    if len(d) > index + 1:  # a proof for one size does not prove another, at its true root
        s2 = data.draw(st.integers(index + 1, len(d)).filter(lambda s: s != size))
        with pytest.raises(ProofError):
            verify_inclusion(index, s2, d[index], proof, naive_mth(d[:s2]))


@FAST
@given(tree_and_sizes(), st.data())
def test_tampered_consistency_fails(
    case: tuple[list[bytes], int, int], data: st.DataObject
) -> None:
    d, old, new = case
    reader = build(d)
    proof = consistency_proof(old, new, reader)
    r1, r2 = naive_mth(d[:old]), naive_mth(d[:new])
    byte, mask = data.draw(st.integers(0, 31)), data.draw(st.integers(1, 255))
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            verify_consistency(old, new, r1, r2, _flip(proof, which, byte, mask))
        with pytest.raises(ProofError):
            verify_consistency(old, new, r1, r2, proof[:-1])
        with pytest.raises(ProofError):
            verify_consistency(old, new, r2, r1, proof)
    with pytest.raises(ProofError):
        verify_consistency(old, new, _flip([r1], 0, byte, mask)[0], r2, proof)
    with pytest.raises(ProofError):
        verify_consistency(old, new, r1, _flip([r2], 0, byte, mask)[0], proof)
    with pytest.raises(ProofError):
        verify_consistency(old, new, r1, r2, [*proof, r1])
    # The same proof, claimed for other sizes (with the true roots of those sizes), fails.
    o = data.draw(st.integers(1, new).filter(lambda s: s != old)) if new > 1 else None
    if o is not None:
        with pytest.raises(ProofError):
            verify_consistency(o, new, naive_mth(d[:o]), r2, proof)
    n2 = data.draw(st.integers(old, len(d)).filter(lambda s: s != new)) if len(d) > old else None
    if n2 is not None:
        with pytest.raises(ProofError):
            verify_consistency(old, n2, r1, naive_mth(d[:n2]), proof)


# --- cost and errors ---------------------------------------------------------------------------


def test_proofs_read_log_n_hashes_in_one_call() -> None:
    n = 1000
    d = make_leaves(n)
    counting = CountingReader(build(d))
    for size in (1000, 999, 777, 512, 513, 3):
        bound = 2 * math.log2(size) + 2
        for index in range(size):
            counting.calls.clear()
            proof = inclusion_proof(index, size, counting)
            assert len(counting.calls) == (1 if size > 1 else 0)
            assert counting.calls[0] <= bound
            assert len(proof) <= math.ceil(math.log2(size))
        for old in range(1, size):
            counting.calls.clear()
            proof = consistency_proof(old, size, counting)
            assert len(counting.calls) == 1
            assert counting.calls[0] <= bound
        counting.calls.clear()
        tree_hash(size, counting)
        assert counting.calls == [size.bit_count()]
    for index in (0, 1, 500, 998, 999):
        verify_inclusion(index, n, d[index], inclusion_proof(index, n, counting), root(d))


def test_proof_argument_errors() -> None:
    reader = build(make_leaves(10))
    for index, size in ((0, 0), (10, 10), (-1, 5), (3, -1)):
        with pytest.raises(InvalidInput):
            inclusion_proof(index, size, reader)
    for old, new in ((5, 4), (-1, 3)):
        with pytest.raises(InvalidInput):
            consistency_proof(old, new, reader)
    assert consistency_proof(0, 10, reader) == []
    assert consistency_proof(7, 7, reader) == []
    assert tree_hash(0, reader) == EMPTY_ROOT
    with pytest.raises(InvalidInput):
        tree_hash(-1, reader)
    with pytest.raises(NotFound):
        inclusion_proof(3, 12, reader)  # the store only holds a tree of 10
    with pytest.raises(ProofError):
        root_from_inclusion_proof(5, 5, b"\x00" * 32, [])
    with pytest.raises(ProofError):
        verify_consistency(3, 2, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):  # 0 -> n is refused, as by transparency-dev/merkle
        verify_consistency(0, 3, EMPTY_ROOT, root(make_leaves(3)), [])


def test_append_argument_errors() -> None:
    d = make_leaves(5)
    a = append(0, [], d)
    with pytest.raises(InvalidInput):
        append(5, a.frontier[:1], d)  # popcount(5) == 2
    with pytest.raises(InvalidInput):
        append(-1, [], d)
    with pytest.raises(InvalidInput):
        append(5, a.frontier, [b"short"])
    with pytest.raises(InvalidInput):
        append(5, [b"x" * 31, a.frontier[1]], d)
    same = append(5, a.frontier, [])
    assert same == merkle.Appended(5, [], a.frontier, a.root)


def test_large_append_leaves_the_collector_as_it_found_it() -> None:
    d = make_leaves(10_000)
    want = root(d)
    assert gc.isenabled()
    a = append(0, [], d[:4999])
    b = append(a.size, a.frontier, d[4999:])
    assert gc.isenabled()
    assert b.root == want == append(0, [], d).root
    assert len(a.nodes) + len(b.nodes) == 2 * len(d) - len(d).bit_count()
    gc.disable()
    try:
        assert append(0, [], d).root == want
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.interop
def test_go_sumdb_tlog_accepts_our_proofs(tlogcheck: str) -> None:
    """Go's golang.org/x/mod/sumdb/tlog (via tlogcheck) verifies what we prove."""
    d = make_leaves(37, seed=7)
    reader = build(d)

    def check(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tlogcheck, *map(str, args)], capture_output=True, text=True, timeout=30
        )

    for index, size in ((0, 1), (0, 37), (5, 8), (12, 13), (36, 37), (20, 33)):
        proof = inclusion_proof(index, size, reader)
        r = check(
            "inclusion",
            size,
            root(d[:size]).hex(),
            index,
            d[index].hex(),
            ",".join(p.hex() for p in proof),
        )
        assert r.returncode == 0, r.stderr
    for old, new in ((1, 2), (3, 7), (4, 8), (8, 37), (13, 37), (36, 37)):
        proof = consistency_proof(old, new, reader)
        args = ("consistency", old, root(d[:old]).hex(), new, root(d[:new]).hex())
        assert check(*args, ",".join(p.hex() for p in proof)).returncode == 0
        bad = _flip(proof, 0, 0, 1)
        assert check(*args, ",".join(p.hex() for p in bad)).returncode == 1


def test_consistency_document_round_trips_and_the_empty_tree_needs_no_proof() -> None:
    from copyledger.ledger.merkle import Consistency

    reader = merkle.MemoryReader()
    appended = merkle.append(0, [], merkle.leaf_hashes([b"%d" % i for i in range(7)]))
    reader.update(appended.nodes)
    c = Consistency(3, merkle.tree_hash(3, reader), tuple(merkle.consistency_proof(3, 7, reader)))
    assert Consistency.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    c.verify(7, appended.root)
    with pytest.raises(ProofError):
        c.verify(7, bytes(32))
    Consistency(0, merkle.EMPTY_ROOT).verify(7, appended.root)
    with pytest.raises(ProofError):
        Consistency(0, bytes(32)).verify(7, appended.root)
    for bad in ({"old_size": -1, "old_root": "00" * 32, "proof": []},
                {"old_size": 1, "old_root": "00", "proof": []},
                {"old_size": 1, "old_root": "00" * 32, "proof": "ab"},
                {"old_size": True, "old_root": "00" * 32, "proof": []}):
        with pytest.raises(InvalidInput):
            Consistency.from_dict(bad)
