"""Offline checks of what a registry answers, against pinned log keys. The clients run these on
every answer they verify; they are public so a receipt, proof or claim check kept on disk can be
checked again later with no server.

Each check returns the verified answer as a typed result, or raises `UnverifiedAnswer` (a
`VerificationError`) saying why and carrying the answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from copyledger.client.errors import UnverifiedAnswer
from copyledger.client.results import (
    ClaimCheck,
    ConsistencyProof,
    InclusionProof,
    Receipt,
    SignedCheckpoint,
)
from copyledger.ledger import claims, jcs, merkle, note
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import fingerprint as fp
from copyledger.ledger.contact import CONTACT_FIELDS, Disclosure
from copyledger.ledger.documents import (
    Content,
    ReceiptProof,
    Work,
    parse_plain_work,
)
from copyledger.ledger.errors import CopyledgerError, VerificationError, said
from copyledger.ledger.merkle import _gc_paused
from copyledger.ledger.quick_entry import matched_plain_work
from copyledger.ledger.title import Title, chain_of_title, holder_after, stated
from copyledger.ledger.verify import verify_receipt

__all__ = [
    "Keys",
    "check_checkpoint",
    "check_claim_check",
    "check_consistency",
    "check_contact",
    "check_history",
    "check_proof",
    "check_receipt",
    "check_receipts",
    "check_sent",
    "check_sent_work",
    "verifiers",
]

Keys = Iterable[str | note.Verifier]
"""Trusted log keys: Go note verifier key strings (`name+hexkeyid+base64key`) or parsed ones."""


def verifiers(keys: Keys) -> tuple[note.Verifier, ...]:
    """Parse verifier key strings (InvalidInput for a malformed one)."""
    return tuple(k if isinstance(k, note.Verifier) else note.parse_verifier_key(k) for k in keys)


@contextmanager
def _checking(answer: Any) -> Iterator[None]:
    """Whatever goes wrong while checking an answer is a verification failure of that answer."""
    try:
        yield
    except UnverifiedAnswer as e:
        if e.answer is answer:
            raise
        raise UnverifiedAnswer(e.detail, answer) from e
    except CopyledgerError as e:
        raise UnverifiedAnswer(e.detail, answer) from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UnverifiedAnswer(said("malformed answer ({name}: {e})", name=type(e).__name__,
                                    e=e), answer) from e


def _unhex(v: str) -> bytes:
    return bytes.fromhex(v)


def check_receipt(
    registration: dict[str, Any], keys: Keys, *, file_sha256: str | None = None,
    checked: dict[str, note.Checkpoint] | None = None,
    work: Mapping[str, Any] | None = None,
    account: str | None = None,
    sent: tuple[str, Mapping[str, Any]] | None = None,
) -> Receipt:
    """A registration answer: its entry hashes to the leaf, the proof leads to the root, and a
    trusted key signed a checkpoint of that size and root; with `file_sha256`, the entry
    registers that content. `checked`: checkpoints already verified under `keys` (a batch's).
    `work`: the work's fields as sent (POST /v1/works); a new entry must then be exactly that
    work (`check_sent_work`), an earlier one (`already_registered`) only of its content.
    `sent`: another write's entry kind and fields as sent (evidence, a transfer, an answer to
    an offer, a claim), which its entry must record (`check_sent`).
    `account`: the caller's own account, which the entry must name as its registrant (D93)."""
    with _checking(registration):
        receipt = Receipt.from_dict(registration)  # parsed and its entry checked once, not twice
        verify_receipt(receipt, verifiers(keys), file_sha256=file_sha256, checked=checked)
        if work is not None:
            _against_sent(registration, receipt, work)
        if sent is not None:
            check_sent(registration["entry"], *sent)
        if account is not None:
            _registered_to(registration, receipt, account)
        return receipt


def _registered_to(registration: Any, receipt: Receipt, account: str) -> None:
    """A registration this account made (or its earlier one, `already_registered`) names this
    account as its registrant (D93): a receipt that verifies for an entry recorded under
    another account proves that account's registration, not the caller's."""
    who = getattr(receipt.entry, "registrant", None)
    if who != account:
        raise UnverifiedAnswer(said("the registry recorded this entry under the account "
                                    "{got!r}, not under this client's account {want!r}",
                                    got=who, want=account), registration)


