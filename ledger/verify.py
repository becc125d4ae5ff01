"""Offline verification of an evidence bundle. No network, no server code: this file, the
modules it imports from `ledger`, `cryptography` and `asn1crypto` are all a court's expert needs
to read. docs/verification.md specifies the same steps in prose.

Each step either holds, or fails and names why; later steps are then not checked, because each
builds on the one before (a signature over a root means nothing until the root is the entry's).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import jcs, merkle, note
from copyledger.ledger.block import BlockHeader
from copyledger.ledger.bundle import FORMAT, require
from copyledger.ledger.errors import CopyledgerError, VerificationError
from copyledger.ledger.tlog_proof import parse_tlog_proof

STEPS = (
    ("format", "the bundle is a copyledger/bundle/v1 document"),
    ("file", "the file's SHA-256 is the registered content hash"),
    ("entry", "the entry's RFC 8785 bytes hash to the leaf hash"),
    ("inclusion", "the RFC 9162 inclusion proof leads from the leaf to the root"),
    ("checkpoint", "the checkpoint is signed by a trusted log key and names that root"),
    ("block", "the block header hashes to the block hash and matches the checkpoint"),
    ("block-signature", "the block note is signed by the same key and names that block"),
    ("timestamp", "RFC 3161 tokens over the block hash verify under the TSA roots"),
    ("tlog-proof", "the C2SP tlog-proof form says the same as the bundle"),
)


@dataclass
class Step:
    name: str
    title: str
    status: str = "not checked"  # "ok", "failed", "skipped", "not checked"
    detail: str = ""


@dataclass
class Report:
    steps: list[Step] = field(default_factory=lambda: [Step(n, t) for n, t in STEPS])
    trust: str = ""  # "pinned" (keys the verifier supplied) or "bundle" (keys the bundle carries)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.status in ("ok", "skipped") for s in self.steps)

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.ok,
            "failed_step": self.failed.name if self.failed else None,
            "trust": self.trust,
            "facts": self.facts,
            "steps": [vars(s) for s in self.steps],
        }


class _Fail(Exception):
    """A verification step does not hold; the message says why."""


def _hex(v: object, what: str, n: int = 32) -> bytes:
    if not isinstance(v, str) or len(v) != 2 * n:
        raise _Fail(f"{what} is not {2 * n} hex characters")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise _Fail(f"{what} is not hex") from None


def verify_bundle(
    bundle: object,
    *,
    file_sha256: str | None = None,
    trusted_keys: Sequence[str] = (),
    tsa_roots_pem: bytes | None = None,
    require_timestamp: bool = True,
) -> Report:
    """Check a bundle. Without `trusted_keys` the log keys in the bundle are used, and the
    report says so (trust = "bundle"): pin the log's published key for real assurance."""
    rep = Report()
    ctx: dict[str, Any] = {}
    checks: list[Callable[[], str]] = [
        lambda: _format(bundle, ctx),
        lambda: _file(ctx, file_sha256),
        lambda: _entry(ctx, rep),
        lambda: _inclusion(ctx),
        lambda: _checkpoint(ctx, rep, trusted_keys),
        lambda: _block(ctx, rep),
        lambda: _block_signature(ctx),
        lambda: _timestamps(ctx, rep, tsa_roots_pem, require_timestamp),
        lambda: _tlog_proof(ctx),
    ]
    for step, check in zip(rep.steps, checks, strict=True):
        try:
            detail = check()
        except (_Fail, CopyledgerError, KeyError, TypeError, ValueError) as e:
            step.status = "failed"
            step.detail = e.detail if isinstance(e, CopyledgerError) else str(e)
            break
        step.status, step.detail = ("skipped", detail[8:]) if detail.startswith("SKIPPED:") \
            else ("ok", detail)
    return rep


def _format(bundle: object, ctx: dict[str, Any]) -> str:
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise _Fail(f"not a {FORMAT} document")
    ctx["b"] = bundle
    for key, typ in (("origin", str), ("seq", int), ("leaf_hash", str), ("entry", dict),
                     ("inclusion", dict), ("checkpoint", str), ("block", dict),
                     ("timestamps", list), ("notary", dict)):
        require(bundle, key, typ)
    return f"entry {bundle['seq']} of log {bundle['origin']}"


