"""The audit: recompute everything from the rows, trust nothing stored.

Every leaf hash from its entry's bytes, every stored Merkle node from the leaves, every block
header from the tree, every link of the block chain, every checkpoint and block signature
under the log's verifier key, every `entry_links` row from the entries, and every chain of title
(each transfer made by the holder of its moment, each acceptance by the recipient of a pending
offer, so a double assignment fails). A row edited
behind the triggers' back shows up here, named by its sequence number or block height.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from copyledger.ledger import jcs, merkle, note
from copyledger.ledger.block import GENESIS_PREV, check_header, check_link
from copyledger.ledger.documents import Acceptance, Entry, Transfer, Withdrawal, parse_entry
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.links import LINKED_KINDS, Link, links_of, resolve
from copyledger.ledger.store import BlockRow, CachedReader, EntryRow, Store
from copyledger.ledger.title import TITLE_KINDS, Title


@dataclass
class AuditReport:
    ok: bool = True
    entries: int = 0
    blocks: int = 0
    nodes: int = 0
    tree_size: int = 0
    root: str = ""
    problem: str | None = None
    bad_seq: int | None = None
    bad_height: int | None = None
    checked: list[str] = field(default_factory=list)

    def fail(self, problem: str, *, seq: int | None = None, height: int | None = None) -> None:
        if self.ok:
            self.ok, self.problem, self.bad_seq, self.bad_height = False, problem, seq, height


Progress = Callable[[int], None]


def audit(
    store: Store,
    verifier_key: str | Sequence[str],
    progress: Progress | None = None,
    *,
    tsa_roots_pem: bytes | None = None,
) -> AuditReport:
    """Audit the whole log; stop at the first fault and name where it is. With the notary's
    TSA roots, also check that every block carries a valid RFC 3161 token over its hash."""
    rep = AuditReport()
    keys = [verifier_key] if isinstance(verifier_key, str) else list(verifier_key)
    verifiers = [note.parse_verifier_key(k) for k in keys]
    blocks = list(store.iter_blocks())
    rep.blocks = len(blocks)
    if not blocks:
        rep.checked.append("no blocks yet")
        return rep
    # Block chain and per-block rules first: cheap, and they say which sizes must have which roots.
    roots_at: dict[int, list[BlockRow]] = {}
    prev: BlockRow | None = None
    for b in blocks:
        try:
            if b.hash != b.header.hash():
                raise CopyledgerError(f"block {b.header.height}: stored hash != hash of header")
            if prev is None:
                if b.header.height != 0 or b.header.prev_block_hash != GENESIS_PREV:
                    raise CopyledgerError("the first block is not a genesis block")
                check_header(b.header)
            else:
                check_link(prev.header, b.header)
            _check_signatures(b, verifiers)
        except CopyledgerError as e:
            rep.fail(e.detail, height=b.header.height)
            return rep
        roots_at.setdefault(b.header.tree_size, []).append(b)
        prev = b
    rep.checked.append(f"{len(blocks)} block headers chain, and their signatures verify")
    if tsa_roots_pem is not None:
        stamp_fault = _check_timestamps(store, blocks, tsa_roots_pem)
        if stamp_fault is not None:
            rep.fail(stamp_fault[1], height=stamp_fault[0])
            return rep
        rep.checked.append(f"{len(blocks)} RFC 3161 tokens verify over their block hashes")

    for b in roots_at.get(0, ()):
        if b.header.tree_root != merkle.EMPTY_ROOT:
            rep.fail(f"block {b.header.height}: root of the empty tree is wrong",
                     height=b.header.height)
            return rep
    last = blocks[-1].header
    size, frontier = 0, list[bytes]()
    pending = iter(blocks)  # blocks whose batch is not yet fully read
    cur = next(pending)
    batch: list[bytes] = []

    def finish_blocks_up_to(seq: int) -> str | None:
        """Close every block that ends at or before `seq`; check its batch root."""
        nonlocal cur, batch
        while cur.header.tree_size <= seq:
            if merkle.root(batch) != cur.header.batch_root:
                return f"block {cur.header.height}: batch_root != root of its entries"
            batch = []
            nxt = next(pending, None)
            if nxt is None:
                return None
            cur = nxt
        return None

    titles = _Titles(store)
    n_links = 0
    for chunk in store.iter_entries():
        lo = size
        links: list[Link] = []
        for row in chunk:
            if row.seq != size:
                rep.fail(f"seq {size} is missing (next stored is {row.seq})", seq=size)
                return rep
            try:
                doc = _check_entry(row)
                if doc.KIND in LINKED_KINDS:
                    links += resolve(row.seq, links_of(doc), store.first_work)
                if isinstance(doc, TITLE_KINDS):
                    titles.apply(row.seq, doc)
            except CopyledgerError as e:
                rep.fail(f"seq {row.seq}: {e.detail}", seq=row.seq)
                return rep
            size += 1
        stored_links = store.links_between(lo, size)
        if stored_links != sorted(links):
            diff = set(stored_links) ^ set(links)
            at = min(s for _, s, _ in diff)
            rep.fail(f"seq {at}: stored links (entry_links) differ from what the entry names",
                     seq=at)
            return rep
        n_links += len(links)
        appended = merkle.append(lo, frontier, [r.leaf_hash for r in chunk])
        bad = _check_nodes(store, appended.nodes)
        if bad is not None:
            lv, ix = bad
            first = ix << lv
            rep.fail(f"stored Merkle node (level {lv}, index {ix}) does not match the entries; "
                     f"first leaf under it is seq {first}", seq=first)
            return rep
        for row in chunk:  # walk the blocks alongside: heights and batch roots
            err = finish_blocks_up_to(row.seq)
            if err:
                rep.fail(err, height=cur.header.height)
                return rep
            if row.block_height != cur.header.height or row.seq >= cur.header.tree_size:
                rep.fail(f"seq {row.seq}: recorded in block {row.block_height}, "
                         f"but block {cur.header.height} sealed it", seq=row.seq)
                return rep
            batch.append(row.leaf_hash)
        rep.nodes += len(appended.nodes)
        # Every block root at a size inside this chunk, from the recomputed nodes.
        reader = CachedReader(dict(zip(merkle.frontier_ids(lo), frontier, strict=True)), store)
        reader.nodes.update(((lv, ix), hs) for lv, ix, hs in appended.nodes)
        for s in range(lo + 1, size + 1):
            for b in roots_at.get(s, ()):
                if b.header.tree_root != merkle.tree_hash(s, reader):
                    rep.fail(f"block {b.header.height}: tree_root != root of the first {s} "
                             "entries", height=b.header.height)
                    return rep
        frontier = appended.frontier
        if progress is not None:
            progress(len(chunk))
    rep.entries = size
    if size != last.tree_size:
        rep.fail(f"the log holds {size} entries but the last block says {last.tree_size}",
                 seq=min(size, last.tree_size))
        return rep
    err = finish_blocks_up_to(size)
    if err:
        rep.fail(err, height=cur.header.height)
        return rep
    stored = store.count_nodes()
    if stored != rep.nodes:
        rep.fail(f"{stored} Merkle nodes are stored but the entries make {rep.nodes}")
        return rep
    stored = store.count_links()
    if stored != n_links:
        rep.fail(f"{stored} links are stored but the entries make {n_links}")
        return rep
    rep.tree_size = size
    rep.root = merkle.root_from_frontier(frontier).hex()
    rep.checked += [
        f"{size} entries: canonical JSON, valid, leaf hashes match",
        f"{rep.nodes} stored Merkle nodes recomputed from the leaves",
        "every block's tree root and batch root recomputed",
        f"{n_links} links (transfers and claims to what they name) recomputed",
        f"{len(titles.titles)} chains of title replayed: every transfer by the holder of the time",
    ]
    return rep


def _check_entry(row: EntryRow) -> Entry:
    """The entry's document, if its bytes, leaf hash and indexed columns are right."""
    data = row.data
    if merkle.leaf_hash(data) != row.leaf_hash:
        raise CopyledgerError("stored leaf hash != SHA-256(0x00 || entry bytes)")
    obj = jcs.parse(data)
    if jcs.canonicalize(obj) != data:
        raise CopyledgerError("entry bytes are not RFC 8785 canonical JSON")
    if not isinstance(obj, dict):
        raise CopyledgerError("entry is not a JSON object")
    doc = parse_entry(obj)
    # The indexed columns (what search answers from) must say what the entry says.
    if (row.kind, row.sha256, row.registrant) != (doc.KIND, doc.content_sha256, doc.registrant):
        raise CopyledgerError(
            "indexed columns (kind, sha256, registrant) differ from the entry")
    return doc


