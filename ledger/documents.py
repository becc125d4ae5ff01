"""Typed documents: a frozen class per entry kind, the evidence bundle, the registration receipt
and the claim-check answer, each with `from_dict` and `to_dict`.

Modelled on python-tuf's Metadata API. `from_dict` is strict and reports every bad field at once
(one InvalidInput whose `errors` lists `{"field", "message"}`); `to_dict` gives back exactly the
JSON it was read from, so `to_dict(from_dict(d)) == d` and the RFC 8785 bytes the log commits to
never change by passing through a class. Entries are checked by `ledger.entry.validate`, the one
set of rules for what may enter the log; these classes only give the checked values names.

Free-form parts stay JSON mappings where a class would add nothing: `metadata` (the registrant's
own JSON), `fingerprints` (their schema belongs to `ledger.fingerprint`), a bundle's log-key
records and block header (the verifier's steps read them), and a claim check's match scores
(their shape is `ledger.fingerprint.score_json`'s).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self, TypeAlias, TypeVar

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import jcs
from copyledger.ledger.errors import InvalidInput, said
from copyledger.ledger.quick_entry import quick_canonical

__all__ = [
    "Acceptance",
    "Bundle",
    "BundleBlock",
    "BundleTimestamp",
    "ChainLink",
    "CheckClaim",
    "CheckRegistration",
    "Claim",
    "ClaimCheck",
    "Claimant",
    "ClaimedWork",
    "Content",
    "Entry",
    "Evidence",
    "Inclusion",
    "NotaryPublicKeys",
    "Receipt",
    "ReceiptProof",
    "Rotation",
    "Statements",
    "Target",
    "Term",
    "TitleChain",
    "Transfer",
    "WarcRecord",
    "Withdrawal",
    "Work",
    "WorkRef",
    "parse_entry",
    "parse_logged_entry",
    "parse_plain_work",
]

JSON: TypeAlias = dict[str, Any]
_T = TypeVar("_T")


# ---------------------------------------------------------------- shared machinery


def _json(value: object) -> Any:
    """A document part back to JSON: dataclasses by their fields (None left out), tuples as
    lists, free-form mappings copied so the caller cannot change the document through them."""
    if isinstance(value, _Part):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return copy.deepcopy(value)


class _Part:
    """A JSON object whose members are the dataclass fields; `JSON_NAMES` renames the few whose
    JSON name is a Python keyword (`from`), and a field left as None is left out."""

    JSON_NAMES: ClassVar[Mapping[str, str]] = {}

    def to_dict(self) -> JSON:
        out: JSON = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                out[self.JSON_NAMES.get(f.name, f.name)] = _json(value)
        return out


def _opt_tuple(items: list[JSON] | None, parse: Callable[[JSON], _T]) -> tuple[_T, ...] | None:
    return None if items is None else tuple(parse(i) for i in items)


# ---------------------------------------------------------------- entry parts


@dataclass(frozen=True, kw_only=True)
class Content(_Part):
    """What a work, evidence deposit or rotation registers: the bytes' SHA-256 and, optionally,
    their size, media type and perceptual fingerprints."""

    sha256: str
    size: int | None = None
    media_type: str | None = None
    fingerprints: Mapping[str, Any] | None = None
    sm3: str | None = None  # the SM3 digest, recorded by SM-suite registries (D40)

    @classmethod
    def _from(cls, d: JSON) -> Content:
        fingerprints = d.get("fingerprints")  # deep-copied only if there are any: hot (D83)
        return cls(sha256=d["sha256"], size=d.get("size"), media_type=d.get("media_type"),
                   fingerprints=None if fingerprints is None else copy.deepcopy(fingerprints),
                   sm3=d.get("sm3"))


@dataclass(frozen=True, kw_only=True)
class WarcRecord(_Part):
    """One WARC response record of a web capture, by its payload digest."""

    target_uri: str
    warc_date: str
    payload_sha256: str
    record_id: str | None = None

    @classmethod
    def _from(cls, d: JSON) -> WarcRecord:
        return cls(target_uri=d["target_uri"], warc_date=d["warc_date"],
                   payload_sha256=d["payload_sha256"], record_id=d.get("record_id"))


@dataclass(frozen=True, kw_only=True)
class WorkRef(_Part):
    """A transfer's work: its sequence number and content hash, both, so neither can drift."""

    seq: int
    sha256: str

    @classmethod
    def _from(cls, d: JSON) -> WorkRef:
        return cls(seq=d["seq"], sha256=d["sha256"])


