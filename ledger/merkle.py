"""RFC 6962 / RFC 9162 Merkle tree maths: hashes, roots, appends, proofs and their verification.

Pure functions over explicit types, in the style of Go's golang.org/x/mod/sumdb/tlog, so that a
court's expert can read this file on its own. Nothing here touches a database: stored hashes come
in through a `HashReader`, and new ones go out as `Appended.nodes` for the caller to store.

A node is named by `NodeId = (level, index)`: the complete subtree over the leaves
`[index << level, (index + 1) << level)`. Level 0 holds the leaf hashes. Only complete subtrees
are ever stored; every root and proof is computed from them, so a proof reads O(log n) hashes.

Inclusion and consistency proofs are the RFC 9162 ones (same bytes as tlog.ProveRecord /
ProveTree and transparency-dev/merkle), and the verifiers follow RFC 9162 sections 2.1.3.2 and
2.1.4.2, with transparency-dev/merkle's answers on the edge cases (see `verify_consistency`).
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, Protocol

from copyledger.ledger.errors import IntegrityError, InvalidInput, NotFound, ProofError, said

# The nouns the checks below name in their errors, said once (D56): translatable, and not
# rebuilt on every call of a hot path.
_FRONTIER = said("frontier")
_LEAF = said("leaf")
_LEAF_HASH = said("leaf hash")
_OLD_ROOT = said("old root")
_NEW_ROOT = said("new root")

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Appended",
    "Consistency",
    "HashReader",
    "InclusionVerifier",
    "MemoryReader",
    "NodeId",
    "append",
    "appended_proofs",
    "consistency_proof",
    "frontier_ids",
    "inclusion_proof",
    "leaf_hash",
    "leaf_hashes",
    "node_hash",
    "root",
    "root_from_frontier",
    "root_from_inclusion_proof",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]
"""(level, index): the complete subtree over leaves [index << level, (index + 1) << level)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


# --- hashes ---------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the domain prefix keeps a leaf from passing for an inner node."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def leaf_hashes(datas: Sequence[bytes]) -> list[bytes]:
    """Leaf hashes of many entries at once; one comprehension, no per-leaf function call."""
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + d).digest() for d in datas]


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    """Refuse anything that is not a 32-byte hash before it can shape a tree."""
    for size in set(map(len, hashes)):
        if size != HASH_SIZE:
            raise InvalidInput(said("{what} hash has {size} bytes, want {hash_size}",
                                    what=what, size=size, hash_size=HASH_SIZE))


def root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over already leaf-hashed `leaves`; EMPTY_ROOT for none.

    Level by level, an odd last node is carried up unchanged: that yields exactly the RFC's
    "split at the largest power of two" tree.
    """
    if not leaves:
        return EMPTY_ROOT
    sha256 = hashlib.sha256
    row = list(leaves)
    while len(row) > 1:
        odd = row[-1] if len(row) & 1 else None
        row = [sha256(b"\x01" + a + b).digest() for a, b in zip(row[0::2], row[1::2], strict=False)]
        if odd is not None:
            row.append(odd)
    return row[0]


# --- stored nodes -----------------------------------------------------------------------------


class HashReader(Protocol):
    """Where proofs get stored complete-subtree hashes from (a table, tiles, a dict)."""

    def read_hashes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Hashes of `ids`, in the same order; raises ledger.errors.NotFound if one is missing."""
        ...