def _file(ctx: dict[str, Any], file_sha256: str | None) -> str:
    registered = entry_mod.content_sha256(ctx["b"]["entry"])
    if file_sha256 is None:
        return f"SKIPPED:no file given; the registered SHA-256 is {registered}"
    if file_sha256 != registered:
        raise _Fail(f"the file's SHA-256 is {file_sha256}, the entry registers {registered}")
    return f"SHA-256 {registered}"


def _entry(ctx: dict[str, Any], rep: Report) -> str:
    b = ctx["b"]
    entry = entry_mod.validate(b["entry"])
    data = jcs.canonicalize(entry)
    leaf = merkle.leaf_hash(data)
    if leaf != _hex(b["leaf_hash"], "leaf_hash"):
        raise _Fail(f"SHA-256(0x00 || entry) is {leaf.hex()}, the bundle says {b['leaf_hash']}")
    ctx["leaf"], ctx["data"] = leaf, data
    rep.facts.update({"kind": entry["kind"], "registrant": entry["registrant"],
                      "received_at": entry["received_at"],
                      "sha256": entry_mod.content_sha256(entry)})
    return f"leaf hash {leaf.hex()}"


def _inclusion(ctx: dict[str, Any]) -> str:
    inc = ctx["b"]["inclusion"]
    size = require(inc, "tree_size", int, "inclusion")
    root = _hex(require(inc, "root", str, "inclusion"), "inclusion.root")
    proof = [_hex(h, "inclusion.proof hash") for h in require(inc, "proof", list, "inclusion")]
    merkle.verify_inclusion(ctx["b"]["seq"], size, ctx["leaf"], proof, root)
    ctx["size"], ctx["root"], ctx["proof"] = size, root, proof
    return f"seq {ctx['b']['seq']} in the tree of {size} entries, root {root.hex()}"


def _checkpoint(ctx: dict[str, Any], rep: Report, trusted: Sequence[str]) -> str:
    b = ctx["b"]
    if trusted:
        keys, rep.trust = list(trusted), "pinned"
    else:
        keys = [k["verifier_key"] for k in require(b["notary"], "log_keys", list, "notary")]
        rep.trust = "bundle"
    verifiers = [note.parse_verifier_key(k) for k in keys]
    n, ok = note.verify_note(b["checkpoint"], verifiers)
    cp = note.parse_checkpoint(n.text)
    if cp.origin != b["origin"]:
        raise _Fail(f"the checkpoint is for log {cp.origin!r}, not {b['origin']!r}")
    if (cp.size, cp.root) != (ctx["size"], ctx["root"]):
        raise _Fail("the signed checkpoint's size and root differ from the inclusion proof's")
    ctx["verifiers"] = ok
    how = "a key you supplied" if rep.trust == "pinned" else "the key in the bundle (not pinned)"
    return f"signed by {ok[0].name} ({how}); tree size {cp.size}"


def _block(ctx: dict[str, Any], rep: Report) -> str:
    blk = ctx["b"]["block"]
    header = BlockHeader.from_json(require(blk, "header", dict, "block"))
    bhash = _hex(require(blk, "hash", str, "block"), "block.hash")
    if header.hash() != bhash:
        raise _Fail("SHA-256 of the header's canonical JSON is not the block hash")
    if header.height != require(blk, "height", int, "block"):
        raise _Fail("block.height differs from the header's height")
    if (header.tree_size, header.tree_root) != (ctx["size"], ctx["root"]):
        raise _Fail("the block header's tree size and root differ from the checkpoint's")
    seq = ctx["b"]["seq"]
    if not header.first_seq <= seq < header.tree_size:
        raise _Fail(f"seq {seq} is not among this block's entries")
    ctx["header"], ctx["bhash"] = header, bhash
    rep.facts.update({"block_height": header.height, "sealed_at": header.sealed_at,
                      "block_hash": bhash.hex()})
    return f"block {header.height} sealed at {header.sealed_at}"


def _block_signature(ctx: dict[str, Any]) -> str:
    n, _ = note.verify_note(require(ctx["b"]["block"], "block_note", str, "block"),
                            ctx["verifiers"])
    origin, height, bhash = note.parse_block_note_text(n.text)
    if (origin, height, bhash) != (ctx["b"]["origin"], ctx["header"].height, ctx["bhash"]):
        raise _Fail("the block note names a different log, height or block hash")
    return "block note verifies"