@dataclass(frozen=True, kw_only=True)
class Term(_Part):
    """When a transfer takes and ceases to take effect (either may be open)."""

    start: str | None = None
    end: str | None = None

    @classmethod
    def _from(cls, d: JSON) -> Term:
        return cls(start=d.get("start"), end=d.get("end"))


@dataclass(frozen=True, kw_only=True)
class Claimant(_Part):
    """Who gives a notice: the regimes require different ways to reach them."""

    name: str
    email: str | None = None  # email, phone, address: only in claims logged before D32
    phone: str | None = None
    address: str | None = None
    contact_fields: tuple[str, ...] | None = None  # which of them were given ...
    contact_commitment: str | None = None  # ... and the commitment to them (`ledger.contact`)
    authority: str | None = None
    account: str | None = None

    @classmethod
    def _from(cls, d: JSON) -> Claimant:
        fields = d.get("contact_fields")
        return cls(name=d["name"], email=d.get("email"), phone=d.get("phone"),
                   address=d.get("address"),
                   contact_fields=None if fields is None else tuple(fields),
                   contact_commitment=d.get("contact_commitment"),
                   authority=d.get("authority"), account=d.get("account"))


@dataclass(frozen=True, kw_only=True)
class ClaimedWork(_Part):
    """A work a notice relies on: by log seq, by content hash and/or described in words."""

    seq: int | None = None
    sha256: str | None = None
    description: str | None = None

    @classmethod
    def _from(cls, d: JSON) -> ClaimedWork:
        return cls(seq=d.get("seq"), sha256=d.get("sha256"), description=d.get("description"))


@dataclass(frozen=True, kw_only=True)
class Target(_Part):
    """The material complained of: where it is, and optionally its content hash."""

    url: str
    sha256: str | None = None

    @classmethod
    def _from(cls, d: JSON) -> Target:
        return cls(url=d["url"], sha256=d.get("sha256"))


@dataclass(frozen=True, kw_only=True)
class Statements(_Part):
    """The sworn statements a regime asks for; absent is not the same as false."""

    good_faith: bool | None = None
    accuracy: bool | None = None
    perjury: bool | None = None
    mistake: bool | None = None
    jurisdiction_consent: bool | None = None

    @classmethod
    def _from(cls, d: JSON) -> Statements:
        return cls(**{k: d.get(k) for k in ("good_faith", "accuracy", "perjury", "mistake",
                                            "jurisdiction_consent")})


# ---------------------------------------------------------------- entries


@dataclass(frozen=True, kw_only=True)
class _Entry(_Part):
    """What every entry kind has; `from_dict` and `to_dict` are shared."""

    KIND: ClassVar[str]
    registrant: str
    received_at: str

    @classmethod
    def from_dict(cls, d: object) -> Self:
        """Validate `d` (every bad field reported at once) and read it into this class."""
        entry = entry_mod.validate(d)
        if entry["kind"] != cls.KIND:
            raise InvalidInput(said("the entry is a {entry}, not a {kind}",
                                    entry=entry['kind'], kind=cls.KIND),
                               errors=[{"field": "kind", "message": f"must be {cls.KIND!r}"}])
        return cls._from(entry)

    @classmethod
    def _from(cls, d: JSON) -> Self:
        raise NotImplementedError

    def to_dict(self) -> JSON:
        return {"schema": entry_mod.SCHEMA, "kind": self.KIND, **super().to_dict()}

    def canonical_bytes(self) -> bytes:
        """The RFC 8785 bytes the log stores and hashes for this entry."""
        return jcs.canonicalize(self.to_dict())

    @property
    def content_sha256(self) -> str:
        """The hash the log indexes the entry under (see `ledger.entry.content_sha256`)."""
        return entry_mod.content_sha256(self.to_dict())


@dataclass(frozen=True, kw_only=True)
class Work(_Entry):
    """A registration of a work: its content, title, creators and kind."""

    KIND: ClassVar[str] = "work"
    content: Content
    title: str
    creators: tuple[str, ...]
    work_type: str
    license: str | None = None
    metadata: Mapping[str, Any] | None = None

    @classmethod
    def _from(cls, d: JSON) -> Self:
        metadata = d.get("metadata")  # deep-copied only if there is any: hot (D83)
        return cls(registrant=d["registrant"], received_at=d["received_at"],
                   content=Content._from(d["content"]), title=d["title"],
                   creators=tuple(d["creators"]), work_type=d["work_type"],
                   license=d.get("license"),
                   metadata=None if metadata is None else copy.deepcopy(metadata))


