"""What the log explorer shows: the log's signed state, recent blocks and entries, an entry with
its proof and links, a block, search by content hash.

Every page reads a bounded range: at most `MAX_ROWS` rows, found by key (seq or height), never
by offset, so no page costs more than its own rows whatever the log's size. The explorer pages
(`api/explorer.py`) only render what these functions return.
"""

from __future__ import annotations

import re
from typing import Any

from copyledger.ledger import jcs
from copyledger.ledger.entry import valid_sha256
from copyledger.ledger.errors import InvalidInput, NotFound, said
from copyledger.ledger.store import BlockRow, EntryRow
from copyledger.service import accounts, claims, reads, title
from copyledger.service.dates import human_time
from copyledger.service.node import Node

ROWS = 20  # rows on a page unless asked otherwise
MAX_ROWS = 100
RECENT_BLOCKS = 10


def _rows(limit: int | None) -> int:
    if limit is None:
        return ROWS
    if not 1 <= limit <= MAX_ROWS:
        raise InvalidInput(said("limit: between 1 and {MAX_ROWS}", MAX_ROWS=MAX_ROWS),
                           errors=[{"field": "limit", "message": f"1 to {MAX_ROWS}"}])
    return limit


def summary(row: EntryRow) -> dict[str, Any]:
    """One entry as a list row: what it is, who recorded it, when, and what names it (the
    registrant's title or description, else a claim's or transfer's parties as recorded, which
    the page says in its reader's language)."""
    e = jcs.parse(row.data)
    assert isinstance(e, dict)  # the sequencer stores only validated JSON objects
    content = e.get("content") or e.get("work") or {}
    return {
        "seq": row.seq,
        "kind": row.kind,
        "registrant": row.registrant,
        "received_at": e.get("received_at", ""),
        "when": human_time(str(e.get("received_at", ""))),
        "label": _label(e),
        "parties": _parties(e),
        "sha256": content.get("sha256", row.sha256) if isinstance(content, dict) else row.sha256,
        "block_height": row.block_height,
    }


def _label(e: dict[str, Any]) -> str:
    """The words the registrant gave the entry (its title or description), else nothing; a
    claim or transfer is named by its `_parties`, which the page says in its language."""
    for key in ("title", "description"):
        if isinstance(e.get(key), str) and e[key]:
            return str(e[key])
    return ""


def _parties(e: dict[str, Any]) -> dict[str, str] | None:
    """What names a claim (its notice type and claimant) or a transfer (its type and parties),
    as recorded; None for another entry, or one with a title or description."""
    if _label(e):
        return None
    if isinstance(e.get("claimant"), dict):
        return {"notice_type": str(e.get("notice_type", "")),
                "claimant": str(e["claimant"].get("name", ""))}
    if "from" in e and "to" in e:
        return {"transfer_type": str(e.get("transfer_type", e.get("kind", ""))),
                "from": str(e["from"]), "to": str(e["to"])}
    return None


def _block_row(b: BlockRow) -> dict[str, Any]:
    h = b.header
    return {"height": h.height, "hash": b.hash.hex(), "first_seq": h.first_seq,
            "count": h.count, "tree_size": h.tree_size, "root": h.tree_root.hex(),
            "sealed_at": h.sealed_at, "when": human_time(h.sealed_at)}


def overview(node: Node) -> dict[str, Any]:
    """The home page: the log's identity, its latest signed state, the newest blocks and
    entries (None for the state while the log has no block)."""
    last = node.head()
    state = None
    if last is not None:
        state = {**_block_row(last), "checkpoint": last.checkpoint}
    return {
        "origin": node.origin,
        "verifier_key": node.verifier_key,
        "state": state,
        "blocks": _blocks_page(node, last, None, RECENT_BLOCKS)["rows"],
        "entries": _entries_page(node, last, None, None)["rows"],
    }


def entries_page(node: Node, before: int | None, limit: int | None) -> dict[str, Any]:
    """Entries with seq < `before` (default: all), newest first, and the `before` values of the
    older and newer pages (None when there is none)."""
    return _entries_page(node, node.head(), before, limit)


def _entries_page(node: Node, last: BlockRow | None, before: int | None,
                  limit: int | None) -> dict[str, Any]:
    """`entries_page` in the tree of `last` (one page shows one tree, D128)."""
    n = _rows(limit)
    size = last.header.tree_size if last is not None else 0
    hi = size if before is None else min(before, size)
    lo = max(0, hi - n)
    rows = node.store.get_entries(range(lo, hi))[::-1]
    return {"rows": [summary(r) for r in rows], "older": lo if lo > 0 else None,
            "newer": hi + n if hi < size else None, "limit": n, "tree_size": size}