def _against_sent(registration: dict[str, Any], receipt: Receipt,
                  work: Mapping[str, Any]) -> None:
    """A registration of `work` (as sent): a new entry is that work (`check_sent_work`); an
    earlier one (`already_registered`, the registry's word) must at least be a work, and is
    refused where the work asked for a new entry (`again`), which no earlier one answers."""
    if not receipt.already_registered:
        check_sent_work(registration["entry"], work)
    elif work.get("again"):
        raise UnverifiedAnswer(said("the registry answered an earlier registration "
                                    "(`already_registered`) though `again` asked for a new "
                                    "entry"), registration)
    elif not isinstance(receipt.entry, Work):
        raise UnverifiedAnswer(said("the registry answered an earlier registration that is not "
                                    "a work"), registration)


_SIZE: TypeAdapter[int] = TypeAdapter(int)
"""How the registry reads a work's `size` (its model's lax integer): "5", " 5 " and 5.0 are 5."""

_NOT_RECORDED = frozenset({"again", "idempotency_key"})
"""A work's fields that ask something of the request and are not part of its entry."""


def check_sent_work(entry: Any, work: Mapping[str, Any]) -> None:
    """A new registration's entry (as answered, JSON) is the work sent, with only the
    registrant and the time the registry adds: its title, creators, type, licence, metadata,
    size, media type, SM3 digest and fingerprints (normalised as the registry normalises them)
    are those asked for. Else UnverifiedAnswer naming the first field that differs: a receipt
    proves what the log holds, and a log holding another title or creator than the one sent is
    not the registration asked for, however well it verifies.

    The work is compared as it went over the wire (JSON), so a tuple sent is a list here."""
    if type(entry) is not dict:
        raise UnverifiedAnswer(said("entry: not an object"), entry)
    got: dict[str, Any] = entry
    sent: dict[str, Any] = json.loads(json.dumps(
        {k: v for k, v in work.items() if k not in _NOT_RECORDED}))
    if type(sent.get("creators")) is not list:  # a text would be split into letters below
        raise UnverifiedAnswer(said("the work sent has no list of creators, yet the registry "
                                    "answered a new entry"), entry)
    if sent.get("size") is not None:  # read as the registry reads it: "5" and 5.0 are 5
        try:
            sent["size"] = _SIZE.validate_python(sent["size"])
        except ValidationError:
            raise UnverifiedAnswer(said("the work sent has a size that is no count of bytes, "
                                        "yet the registry answered a new entry"), entry) from None
    try:
        fps = sent.get("fingerprints")
        want: dict[str, Any] = entry_mod.build_work(
            registrant=got["registrant"], received_at=got["received_at"],
            sha256=sent["sha256"], title=sent["title"], creators=sent["creators"],
            work_type=sent["work_type"], size=sent.get("size"),
            media_type=sent.get("media_type"), license=sent.get("license"),
            metadata=sent.get("metadata"), sm3=sent.get("sm3"), check=False,
            fingerprints=fp.validate_fingerprints(fps) if fps else None)
    except (CopyledgerError, KeyError, TypeError) as e:
        raise UnverifiedAnswer(said("the work sent cannot be an entry ({e!r}), yet the registry "
                                    "answered a new one", e=e), entry) from e
    _same_entry(got, want, "work")


def _same_entry(got: dict[str, Any], want: dict[str, Any], kind: str) -> None:
    """`got` (an answered entry) is `want` (the one the `kind` sent makes), else
    UnverifiedAnswer naming the first field that differs (a part of `content` by name), or,
    where none does (a member null in one and absent in the other), the kind."""
    if got == want:
        return
    pairs = [(name, got.get(name), want.get(name)) for name in sorted(got.keys() | want.keys())
             if name != "content"]
    have, asked = got.get("content"), want.get("content")
    if not isinstance(have, dict) or not isinstance(asked, dict):
        pairs.insert(0, ("content", have, asked))
    else:
        pairs[:0] = [(f"content.{part}", have.get(part), asked.get(part))
                     for part in sorted(have.keys() | asked.keys())]
    for name, value, sent_value in pairs:
        if value != sent_value:
            raise UnverifiedAnswer(said("the registry recorded {name} = {got!r}, not the "
                                        "{want!r} sent", name=name, got=value, want=sent_value),
                                   got)
    raise UnverifiedAnswer(said("the registry recorded another entry than the {kind} sent",
                                kind=kind), got)