class MemoryReader:
    """A dict-backed HashReader, for tests, audits and small in-memory trees."""

    def __init__(self, nodes: dict[NodeId, bytes] | None = None) -> None:
        self.nodes: dict[NodeId, bytes] = {} if nodes is None else nodes

    def update(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        """Store nodes as `append()` reports them: (level, index, hash)."""
        self.nodes.update(((level, index), h) for level, index, h in nodes)

    def read_hashes(self, ids: Sequence[NodeId]) -> list[bytes]:
        try:
            return [self.nodes[i] for i in ids]
        except KeyError as exc:
            raise NotFound(said("Merkle node {node} is not stored", node=exc.args[0])) from None


def _read(reader: HashReader, ids: Sequence[NodeId]) -> list[bytes]:
    """One read; a reader that answers the wrong number of hashes is a storage fault."""
    hashes = reader.read_hashes(ids)
    if len(hashes) != len(ids):
        raise IntegrityError(said("hash reader returned {hashes_len} hashes for {ids_len} nodes",
                                  hashes_len=len(hashes), ids_len=len(ids)))
    return hashes


def frontier_ids(size: int) -> list[NodeId]:
    """The maximal complete subtrees of [0, size), left to right: one per set bit, largest first.

    Their hashes are all a writer needs to keep to append and to compute the root.
    """
    if size < 0:
        raise InvalidInput(said("tree size {size} is negative", size=size))
    ids: list[NodeId] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            ids.append((level, start >> level))
            start += 1 << level
    return ids


def root_from_frontier(frontier: Sequence[bytes]) -> bytes:
    """Fold the frontier hashes from the right, like tlog.TreeHash; EMPTY_ROOT if empty."""
    if not frontier:
        return EMPTY_ROOT
    h = frontier[-1]
    for left in reversed(frontier[:-1]):
        h = node_hash(left, h)
    return h


# --- appending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Appended:
    """What an append produced: the caller stores `nodes` and keeps `frontier` for next time."""

    size: int
    """New tree size."""
    nodes: list[tuple[int, int, bytes]]
    """Every newly complete node (level, index, hash), the new leaf hashes (level 0) included."""
    frontier: list[bytes]
    """Hashes of frontier_ids(size), in that order."""
    root: bytes
    """Root of the new tree."""


# Below this many leaves an append makes too few objects for the cycle collector to matter.
_GC_PAUSE_MIN = 4096


@contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """Hold off the cycle collector while building millions of acyclic node tuples.

    Each tuple would otherwise be scanned by a young-generation collection before being found
    free of cycles, which costs about as much as creating it. Nothing is lost: the objects made
    here cannot form cycles. The collector is re-enabled only if it was enabled on entry.
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def append(size: int, frontier: Sequence[bytes], leaves: Sequence[bytes]) -> Appended:
    """Append leaf HASHES to a tree of `size` leaves whose frontier hashes are `frontier`.

    Works level by level with one comprehension per level, so the cost is the hashing itself.
    At each level the new nodes are the indices [size >> level, new_size >> level); when the
    first one is odd, its left sibling is the old frontier node at that level.
    """
    if size < 0:
        raise InvalidInput(said("tree size {size} is negative", size=size))
    if len(frontier) != size.bit_count():
        raise InvalidInput(
            said("a tree of size {size} has {bit_count} frontier hashes, got {frontier_len}",
                 size=size, bit_count=size.bit_count(), frontier_len=len(frontier))
        )
    _check_hashes(frontier, _FRONTIER)
    _check_hashes(leaves, _LEAF)
    count = len(leaves)
    if count == 0:
        return Appended(size, [], list(frontier), root_from_frontier(frontier))
    with _gc_paused(count >= _GC_PAUSE_MIN):
        return _append(size, frontier, leaves)


def _append(size: int, frontier: Sequence[bytes], leaves: Sequence[bytes]) -> Appended:
    new_size = size + len(leaves)
    old = {level: h for (level, _), h in zip(frontier_ids(size), frontier, strict=True)}

    sha256 = hashlib.sha256
    row = list(leaves)
    rows = [row]  # rows[level]: the new nodes at that level, first index size >> level
    nodes = list(zip(repeat(0), range(size, new_size), row))
    level, first = 0, size
    while True:
        if first & 1:  # pair the old frontier node with the first new one
            lefts: Iterable[bytes] = chain((old[level],), row[1::2])
            rights = row[0::2]
        else:
            lefts, rights = row[0::2], row[1::2]
        row = [sha256(b"\x01" + a + b).digest() for a, b in zip(lefts, rights, strict=False)]
        if not row:
            break
        level, first = level + 1, first >> 1
        rows.append(row)
        nodes.extend(zip(repeat(level), range(first, first + len(row)), row))

    new_frontier = []
    for lvl, index in frontier_ids(new_size):
        offset = index - (size >> lvl)
        new_frontier.append(rows[lvl][offset] if offset >= 0 else old[lvl])
    return Appended(new_size, nodes, new_frontier, root_from_frontier(new_frontier))


# --- proofs -----------------------------------------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 6962 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_ids(lo: int, hi: int) -> list[NodeId]:
    """Maximal complete aligned subtrees covering [lo, hi), left to right (tlog's subTreeIndex).

    For the ranges proofs need (lo a multiple of a power of two >= hi - lo), folding their hashes
    from the right gives MTH(D[lo:hi]).
    """
    ids: list[NodeId] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)
        ids.append((level, lo >> level))
        lo += 1 << level
    return ids


def _range_hashes(ranges: Sequence[tuple[int, int]], reader: HashReader) -> list[bytes]:
    """MTH of each range, from ONE read of all their stored subtrees."""
    per_range = [_range_ids(lo, hi) for lo, hi in ranges]
    ids = [i for r in per_range for i in r]
    if not ids:
        return []
    hashes = _read(reader, ids)
    out = []
    pos = 0
    for r in per_range:
        out.append(root_from_frontier(hashes[pos : pos + len(r)]))
        pos += len(r)
    return out


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees of RFC 9162 PATH(index, D[0:size]), leaf first."""
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + (1 << ((hi - lo - 1).bit_length() - 1))  # lo + _split(hi - lo), inlined: hot
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The subtrees of RFC 9162 SUBPROOF(old_size, D[0:new_size], true), deepest first."""
    ranges = []
    lo, hi, whole = 0, new_size, True
    while hi != old_size:
        k = _split(hi - lo)
        if old_size - lo <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            whole = False
    if not whole:  # the old tree's last subtree, unless the verifier already knows it as root1
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def tree_hash(size: int, reader: HashReader) -> bytes:
    """Root of the tree of `size` leaves, from its frontier (one read, popcount(size) hashes)."""
    ids = frontier_ids(size)
    if not ids:
        return EMPTY_ROOT
    return root_from_frontier(_read(reader, ids))


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves."""
    return inclusion_proofs([index], size, reader)[0]


def inclusion_proofs(
    indexes: Sequence[int], size: int, reader: HashReader
) -> list[list[bytes]]:
    """Inclusion proofs for many leaves of one tree, sharing work: the subtrees they have in
    common (the old frontier, the right edge) are read and hashed once, in ONE read. This is
    how the sequencer proves a whole block's entries at the cost of a few hashes each."""
    plans = []
    for index in indexes:
        if size <= 0 or not 0 <= index < size:
            raise InvalidInput(said("leaf index {index} is not in a tree of size {size}",
                                    index=index, size=size))
        plans.append(_inclusion_ranges(index, size))
    unique = list(dict.fromkeys(r for plan in plans for r in plan))
    hashes = dict(zip(unique, _range_hashes(unique, reader), strict=True))
    return [[hashes[r] for r in plan] for plan in plans]


def appended_proofs(size: int, frontier: Sequence[bytes], appended: Appended) -> list[list[bytes]]:
    """Inclusion proofs, in the new tree, of every leaf `append(size, frontier, ...)` added:
    the same as `inclusion_proofs(range(size, appended.size), appended.size, reader)` with every
    node stored, but from the old frontier and the append's nodes alone (no read), and cheaper.

    It walks RFC 9162's PATH recursion once, top down, through only the subtrees that hold new
    leaves, handing each child its parent's path with the sibling's hash put in front: a leaf's
    proof costs one list copy, not a plan of ranges and a lookup per hash. A sibling left of the
    new leaves is always an old frontier node; every other one is a node the append made.
    """
    new_size = appended.size
    old = {level: h for (level, _), h in zip(frontier_ids(size), frontier, strict=True)}
    rows: list[list[bytes]] = []  # rows[level]: the new nodes there, first index size >> level
    pos = level = 0
    while pos < len(appended.nodes):
        count = (new_size >> level) - (size >> level)
        rows.append([h for _, _, h in appended.nodes[pos : pos + count]])
        pos, level = pos + count, level + 1

    def node(level: int, index: int) -> bytes:
        first = size >> level
        return rows[level][index - first] if index >= first else old[level]

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo & hi - lo - 1 == 0:  # a complete subtree (PATH's split keeps it aligned)
            level = (hi - lo).bit_length() - 1
            return node(level, lo >> level)
        return root_from_frontier([node(lv, ix) for lv, ix in _range_ids(lo, hi)])

    out: list[list[bytes]] = [[] for _ in range(new_size - size)]

    def walk(lo: int, hi: int, path: list[bytes]) -> None:
        if hi - lo == 1:
            out[lo - size] = path
            return
        mid = lo + _split(hi - lo)
        if mid > size:  # the left half holds new leaves too
            walk(lo, mid, [mth(mid, hi), *path])
        walk(mid, hi, [mth(lo, mid), *path])

    if new_size > size:
        walk(0, new_size, [])
    return out


def consistency_proof(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 consistency proof from the tree of `old_size` leaves to that of `new_size`.

    Empty when old_size is 0 or equals new_size: there is nothing to prove.
    """
    if old_size < 0 or old_size > new_size:
        raise InvalidInput(said("cannot prove tree size {old_size} consistent with {new_size}",
                                old_size=old_size, new_size=new_size))
    if old_size == 0 or old_size == new_size:
        return []
    return _range_hashes(_consistency_ranges(old_size, new_size), reader)


# --- verification (RFC 9162 section 2.1.3.2 and 2.1.4.2) -------------------------------------


def _check_proof_hashes(proof: Sequence[bytes], *named: tuple[str, bytes]) -> None:
    for what, h in named:
        if len(h) != HASH_SIZE:
            raise ProofError(said("{what} has {h_len} bytes, want {hash_size}",
                                  what=what, h_len=len(h), hash_size=HASH_SIZE))
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise ProofError(said("proof hash {i} has {h_len} bytes, want {hash_size}",
                                  i=i, h_len=len(h), hash_size=HASH_SIZE))


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` claims for leaf hash `leaf` at `index` in a tree of `size`.

    Raises ProofError if the proof cannot be one for that index and size.
    """
    if index < 0 or size <= 0 or index >= size:
        raise ProofError(said("leaf index {index} is not in a tree of size {size}",
                              index=index, size=size))
    _check_proof_hashes(proof, (_LEAF_HASH, leaf))
    return _walk(index, size, leaf, proof)


def _walk(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2's walk from the leaf to the root its proof gives."""
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash `leaf` is at `index` in the tree of `size` leaves with `root`."""
    if len(root) != HASH_SIZE:
        raise ProofError(said("root has {root_len} bytes, want {hash_size}",
                              root_len=len(root), hash_size=HASH_SIZE))
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError("inclusion proof does not lead to the root", index=index, size=size)


Known = dict[tuple[int, int], tuple[bytes, tuple[Any, ...], int]]
"""Nodes of one tree on walks that reached its root: the node's place (levels climbed, index
`fn` at that level) -> (its hash, the proof that climbed from it, where the rest of that
proof starts)."""


class InclusionVerifier:
    """`verify_inclusion` for many leaves of one tree (size, root), such as a batch's receipts,
    whose paths share their upper nodes: each interior node is computed once.

    A walk that reached the root leaves its nodes behind (`Known`). A later walk that arrives
    at one of them with the same hash has, from there, the same state (RFC 9162's `fn` and
    `sn` are functions of the place alone), so it reaches the same root exactly when the rest
    of its proof equals the rest of the one that climbed from there: a list comparison instead
    of the hashes. Anything else (another rest, a node not seen, a failure) is decided by the
    full walk, so every verdict and error is `verify_inclusion`'s. Every leaf is still checked
    in full: its own leaf hash and each hash of its own proof either enter a walk or are
    compared with hashes that did, and only walks that reached the root are remembered."""

    def __init__(self, size: int, root: bytes) -> None:
        self.size, self.root = size, bytes(root)
        self._known: Known = {}

    def verify(self, index: int, leaf: bytes, proof: Sequence[bytes]) -> None:
        """As `verify_inclusion(index, self.size, leaf, proof, self.root)`, with its errors."""
        if (not 0 <= index < self.size or len(self.root) != HASH_SIZE or len(leaf) != HASH_SIZE
                or any(map(HASH_SIZE.__ne__, map(len, proof)))):
            verify_inclusion(index, self.size, leaf, proof, self.root)  # raises: names the fault
        self._climb(index, leaf, proof, bytes)

    def verify_hex(self, index: int, leaf: bytes, proof: Sequence[object]) -> None:
        """`verify` of a proof given as an API answer gives it, lowercase hex: only the hashes
        that enter a walk are decoded (ProofError for one that is not 64 lowercase hex
        digits); the rest are compared, as text, with hashes that were decoded and walked."""
        if not 0 <= index < self.size or len(self.root) != HASH_SIZE or len(leaf) != HASH_SIZE:
            verify_inclusion(index, self.size, leaf, [], self.root)  # raises: names the fault
        self._climb(index, leaf, proof, _hash_from_hex)

    def _climb(self, index: int, leaf: bytes, proof: Sequence[Any],
               decode: Callable[[Any], bytes]) -> None:
        size, root, known = self.size, self.root, self._known
        sha256 = hashlib.sha256
        fn, sn, shifts = index, size - 1, 0
        r = leaf = bytes(leaf)  # what is remembered must not change: a caller's bytearray may
        climbed: list[tuple[tuple[int, int], bytes, int]] = []
        for k, p in enumerate(proof):
            got = known.get((shifts, fn))
            if got is not None and got[0] == r:
                if tuple(proof[k:]) == got[1][got[2]:]:
                    break  # the rest is a walk already made to the root
                # another rest: decided in full, and not remembered
                verify_inclusion(index, size, leaf, list(map(decode, proof)), root)
                return
            if sn == 0:  # too long
                verify_inclusion(index, size, leaf, list(map(decode, proof)), root)  # raises
            climbed.append(((shifts, fn), r, k))
            if fn & 1 or fn == sn:
                r = sha256(b"\x01" + decode(p) + r).digest()
                if not fn & 1:
                    while fn and not fn & 1:
                        fn >>= 1
                        sn >>= 1
                        shifts += 1
            else:
                r = sha256(b"\x01" + r + decode(p)).digest()
            fn >>= 1
            sn >>= 1
            shifts += 1
        else:
            if sn != 0 or r != root:
                verify_inclusion(index, size, leaf, list(map(decode, proof)), root)  # raises
        kept = tuple(map(bytes, proof)) if decode is bytes else tuple(proof)  # copies, as above
        for place, h, k in climbed:
            known[place] = (h, kept, k)


def _hash_from_hex(h: object) -> bytes:
    """A hash from its 64 lowercase hex digits (ProofError for anything else)."""
    try:
        raw = bytes.fromhex(h) if type(h) is str and len(h) == 64 and h == h.lower() else b""
    except ValueError:
        raw = b""
    if len(raw) != HASH_SIZE:  # fromhex skips spaces: so 64 characters can give fewer bytes
        raise ProofError("a proof hash is not 64 lowercase hex digits")
    return raw


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (old_size, old_root) is a prefix of the tree (new_size, new_root).

    Edge cases as transparency-dev/merkle (its test vectors pin them):
    - old_size 0 is rejected, even with new_size 0: an empty tree commits to nothing, so a
      "proof" from it proves nothing. C2SP tlog-witness instead accepts old size 0 with an empty
      proof; a witness that wants that must special-case it before calling this.
    - equal sizes need an empty proof and byte-equal roots (and nothing else is checked).
    """
    if old_size < 0 or new_size < old_size:
        raise ProofError(said("tree size {old_size} cannot precede {new_size}",
                              old_size=old_size, new_size=new_size))
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if old_size == new_size:
        if proof:
            raise ProofError("equal tree sizes need an empty consistency proof")
        if old_root != new_root:
            raise ProofError("equal tree sizes but different roots", size=old_size)
        return
    if not proof:
        raise ProofError("empty consistency proof for different tree sizes")
    _check_proof_hashes(proof, (_OLD_ROOT, old_root), (_NEW_ROOT, new_root))

    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the seed
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root", size=old_size)
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root", size=new_size)


@dataclass(frozen=True)
class Consistency:
    """What a notary needs before it signs a bigger tree: the last tree it signed
    (`old_size`, `old_root`) and the RFC 9162 proof that the new tree extends it.

    The empty tree is a prefix of every tree, so from size 0 the proof is empty; this is the
    one case `verify_consistency` refuses and C2SP tlog-witness accepts, and we follow the latter.
    On the wire: `{"old_size": int, "old_root": hex, "proof": [hex, ...]}`.
    """

    old_size: int
    old_root: bytes
    proof: tuple[bytes, ...] = ()

    def verify(self, new_size: int, new_root: bytes) -> None:
        """ProofError unless the tree (new_size, new_root) extends the old one."""
        if self.old_size == 0:
            if self.old_root != EMPTY_ROOT or self.proof:
                raise ProofError("the empty tree has the empty root and an empty proof")
            return
        verify_consistency(self.old_size, new_size, self.old_root, new_root, self.proof)

    def to_dict(self) -> dict[str, Any]:
        return {"old_size": self.old_size, "old_root": self.old_root.hex(),
                "proof": [h.hex() for h in self.proof]}

    @classmethod
    def from_dict(cls, d: object) -> Consistency:
        """Strict: exactly the three members, a non-negative size, 32-byte hex hashes."""
        if not isinstance(d, dict) or set(d) != {"old_size", "old_root", "proof"}:
            raise InvalidInput("consistency must be {old_size, old_root, proof}")
        size, proof = d["old_size"], d["proof"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput("consistency.old_size must be a non-negative integer")
        if not isinstance(proof, list):
            raise InvalidInput("consistency.proof must be a list of hex hashes")
        return cls(size, _unhex(d["old_root"], "consistency.old_root"),
                   tuple(_unhex(h, "consistency.proof") for h in proof))


def _unhex(v: object, what: str) -> bytes:
    try:
        h = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        h = b""
    if len(h) != HASH_SIZE:
        raise InvalidInput(said("{what} must hold {hash_size}-byte hex hashes",
                                what=what, hash_size=HASH_SIZE))
    return h
