"""Chain of title: a work, the transfers recorded on it, and who holds it now."""

from __future__ import annotations

from typing import Any

from copyledger.ledger import jcs, links, merkle
from copyledger.ledger.documents import ChainLink, TitleChain
from copyledger.ledger.errors import InvalidInput, NotFound, said
from copyledger.ledger.store import EntryRow
from copyledger.ledger.title import Title, chain_of_title, holder_after, stated
from copyledger.service.node import Node


def _parsed(row: EntryRow) -> dict[str, Any]:
    """A stored entry's JSON object."""
    obj = jcs.parse(row.data)
    assert isinstance(obj, dict)  # the sequencer stores only validated JSON objects
    return obj


def load_title(node: Node, work_seq: int) -> tuple[Title, dict[str, Any], list[Any]]:
    """The work, its transfers in log order, and the replayed chain of title. Transfers are
    found by the work's links, so the cost is that of this work's own transfers."""
    row = node.store.get_entry(work_seq)
    work = _parsed(row)
    if row.kind != "work":
        raise InvalidInput(said("work_seq: entry {work_seq} is a {kind}, not a work",
                                work_seq=work_seq, kind=row.kind),
                           errors=[{"field": "work_seq", "message": "not a work"}])
    transfers = [(r, _parsed(r)) for r in _transfer_rows(node, work_seq)]
    title = chain_of_title(work_seq, work, [(r.seq, t) for r, t in transfers])
    return title, work, transfers


def _transfer_rows(node: Node, work_seq: int) -> list[EntryRow]:
    return node.store.get_entries(node.store.linked(work_seq, links.TRANSFER))


def work_of(node: Node, row: EntryRow) -> int | None:
    """The work whose chain of title the entry `row` belongs to (itself, if it is a work), by
    its stored links; None for an entry outside every chain (evidence, claims, rotations)."""
    if row.kind == "work":
        return row.seq
    return next((target for target, _, rel in node.store.links_between(row.seq, row.seq + 1)
                 if rel == links.TRANSFER), None)


def title_chain_proofs(node: Node, work_seq: int, size: int) -> TitleChain:
    """The work's chain of title as a bundle carries it: the registration and its transfers in
    log order, each with its inclusion proof in the checkpoint of the block that sealed the last
    of them, and the consistency proof from the tree of `size` (the bundle's own) to that one.
    That checkpoint changes only when the title does, so the bundle stays a stable document."""
    rows = [node.store.get_entry(work_seq), *_transfer_rows(node, work_seq)]
    blk = node.store.get_block(rows[-1].block_height)  # the bundled entry is a link: size <= at
    at = blk.header.tree_size
    proofs = merkle.inclusion_proofs([r.seq for r in rows], at, node.store)
    return TitleChain(
        checkpoint=blk.checkpoint,
        consistency=tuple(h.hex() for h in merkle.consistency_proof(size, at, node.store)),
        links=tuple(ChainLink(seq=r.seq, entry=jcs.parse_object(r.data),
                              proof=tuple(h.hex() for h in p))
                    for r, p in zip(rows, proofs, strict=True)),
    )


def claim_entry(node: Node, seq: int) -> tuple[EntryRow, dict[str, Any]]:
    """The claim at `seq` (NotFound if it is not one)."""
    row = node.store.get_entry(seq)
    if row.kind != "claim":
        raise NotFound(said("entry {seq} is a {kind}, not a claim", seq=seq, kind=row.kind))
    return row, _parsed(row)


def history(node: Node, seq: int) -> dict[str, Any]:
    """The work, every transfer on it in log order (offers of assignment and their acceptance
    or withdrawal included), who held it after each, the offer still awaiting an answer, and
    each link's inclusion proof to the latest signed checkpoint (included)."""
    title, _, transfers = load_title(node, seq)
    ids = [seq] + [r.seq for r, _ in transfers]
    # The links were read from the database: the tree must hold them all (D128).
    last = node.head(max(ids) + 1)
    assert last is not None  # a work exists, so a block does
    size = last.header.tree_size
    proofs = merkle.inclusion_proofs(ids, size, node.store)
    rows = [node.store.get_entry(seq)] + [r for r, _ in transfers]  # one more small read
    links = [
        {
            "seq": r.seq,
            "kind": r.kind,
            "entry": jcs.parse(r.data),
            "leaf_hash": r.leaf_hash.hex(),
            "holder_after": holder_after(title, r.seq),
            "proof": [h.hex() for h in p],
            "bundle": f"/v1/entries/{r.seq}/bundle",
        }
        for r, p in zip(rows, proofs, strict=True)
    ]
    return {
        "work_seq": seq,
        **stated(title),
        "tree_size": size,
        "root": last.header.tree_root.hex(),
        "checkpoint": last.checkpoint,
        "links": links,
    }