@dataclass(frozen=True, kw_only=True)
class Evidence(_Entry):
    """An evidence deposit: a capture of something seen (a web page, a file) and how."""

    KIND: ClassVar[str] = "evidence"
    content: Content
    captured_at: str
    capture_method: str
    description: str
    source_url: str | None = None
    related_work: int | None = None
    warc_records: tuple[WarcRecord, ...] | None = None
    metadata: Mapping[str, Any] | None = None

    @classmethod
    def _from(cls, d: JSON) -> Self:
        return cls(registrant=d["registrant"], received_at=d["received_at"],
                   content=Content._from(d["content"]), captured_at=d["captured_at"],
                   capture_method=d["capture_method"], description=d["description"],
                   source_url=d.get("source_url"), related_work=d.get("related_work"),
                   warc_records=_opt_tuple(d.get("warc_records"), WarcRecord._from),
                   metadata=copy.deepcopy(d.get("metadata")))


@dataclass(frozen=True, kw_only=True)
class Transfer(_Entry):
    """An assignment or licence of rights in a registered work, by its holder. An assignment
    with `needs_acceptance` is an offer: it moves nothing until its recipient accepts it."""

    KIND: ClassVar[str] = "transfer"
    JSON_NAMES: ClassVar[Mapping[str, str]] = {"from_account": "from", "to_account": "to"}
    work: WorkRef
    from_account: str
    to_account: str
    transfer_type: str
    territory: str
    term: Term | None = None
    terms_sha256: str | None = None
    note: str | None = None
    needs_acceptance: bool | None = None

    @classmethod
    def _from(cls, d: JSON) -> Self:
        term = d.get("term")
        return cls(registrant=d["registrant"], received_at=d["received_at"],
                   work=WorkRef._from(d["work"]), from_account=d["from"], to_account=d["to"],
                   transfer_type=d["transfer_type"], territory=d["territory"],
                   term=None if term is None else Term._from(term),
                   terms_sha256=d.get("terms_sha256"), note=d.get("note"),
                   needs_acceptance=d.get("needs_acceptance"))

    @property
    def is_offer(self) -> bool:
        """An assignment that waits for its recipient's acceptance."""
        return self.needs_acceptance is True


@dataclass(frozen=True, kw_only=True)
class _Answer(_Entry):
    """An answer to the offer at `offer` on `work`; `registrant` is who answers."""

    work: WorkRef
    offer: int
    note: str | None = None

    @classmethod
    def _from(cls, d: JSON) -> Self:
        return cls(registrant=d["registrant"], received_at=d["received_at"],
                   work=WorkRef._from(d["work"]), offer=d["offer"], note=d.get("note"))


@dataclass(frozen=True, kw_only=True)
class Acceptance(_Answer):
    """The recipient of an offer of assignment accepts it: from here on they hold the work."""

    KIND: ClassVar[str] = "acceptance"


@dataclass(frozen=True, kw_only=True)
class Withdrawal(_Answer):
    """The offerer withdraws an offer not yet accepted: they go on holding the work."""

    KIND: ClassVar[str] = "withdrawal"


@dataclass(frozen=True, kw_only=True)
class Claim(_Entry):
    """A takedown notice or counter-notice, complete for its regime (see `ledger.claims`)."""

    KIND: ClassVar[str] = "claim"
    notice_type: str
    regime: str
    claimant: Claimant
    refers_to: int | None = None
    works: tuple[ClaimedWork, ...] | None = None
    targets: tuple[Target, ...] | None = None
    substantiation: str | None = None
    statements: Statements | None = None
    requested_action: str | None = None
    signature: str | None = None

    @classmethod
    def _from(cls, d: JSON) -> Self:
        statements = d.get("statements")
        return cls(registrant=d["registrant"], received_at=d["received_at"],
                   notice_type=d["notice_type"], regime=d["regime"],
                   claimant=Claimant._from(d["claimant"]), refers_to=d.get("refers_to"),
                   works=_opt_tuple(d.get("works"), ClaimedWork._from),
                   targets=_opt_tuple(d.get("targets"), Target._from),
                   substantiation=d.get("substantiation"),
                   statements=None if statements is None else Statements._from(statements),
                   requested_action=d.get("requested_action"), signature=d.get("signature"))