def check_sent(entry: Any, kind: str, sent: Mapping[str, Any]) -> None:
    """A write's entry (as answered, JSON) records what was sent, with only what the registry
    adds: evidence exactly its fields; a transfer its work, recipient, type, territory, term,
    contract hash and note, from the registrant (the holder, D27), an assignment as an offer;
    an `acceptance` or `withdrawal` the offer it answers and its note; a claim exactly its
    fields, with only what the registry adds (`_claim_as_logged`). Else UnverifiedAnswer
    naming the first field that differs: a receipt that verifies for a licence to another
    account than the one named proves the wrong licence (`check_sent_work` does this for a
    work)."""
    if type(entry) is not dict:
        raise UnverifiedAnswer(said("entry: not an object"), entry)
    got: dict[str, Any] = entry
    body: dict[str, Any] = json.loads(json.dumps(dict(sent)))  # as it went over the wire
    try:
        made = {"registrant": got["registrant"], "received_at": got["received_at"],
                "check": False}
        if kind == "evidence":
            for name in ("size", "related_work"):  # read as the registry reads a count
                if body.get(name) is not None:
                    body[name] = _SIZE.validate_python(body[name])
            want = entry_mod.build_evidence(**made, **{"source_url": None, **body})
        elif kind == "transfer":
            kept = {k: v for k, v in body.items() if k not in ("work_seq", "to")}
            want = entry_mod.build_transfer(
                **made, work_seq=_SIZE.validate_python(body["work_seq"]),
                work_sha256=got["work"]["sha256"], from_account=got["registrant"],
                to_account=body["to"], needs_acceptance=body["transfer_type"] == "assignment",
                **kept)
        elif kind in ("acceptance", "withdrawal"):
            want = entry_mod.build_answer(
                **made, kind=kind, work_seq=got["work"]["seq"],
                work_sha256=got["work"]["sha256"], offer=body["offer"], note=body.get("note"))
        elif kind == "claim":
            want = entry_mod.build_claim(**made, body=_claim_as_logged(got, body))
        else:
            raise ValueError(f"no check for a {kind!r} entry sent")
    except (KeyError, TypeError, ValidationError) as e:
        raise UnverifiedAnswer(said("the registry answered a new entry the {kind} sent cannot "
                                    "be ({e!r})", kind=kind, e=e), entry) from e
    _same_entry(got, want, kind)


def _claim_as_logged(got: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A claim's fields as sent, with only what the registry adds (`record_claim`,
    `contacts.seal_claim`): the notice type by default; a count read as a count; each work
    named by seq without a hash given the work's hash; a counter-notice naming no work the
    works (else the targets) of the claim it answers; the claimant's contact details replaced
    by the names of their fields and a commitment to them (D32). Those added values are taken
    from the entry, which the registry's own checks and the bundle's proofs stand behind."""
    # (the registry drops the members sent as null: `model_dump(exclude_none=True)`)
    want = {"notice_type": "notice", **{k: v for k, v in body.items() if v is not None}}
    if want.get("refers_to") is not None:
        want["refers_to"] = _SIZE.validate_python(want["refers_to"])
    held_works = got.get("works")
    logged: list[Any] = held_works if isinstance(held_works, list) else []
    if isinstance(body.get("works"), list):
        want["works"] = [
            {**w, "sha256": logged[i].get("sha256")}
            if (isinstance(w, dict) and "seq" in w and "sha256" not in w and i < len(logged)
                and isinstance(logged[i], dict)) else w
            for i, w in enumerate(body["works"])]
    if want["notice_type"] == "counter_notice" and "works" not in want:
        if "works" in got:
            want["works"] = got["works"]
        elif "targets" not in want and "targets" in got:
            want["targets"] = got["targets"]
    claimant = body.get("claimant")
    if isinstance(claimant, dict):
        public = {k: v for k, v in claimant.items() if k not in CONTACT_FIELDS}
        if fields := [k for k in CONTACT_FIELDS if k in claimant]:
            held = got.get("claimant")
            public["contact_fields"] = fields
            public["contact_commitment"] = (held.get("contact_commitment")
                                            if isinstance(held, dict) else None)
        want["claimant"] = public
    return want


_REGISTRATION = frozenset({"seq", "leaf_hash", "block_height", "entry", "receipt"})
_WITH_MARKER = _REGISTRATION | {"already_registered"}
_PROOF = frozenset({"tree_size", "root", "proof", "checkpoint"})
_TEXT = frozenset({str})
_MANY = 64
"""Receipts past which the cycle collector is held off while they are checked: their five
objects each cannot form cycles, yet the collections they set off cost ~10 % (D83)."""

_Tree = tuple[int, str, merkle.InclusionVerifier]
"""A signed checkpoint of this answer, verified once: its size, its root as the lowercase hex
a receipt must give, and the verifier its receipts' paths share."""