def blocks_page(node: Node, before: int | None, limit: int | None) -> dict[str, Any]:
    """Blocks with height < `before` (default: all), newest first, with the pages around."""
    return _blocks_page(node, node.head(), before, limit)


def _blocks_page(node: Node, last: BlockRow | None, before: int | None,
                 limit: int | None) -> dict[str, Any]:
    """`blocks_page` up to `last`."""
    n = _rows(limit)
    end = last.header.height + 1 if last is not None else 0
    hi = end if before is None else min(before, end)
    lo = max(0, hi - n)
    rows = node.store.get_blocks(lo, hi)[::-1]
    return {"rows": [_block_row(b) for b in rows], "older": lo if lo > 0 else None,
            "newer": hi + n if hi < end else None, "limit": n}


def entry_view(node: Node, seq: int, after: int = -1) -> dict[str, Any]:
    """An entry: its summary and record, the inclusion proof to the latest checkpoint, the
    block that sealed it, the entries it names and (a page of) those that name it."""
    row = node.store.get_entry(seq)
    out = [{"rel": rel, "seq": target} for target, _, rel in node.store.links_between(seq, seq + 1)]
    incoming = node.store.links_to(seq, MAX_ROWS + 1, after)
    shown = incoming[:MAX_ROWS]
    kinds = {r.seq: r for r in node.store.get_entries([s for s, _ in shown])}
    profile = accounts.get_profile(node.store, row.registrant)
    return {
        **summary(row),
        "entry": jcs.parse(row.data),
        "leaf_hash": row.leaf_hash.hex(),
        "proof": reads.proof(node, seq, None),
        "block": _block_row(node.store.get_block(row.block_height)),
        "links_out": out,
        "links_in": [{"rel": rel, **summary(kinds[s])} for s, rel in shown],
        "links_in_more": shown[-1][0] if len(incoming) > MAX_ROWS else None,
        "registrant_profile": profile.to_dict() if profile is not None else None,
    }


def block_view(node: Node, height: int, after: int | None, limit: int | None) -> dict[str, Any]:
    """A block: its header, time-stamps, signed notes, and a page of its entries (seq >
    `after`), oldest first."""
    n = _rows(limit)
    b = reads.block(node, height)
    h = node.store.get_block(height).header
    end = h.first_seq + h.count
    lo = h.first_seq if after is None else max(h.first_seq, after + 1)
    hi = min(end, lo + n)
    rows = node.store.get_entries(range(lo, hi)) if lo < hi else []
    return {**b, **_block_row(node.store.get_block(height)),
            "tsas": [t["tsa"] for t in (*b["timestamps"], *b.get("sm2_timestamps", ()))],
            "rows": [summary(r) for r in rows],
            "next": hi - 1 if hi < end else None, "limit": n}


def find(node: Node, query: str, after: int | None, limit: int | None) -> dict[str, Any]:
    """Search the log: an entry number goes to that entry; a SHA-256 (any case) lists the
    entries with that content, oldest first, a page at a time."""
    n = _rows(limit)
    q = query.strip().lower()
    if re.fullmatch(r"[0-9]{1,18}", q):
        seq = int(q)
        if seq >= node.log_size(seq + 1):
            raise NotFound(said("no entry with seq {seq}", seq=seq))
        return {"query": q, "seq": seq}
    if not valid_sha256(q):
        raise InvalidInput("q: an entry number, or a SHA-256 of 64 hex characters",
                           errors=[{"field": "q", "message": "entry number or SHA-256"}])
    rows = node.store.search_sha256(q, limit=n + 1, after=-1 if after is None else after)
    return {"query": q, "sha256": q, "rows": [summary(r) for r in rows[:n]],
            "next": rows[n - 1].seq if len(rows) > n else None, "limit": n}


def title_view(node: Node, work_seq: int) -> dict[str, Any]:
    """A work's chain of title (`title.history`) with each record's time in words."""
    h = title.history(node, work_seq)
    for link in h["links"]:
        link["when"] = human_time(str(link["entry"].get("received_at", "")))
    return h


def claim_view(node: Node, seq: int) -> dict[str, Any]:
    """A claim's timeline (`claims.claim_timeline`) with each notice's time in words."""
    c = claims.claim_timeline(node, seq)
    for notice in c["timeline"]:
        notice["when"] = human_time(str(notice["received_at"]))
    return c