@dataclass(frozen=True, kw_only=True)
class Rotation(_Entry):
    """The notary's keys changed: the old and new log key and TSA root, and until when the old
    ones still count. Indexed under the SHA-256 of the new verifier key."""

    KIND: ClassVar[str] = "rotation"
    content: Content
    old_verifier_key: str
    new_verifier_key: str
    old_tsa_root_sha256: str
    new_tsa_root_sha256: str
    overlap_until: str
    old_sm2_verifier_key: str | None = None  # an SM-suite registry's SM2 keys and roots (D57)
    new_sm2_verifier_key: str | None = None
    old_sm2_tsa_root_sha256: str | None = None
    new_sm2_tsa_root_sha256: str | None = None

    @classmethod
    def _from(cls, d: JSON) -> Self:
        return cls(registrant=d["registrant"], received_at=d["received_at"],
                   content=Content._from(d["content"]),
                   old_verifier_key=d["old_verifier_key"], new_verifier_key=d["new_verifier_key"],
                   old_tsa_root_sha256=d["old_tsa_root_sha256"],
                   new_tsa_root_sha256=d["new_tsa_root_sha256"],
                   overlap_until=d["overlap_until"],
                   old_sm2_verifier_key=d.get("old_sm2_verifier_key"),
                   new_sm2_verifier_key=d.get("new_sm2_verifier_key"),
                   old_sm2_tsa_root_sha256=d.get("old_sm2_tsa_root_sha256"),
                   new_sm2_tsa_root_sha256=d.get("new_sm2_tsa_root_sha256"))


Entry: TypeAlias = Work | Evidence | Transfer | Claim | Rotation | Acceptance | Withdrawal
_BY_KIND: dict[str, type[Entry]] = {
    c.KIND: c for c in (Work, Evidence, Transfer, Claim, Rotation, Acceptance, Withdrawal)
}


def parse_entry(data: bytes | Mapping[str, Any]) -> Entry:
    """An entry from its JSON bytes (as the log stores them) or parsed object, validated, as the
    class of its kind. Raises InvalidInput listing every bad field."""
    obj = jcs.parse(data) if isinstance(data, bytes) else data
    entry = entry_mod.validate(dict(obj) if isinstance(obj, Mapping) else obj)
    return _BY_KIND[str(entry["kind"])]._from(entry)


def parse_plain_work(obj: object) -> tuple[Work, bytes] | None:
    """A plain work (no metadata or fingerprints) as `parse_entry` gives it, and its RFC 8785
    bytes, when `quick_entry.quick_canonical` decides it (about 6 µs against 300 for
    `parse_entry` and `canonical_bytes`): a batch answer's thousand entries checked at C speed.
    None when that path does not decide; then `parse_entry` decides and names the fault."""
    data = quick_canonical(obj)
    if data is None or not isinstance(obj, dict):
        return None
    return Work._from(obj), data


def parse_logged_entry(data: bytes) -> tuple[Entry, dict[str, Any]]:
    """An entry from the bytes the log stores, which must be its RFC 8785 form, and its JSON
    object (what `to_dict` would give back). What the audit reads for every entry: canonical
    form and validity are each established once (`jcs.parse_canonical`)."""
    obj = jcs.parse_canonical(data)
    if obj is None:
        raise InvalidInput("entry bytes are not RFC 8785 canonical JSON")
    if not isinstance(obj, dict):
        raise InvalidInput("entry is not a JSON object")
    entry = entry_mod.validate_logged(obj, data)
    return _BY_KIND[str(entry["kind"])]._from(entry), entry


# ---------------------------------------------------------------- strict reading