def check_receipts(
    registrations: Sequence[Any], keys: Keys, *,
    file_sha256s: Sequence[str | None] | None = None,
    works: Sequence[Mapping[str, Any] | None] | None = None,
    account: str | None = None,
) -> list[Receipt | UnverifiedAnswer]:
    """A batch answer's registrations, in order, each checked in full as `check_receipt`
    checks one (its own entry's bytes hashed to its leaf, its own proof walked to a root, that
    root and size signed by a trusted key; with `file_sha256s`, the content it registers), or
    the UnverifiedAnswer refusing it. What the receipts share is checked once: a block's
    checkpoint signature, and the nodes their paths have in common
    (`merkle.InclusionVerifier`). Receipts that name two roots for one tree size are refused:
    the log signed two different trees (a split view). A receipt this path doubts (not a plain
    work, anything malformed or failing) gets `check_receipt`, which names the fault.
    `file_sha256s`, if given, has one digest (or None) per registration (else ValueError).
    `works`, if given, has per registration the work's fields as sent (POST /v1/works/batch's
    item, or None), as JSON's own types (what was sent as JSON): an entry that is exactly that
    work is then checked against it instead of parsed (D88). With `works`, a new entry must be
    the work sent (`check_sent_work`; an earlier one, `already_registered`, only of its
    content), and every entry must name one registrant: one request is one account's (D92).
    `account`: the caller's own account, which every entry must name (D93)."""
    n = len(registrations)
    for name, given in (("file digests", file_sha256s), ("works", works)):
        if given is not None and len(given) != n:
            raise ValueError(f"{len(given)} {name} for {n} registrations: give one (or None) "
                             "per registration")
    trusted = verifiers(keys)
    checked: dict[str, note.Checkpoint] = {}
    trees: dict[str, _Tree | None] = {}  # checkpoint text -> its tree, None if it fails
    roots: dict[int, str] = {}  # tree size -> the root the first receipt of that size named
    first: tuple[str | None] | None = None  # the registrant of the first work that verified
    out: list[Receipt | UnverifiedAnswer] = []
    with _gc_paused(n >= _MANY):  # thousands of acyclic results
        for i, registration in enumerate(registrations):
            want = file_sha256s[i] if file_sha256s is not None else None
            sent = works[i] if works is not None else None
            try:
                quick = _quick_receipt(registration, trusted, want, sent, checked, trees)
                if quick is None:  # checked in full, the work sent included
                    r = check_receipt(registration, trusted, file_sha256=want, checked=checked,
                                      work=sent)
                else:
                    r, is_sent = quick
                    if sent is not None and (r.already_registered or not is_sent):
                        with _checking(registration):
                            _against_sent(registration, r, sent)
                if account is not None:
                    _registered_to(registration, r, account)
                elif sent is not None:  # one key's works: one account registered them all
                    who = getattr(r.entry, "registrant", None)
                    first = first or (who,)
                    if first[0] != who:
                        raise UnverifiedAnswer(said(
                            "this answer's works are registered to {who!r} and to {first!r}: "
                            "one request is one account's", who=who, first=first[0]),
                            registration)
                rc = r.receipt
                if roots.setdefault(rc.tree_size, rc.root) != rc.root:
                    raise UnverifiedAnswer(said(
                        "two receipts of this answer give tree size {size} different roots",
                        size=rc.tree_size), registration)
                out.append(r)
            except UnverifiedAnswer as e:  # kept without its traceback, whose frame holds `out`
                out.append(e.with_traceback(None))
    return out