class _Titles:
    """Every transferred work's chain of title, replayed as the log is read. Only works with
    transfers are held in memory; the rest cost nothing."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.titles: dict[int, Title] = {}

    def apply(self, seq: int, t: Transfer | Acceptance | Withdrawal) -> None:
        """IntegrityError if `t` was not made by the account entitled to at `seq` (a double
        assignment, a transfer by a stranger, an acceptance without a pending offer or by
        someone other than its recipient), or names no earlier work."""
        title = self.titles.get(t.work.seq)
        if title is None:
            if t.work.seq >= seq:
                raise CopyledgerError(f"transfer names entry {t.work.seq}, which is not before it")
            title = Title.of(t.work.seq, parse_entry(self.store.get_entry(t.work.seq).data))
            self.titles[t.work.seq] = title
        title.apply(seq, t)


def _check_signatures(b: BlockRow, verifiers: list[note.Verifier]) -> None:
    h = b.header
    name = verifiers[0].name
    n, _ = note.verify_note(b.checkpoint, verifiers)
    cp = note.parse_checkpoint(n.text)
    if (cp.origin, cp.size, cp.root) != (name, h.tree_size, h.tree_root):
        raise CopyledgerError(f"block {h.height}: checkpoint does not match the block header")
    bn, _ = note.verify_note(b.block_note, verifiers)
    origin, height, bhash = note.parse_block_note_text(bn.text)
    if (origin, height, bhash) != (name, h.height, b.hash):
        raise CopyledgerError(f"block {h.height}: block note does not match the block")


def _check_timestamps(
    store: Store, blocks: list[BlockRow], roots_pem: bytes
) -> tuple[int, str] | None:
    from copyledger.ledger.timestamp import verify_token

    hashes = {b.header.height: b.hash for b in blocks}
    seen = set()
    for height, token in store.iter_timestamps():
        if height not in hashes:
            return height, f"a time-stamp token names block {height}, which does not exist"
        try:
            verify_token(token, hashes[height], roots_pem)
        except CopyledgerError as e:
            return height, f"block {height}: time-stamp token: {e.detail}"
        seen.add(height)
    missing = sorted(set(hashes) - seen)
    if missing:
        return missing[0], f"block {missing[0]} has no time-stamp token from the notary"
    return None


def _check_nodes(store: Store, nodes: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    by_level: dict[int, list[tuple[int, bytes]]] = {}
    for lv, ix, hs in nodes:
        by_level.setdefault(lv, []).append((ix, hs))
    for lv in sorted(by_level):
        items = by_level[lv]
        stored = store.read_node_range(lv, items[0][0], items[-1][0] + 1)
        for ix, hs in items:
            if stored.get(ix) != hs:
                return lv, ix
    return None
