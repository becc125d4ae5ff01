"""What anyone may read: entries, proofs, the log's signed state, blocks, search, bundles."""

from __future__ import annotations

import base64
from typing import Any

from copyledger.ledger import jcs, merkle
from copyledger.ledger.bundle import Timestamp, make_bundle
from copyledger.ledger.documents import BundleWitnessed
from copyledger.ledger.entry import valid_sha256
from copyledger.ledger.errors import InvalidInput, NotFound, said
from copyledger.ledger.sm2_timestamp import TSA_LABEL as SM2_TSA_LABEL
from copyledger.ledger.store import CachedReader, EntryRow
from copyledger.service.node import Node
from copyledger.service.title import title_chain_proofs, work_of

SEARCH_LIMIT = 1000  # the oldest registrations come first, so priority is never cut off


def entry_dict(row: EntryRow) -> dict[str, Any]:
    return {"seq": row.seq, "leaf_hash": row.leaf_hash.hex(), "block_height": row.block_height,
            "entry": jcs.parse(row.data)}


def entry(node: Node, seq: int) -> dict[str, Any]:
    return entry_dict(node.store.get_entry(seq))


def resolve_size(node: Node, tree_size: int | None, covering: int = 0) -> int:
    """`tree_size`, or the latest size when None; never past the log's end. `covering` is
    the leaves the caller needs when it names no size (an entry's seq + 1): the log's end is
    then one that holds them if the database has it (`Node.head`, D128)."""
    size = node.log_size(covering if tree_size is None else tree_size)
    if tree_size is None:
        return size
    if tree_size > size:
        raise InvalidInput(said("tree_size {tree_size} is beyond the log's size {size}",
                                tree_size=tree_size, size=size))
    return tree_size


def proof(node: Node, seq: int, tree_size: int | None) -> dict[str, Any]:
    """RFC 9162 inclusion proof of `seq` in the tree of `tree_size` leaves (default latest)."""
    size = resolve_size(node, tree_size, seq + 1)
    if seq >= size:
        raise InvalidInput(said("seq {seq} is not in a tree of size {size}", seq=seq, size=size))
    # One statement: the path's nodes fetched with the leaf and the root's (D84); the block
    # of that size is in memory after the first proof at it (D70).
    nodes = CachedReader({}, node.store, also=[(0, seq), *merkle.frontier_ids(size)])
    with node.store.reading():
        path = merkle.inclusion_proof(seq, size, nodes)
        leaf = nodes.read_hashes([(0, seq)])[0]
        block = node.store.block_for_size(size)
    return {
        "seq": seq,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "root": merkle.tree_hash(size, nodes).hex(),
        "proof": [p.hex() for p in path],
        "checkpoint": block.checkpoint if block else None,
    }


def consistency(node: Node, old: int, new: int | None) -> dict[str, Any]:
    """RFC 9162 consistency proof from tree size `old` to `new` (default latest)."""
    size = resolve_size(node, new, old)
    if old > size:
        raise InvalidInput(said("from ({old}) must not exceed to ({size})", old=old, size=size))
    # Both roots' nodes fetched with the proof's, in one statement (D84).
    nodes = CachedReader({}, node.store, also=[*merkle.frontier_ids(old),
                                                *merkle.frontier_ids(size)])
    path = merkle.consistency_proof(old, size, nodes)
    return {
        "from": old,
        "to": size,
        "old_root": merkle.tree_hash(old, nodes).hex(),
        "new_root": merkle.tree_hash(size, nodes).hex(),
        "proof": [p.hex() for p in path],
    }


def log_info(node: Node) -> dict[str, Any]:
    last = node.head()
    if last is None:
        raise NotFound("the log has no block yet")
    return {
        "origin": node.origin,
        "verifier_key": node.verifier_key,
        "crypto_suite": node.settings.crypto_suite,
        **({"sm2_verifier_key": node.sm2_signer.verifier_key} if node.sm2_signer else {}),
        "tree_size": last.header.tree_size,
        "root": last.header.tree_root.hex(),
        "block_height": last.header.height,
    }


def checkpoint(node: Node) -> str:
    """The latest signed checkpoint (a C2SP signed note)."""
    last = node.head()
    if last is None:
        raise NotFound("the log has no checkpoint yet")
    return last.checkpoint