def _tree(cp_text: str, trusted: tuple[note.Verifier, ...],
          checked: dict[str, note.Checkpoint]) -> _Tree | None:
    """A checkpoint's tree, if a trusted key signed it (None: `check_receipt` says why)."""
    try:
        cp = checked.get(cp_text)
        if cp is None:  # as `verify_receipt` opens it: a checkpoint of the key's own log
            cp, _ = note.verify_checkpoint(cp_text, trusted)
            checked[cp_text] = cp
        return cp.size, cp.root.hex(), merkle.InclusionVerifier(cp.size, cp.root)
    except CopyledgerError:
        return None


def _quick_receipt(
    reg: Any, trusted: tuple[note.Verifier, ...], want: str | None,
    sent: Mapping[str, Any] | None,
    checked: dict[str, note.Checkpoint], trees: dict[str, _Tree | None],
) -> tuple[Receipt, bool] | None:
    """`check_receipt` of a plain work's well-formed registration at C speed where it can be;
    None for anything else or anything that fails (`check_receipt` then says why). The leaf
    and root are compared as the lowercase hex of hashes computed or verified here, and the
    proof's hashes are decoded only where they enter a walk (`InclusionVerifier.verify_hex`).
    With `sent` (the work's fields as the client sent them), an entry equal to that work is
    written from those fields (`_sent_work`) instead of parsed. Returns the receipt and
    whether its entry was found to be exactly the work sent."""
    if type(reg) is not dict or not _REGISTRATION <= reg.keys() <= _WITH_MARKER:
        return None
    seq, leaf_hex, height, rc = reg["seq"], reg["leaf_hash"], reg["block_height"], reg["receipt"]
    if (type(seq) is not int or type(height) is not int or type(rc) is not dict
            or rc.keys() != _PROOF or type(reg.get("already_registered", False)) is not bool):
        return None
    size, root_hex, path, cp_text = rc["tree_size"], rc["root"], rc["proof"], rc["checkpoint"]
    if (type(cp_text) is not str or type(size) is not int or type(path) is not list
            or not set(map(type, path)) <= _TEXT):  # compared as text below, so text only
        return None
    if cp_text in trees:
        tree = trees[cp_text]
    else:
        tree = trees[cp_text] = _tree(cp_text, trusted, checked)
    if tree is None or tree[0] != size or tree[1] != root_hex:
        return None
    made = _sent_work(sent, reg["entry"]) if sent is not None else None
    is_sent = made is not None
    if made is None:
        made = parse_plain_work(reg["entry"])
        if made is None:
            return None
    entry, data = made
    leaf = hashlib.sha256(b"\x00" + data).digest()
    if leaf.hex() != leaf_hex or (want is not None and entry.content.sha256 != want):
        return None
    try:
        tree[2].verify_hex(seq, leaf, path)
    except CopyledgerError:
        return None
    return _made(Receipt, {
        "seq": seq, "leaf_hash": leaf_hex, "block_height": height, "entry": entry,
        "receipt": _made(ReceiptProof, {"tree_size": size, "root": root_hex,
                                        "proof": tuple(path), "checkpoint": cp_text}),
        "already_registered": reg.get("already_registered")}), is_sent


_D = TypeVar("_D")


