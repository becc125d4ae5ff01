"""Platforms' questions about a claim: its timeline, and the signed claim check (who registered
the work, first, and does the disputed content match it)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from copyledger.ledger import claims as claims_mod
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import fingerprint as fp
from copyledger.ledger import jcs, links
from copyledger.ledger.errors import InvalidInput, NotFound, said
from copyledger.ledger.store import EntryRow
from copyledger.ledger.title import chain_of_title
from copyledger.matching.scoring import compare, geometric_candidates
from copyledger.notary.signer import sign_note
from copyledger.service.i18n import DEFAULT, gettext
from copyledger.service.node import Node
from copyledger.service.operations import CheckIn
from copyledger.service.title import _parsed, claim_entry

# Each caveat has a stable code: the signed answer carries the English text (what it always
# said) and the codes beside it (`caveat_codes`), so a client shows a caveat in its reader's
# language from the code, and what is signed is the same whoever asks (D50).
CAVEAT_TEXT = {
    "not-ownership":
        "The registry proves who registered which content and when, as the operator "
        "authenticated them; it does not prove ownership of copyright.",
    "priority-not-infringement":
        "An earlier registration by someone else is evidence of priority, not of infringement.",
    "perceptual-limits":
        "Perceptual hashes (PDQ, pHash, MinHash) survive re-encoding, resizing, recolouring and "
        "light edits; with the disputed image's PDQ views and ORB keypoints, mirroring, "
        "rotation, borders, crops to half the area and screenshots are found too, each match "
        "explained. A 'none' verdict does not prove the content is different.",
    "client-fingerprints":
        "Fingerprints supplied by a client are taken as given; upload the file to have them "
        "computed by the server.",
    "audio":
        "Audio is matched by Chromaprint over the aligned overlap: it survives re-encoding, "
        "volume changes, noise and resampling, but not pitch or tempo changes, and needs about "
        "15 s of the work; a cover version or a remix is not the same recording and is not "
        "found.",
    "video":
        "Video is matched frame by frame (PDQ of one frame a second, borders trimmed): it "
        "survives re-encoding, resizing, letterboxing and crops of up to about 15 %, but not "
        "mirroring, picture-in-picture or heavy overlays. Only the first minutes of a long work "
        "are in its fingerprint (the 16 KiB entry limit); time ranges are accurate to about a "
        "second.",
    "index-rebuilding":
        "The near-duplicate index is still being rebuilt after a restart: only exact (SHA-256) "
        "matches were checked. Ask again shortly.",
    "index-behind":
        "The near-duplicate index had not yet read the newest registrations of this tree: those "
        "were checked for exact (SHA-256) matches only. Ask again shortly.",
    "exact-only":
        "No perceptual fingerprint of the disputed content was given or could be computed (it "
        "is not an image, text, audio or video this registry fingerprints): only exact "
        "(SHA-256) matches were checked.",
}
BASE_CODES = ("not-ownership", "priority-not-infringement", "perceptual-limits",
              "client-fingerprints")
MEDIA_CODES = ("audio", "video")
CAVEATS = [CAVEAT_TEXT[c] for c in BASE_CODES]
MEDIA_CAVEATS = [CAVEAT_TEXT[c] for c in MEDIA_CODES]
"""Added to a claim check whose disputed content has audio or video fingerprints."""


def caveat_text(code: str, lang: str = DEFAULT) -> str | None:
    """A caveat's words in `lang`, from its code (None for a code this version does not know:
    a newer server's; the client then shows the English text the answer carries)."""
    text = CAVEAT_TEXT.get(code)
    return None if text is None else gettext(lang, text)


def claim_timeline(node: Node, seq: int) -> dict[str, Any]:
    """A claim and every notice and counter-notice in its thread: from the notice its
    `refers_to` chain leads back to, every claim that answers one in the thread, by their
    links (never by content hash, which anyone can register again)."""
    row, claim = claim_entry(node, seq)
    root, c = row, claim
    # Up to the notice; only to earlier claims, so an entry written behind the service's back
    # cannot make this loop.
    while c["notice_type"] == "counter_notice" and isinstance(up := c.get("refers_to"), int) \
            and up < root.seq:
        try:
            root, c = claim_entry(node, up)
        except NotFound:
            break
    seen, todo = {root.seq}, [root.seq]
    while todo:  # down through every answer, and answers to answers
        for answer in node.store.linked(todo.pop(), links.REPLY):
            if answer not in seen:
                seen.add(answer)
                todo.append(answer)
    thread = node.store.get_entries(sorted(seen))
    timeline = []
    for r in thread:
        c = _parsed(r)
        timeline.append({"seq": r.seq, "notice_type": c["notice_type"],
                         "regime": c["regime"], "registrant": c["registrant"],
                         "received_at": c["received_at"], "claimant": c["claimant"]["name"],
                         "bundle": f"/v1/entries/{r.seq}/bundle"})
    return {"seq": seq, "leaf_hash": row.leaf_hash.hex(), "block_height": row.block_height,
            "entry": claim, "timeline": timeline}


