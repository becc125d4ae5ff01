"""Offline verification of an evidence bundle. No network, no server code: this file, the
modules it imports from `ledger`, `cryptography` and `asn1crypto` are all a court's expert needs
to read. docs/verification.md specifies the same steps in prose.

Each step either holds, or fails and names why; later steps are then not checked, because each
builds on the one before (a signature over a root means nothing until the root is the entry's).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from copyledger.ledger import cosignature, jcs, merkle, note, sm2
from copyledger.ledger.documents import BUNDLE_FORMAT, Bundle, Entry, Receipt, parse_entry
from copyledger.ledger.errors import (
    CopyledgerError,
    InvalidInput,
    Said,
    VerificationError,
    said,
)
from copyledger.ledger.note import BlockHeader, check_header
from copyledger.ledger.tlog_proof import parse_tlog_proof

__all__ = ["STEPS", "Report", "Status", "Step", "StepResult", "pinned_sm2_tsa_retired",
           "verify_bundle", "verify_receipt"]

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
    ("title", "every link of the work's chain of title is in the log, in order, and replays"),
    ("sm2", "an SM-suite log's SM2 key signed the checkpoint and the block note (SM2/SM3)"),
    ("witnessed", "trusted witnesses cosigned a checkpoint that extends this one"),
)


class Status(StrEnum):
    """How a step ended. The values are the JSON report's (and compare equal to those strings)."""

    PASSED = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing to check (no file given, no tlog-proof); does not fail
    NOT_CHECKED = "not checked"  # an earlier step failed, and this one builds on it


@dataclass
class StepResult:
    """One step of the report: which, what it checks, how it ended and why."""

    name: str
    title: str
    status: Status = Status.NOT_CHECKED
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "status": self.status.value,
                "detail": self.detail}


Step = StepResult  # the name the report's rows had before they were typed


_ANCHOR_FACTS = frozenset({"log_keys", "sm2_keys", "tsa_roots", "sm2_tsa_roots",
                           "sm2_tsa_retired"})
"""The facts that name the trust anchors used (pinned or the bundle's), not the evidence."""


@dataclass
class Report:
    steps: list[StepResult] = field(default_factory=lambda: [StepResult(n, t) for n, t in STEPS])
    trust: str = ""  # "pinned" (keys the verifier supplied) or "bundle" (keys the bundle carries)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.status in (Status.PASSED, Status.SKIPPED) for s in self.steps)

    @property
    def failed(self) -> StepResult | None:
        return next((s for s in self.steps if s.status is Status.FAILED), None)

    @property
    def stated_facts(self) -> dict[str, Any]:
        """The facts a report may state: all of them once every step held; of a report that
        failed, only the trust anchors the verifier used. A value the steps before the
        failure read (a registrant, a block's time) is not verified until every step holds:
        the entry step reads the registrant before the checkpoint's signature is checked."""
        if self.ok:
            return self.facts
        return {k: v for k, v in self.facts.items() if k in _ANCHOR_FACTS}

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.ok,
            "failed_step": self.failed.name if self.failed else None,
            "trust": self.trust,
            "facts": self.stated_facts,
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True)
class _Held:
    """A step that holds: PASSED, or SKIPPED when there was nothing to check."""

    detail: str
    status: Status = Status.PASSED


def _skipped(detail: str) -> _Held:
    return _Held(detail, Status.SKIPPED)