class _Reader:
    """Reads the members of one JSON object, collecting every error instead of stopping at the
    first; `done()` reports the members nobody asked for."""

    def __init__(self, obj: object, path: str, errors: list[dict[str, str]]) -> None:
        self.path, self.errors, self.seen = path, errors, set[str]()
        self.ok = isinstance(obj, dict)
        self.obj: JSON = obj if isinstance(obj, dict) else {}
        if not self.ok:
            errors.append({"field": path or "document", "message": "must be a JSON object"})

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, typ: type | tuple[type, ...], *, required: bool = True,
            what: str = "") -> Any:
        self.seen.add(key)
        if key not in self.obj:
            if required and self.ok:
                self.errors.append({"field": self._at(key), "message": "required"})
            return None
        value = self.obj[key]
        bad_bool = isinstance(value, bool) and bool not in (typ if isinstance(typ, tuple)
                                                            else (typ,))
        if bad_bool or not isinstance(value, typ):
            self.errors.append({"field": self._at(key),
                                "message": f"must be {what or _TYPE_NAMES[typ]}"})
            return None
        return value

    def strings(self, key: str, *, required: bool = True) -> tuple[str, ...] | None:
        items = self.get(key, list, required=required)
        if items is None:
            return None
        for i, v in enumerate(items):
            if not isinstance(v, str):
                self.errors.append({"field": f"{self._at(key)}[{i}]",
                                    "message": "must be a string"})
        return tuple(v for v in items if isinstance(v, str))

    def objects(self, key: str, parse: Any, *, required: bool = True) -> tuple[Any, ...] | None:
        items = self.get(key, list, required=required)
        if items is None:
            return None
        return tuple(parse(v, f"{self._at(key)}[{i}]", self.errors) for i, v in enumerate(items))

    def part(self, key: str, read: Any) -> Any:
        """A nested object read by `read(obj, path, errors)`; a missing one is one error."""
        self.seen.add(key)
        if key not in self.obj:
            if self.ok:
                self.errors.append({"field": self._at(key), "message": "required"})
            return read({}, self._at(key), [])  # its own complaints would only repeat that
        return read(self.obj[key], self._at(key), self.errors)

    def done(self) -> None:
        for key in self.obj:
            if key not in self.seen:
                self.errors.append({"field": self._at(key), "message": "unknown field"})


_TYPE_NAMES: dict[Any, str] = {
    str: "a string", int: "an integer", bool: "true or false", list: "a list",
    dict: "a JSON object", (int, float): "a number", (str, type(None)): "a string or null",
    (int, type(None)): "an integer or null", (dict, type(None)): "a JSON object or null",
}


def _raise_if(what: str, errors: list[dict[str, str]]) -> None:
    entry_mod.raise_invalid(what, errors)


def _json_object(r: _Reader, key: str) -> JSON | None:
    value = r.get(key, dict)
    return None if value is None else copy.deepcopy(value)


# ---------------------------------------------------------------- the evidence bundle

BUNDLE_FORMAT = "copyledger/bundle/v1"


@dataclass(frozen=True, kw_only=True)
class Inclusion(_Part):
    """The RFC 9162 inclusion proof (hex hashes) to the sealing block's tree."""

    tree_size: int
    root: str
    proof: tuple[str, ...]

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> Inclusion:
        r = _Reader(obj, path, errors)
        out = cls(tree_size=r.get("tree_size", int), root=r.get("root", str),
                  proof=r.strings("proof") or ())
        r.done()
        return out


@dataclass(frozen=True, kw_only=True)
class BundleBlock(_Part):
    """The block that sealed the entry: its header (JSON, hashed as it stands), the header's
    hash and the signed block note."""

    height: int
    hash: str
    header: Mapping[str, Any]
    block_note: str

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> BundleBlock:
        r = _Reader(obj, path, errors)
        out = cls(height=r.get("height", int), hash=r.get("hash", str),
                  header=_json_object(r, "header") or {}, block_note=r.get("block_note", str))
        r.done()
        return out


@dataclass(frozen=True, kw_only=True)
class BundleTimestamp(_Part):
    """An RFC 3161 token (base64 DER) over the block hash, and the TSA that issued it."""

    tsa: str  # "notary" for the notary's own TSA, else the external TSA's URL
    hash_alg: str | None = None  # "sha256" (the one the block hash uses)
    token: str

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> BundleTimestamp:
        r = _Reader(obj, path, errors)
        out = cls(tsa=r.get("tsa", str), hash_alg=r.get("hash_alg", str, required=False),
                  token=r.get("token", str))
        r.done()
        return out


@dataclass(frozen=True, kw_only=True)
class NotaryPublicKeys(_Part):
    """The notary's public keys as the bundle carries them: log keys (records with
    `verifier_key` and validity), TSA roots and the TSA's chain, PEM."""

    log_keys: tuple[Mapping[str, Any], ...]
    tsa_roots: tuple[str, ...]
    tsa_chain: tuple[str, ...] | None = None
    sm2_keys: tuple[Mapping[str, Any], ...] | None = None  # an SM-suite registry's (D40)
    sm2_tsa_roots: tuple[str, ...] | None = None  # its SM2 TSA root, PEM (D51)
    # Retired SM2 TSA certificates (by SM3 of their DER) and when they were retired (D57).
    sm2_tsa_retired: tuple[Mapping[str, Any], ...] | None = None

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> NotaryPublicKeys:
        r = _Reader(obj, path, errors)
        out = cls(log_keys=r.objects("log_keys", _log_key) or (),
                  tsa_roots=r.strings("tsa_roots") or (),
                  tsa_chain=r.strings("tsa_chain", required=False),
                  sm2_keys=r.objects("sm2_keys", _sm2_key, required=False),
                  sm2_tsa_roots=r.strings("sm2_tsa_roots", required=False),
                  sm2_tsa_retired=r.objects("sm2_tsa_retired", _sm2_retired, required=False))
        r.done()
        return out

    @property
    def verifier_keys(self) -> list[str]:
        return [str(k["verifier_key"]) for k in self.log_keys]