def _geometric(query: dict[str, object], work_seq: int | None, found: list[dict[str, Any]],
               entries: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Geometric verification (ORB + RANSAC) of the disputed image against the claimed work
    and the closest candidates the hashes found: the stage that sees crops and screenshots."""
    out = []
    for seq in sorted(geometric_candidates(found, work_seq)):
        registered = entries[seq].get("content", {}).get("fingerprints", {}).get("orb")
        if registered is None:
            continue
        score = compare("orb", registered, query)
        if score.verdict != "none":
            out.append({"seq": seq, **score.to_json()})
    return out


_OWN_ALGORITHMS = ("pdq", "phash", "minhash", "chromaprint", "vpdq")  # (orb: `_geometric`)


def _own_match(query: dict[str, Any], seq: int, work: dict[str, Any]) -> list[dict[str, Any]]:
    """The claimed work's own fingerprints compared with the disputed content's, one to one:
    the index search keeps the oldest `DEFAULT_LIMIT` works that match, so where more older
    works share a fingerprint (flat images, a common intro) the claimed work was cut, and the
    signed verdict said "none" for the very content it registered (D179). The cost is the
    caller's own content and that one work's."""
    registered = work.get("content", {}).get("fingerprints") or {}
    out = []
    for algorithm in _OWN_ALGORITHMS:
        if algorithm in query and algorithm in registered:
            score = compare(algorithm, registered[algorithm], query[algorithm])
            if score.verdict != "none":
                out.append({"seq": seq, **score.to_json()})
    return out


_LINK_PAGE = 1000


def _work_links(node: Node, work_seq: int) -> tuple[list[int], list[int]]:
    """(transfer seqs, claim seqs) linked to the work, in log order: one query for both (a
    page of _LINK_PAGE links, and more only for a work with more)."""
    found: dict[str, list[int]] = {links.TRANSFER: [], links.CLAIM: []}
    after = -1
    while True:
        page = node.store.links_to(work_seq, _LINK_PAGE, after)
        full = len(page) == _LINK_PAGE
        if full:  # the last seq's links may go on in the next page: read it there whole
            last = page[-1][0]
            page = [(seq, rel) for seq, rel in page if seq != last]
            after = last - 1
            assert page  # an entry links to a work by a few relations, not a page of them
        for seq, rel in page:
            if rel in found:
                found[rel].append(seq)
        if not full:
            return found[links.TRANSFER], found[links.CLAIM]


def _read(node: Node, seqs: set[int], known: dict[int, dict[str, Any]]) -> None:
    """Add the entries at `seqs` to `known` (seq -> entry), in one read of those not there.

    The log's bytes are parsed with orjson, as the index rebuild parses them (D67): the
    sequencer wrote them canonical, and the strict parser's Python hooks cost ~80 us for a
    work with keypoints, which a check read up to four times each (D76)."""
    wanted = sorted(seqs - known.keys())
    if wanted:
        known.update((r.seq, orjson.loads(r.data)) for r in node.store.get_entries(wanted))


def check_claim(node: Node, q: CheckIn) -> dict[str, Any]:
    """The signed claim-check answer (blocking reads: run it off the event loop).

    Reads: the claimed work, its transfer and claim links, then every other entry the answer
    names (candidates, transfers, claims) in one query."""
    if not entry_mod.valid_registrant(q.claimant):
        raise InvalidInput("claimant: an account name (A-Z, a-z, 0-9, '.', '_', '-')")
    if (q.work_seq is None) == (q.work_sha256 is None):
        raise InvalidInput("give exactly one of work_seq and work_sha256")
    content = dict(q.content)
    sha = content.pop("sha256", None)
    if sha is not None and (not isinstance(sha, str) or not entry_mod.valid_sha256(sha)):
        raise InvalidInput("content.sha256: must be 64 lowercase hex characters")
    fps = fp.validate_fingerprints(content, field="content", allow_bare=True) if content else {}
    if sha is None and not fps:
        raise InvalidInput("content: give the disputed content's sha256 and/or fingerprints, "
                           "or upload it")

    # The claimed work.
    work_row: EntryRow | None = None
    if q.work_seq is not None:
        try:
            work_row = node.store.get_entry(q.work_seq)
        except NotFound:
            work_row = None
        if work_row is not None and work_row.kind != "work":
            raise InvalidInput(said("work_seq: entry {work_seq} is a {kind}, not a work",
                                    work_seq=q.work_seq, kind=work_row.kind))
    else:
        assert q.work_sha256 is not None
        if not entry_mod.valid_sha256(q.work_sha256):
            raise InvalidInput("work_sha256: must be 64 lowercase hex characters")
        first = node.store.first_work(q.work_sha256)
        work_row = node.store.get_entry(first) if first is not None else None
    work_seq = work_row.seq if work_row is not None else None
    entries: dict[int, dict[str, Any]] = {}
    transfers: list[int] = []
    claim_seqs: list[int] = []
    if work_row is not None:
        entries[work_row.seq] = orjson.loads(work_row.data)
        transfers, claim_seqs = _work_links(node, work_row.seq)

    # Everything that matches the disputed content.
    matches: list[dict[str, Any]] = []
    if sha is not None:
        for r in node.store.search_sha256(sha, kind="work"):
            matches.append({"seq": r.seq, "algorithm": "sha256", "distance": 0,
                           "threshold": 0, "verdict": "match"})
            entries.setdefault(r.seq, orjson.loads(r.data))
        # The claimed work itself, when others registered its content more often than the
        # search returns (its oldest 1,000): the verdict is its own match, whoever else
        # holds the hash, never "none" for the very content it registered.
        if (work_row is not None and work_row.seq not in {m["seq"] for m in matches}
                and entries[work_row.seq].get("content", {}).get("sha256") == sha):
            matches.append({"seq": work_row.seq, "algorithm": "sha256", "distance": 0,
                            "threshold": 0, "verdict": "match"})
    # The tree the answer is signed for: one that holds every entry read so far (D128). The
    # fingerprint index is waited for until it has read that tree (D130), and what it holds
    # past it is left out, so the answer says what that tree holds, no more and no less.
    last = node.head(max([*entries, *transfers, *claim_seqs], default=-1) + 1)
    if last is None:  # (only before a new log's first block)
        raise NotFound("the log has no block yet")
    size = last.header.tree_size
    codes = list(BASE_CODES)
    complete = False  # the near-duplicate search covered every work of the tree
    if fps:
        node.index.require()  # the libraries may still be being installed (D58)
        # The index's own thread reads every work of the log, whoever wrote it (D130): wait
        # (a moment at most) until it has read this tree's, then search it for this tree.
        index, through = node.index.searchable(size)
        complete = index is not None and through >= size
        if not complete:
            codes.insert(0, "index-rebuilding" if index is None else "index-behind")
        if index is not None:
            matches += [c.to_json() for c in index.search(fps) if c.seq < size]
        if work_row is not None and work_row.seq not in {m["seq"] for m in matches}:
            matches += _own_match(fps, work_row.seq, entries[work_row.seq])
        _read(node, {m["seq"] for m in matches} | set(transfers) | set(claim_seqs), entries)
        if "orb" in fps:
            matches += _geometric(fps["orb"], work_seq, matches, entries)
        if "chromaprint" in fps or "vpdq" in fps:
            codes += MEDIA_CODES
    else:
        codes.insert(0, "exact-only")
    _read(node, set(transfers) | set(claim_seqs), entries)
    title = chain_of_title(work_seq, entries[work_seq], [(t, entries[t]) for t in transfers]) \
        if work_seq is not None else None
    registered = work_row is not None
    matched_seqs = sorted({m["seq"] for m in matches})
    registrations = []
    for seq in matched_seqs:
        e = entries[seq]
        registrations.append({"seq": seq, "registrant": e["registrant"],
                              "registered_at": e["received_at"], "title": e.get("title"),
                              "bundle": f"/v1/entries/{seq}/bundle"})
    on_work = [m for m in matches if m["seq"] == work_seq]
    verdict = ("match" if any(m["verdict"] == "match" for m in on_work)
               else "possible" if on_work else "none")
    earliest = registrations[0] if registrations else None

    claims_on_work = []
    for seq in claim_seqs:
        c = entries[seq]
        claims_on_work.append({"seq": seq, "notice_type": c["notice_type"],
                               "regime": c["regime"], "registrant": c["registrant"],
                               "received_at": c["received_at"],
                               "refers_to": c.get("refers_to")})
    answer: dict[str, Any] = {
        "verdict": verdict,
        "work_registered": registered,
        "work_seq": work_row.seq if work_row is not None else None,
        "claimant": q.claimant,
        "claimant_is_registrant": bool(title and title.registrant == q.claimant),
        "claimant_is_holder": bool(title and title.holder == q.claimant),
        "holder": title.holder if title else None,
        "earliest_registration": earliest and {k: earliest[k] for k in
                                               ("seq", "registrant", "registered_at")},
        "registrations": registrations,
        "matches": matches,
        "claims": claims_on_work,
        "caveats": [CAVEAT_TEXT[c] for c in codes],
        "caveat_codes": codes,
        "index_ready": complete or (not fps and node.index.ready),
        "fingerprinted": sorted(k for k in fps if k != "views"),
        "checked_at": entry_mod.utc_now(),
        "tree_size": size,
        "origin": node.origin,
    }
    digest = hashlib.sha256(jcs.canonicalize(answer)).digest()
    text = claims_mod.check_note_text(node.origin, size, digest)
    answer["signature"] = sign_note(text, node.signers())
    return answer