class _Fail(Exception):
    """A verification step does not hold; `detail` says why, as a `said(...)` so that the
    command line and any reader say it in their language (the step ids stay English)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail: str = Said.literal(detail)


_HEX64 = re.compile("[0-9a-f]{64}")

# A token without an accuracy field: its genTime is taken to the second, the unit of a
# GeneralizedTime without fraction (docs/verification.md section 10.3, step 8).
_NO_ACCURACY = timedelta(seconds=1)


def _hex(v: object, what: str) -> bytes:
    """A 32-byte hash as the spec writes it: exactly 64 lowercase hex characters."""
    if not isinstance(v, str) or not _HEX64.fullmatch(v):
        raise _Fail(said("{what} is not 64 lowercase hex characters", what=what))
    return bytes.fromhex(v)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _time(text: str, what: str) -> datetime:
    from copyledger.ledger.entry import parse_timestamp

    try:
        return parse_timestamp(text)
    except CopyledgerError:
        raise _Fail(said("{what} is not an RFC 3339 timestamp", what=what)) from None


def verify_bundle(
    bundle: object,
    *,
    file_sha256: str | None = None,
    trusted_keys: Sequence[str] = (),
    tsa_roots_pem: bytes | None = None,
    require_timestamp: bool = True,
    witness_keys: Sequence[str] = (),
    quorum: int = 1,
    sm2_keys: Sequence[str] = (),
    file_sm3: str | None = None,
    sm2_tsa_roots_pem: bytes | None = None,
    sm2_tsa_retired: Sequence[Mapping[str, str]] | None = None,
) -> Report:
    """Check a bundle (its JSON bytes, its JSON object, or a parsed Bundle). Bytes are read
    strictly (`jcs.parse`: a duplicate member fails the format step). Without `trusted_keys` the
    log keys in the bundle are used, and the report says so (trust = "bundle"): pin the log's
    published key for real assurance. With `witness_keys` (cosignature vkeys), the bundle must
    carry a later checkpoint cosigned by at least `quorum` of them and consistent with the
    entry's; without them that step is skipped, and says so. An SM-suite bundle's SM2 lines
    are checked under `sm2_keys` if given (pinned), else the SM2 keys it carries; a bundle
    without SM2 keys, none pinned, skips that step. `file_sm3` is checked against the entry's
    `content.sm3` where it records one. The same step checks the bundle's SM2/SM3 time-stamp
    tokens (D51) under `sm2_tsa_roots_pem` if given (pinned), else the SM2 TSA roots it
    carries, and refuses a token by a retired SM2 TSA certificate after its retirement (D57):
    retired per `sm2_tsa_retired` if given (pinned, `pinned_sm2_tsa_retired`) and per the
    bundle's own list, which alone is unpinned (D64); the report's facts say which."""
    run = _Run(Report(), bundle)
    checks: list[Callable[[], _Held]] = [
        run.format,
        lambda: run.file(file_sha256, file_sm3),
        run.entry,
        run.inclusion,
        lambda: run.checkpoint(trusted_keys),
        run.block,
        run.block_signature,
        lambda: run.timestamps(tsa_roots_pem, require_timestamp),
        run.tlog_proof,
        run.title,
        lambda: run.sm2(sm2_keys, sm2_tsa_roots_pem, sm2_tsa_retired),
        lambda: run.witnessed(witness_keys, quorum),
    ]
    for step, check in zip(run.rep.steps, checks, strict=True):
        try:
            held = check()
        # (RecursionError: a bundle nested deeper than the readers' recursion goes; OverflowError:
        # a date or number past what Python's types hold; each the bundle's, said as a failure)
        except (_Fail, CopyledgerError, KeyError, TypeError, ValueError, RecursionError,
                OverflowError) as e:
            step.status = Status.FAILED
            step.detail = (e.detail if isinstance(e, _Fail | CopyledgerError)
                           else Said.literal(str(e)))
            break
        step.status, step.detail = held.status, held.detail
    return run.rep


class _Run:
    """One verification: each step reads the bundle and what earlier steps established (set
    below as they hold), and adds what it establishes for the later ones."""

    b: Bundle
    document: Entry
    data: bytes  # the entry's RFC 8785 bytes
    leaf: bytes
    size: int
    root: bytes
    proof: list[bytes]
    verifiers: list[note.Verifier]  # the trusted keys that signed the checkpoint
    log_keys: list[note.Verifier]  # every trusted log key (a later checkpoint may use another)
    header: BlockHeader
    bhash: bytes
    sealed: datetime  # the header's sealed_at

    def __init__(self, rep: Report, raw: object) -> None:
        self.rep, self.raw = rep, raw

    def format(self) -> _Held:
        raw = self.raw
        if isinstance(raw, bytes):
            raw = jcs.parse(raw)  # InvalidInput on a duplicate member, as on any bad JSON
        if isinstance(raw, Bundle):
            self.b = raw
        elif not isinstance(raw, Mapping) or raw.get("format") != BUNDLE_FORMAT:
            raise _Fail(said("not a {format} document", format=BUNDLE_FORMAT))
        else:
            self.b = Bundle.from_dict(dict(raw))
        return _Held(said("entry {seq} of log {origin}", seq=self.b.seq, origin=self.b.origin))

    def file(self, file_sha256: str | None, file_sm3: str | None = None) -> _Held:
        from copyledger.ledger.entry import content_sha256  # before the entry is validated

        registered = content_sha256(dict(self.b.entry))
        if file_sha256 is None:
            return _skipped(said("no file given; the registered SHA-256 is {sha256}",
                                  sha256=registered))
        if file_sha256 != registered:
            raise _Fail(said("the file's SHA-256 is {got}, the entry registers {registered}",
                              got=file_sha256, registered=registered))
        content = self.b.entry.get("content")
        sm3 = content.get("sm3") if isinstance(content, Mapping) else None
        if sm3 is None or file_sm3 is None:
            return _Held(said("SHA-256 {sha256}", sha256=registered))
        if file_sm3 != sm3:
            raise _Fail(said("the file's SM3 is {got}, the entry registers {registered}",
                              got=file_sm3, registered=sm3))
        return _Held(said("SHA-256 {sha256}; SM3 {sm3}", sha256=registered, sm3=sm3))

    def entry(self) -> _Held:
        doc = self.b.document()
        data = doc.canonical_bytes()
        leaf = merkle.leaf_hash(data)
        if leaf != _hex(self.b.leaf_hash, "leaf_hash"):
            raise _Fail(said("SHA-256(0x00 || entry) is {leaf}, the bundle says {claimed}",
                             leaf=leaf.hex(), claimed=self.b.leaf_hash))
        self.document, self.data, self.leaf = doc, data, leaf
        self.rep.facts.update({"kind": doc.KIND, "registrant": doc.registrant,
                               "received_at": doc.received_at, "sha256": doc.content_sha256})
        return _Held(said("leaf hash {leaf}", leaf=leaf.hex()))

    def inclusion(self) -> _Held:
        inc = self.b.inclusion
        root = _hex(inc.root, "inclusion.root")
        proof = [_hex(h, said("inclusion.proof hash")) for h in inc.proof]
        merkle.verify_inclusion(self.b.seq, inc.tree_size, self.leaf, proof, root)
        self.size, self.root, self.proof = inc.tree_size, root, proof
        return _Held(said("seq {seq} in the tree of {size} entries, root {root}", seq=self.b.seq,
                           size=inc.tree_size, root=root.hex()))

    def checkpoint(self, trusted: Sequence[str]) -> _Held:
        if trusted:
            keys, self.rep.trust = list(trusted), "pinned"
        else:
            keys, self.rep.trust = self.b.notary.verifier_keys, "bundle"
        parsed = [note.parse_verifier_key(k) for k in keys]
        # a checkpoint of the log the key is for: its origin is the signing key's name (D191)
        cp, ok = note.verify_checkpoint(self.b.checkpoint, parsed)
        if cp.extensions:
            raise _Fail("the checkpoint has extension lines; copyledger/bundle/v1 allows none")
        if cp.origin != self.b.origin:
            raise _Fail(said("the checkpoint is for log {got}, not {origin}", got=repr(cp.origin),
                              origin=repr(self.b.origin)))
        if (cp.size, cp.root) != (self.size, self.root):
            raise _Fail("the signed checkpoint's size and root differ from the inclusion proof's")
        self.verifiers, self.log_keys = ok, parsed
        pinned = self.rep.trust == "pinned"
        signed_by = [keys[parsed.index(v)] for v in ok]
        self.rep.facts["log_keys"] = [{"verifier_key": k, "sha256": _sha256_hex(k.encode()),
                                       "pinned": pinned} for k in signed_by]
        return _Held(said("signed by {key} ({how}; SHA-256 {sha256}); tree size {size}",
                          key=signed_by[0], how=_key_how(pinned),
                          sha256=_sha256_hex(signed_by[0].encode()), size=cp.size))

    def block(self) -> _Held:
        blk = self.b.block
        header = BlockHeader.from_json(dict(blk.header))
        if header.to_json() != dict(blk.header):
            raise _Fail("the block header is not exactly the nine members of a block/v1 header "
                        "(hashes in lowercase hex, sealed_at a string)")
        bhash = _hex(blk.hash, "block.hash")
        if header.hash() != bhash:
            raise _Fail("SHA-256 of the header's canonical JSON is not the block hash")
        if header.height != blk.height:
            raise _Fail("block.height differs from the header's height")
        check_header(header)  # tree_size = first_seq + count; the genesis rules
        if (header.tree_size, header.tree_root) != (self.size, self.root):
            raise _Fail("the block header's tree size and root differ from the checkpoint's")
        if not header.first_seq <= self.b.seq < header.first_seq + header.count:
            raise _Fail(said("seq {seq} is not among this block's entries", seq=self.b.seq))
        if header.count == 1 and header.batch_root != self.leaf:
            raise _Fail("the block seals this entry alone, but its batch_root is not the "
                        "entry's leaf hash")
        sealed = _time(header.sealed_at, said("the block's sealed_at"))
        if _time(self.document.received_at, said("the entry's received_at")) > sealed:
            raise _Fail(said("the entry was received at {received_at}, after the block that "
                             "seals it was sealed ({sealed_at})",
                             received_at=self.document.received_at, sealed_at=header.sealed_at))
        self.header, self.bhash, self.sealed = header, bhash, sealed
        self.rep.facts.update({"block_height": header.height, "sealed_at": header.sealed_at,
                               "block_hash": bhash.hex()})
        return _Held(said("block {height} sealed at {sealed_at}", height=header.height,
                          sealed_at=header.sealed_at))

    def block_signature(self) -> _Held:
        n, _ = note.verify_note(self.b.block.block_note, self.verifiers)
        origin, height, bhash = note.parse_block_note_text(n.text)
        if (origin, height, bhash) != (self.b.origin, self.header.height, self.bhash):
            raise _Fail("the block note names a different log, height or block hash")
        return _Held("block note verifies")

    def timestamps(self, roots_pem: bytes | None, required: bool) -> _Held:
        from copyledger.ledger.timestamp import load_pem_certs, verify_token

        stamps, notary = self.b.timestamps, self.b.notary
        if not stamps:
            if required:
                raise _Fail("the bundle carries no time-stamp token")
            return _skipped("no time-stamp token in the bundle")
        pinned = roots_pem is not None
        roots = roots_pem if roots_pem is not None else "".join(notary.tsa_roots).encode()
        chain = "".join(notary.tsa_chain or ()).encode() or None
        # The operator's own TSA: the first tsa_roots string and the notary's TSA certificates.
        own = [*_certs(notary.tsa_roots[:1]), *_certs(notary.tsa_chain or ())]
        self.rep.facts["tsa_roots"] = [_cert_fact(c, pinned) for c in load_pem_certs(roots)]
        times: list[str] = []
        sources: list[dict[str, Any]] = []
        untrusted: list[str] = []
        for i, t in enumerate(stamps):
            try:
                token = base64.b64decode(t.token, validate=True)
            except binascii.Error:
                raise _Fail(said("{what}.token is not base64", what=f"timestamps[{i}]")) from None
            try:
                info = verify_token(token, self.bhash, roots, untrusted_pem=chain)
            except VerificationError as e:
                if e.extra.get("reason") == "untrusted":  # a TSA whose root you do not trust
                    untrusted.append(f"timestamps[{i}]")
                    continue
                raise _Fail(said("{what}: {why}", what=f"timestamps[{i}]",
                                 why=e.detail)) from None
            if (t.hash_alg or info.hash_alg) != info.hash_alg:
                raise _Fail(said("{what}.hash_alg says {claimed}, the token {alg}",
                                 what=f"timestamps[{i}]", claimed=t.hash_alg, alg=info.hash_alg))
            if info.hash_alg != "sha256":  # the imprint is (SHA-256, block.hash), §10.1
                raise _Fail(said("{what}: the token's imprint is {alg}, not the block hash's "
                                 "sha256", what=f"timestamps[{i}]", alg=info.hash_alg))
            # (a difference, not genTime + accuracy: a genTime near 9999 must not overflow)
            if self.sealed - info.gen_time > (info.accuracy if info.accuracy is not None
                                              else _NO_ACCURACY):
                raise _sealed_after(f"timestamps[{i}]", self.header.sealed_at, info.gen_time)
            subject = info.tsa_certificate.subject.rfc4514_string()
            independent = pinned and info.root not in own and info.tsa_certificate not in own
            times.append(f"{subject}: {info.gen_time.isoformat()}")
            sources.append({
                "tsa_certificate": subject, "gen_time": info.gen_time.isoformat(),
                "accuracy_seconds": (info.accuracy or _NO_ACCURACY).total_seconds(),
                "root_sha256": _der_sha256(info.root) if info.root is not None else None,
                "root_pinned": pinned, "independent": independent,
            })
        if not times:
            raise _Fail(said("no time-stamp token chains to a trusted TSA root (untrusted: "
                             "{untrusted})", untrusted=", ".join(untrusted)))
        self.rep.facts["timestamps"] = times
        self.rep.facts["time_sources"] = sources
        how = said("roots you supplied") if pinned else said("roots in the bundle (not pinned)")
        indep = sum(1 for src in sources if src["independent"])
        also = said("; not trusted, so not counted: {untrusted}",
                    untrusted=", ".join(untrusted)) if untrusted else ""
        return _Held(said("{n} token(s) under {how}: {times}; independent of the operator: "
                          "{independent}{also}", n=len(times), how=how, times="; ".join(times),
                          independent=indep, also=also))

    def tlog_proof(self) -> _Held:
        if self.b.tlog_proof is None:
            return _skipped("no tlog-proof in the bundle")
        p = parse_tlog_proof(self.b.tlog_proof)
        if (p.index, p.proof, p.checkpoint, p.extra) != (
            self.b.seq, self.proof, self.b.checkpoint, self.data
        ):
            raise _Fail("the tlog-proof differs from the bundle's entry, proof or checkpoint")
        return _Held("same index, entry, proof and checkpoint")

    def witnessed(self, vkeys: Sequence[str], quorum: int) -> _Held:
        w = self.b.witnessed
        if not vkeys and w is None:
            return _skipped("no witness keys given, so witness cosignatures were not checked")
        if not vkeys:
            return _skipped("no witness keys given, so witness cosignatures were not checked "
                            "(the bundle carries a witnessed checkpoint)")
        witnesses = [cosignature.parse_verifier_key(k) for k in vkeys]
        if not 1 <= quorum <= len(vkeys):
            raise _Fail(said("the quorum must be 1..{n} (the number of witness keys)",
                             n=len(vkeys)))
        distinct = len({v.public_key for v in witnesses})
        if quorum > distinct:
            raise _Fail(said("the witness keys given are {n} distinct key(s), fewer than the "
                             "quorum {quorum}: a key given under two names counts once",
                             n=distinct, quorum=quorum))
        if w is None:
            raise _Fail("the bundle carries no witnessed checkpoint")
        cp, _ = note.verify_checkpoint(w.checkpoint, self.log_keys)  # (of its key's log)
        if cp.extensions or cp.origin != self.b.origin:
            raise _Fail("the witnessed checkpoint is not a plain checkpoint of this log")
        proof = [_hex(h, said("witnessed.consistency hash")) for h in w.consistency]
        if cp.size < self.size:
            raise _Fail(said("the witnessed checkpoint (size {size}) is older than the entry's "
                             "({entry_size})", size=cp.size, entry_size=self.size))
        merkle.verify_consistency(self.size, cp.size, self.root, cp.root, proof)
        cosigs = cosignature.cosignatures_of(w.checkpoint, witnesses)
        # A quorum counts keys, not names: an Ed25519 cosignature does not commit to the
        # cosigner's name, so one key pinned under two names lets anyone copy its line under
        # the other name's key ID (c2sp.org/tlog-cosignature: one key per cosigner).
        key_of = {(v.name, v.key_id): v.public_key for v in witnesses}
        cosigned = {key_of[c.name, c.key_id] for c in cosigs}
        if len(cosigned) < quorum:
            raise _Fail(said("{n} valid cosignature(s) by the witness keys given, {quorum} "
                             "required", n=len(cosigned), quorum=quorum))
        self.rep.facts["witnessed_size"] = cp.size
        # One witness per key: a key pinned under two names is named once (the first name)
        one: dict[bytes, Any] = {}
        for c in cosigs:
            one.setdefault(key_of[c.name, c.key_id], c)
        self.rep.facts["witnesses"] = [
            {"name": c.name, "key_id": c.key_id.hex(), "cosigned_at": c.timestamp}
            for c in one.values()]
        return _Held(said("tree size {size}, consistent with size {entry_size}; cosigned by "
                          "{names} (quorum {quorum})", size=cp.size, entry_size=self.size,
                          names=", ".join(sorted({c.name for c in one.values()})),
                          quorum=quorum))

    def title(self) -> _Held:
        """Replay the chain of title the bundle carries. The holder rules are `ledger.title`'s
        alone (`Title.of`, `Title.apply`); this step checks only that the links are the log's:
        each included in a checkpoint this log signed that extends the entry's, each naming the
        work, in log order, the bundled entry among them."""
        from copyledger.ledger.title import Title

        c = self.b.title_chain
        if c is None:
            return _skipped("the bundle carries no chain of title, so none was checked: it "
                            "does not show who holds a work now")
        cp, _ = note.verify_checkpoint(c.checkpoint, self.log_keys)  # (of its key's log)
        if cp.extensions or cp.origin != self.b.origin:
            raise _Fail("the chain's checkpoint is not a plain checkpoint of this log")
        if cp.size < self.size:
            raise _Fail(said("the chain's checkpoint (size {size}) is older than the entry's "
                             "({entry_size})", size=cp.size, entry_size=self.size))
        proof = [_hex(h, said("title_chain.consistency hash")) for h in c.consistency]
        merkle.verify_consistency(self.size, cp.size, self.root, cp.root, proof)
        if not c.links:
            raise _Fail("the chain of title has no links (the first must be the work)")
        title: Title | None = None
        carried = False
        for i, link in enumerate(c.links):
            try:
                doc = parse_entry(link.entry)
                data = doc.canonical_bytes()
                merkle.verify_inclusion(link.seq, cp.size, merkle.leaf_hash(data),
                                        [_hex(h, said("proof hash")) for h in link.proof], cp.root)
                # `Title.apply` refuses a link out of log order or not of this work (as
                # `chain_of_title`, which `client.verify.check_history` replays with).
                if title is None:
                    title = Title.of(link.seq, doc)
                else:
                    title.apply(link.seq, doc)
            except (_Fail, CopyledgerError) as e:
                raise _Fail(said("link {i} (seq {seq}): {why}", i=i, seq=link.seq,
                                 why=e.detail)) from None
            carried = carried or (link.seq, data) == (self.b.seq, self.data)
        assert title is not None
        if not carried:
            raise _Fail(said("the bundled entry (seq {seq}) is not a link of the chain",
                             seq=self.b.seq))
        holders = [title.registrant, *(f"{li.holder_after} (seq {li.seq})" for li in title.links)]
        self.rep.facts["title_chain"] = {
            "work_seq": c.links[0].seq, "registrant": title.registrant, "holder": title.holder,
            "links": [asdict(li) for li in title.links],
            "licences": [asdict(li) for li in title.licences], "tree_size": cp.size,
        }
        return _Held(said("work {seq}: {holders}; {n} licence(s); as of tree size {size}",
                          seq=c.links[0].seq, holders=" → ".join(holders),
                          n=len(title.licences), size=cp.size))


    def sm2(self, pinned: Sequence[str], tsa_roots_pem: bytes | None,
            retired: Sequence[Mapping[str, str]] | None = None) -> _Held:
        carried = [str(k["verifier_key"]) for k in self.b.notary.sm2_keys or ()]
        if not pinned and not carried:
            if tsa_roots_pem is not None or self.b.sm2_timestamps:
                raise _Fail("the bundle carries SM2 time-stamps or SM2 TSA roots were given, "
                            "but there is no SM2 key to check its notes with")
            return _skipped("not an SM-suite log: the bundle carries no SM2 key")
        keys = list(pinned) or carried
        parsed = [sm2.parse_verifier_key(k) for k in keys]
        for what, signed in ((said("the checkpoint"), self.b.checkpoint),
                             (said("the block note"), self.b.block.block_note)):
            try:
                _, ok = note.verify_note(signed, parsed)
            except CopyledgerError as e:
                raise _Fail(said("{what}'s SM2 signature: {why}", what=what,
                                 why=e.detail)) from None
            # An SM2 note signature signs the text, not the key's name: a key named for
            # another log is no signature of this one (D191)
            ok = [v for v in ok if v.name == self.b.origin]
            if not ok:
                raise _Fail(said("{what}'s SM2 signature is by a key named for another log "
                                 "than {origin}", what=what, origin=self.b.origin))
        key = keys[parsed.index(ok[0])]
        self.rep.facts["sm2_keys"] = [{"verifier_key": key, "sha256": _sha256_hex(key.encode()),
                                       "pinned": bool(pinned)}]
        if "sm3" in self.document.to_dict().get("content", {}):
            self.rep.facts["sm3"] = self.document.to_dict()["content"]["sm3"]
        return _Held(said("SM2 with SM3 and ID {distid}, by {key} ({how}){timestamps}",
                          distid=repr(ok[0].distid.decode("latin-1")), key=key,
                          how=_key_how(bool(pinned)),
                          timestamps=self._sm2_timestamps(tsa_roots_pem, retired)))

    def _sm2_timestamps(self, roots_pem: bytes | None,
                        retired: Sequence[Mapping[str, str]] | None) -> str:
        """The SM2/SM3 tokens over SM3 of the block header (D51), under the pinned SM2 TSA
        roots or the bundle's; what the sm2 step's detail adds."""
        from copyledger.ledger.sm2_timestamp import load_certificates, verify_sm2_token

        stamps = self.b.sm2_timestamps or ()
        pinned = roots_pem is not None
        roots = roots_pem if roots_pem is not None else "".join(
            self.b.notary.sm2_tsa_roots or ()).encode()
        if not stamps:
            if pinned:
                raise _Fail("SM2 TSA roots were given, but the bundle carries no SM2 "
                            "time-stamp token")
            return said("; no SM2 time-stamp token in the bundle")
        digest = sm2.sm3(self.header.canonical_bytes())
        self.rep.facts["sm2_tsa_roots"] = [
            {"sha256": _sha256_hex(der), "pinned": pinned} for der in load_certificates(roots)]
        retirements = self._sm2_retirements(retired)
        found = []
        for i, t in enumerate(stamps):
            what = f"sm2_timestamps[{i}]"
            if (t.hash_alg or "sm3") != "sm3":
                raise _Fail(said("{what}.hash_alg says {claimed}, an SM2 token's is sm3",
                                 what=what, claimed=t.hash_alg))
            try:
                token = base64.b64decode(t.token, validate=True)
            except binascii.Error:
                raise _Fail(said("{what}.token is not base64", what=what)) from None
            try:
                info = verify_sm2_token(token, digest, roots)
            except VerificationError as e:
                raise _Fail(said("{what}: {why}", what=what, why=e.detail)) from None
            if self.sealed - info.gen_time > (info.accuracy or _NO_ACCURACY):
                raise _sealed_after(what, self.header.sealed_at, info.gen_time)
            _sm2_not_retired(what, retirements, info.tsa_certificate_sm3, info.gen_time)
            found.append({"tsa_certificate": info.tsa_subject,
                          "gen_time": info.gen_time.isoformat(),
                          "serial_number": f"{info.serial_number:x}",
                          "accuracy_seconds": (info.accuracy or _NO_ACCURACY).total_seconds(),
                          "root_sha256": info.root_sha256, "root_pinned": pinned,
                          "header_sm3": digest.hex()})
        self.rep.facts["sm2_timestamps"] = found
        how = (said("roots you supplied") if pinned
               else said("the SM2 TSA root in the bundle (not pinned)"))
        return said("; {n} SM2/SM3 time-stamp token(s) over the header's SM3 {sm3}, under "
                    "{how}: {times}", n=len(found), sm3=digest.hex(), how=how,
                    times="; ".join(f"{f['tsa_certificate']}: {f['gen_time']}" for f in found))


    def _sm2_retirements(self, pinned: Sequence[Mapping[str, str]] | None
                         ) -> list[dict[str, Any]]:
        """The SM2 TSA certificates held retired (D64): the pinned list's, then the bundle's.
        A retirement can only refuse a token, so the bundle may add one; once the list is
        pinned, a bundle that leaves one out escapes nothing. Recorded in the facts, each
        with whether it was pinned, so the output can say what the check rested on."""
        out = [{"certificate_sm3": r["certificate_sm3"], "retired_at": r["retired_at"],
                "pinned": True} for r in pinned or ()]
        held = {(r["certificate_sm3"], r["retired_at"]) for r in out}
        for r in self.b.notary.sm2_tsa_retired or ():
            sm3, at = str(r["certificate_sm3"]).lower(), str(r["retired_at"])
            if (sm3, at) not in held:  # the bundle's own word, where it adds to the pinned list
                out.append({"certificate_sm3": sm3, "retired_at": at, "pinned": False})
        self.rep.facts["sm2_tsa_retired"] = {"pinned": pinned is not None, "retired": out}
        return out


def _sm2_not_retired(what: str, retirements: Sequence[Mapping[str, Any]],
                     certificate_sm3: str, gen_time: datetime) -> None:
    """A rotation retires the SM2 TSA certificate (D57): a token it signed afterwards (its key
    kept or stolen) is refused, while its earlier tokens keep verifying."""
    for r in retirements:
        if r["certificate_sm3"] != certificate_sm3:
            continue
        retired_at = _time(r["retired_at"], "notary.sm2_tsa_retired[].retired_at")
        if gen_time > retired_at:
            raise _Fail(said("{what}: signed at {gen_time} by an SM2 TSA certificate retired "
                             "at {retired_at}", what=what, gen_time=gen_time.isoformat(),
                             retired_at=r["retired_at"]))


def pinned_sm2_tsa_retired(doc: object) -> list[dict[str, str]]:
    """The SM2 TSA retirement list a verifier pins (D64), from the JSON of the registry's
    `GET /v1/notary/keys` (it names `log_keys`; one without `sm2_tsa_retired` pins that none
    is retired) or the list itself. InvalidInput if it is neither, or an item is not exactly
    `{"certificate_sm3": 64 hex digits, "retired_at": RFC 3339}`."""
    items = doc.get("sm2_tsa_retired", []) if isinstance(doc, Mapping) else doc
    # A mapping that is not that answer (a bundle given by mistake) pins nothing.
    if not isinstance(items, list) or (isinstance(doc, Mapping) and "log_keys" not in doc):
        raise InvalidInput("the SM2 TSA retirement list is not a JSON list, nor the answer of "
                           "/v1/notary/keys")
    out = []
    for i, r in enumerate(items):
        if not _is_retirement(r):
            raise InvalidInput(said("sm2_tsa_retired[{i}] must hold exactly certificate_sm3 (64 "
                                    "hex digits) and retired_at (an RFC 3339 time)", i=i))
        out.append({"certificate_sm3": r["certificate_sm3"].lower(),
                    "retired_at": r["retired_at"]})
    return out


def _is_retirement(r: object) -> bool:
    from copyledger.ledger.entry import parse_timestamp

    if not (isinstance(r, Mapping) and set(r) == {"certificate_sm3", "retired_at"}
            and all(isinstance(v, str) for v in r.values())
            and _HEX64.fullmatch(r["certificate_sm3"].lower())):
        return False
    try:
        parse_timestamp(r["retired_at"])
    except CopyledgerError:
        return False
    return True


def _key_how(pinned: bool) -> str:
    """Where a step's key came from, as its detail says it."""
    return said("a key you supplied") if pinned else said("the key in the bundle (not pinned)")