def _made(cls: type[_D], values: dict[str, Any]) -> _D:
    """The frozen dataclass `cls(**values)` for `values` naming every one of its fields, made
    without its `__init__`, which sets each field through `object.__setattr__` (a receipt's
    four objects cost ~6 µs that way, D88). Only for the document classes here, which have no
    `__post_init__`; `tests/test_batch_verify.py` holds the result equal to the `__init__`'s."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


_SENT_PLAIN = frozenset({"sha256", "title", "creators", "work_type", "size", "license", "sm3",
                         "idempotency_key", "again"})
"""A batch item's fields that make a plain work (no media type, metadata or fingerprints);
its key and `again` are not part of the entry."""


def _sent_work(sent: Mapping[str, Any], entry: Any) -> tuple[Work, bytes] | None:
    """`parse_plain_work(entry)` for an entry that is exactly the work sent (its fields, with
    the registrant and time the registry added): the entry is compared with the work sent as
    one dictionary comparison, which also holds it to JSON's own types (a tuple, a UUID or a
    datetime is not equal to the list or text expected; True and 1.0 are equal to 1, and are
    refused by the match below, which reads `true` and `1.0` as no size). Its RFC 8785 bytes
    are orjson's sorted encoding, which `quick_entry.matched_plain_work` accepts only as a
    plain work `entry.validate` accepts, with no round trip and no `Work` parsed. None for
    anything else (another entry, a doubtful value): then the entry is parsed."""
    if (type(entry) is not dict or not sent.keys() <= _SENT_PLAIN
            or type(sent.get("creators")) is not list):  # a tuple is sent as a list
        return None
    registrant, received_at = entry.get("registrant"), entry.get("received_at")
    if type(registrant) is not str or type(received_at) is not str:  # compared with themselves
        return None
    content = {"sha256": sent.get("sha256")}  # a work sent without one: the parse decides
    for name in ("size", "sm3"):
        if sent.get(name) is not None:
            content[name] = sent[name]
    expected = {"content": content, "creators": sent.get("creators"), "kind": "work",
                "received_at": received_at, "registrant": registrant,
                "schema": entry_mod.SCHEMA, "title": sent.get("title"),
                "work_type": sent.get("work_type")}
    license = sent.get("license")
    if license is not None:
        expected["license"] = license
    if entry != expected:
        return None
    data = matched_plain_work(entry)  # the types are those of `expected`: JSON's own
    if data is None:
        return None
    got = entry["content"]  # the entry's own values, as `parse_plain_work` would keep them
    work = _made(Work, {
        "registrant": registrant, "received_at": received_at,
        "content": _made(Content, {"sha256": got["sha256"], "size": got.get("size"),
                                   "media_type": None, "fingerprints": None,
                                   "sm3": got.get("sm3")}),
        "title": entry["title"], "creators": tuple(entry["creators"]),
        "work_type": entry["work_type"], "license": entry.get("license"), "metadata": None})
    return work, data


def check_contact(answer: Any) -> Disclosure:
    """A claimant's contact details (GET /v1/claims/{seq}/contact): the salt and contact open
    the commitment given with them. Compare that commitment with the one in the logged claim
    (`entry.claimant.contact_commitment`, whose inclusion a bundle proves)."""
    with _checking(answer):
        return Disclosure.from_dict(answer)


def check_checkpoint(signed_note: str, keys: Keys) -> SignedCheckpoint:
    """A C2SP checkpoint signed by a trusted key, of that key's log: its origin is the key's
    name (`note.verify_checkpoint`). Extension lines, which the spec allows, are not part of
    the result: nothing says what they vouch for."""
    with _checking(signed_note):
        cp, _ = note.verify_checkpoint(signed_note, verifiers(keys))
        return SignedCheckpoint(signed_note, cp.origin, cp.size, cp.root)


def check_proof(answer: dict[str, Any], keys: Keys) -> InclusionProof:
    """An inclusion-proof answer: the leaf is at `seq` in the tree with `root`, and, when the
    answer has one, a trusted key signed a checkpoint of that size and root."""
    with _checking(answer):
        p = InclusionProof.from_dict(answer)
        merkle.verify_inclusion(p.seq, p.tree_size, _unhex(p.leaf_hash),
                                [_unhex(h) for h in p.proof], _unhex(p.root))
        if p.checkpoint is None:
            return p
        cp = check_checkpoint(p.checkpoint, keys)
        if (cp.size, cp.root.hex()) != (p.tree_size, p.root):
            raise VerificationError("checkpoint does not match the proof")
        return replace(p, checkpoint_verified=True)


def check_consistency(
    answer: dict[str, Any], old: SignedCheckpoint, new: SignedCheckpoint
) -> ConsistencyProof:
    """A consistency-proof answer between two verified checkpoints: the log only grew."""
    with _checking(answer):
        c = ConsistencyProof.from_dict(answer)
        if old.origin != new.origin:
            raise VerificationError(said("checkpoints of two logs: {old}, {new}",
                                         old=old.origin, new=new.origin))
        if (c.old_size, c.old_root, c.new_size, c.new_root) != (
            old.size, old.root.hex(), new.size, new.root.hex()
        ):
            raise VerificationError("the proof is not between the two signed checkpoints")
        merkle.verify_consistency(old.size, new.size, old.root, new.root,
                                  [_unhex(h) for h in c.proof])
        return c


def check_history(answer: dict[str, Any], keys: Keys, work_seq: int | None = None
                  ) -> dict[str, Any]:
    """A chain of title (GET /v1/works/{seq}/history): a trusted key signed its checkpoint,
    every link's entry is in that tree, and what the answer says of the title (registrant,
    holder, licences, pending offer, each link's kind and holder after it) is what replaying
    its links says (`ledger.title`'s rules): the work first (`work_seq`, if given, the one
    asked for), then entries naming it, in log order. Otherwise those would be the operator's
    word (D31). Returned as it came, checked (see results.py); as the bundle's title step, it
    cannot show that no later transfer was left out."""
    with _checking(answer):
        cp = check_checkpoint(answer["checkpoint"], keys)
        size, root = answer["tree_size"], answer["root"]
        if (cp.size, cp.root.hex()) != (size, root):
            raise VerificationError("checkpoint does not match the chain's tree")
        for link in answer["links"]:
            leaf = merkle.leaf_hash(jcs.canonicalize(link["entry"]))
            if leaf.hex() != link["leaf_hash"]:
                raise VerificationError(said("link {seq}: the entry does not hash to its leaf",
                                             seq=link["seq"]))
            merkle.verify_inclusion(link["seq"], size, leaf, [_unhex(h) for h in link["proof"]],
                                    cp.root)
        title = _replayed(answer["links"])
        if answer["work_seq"] != title.work_seq or work_seq not in (None, title.work_seq):
            raise VerificationError(said("the chain is of work {seq}, not the one asked for",
                                         seq=title.work_seq))
        for link in answer["links"]:
            if (link["kind"], link["holder_after"]) != (
                    link["entry"]["kind"], holder_after(title, link["seq"])):
                raise VerificationError(said("link {seq}: its kind or holder after it is not "
                                             "what its entries say", seq=link["seq"]))
        if {k: answer[k] for k in ("registrant", "holder", "licences", "pending_offer")} \
                != stated(title):
            raise VerificationError("the answer's title is not what its links say")
        return answer


def _replayed(chain: Sequence[Mapping[str, Any]]) -> Title:
    """The title the links make: the first the work, each later one naming it, in log order."""
    if not chain:
        raise VerificationError("the chain of title has no links (the first must be the work)")
    # `Title.apply` refuses a link out of log order or not of this work, as the bundle's
    # title step and the audit rely on: one replay for all three.
    return chain_of_title(chain[0]["seq"], chain[0]["entry"],
                          [(link["seq"], link["entry"]) for link in chain[1:]])


def check_claim_check(answer: dict[str, Any], keys: Keys) -> ClaimCheck:
    """A claim-check answer: a trusted key named for this log (its origin) signed the SHA-256
    of its RFC 8785 JSON without `signature`, for this log at this size."""
    with _checking(answer):
        n, good = note.verify_note(answer["signature"], verifiers(keys))
        origin, size, digest = claims.parse_check_note_text(n.text)
        if not any(v.name == origin for v in good):  # as a checkpoint's (D191)
            raise VerificationError(said(
                "the claim check is for log {origin!r}, not for the log of the trusted key "
                "that signed it ({names})", origin=origin,
                names=", ".join(sorted({v.name for v in good}))))
        unsigned = {k: v for k, v in answer.items() if k != "signature"}
        if hashlib.sha256(jcs.canonicalize(unsigned)).digest() != digest:
            raise VerificationError("the signature covers a different answer")
        if (origin, size) != (answer.get("origin"), answer.get("tree_size")):
            raise VerificationError("the signature names another log or tree size")
        return ClaimCheck.from_dict(answer)