def _sm2_key(obj: object, path: str, errors: list[dict[str, str]]) -> JSON:
    """An SM2 key record: `verifier_key` (ledger.sm2's format), nothing else."""
    r = _Reader(obj, path, errors)
    r.get("verifier_key", str)
    r.done()
    return copy.deepcopy(r.obj)


def _sm2_retired(obj: object, path: str, errors: list[dict[str, str]]) -> JSON:
    """A retired SM2 TSA certificate: `certificate_sm3` (hex) and `retired_at` (RFC 3339)."""
    r = _Reader(obj, path, errors)
    r.get("certificate_sm3", str)
    r.get("retired_at", str)
    r.done()
    return copy.deepcopy(r.obj)


def _log_key(obj: object, path: str, errors: list[dict[str, str]]) -> JSON:
    """A log-key record: `verifier_key`, and the validity times shown to people (not checked
    against anything, but no other member: a bundle says nothing it is not specified to)."""
    r = _Reader(obj, path, errors)
    r.get("verifier_key", str)
    r.get("valid_from", str, required=False)
    for key in ("valid_until", "cosigns_until"):
        r.get(key, (str, type(None)), required=False)
    r.done()
    return copy.deepcopy(r.obj)


@dataclass(frozen=True, kw_only=True)
class BundleWitnessed(_Part):
    """A later checkpoint of the same log that witnesses cosigned (the signed note with their
    cosignature lines), and the RFC 9162 consistency proof (hex) from the entry's checkpoint
    to it: the tree that holds the entry is a prefix of a tree the witnesses vouch for."""

    checkpoint: str
    consistency: tuple[str, ...]

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> BundleWitnessed:
        r = _Reader(obj, path, errors)
        out = cls(checkpoint=r.get("checkpoint", str), consistency=r.strings("consistency") or ())
        r.done()
        return out


@dataclass(frozen=True, kw_only=True)
class ChainLink(_Part):
    """One link of a chain of title: an entry (its JSON, as the log holds it) at `seq`, and the
    RFC 9162 inclusion proof (hex) of its leaf in the chain's checkpoint."""

    seq: int
    entry: Mapping[str, Any]
    proof: tuple[str, ...]

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> ChainLink:
        r = _Reader(obj, path, errors)
        out = cls(seq=r.get("seq", int), entry=_json_object(r, "entry") or {},
                  proof=r.strings("proof") or ())
        r.done()
        return out


@dataclass(frozen=True, kw_only=True)
class TitleChain(_Part):
    """A work's chain of title: the registration and every entry linked to it that affects who
    holds it, in log order, each proved included in `checkpoint` (a checkpoint of the same log,
    that of the block that sealed the last link), and the consistency proof (hex) from the
    bundle's own checkpoint to it. Who held the work after each link is not carried: the
    verifier replays it."""

    checkpoint: str
    consistency: tuple[str, ...]
    links: tuple[ChainLink, ...]

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> TitleChain:
        r = _Reader(obj, path, errors)
        out = cls(checkpoint=r.get("checkpoint", str), consistency=r.strings("consistency") or (),
                  links=r.objects("links", ChainLink._read) or ())
        r.done()
        return out