def cosigned(node: Node, *, newest: bool = True) -> tuple[int, str] | None:
    """The latest checkpoint that a quorum of the configured witnesses cosigned: its size and
    the signed note with their cosignature lines appended (C2SP: cosignatures are note
    signatures): each witness's newest line of it (D133), or with `newest` False the first
    kept. None if there is none yet (or no witness is configured)."""
    vkeys = [w.vkey for w in node.witnesses]
    size = node.store.latest_quorum_size(vkeys, node.settings.witness_quorum) if vkeys else None
    blk = node.store.block_for_size(size) if size is not None else None
    if size is None or blk is None:
        return None
    return size, blk.checkpoint + "".join(node.store.cosignature_lines(size, vkeys,
                                                                          newest=newest))


def cosigned_checkpoint(node: Node) -> str:
    """The latest checkpoint a quorum of witnesses cosigned, with their cosignatures."""
    found = cosigned(node)
    if found is None:
        if not node.witnesses:
            raise NotFound("this registry has no witnesses configured")
        raise NotFound("no checkpoint has been cosigned by a quorum of witnesses yet")
    return found[1]


def notary_keys(node: Node) -> dict[str, Any]:
    k = node.notary_keys()
    out = {"log_keys": k.log_keys, "tsa_roots": k.tsa_roots, "tsa_chain": k.tsa_chain}
    if k.sm2_tsa_roots:  # an SM-suite registry's SM2 TSA root (D51)
        out["sm2_tsa_roots"] = k.sm2_tsa_roots
    if k.sm2_tsa_retired:  # and the SM2 TSA certificates a rotation retired (D57)
        out["sm2_tsa_retired"] = k.sm2_tsa_retired
    return out


def block(node: Node, height: int) -> dict[str, Any]:
    """A block with its tokens; an SM-suite registry's SM2/SM3 tokens (over SM3 of the
    header) apart, in `sm2_timestamps`, so `timestamps` keeps holding SHA-256 tokens only."""
    b = node.store.get_block(height)
    stamps = node.store.get_timestamps(height)
    out: dict[str, Any] = {
        "timestamps": [
            {"tsa": tsa, "hash_alg": "sha256", "token": base64.b64encode(tok).decode()}
            for tsa, tok in stamps if tsa != SM2_TSA_LABEL
        ],
        "height": b.header.height,
        "hash": b.hash.hex(),
        "header": b.header.to_json(),
        "checkpoint": b.checkpoint,
        "block_note": b.block_note,
    }
    sm2_stamps = [{"tsa": tsa, "hash_alg": "sm3", "token": base64.b64encode(tok).decode()}
                  for tsa, tok in stamps if tsa == SM2_TSA_LABEL]
    if sm2_stamps:
        out["sm2_timestamps"] = sm2_stamps
    return out


def search(node: Node, sha256: str) -> dict[str, Any]:
    """Every entry whose content has this SHA-256, oldest first, at most SEARCH_LIMIT."""
    if not valid_sha256(sha256):
        raise InvalidInput("sha256: must be 64 lowercase hex characters",
                           errors=[{"field": "sha256", "message": "must be 64 lowercase hex"}])
    rows = node.store.search_sha256(sha256, limit=SEARCH_LIMIT + 1)
    return {
        "sha256": sha256,
        "results": [entry_dict(r) for r in rows[:SEARCH_LIMIT]],
        "truncated": len(rows) > SEARCH_LIMIT,
    }


def bundle(node: Node, seq: int) -> dict[str, Any]:
    """The evidence bundle (`copyledger/bundle/v1`) of entry `seq`; for a work, or an entry in
    a work's chain of title, with every link of that chain. Each read takes its own
    connection and gives it back: holding one for the raw reads (`Store.reading`) while the
    others check out a second from the same pool let concurrent bundles exhaust it (D91)."""
    row = node.store.get_entry(seq)
    blk = node.store.get_block(row.block_height)
    size = blk.header.tree_size
    witnessed = None
    found = cosigned(node, newest=False)  # a bundle of an idle log stays the same (D133)
    if found is not None and found[0] >= size:
        proof = merkle.consistency_proof(size, found[0], node.store)
        witnessed = BundleWitnessed(checkpoint=found[1], consistency=tuple(h.hex() for h in proof))
    work_seq = work_of(node, row)
    return make_bundle(
        origin=node.origin,
        seq=seq,
        leaf_hash=row.leaf_hash,
        entry_data=row.data,
        proof=merkle.inclusion_proof(seq, blk.header.tree_size, node.store),
        header=blk.header,
        block_hash=blk.hash,
        checkpoint=blk.checkpoint,
        block_note=blk.block_note,
        timestamps=[Timestamp(t, tok) for t, tok in node.store.get_timestamps(blk.header.height)],
        notary=node.notary_keys(),
        witnessed=witnessed,
        title_chain=None if work_seq is None else title_chain_proofs(node, work_seq, size),
    )
