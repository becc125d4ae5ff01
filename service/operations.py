"""The write operations of a registry: each takes the node, the authenticated principal and a
typed input, and returns a typed result or raises a domain error.

The HTTP routes and the CLI are thin adapters over these; nothing here knows about HTTP. Every
write ends in `record`, the one path from an entry to a durable receipt.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import fingerprint as fp
from copyledger.ledger import sm2
from copyledger.ledger.documents import parse_entry
from copyledger.ledger.errors import CopyledgerError, Forbidden, InvalidInput, NotFound
from copyledger.ledger.links import LINKED_KINDS, links_of
from copyledger.ledger.sequencer import Pending, Receipt
from copyledger.matching import MAX_FINGERPRINT_BYTES, fingerprints_for
from copyledger.service.apikeys import Principal
from copyledger.service.inputs import ClaimIn, EvidenceIn, TransferIn, WorkIn
from copyledger.service.node import Node, init_notary_keys, open_store
from copyledger.service.rotation import retired_keys, rotate, sha256_text
from copyledger.service.settings import Settings
from copyledger.service.title import claim_entry, load_title


@dataclass(frozen=True)
class Recorded:
    """A durable entry: its receipt (inclusion proof to the sealing block's checkpoint) and
    the canonical entry as recorded."""

    receipt: Receipt
    entry: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The registration answer (`RegistrationOut`)."""
        r = self.receipt
        return {
            "seq": r.seq,
            "leaf_hash": r.leaf_hash.hex(),
            "block_height": r.block_height,
            "entry": self.entry,
            "receipt": {
                "tree_size": r.tree_size,
                "root": r.root.hex(),
                "proof": [p.hex() for p in r.proof],
                "checkpoint": r.checkpoint,
            },
        }


@dataclass(frozen=True)
class FileFacts:
    """What the registry learns from an uploaded file before discarding it."""

    sha256: str
    size: int
    media_type: str | None
    fingerprints: dict[str, Any]
    sm3: str | None = None  # computed for SM-suite registries only (D40)


async def record(node: Node, entry: dict[str, Any]) -> Recorded:
    """Validate and canonicalise an entry, hand it to the sequencer, and wait for its receipt,
    which exists only once the block holding it is durably committed."""
    entry, data = entry_mod.encode(entry)
    kind = str(entry["kind"])
    pending = Pending(data=data, kind=kind, sha256=entry_mod.content_sha256(entry),
                      registrant=str(entry["registrant"]),
                      links=links_of(parse_entry(entry)) if kind in LINKED_KINDS else ())
    receipt = await node.sequencer.submit_async(pending)
    return Recorded(receipt, entry)


def _facts(file: IO[bytes], sha256: str, size: int, media_type: str | None,
           sm3: bool = False) -> FileFacts:
    media = (media_type or "").split(";")[0].strip().lower() or None
    if media == "application/octet-stream":
        media = None
    fps: dict[str, Any] = {}
    if media and size <= MAX_FINGERPRINT_BYTES:
        file.seek(0)
        fps = dict(fingerprints_for(file, media))
    sm3_hex = None
    if sm3:
        file.seek(0)
        sm3_hex = sm2.sm3_file(file)
    return FileFacts(sha256, size, media, fps, sm3_hex)


FINGERPRINT_WORKERS = 2
"""Uploads fingerprinted at once, however many arrive: each decode may take up to
`matching.MAX_DECODE_BYTES`, so this, not the number of clients, bounds that memory."""
_fingerprinting = ThreadPoolExecutor(FINGERPRINT_WORKERS, thread_name_prefix="fingerprint")


class Upload:
    """A file as it arrives: hashed chunk by chunk and spooled to an anonymous temporary file,
    so an upload is never held in memory whole, and is hashed by the time its last byte is in.
    `write` and `close` block on the disk: call them off the event loop."""

    def __init__(self, media_type: str | None) -> None:
        self.media_type = media_type
        self.size = 0
        self._hash = hashlib.sha256()
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()

    def write(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self._hash.update(chunk)
            self._file.write(chunk)
            self.size += len(chunk)

    def close(self) -> None:
        self._file.close()

    async def describe(self, sm3: bool = False) -> FileFacts:
        """The facts of the complete upload; fingerprinting runs in the bounded pool. With
        `sm3` (an SM-suite registry) the spooled file is read again for its SM3 digest."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _fingerprinting, _facts, self._file, self._hash.hexdigest(), self.size,
            self.media_type, sm3)


async def register_work(
    node: Node, who: Principal, w: WorkIn, computed: dict[str, Any] | None = None
) -> Recorded:
    """Register a work by its hash. `computed` holds fingerprints the server computed from an
    upload; otherwise fingerprints the client sent are validated as given."""
    if computed is not None:
        fps = computed or None
    else:
        fps = fp.validate_fingerprints(w.fingerprints) if w.fingerprints else None
    if node.settings.sm_suite and w.sm3 is None:
        raise InvalidInput(
            "sm3: this registry uses the SM suite, so a work records its SM3 digest too "
            "(copyledger register computes it)",
            errors=[{"field": "sm3", "message": "required by this SM-suite registry"}])
    entry = entry_mod.build_work(
        registrant=who.account, received_at=entry_mod.utc_now(), sha256=w.sha256, size=w.size,
        media_type=w.media_type, title=w.title, creators=w.creators, work_type=w.work_type,
        license=w.license, metadata=w.metadata, fingerprints=fps, check=False, sm3=w.sm3,
    )
    recorded = await record(node, entry)
    if fps:  # matchable at once
        node.index.add(recorded.receipt.seq, recorded.entry["content"]["fingerprints"])
    return recorded


def _require_work(node: Node, seq: int, field: str) -> None:
    msg = None
    try:
        row = node.store.get_entry(seq)
        if row.kind != "work":
            msg = f"entry {seq} is a {row.kind}, not a work"
    except NotFound:
        msg = f"no entry with seq {seq}"
    if msg:
        raise InvalidInput(f"{field}: {msg}", errors=[{"field": field, "message": msg}])


async def deposit_evidence(node: Node, who: Principal, ev: EvidenceIn) -> Recorded:
    """Record the hash of captured evidence, optionally tied to a registered work."""
    if ev.related_work is not None:
        _require_work(node, ev.related_work, "related_work")
    entry = entry_mod.build_evidence(
        registrant=who.account, received_at=entry_mod.utc_now(), sha256=ev.sha256,
        source_url=ev.source_url, captured_at=ev.captured_at, capture_method=ev.capture_method,
        description=ev.description, related_work=ev.related_work, size=ev.size,
        media_type=ev.media_type, metadata=ev.metadata, warc_records=ev.warc_records,
        check=False,
    )
    return await record(node, entry)


async def record_transfer(node: Node, who: Principal, t: TransferIn) -> Recorded:
    """Record an assignment or licence; only the work's current holder may."""
    # One transfer per work at a time, until sealed, so the holder check cannot race.
    async with node.transfer_locks.setdefault(t.work_seq, asyncio.Lock()):
        try:
            title, work, _ = load_title(node, t.work_seq)
        except NotFound:
            raise InvalidInput(f"work_seq: no entry with seq {t.work_seq}",
                               errors=[{"field": "work_seq", "message": "no such entry"}]) from None
        if title.holder != who.account:
            raise Forbidden(f"only the current holder of work {t.work_seq} ({title.holder!r}) "
                            f"may transfer or license it, not {who.account!r}")
        entry = entry_mod.build_transfer(
            registrant=who.account, received_at=entry_mod.utc_now(), work_seq=t.work_seq,
            work_sha256=entry_mod.content_sha256(work), from_account=title.holder,
            to_account=t.to, transfer_type=t.transfer_type, territory=t.territory,
            term_start=t.term_start, term_end=t.term_end, terms_sha256=t.terms_sha256,
            note=t.note, check=False,
        )
        return await record(node, entry)


async def record_claim(node: Node, who: Principal, c: ClaimIn) -> Recorded:
    """Record a takedown notice or counter-notice (complete for its regime, or refused)."""
    body = c.model_dump(exclude_none=True)
    for i, w in enumerate(body.get("works", [])):
        # A seq that is no count (text, a fraction, past 2**53-1) is left for the entry rules
        # to name; looking it up could only fail in the database.
        if entry_mod.valid_count(w.get("seq")):
            try:
                row = node.store.get_entry(w["seq"])
            except NotFound:
                raise InvalidInput(f"works[{i}].seq: no entry {w['seq']}") from None
            if row.kind != "work":
                raise InvalidInput(f"works[{i}].seq: entry {w['seq']} is a {row.kind}")
            if w.setdefault("sha256", row.sha256) != row.sha256:
                raise InvalidInput(f"works[{i}]: sha256 is not that of work {w['seq']}")
    if c.notice_type == "counter_notice":
        if c.refers_to is None:
            raise InvalidInput("refers_to: a counter-notice names the claim it answers",
                               missing=["refers_to"])
        try:
            _, claim = claim_entry(node, c.refers_to)
        except NotFound as e:
            raise InvalidInput(f"refers_to: {e.detail}") from None
        body.setdefault("works", claim.get("works", []))
    entry = entry_mod.build_claim(registrant=who.account, received_at=entry_mod.utc_now(),
                                  body=body, check=False)
    return await record(node, entry)


@dataclass(frozen=True)
class Rotation:
    """A completed key rotation and the entry that records it."""

    old_verifier_key: str
    new_verifier_key: str
    overlap_until: str
    seq: int
    block_height: int

    def to_dict(self) -> dict[str, Any]:
        return {"old_verifier_key": self.old_verifier_key,
                "new_verifier_key": self.new_verifier_key,
                "overlap_until": self.overlap_until, "seq": self.seq,
                "block_height": self.block_height}


def rotate_keys(s: Settings, overlap: timedelta) -> Rotation:
    """Retire the log key and TSA certificate, create new ones, and record the rotation in a
    block signed by both keys. The server must be stopped (the sequencer lock says so)."""
    store = open_store(s)
    try:
        try:
            store.acquire_sequencer_lock()  # refuse while a server sequences this log
        except CopyledgerError as e:
            raise type(e)(f"{e.detail} (stop the server before rotating)", **e.extra) from None
        store.release_sequencer_lock()
        genesis = store.get_block(0) if store.latest_block() else None
    finally:
        store.close()
    done = retired_keys(s)
    valid_from = done[-1].valid_until if done else (genesis.header.sealed_at if genesis else None)
    old = rotate(s, overlap=overlap, valid_from=valid_from)
    _, new_vkey = init_notary_keys(s)
    node = Node.open(s)
    node.start()
    try:
        entry: dict[str, object] = {
            "schema": entry_mod.SCHEMA, "kind": "rotation", "registrant": "notary",
            "received_at": entry_mod.utc_now(), "content": {"sha256": sha256_text(new_vkey)},
            "old_verifier_key": old.verifier_key, "new_verifier_key": new_vkey,
            "old_tsa_root_sha256": sha256_text(old.tsa_root),
            "new_tsa_root_sha256": sha256_text((s.tsa_dir / "root.pem").read_text()),
            "overlap_until": old.overlap_until,
        }
        _, data = entry_mod.encode(entry)
        receipt = node.sequencer.submit(Pending(data, "rotation", sha256_text(new_vkey),
                                                "notary")).result(60)
    finally:
        node.stop()
    return Rotation(old.verifier_key, new_vkey, old.overlap_until, receipt.seq,
                    receipt.block_height)