def _timestamps(
    ctx: dict[str, Any], rep: Report, roots_pem: bytes | None, required: bool
) -> str:
    from copyledger.ledger.timestamp import verify_token  # asn1crypto only when there are tokens

    b = ctx["b"]
    stamps = b["timestamps"]
    if not stamps:
        if required:
            raise _Fail("the bundle carries no time-stamp token")
        return "SKIPPED:no time-stamp token in the bundle"
    notary = b["notary"]
    pinned = roots_pem is not None
    roots = roots_pem if roots_pem is not None else "".join(
        require(notary, "tsa_roots", list, "notary")).encode()
    chain = "".join(notary.get("tsa_chain", [])).encode() or None
    times, untrusted = [], []
    for i, t in enumerate(stamps):
        try:
            token = base64.b64decode(require(t, "token", str, f"timestamps[{i}]"), validate=True)
        except binascii.Error:
            raise _Fail(f"timestamps[{i}].token is not base64") from None
        try:
            info = verify_token(token, ctx["bhash"], roots, untrusted_pem=chain)
        except VerificationError as e:
            if e.extra.get("reason") == "untrusted":  # a TSA whose root you do not trust
                untrusted.append(str(t.get("tsa")))
                continue
            raise _Fail(f"token from {t.get('tsa')}: {e.detail}") from None
        if t.get("hash_alg", info.hash_alg) != info.hash_alg:
            raise _Fail(f"timestamps[{i}].hash_alg says {t.get('hash_alg')}, the token "
                        f"{info.hash_alg}")
        times.append(f"{t.get('tsa')}: {info.gen_time.isoformat()}")
    if not times:
        raise _Fail("no time-stamp token chains to a trusted TSA root "
                    f"(untrusted: {', '.join(untrusted)})")
    rep.facts["timestamps"] = times
    how = "roots you supplied" if pinned else "roots in the bundle (not pinned)"
    also = f"; not trusted, so not counted: {', '.join(untrusted)}" if untrusted else ""
    return f"{len(times)} token(s) under {how}: " + "; ".join(times) + also


def _tlog_proof(ctx: dict[str, Any]) -> str:
    text = ctx["b"].get("tlog_proof")
    if text is None:
        return "SKIPPED:no tlog-proof in the bundle"
    p = parse_tlog_proof(require(ctx["b"], "tlog_proof", str))
    if (p.index, p.proof, p.checkpoint, p.extra) != (
        ctx["b"]["seq"], ctx["proof"], ctx["b"]["checkpoint"], ctx["data"]
    ):
        raise _Fail("the tlog-proof differs from the bundle's entry, proof or checkpoint")
    return "same index, entry, proof and checkpoint"


def verify_receipt(
    registration: dict[str, Any],
    verifiers: Sequence[note.Verifier],
    *,
    file_sha256: str | None = None,
) -> None:
    """Check the answer to a registration (POST /v1/works, /v1/evidence): the entry's bytes
    give the leaf hash, the proof leads to the root, and a trusted key signed a checkpoint
    with that root and size. Raises VerificationError (or InvalidInput for a malformed one)."""
    entry = entry_mod.validate(require(registration, "entry", dict))
    if file_sha256 is not None and entry_mod.content_sha256(entry) != file_sha256:
        raise VerificationError("the receipt registers a different SHA-256 than the file's")
    leaf = merkle.leaf_hash(jcs.canonicalize(entry))
    try:
        if leaf != _hex(require(registration, "leaf_hash", str), "leaf_hash"):
            raise VerificationError("the entry's bytes do not hash to the receipt's leaf hash")
        rc = require(registration, "receipt", dict)
        size, root = require(rc, "tree_size", int, "receipt"), _hex(rc["root"], "receipt.root")
        proof = [_hex(h, "receipt.proof hash") for h in require(rc, "proof", list, "receipt")]
    except _Fail as e:
        raise VerificationError(str(e)) from None
    merkle.verify_inclusion(require(registration, "seq", int), size, leaf, proof, root)
    n, _ = note.verify_note(require(rc, "checkpoint", str, "receipt"), verifiers)
    cp = note.parse_checkpoint(n.text)
    if (cp.size, cp.root) != (size, root):
        raise VerificationError("the signed checkpoint's size and root differ from the proof's")