def _sealed_after(what: str, sealed_at: str, gen_time: datetime) -> _Fail:
    """A token whose time (with its accuracy) is before the block it covers was sealed."""
    return _Fail(said("{what}: the block was sealed at {sealed_at}, after the token's time "
                      "{gen_time} (+ accuracy)", what=what, sealed_at=sealed_at,
                      gen_time=gen_time.isoformat()))


def _certs(pems: Sequence[str]) -> list[Any]:
    from copyledger.ledger.timestamp import load_pem_certs

    return load_pem_certs("".join(pems).encode()) if pems else []


def _der_sha256(cert: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return _sha256_hex(cert.public_bytes(Encoding.DER))


def _cert_fact(cert: Any, pinned: bool) -> dict[str, Any]:
    """A trust anchor as the report names it: subject, SHA-256 of its DER, pinned or not."""
    return {"subject": cert.subject.rfc4514_string(), "sha256": _der_sha256(cert),
            "pinned": pinned}


def verify_receipt(
    registration: Mapping[str, Any] | Receipt,
    verifiers: Sequence[note.Verifier],
    *,
    file_sha256: str | None = None,
    checked: dict[str, note.Checkpoint] | None = None,
) -> None:
    """Check the answer to a registration (POST /v1/works, /v1/evidence, ...), as JSON or a
    parsed Receipt: the entry's bytes give the leaf hash, the proof leads to the root, and a
    trusted key signed a checkpoint of its own log (the origin is the key's name) with that root
    and size. Raises VerificationError (or InvalidInput for a malformed one). `checked`
    remembers signed checkpoints already verified so under the same `verifiers` (a batch's
    receipts share their block's): half the cost."""
    r = registration if isinstance(registration, Receipt) else Receipt.from_dict(
        dict(registration))
    if file_sha256 is not None and r.entry.content_sha256 != file_sha256:
        raise VerificationError("the receipt registers a different SHA-256 than the file's")
    leaf = merkle.leaf_hash(r.entry.canonical_bytes())
    rc = r.receipt
    try:
        if leaf != _hex(r.leaf_hash, "leaf_hash"):
            raise VerificationError("the entry's bytes do not hash to the receipt's leaf hash")
        root = _hex(rc.root, "receipt.root")
        proof = [_hex(h, "receipt.proof hash") for h in rc.proof]
    except _Fail as e:
        raise VerificationError(e.detail) from None
    merkle.verify_inclusion(r.seq, rc.tree_size, leaf, proof, root)
    cp = checked.get(rc.checkpoint) if checked is not None else None
    if cp is None:
        # a checkpoint of the log the key is for (its origin is the signing key's name, which
        # D163 left unchecked); extension lines are allowed (non-empty) and never reported
        cp, _ = note.verify_checkpoint(rc.checkpoint, verifiers)
        if checked is not None:
            checked[rc.checkpoint] = cp
    if (cp.size, cp.root) != (rc.tree_size, root):
        raise VerificationError("the signed checkpoint's size and root differ from the proof's")