@dataclass(frozen=True, kw_only=True)
class Bundle(_Part):
    """A `copyledger/bundle/v1` evidence bundle: everything needed to prove one entry offline.

    `from_dict` checks the document's shape (members, types); what the values prove is
    `ledger.verify`'s to check, step by step, so a wrong value fails the step that owns it.
    `entry` is kept as the JSON object the bundle carries; `document()` reads it as its kind's
    class (and raises InvalidInput if it is not a valid entry).
    """

    FORMAT: ClassVar[str] = BUNDLE_FORMAT
    origin: str
    seq: int
    leaf_hash: str
    entry: Mapping[str, Any]
    inclusion: Inclusion
    checkpoint: str
    block: BundleBlock
    timestamps: tuple[BundleTimestamp, ...]
    notary: NotaryPublicKeys
    tlog_proof: str | None = None
    witnessed: BundleWitnessed | None = None
    title_chain: TitleChain | None = None  # for a work, or an entry linked to one
    # An SM-suite registry's SM2/SM3 tokens over SM3 of the block header (D51).
    sm2_timestamps: tuple[BundleTimestamp, ...] | None = None

    @classmethod
    def from_dict(cls, d: object) -> Bundle:
        errors: list[dict[str, str]] = []
        r = _Reader(d, "", errors)
        if r.ok and r.obj.get("format") != BUNDLE_FORMAT:
            errors.append({"field": "format", "message": f"must be {BUNDLE_FORMAT!r}"})
        r.seen.add("format")
        bundle = cls(
            origin=r.get("origin", str), seq=r.get("seq", int), leaf_hash=r.get("leaf_hash", str),
            entry=_json_object(r, "entry") or {},
            inclusion=r.part("inclusion", Inclusion._read),
            checkpoint=r.get("checkpoint", str),
            block=r.part("block", BundleBlock._read),
            timestamps=r.objects("timestamps", BundleTimestamp._read) or (),
            notary=r.part("notary", NotaryPublicKeys._read),
            tlog_proof=r.get("tlog_proof", str, required=False),
            witnessed=(r.part("witnessed", BundleWitnessed._read)
                       if r.ok and "witnessed" in r.obj else None),
            title_chain=(r.part("title_chain", TitleChain._read)
                            if r.ok and "title_chain" in r.obj else None),
            sm2_timestamps=r.objects("sm2_timestamps", BundleTimestamp._read, required=False),
        )
        r.done()
        _raise_if(said("bundle"), errors)
        return bundle

    def to_dict(self) -> JSON:
        return {"format": BUNDLE_FORMAT, **super().to_dict()}

    def document(self) -> Entry:
        """The bundled entry as its kind's class; InvalidInput if it is not a valid entry."""
        return parse_entry(self.entry)


# ---------------------------------------------------------------- the registration receipt


@dataclass(frozen=True, kw_only=True)
class ReceiptProof(_Part):
    """The receipt part of a registration answer: inclusion proof and signed checkpoint."""

    tree_size: int
    root: str
    proof: tuple[str, ...]
    checkpoint: str

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> ReceiptProof:
        r = _Reader(obj, path, errors)
        out = cls(tree_size=r.get("tree_size", int), root=r.get("root", str),
                  proof=r.strings("proof") or (), checkpoint=r.get("checkpoint", str))
        r.done()
        return out


@dataclass(frozen=True, kw_only=True)
class Receipt(_Part):
    """The answer to a registration (POST /v1/works, /v1/evidence, /v1/transfers, /v1/claims):
    the entry as recorded, where it is, and the proof that a signed tree holds it."""

    seq: int
    leaf_hash: str
    block_height: int
    entry: Entry
    receipt: ReceiptProof
    already_registered: bool | None = None  # true: this account's earlier registration

    @classmethod
    def from_dict(cls, d: object) -> Receipt:
        errors: list[dict[str, str]] = []
        r = _Reader(d, "", errors)
        entry: Entry | None = None
        raw = r.get("entry", dict)
        if raw is not None:
            try:
                entry = parse_entry(raw)
            except InvalidInput as e:
                found = e.extra.get("errors")
                errors += [{**err, "field": f"entry.{err['field']}"}
                           for err in (found if isinstance(found, list) else [])] or [
                    {"field": "entry", "message": e.detail}]
        out = cls(seq=r.get("seq", int), leaf_hash=r.get("leaf_hash", str),
                  block_height=r.get("block_height", int), entry=entry,  # type: ignore[arg-type]
                  receipt=r.part("receipt", ReceiptProof._read),
                  already_registered=r.get("already_registered", bool, required=False))
        r.done()
        _raise_if(said("receipt"), errors)
        return out


# ---------------------------------------------------------------- the claim-check answer


@dataclass(frozen=True, kw_only=True)
class CheckRegistration(_Part):
    """A registered work whose content matches the disputed content."""

    seq: int
    registrant: str
    registered_at: str
    title: str | None
    bundle: str

    def to_dict(self) -> JSON:
        return {**super().to_dict(), "title": self.title}  # null when the entry has no title

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> CheckRegistration:
        r = _Reader(obj, path, errors)
        out = cls(seq=r.get("seq", int), registrant=r.get("registrant", str),
                  registered_at=r.get("registered_at", str),
                  title=r.get("title", (str, type(None))), bundle=r.get("bundle", str))
        r.done()
        return out


@dataclass(frozen=True, kw_only=True)
class CheckClaim(_Part):
    """A notice or counter-notice already recorded against the claimed work."""

    seq: int
    notice_type: str
    regime: str
    registrant: str
    received_at: str
    refers_to: int | None

    def to_dict(self) -> JSON:
        return {**super().to_dict(), "refers_to": self.refers_to}  # null for a first notice

    @classmethod
    def _read(cls, obj: object, path: str, errors: list[dict[str, str]]) -> CheckClaim:
        r = _Reader(obj, path, errors)
        out = cls(seq=r.get("seq", int), notice_type=r.get("notice_type", str),
                  regime=r.get("regime", str), registrant=r.get("registrant", str),
                  received_at=r.get("received_at", str),
                  refers_to=r.get("refers_to", (int, type(None))))
        r.done()
        return out


def _match(obj: object, path: str, errors: list[dict[str, str]]) -> JSON:
    r = _Reader(obj, path, errors)
    r.get("seq", int)
    r.get("algorithm", str)
    r.get("verdict", str)  # the score's other members are ledger.fingerprint.score_json's
    return copy.deepcopy(r.obj)


def _earliest(obj: object, path: str, errors: list[dict[str, str]]) -> JSON | None:
    if obj is None:
        return None
    r = _Reader(obj, path, errors)
    out = {"seq": r.get("seq", int), "registrant": r.get("registrant", str),
           "registered_at": r.get("registered_at", str)}
    r.done()
    return out


_NULLABLE = ("work_seq", "holder", "earliest_registration")


@dataclass(frozen=True, kw_only=True)
class ClaimCheck(_Part):
    """The signed answer to POST /v1/claims/check: does the log hold the claimed work, who holds
    it, what matches the disputed content, and which notices are on record, at `tree_size`.
    `signature` is a signed note over the SHA-256 of the RFC 8785 answer without it
    (`ledger.claims.check_note_text`). `fingerprinted` names the algorithms the disputed
    content was fingerprinted with (empty: none could be; absent in answers before D37)."""

    verdict: str
    work_registered: bool
    work_seq: int | None
    claimant: str
    claimant_is_registrant: bool
    claimant_is_holder: bool
    holder: str | None
    earliest_registration: Mapping[str, Any] | None
    registrations: tuple[CheckRegistration, ...]
    matches: tuple[Mapping[str, Any], ...]
    claims: tuple[CheckClaim, ...]
    caveats: tuple[str, ...]
    index_ready: bool
    fingerprinted: tuple[str, ...] | None = None
    caveat_codes: tuple[str, ...] | None = None  # one per caveat, stable in every language
    checked_at: str
    tree_size: int
    origin: str
    signature: str

    @classmethod
    def from_dict(cls, d: object) -> ClaimCheck:
        errors: list[dict[str, str]] = []
        r = _Reader(d, "", errors)
        out = cls(
            verdict=r.get("verdict", str), work_registered=r.get("work_registered", bool),
            work_seq=r.get("work_seq", (int, type(None))), claimant=r.get("claimant", str),
            claimant_is_registrant=r.get("claimant_is_registrant", bool),
            claimant_is_holder=r.get("claimant_is_holder", bool),
            holder=r.get("holder", (str, type(None))),
            earliest_registration=_earliest(r.get("earliest_registration", (dict, type(None))),
                                            "earliest_registration", errors),
            registrations=r.objects("registrations", CheckRegistration._read) or (),
            matches=r.objects("matches", _match) or (),
            claims=r.objects("claims", CheckClaim._read) or (),
            caveats=r.strings("caveats") or (), index_ready=r.get("index_ready", bool),
            fingerprinted=r.strings("fingerprinted", required=False),
            caveat_codes=r.strings("caveat_codes", required=False),
            checked_at=r.get("checked_at", str), tree_size=r.get("tree_size", int),
            origin=r.get("origin", str), signature=r.get("signature", str),
        )
        r.done()
        _raise_if(said("claim check"), errors)
        return out

    def to_dict(self) -> JSON:
        out = super().to_dict()
        out.update({k: _json(getattr(self, k)) for k in _NULLABLE})  # null, not left out
        return out

    def signed_bytes(self) -> bytes:
        """The RFC 8785 answer without its signature: what the signed note's digest covers."""
        answer = self.to_dict()
        del answer["signature"]
        return jcs.canonicalize(answer)
