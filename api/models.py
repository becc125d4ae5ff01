"""Request and response shapes, with examples for the OpenAPI docs. Field rules live in
`ledger.entry` (one place); these models give types, documentation and examples."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from copyledger.ledger import fingerprint
from copyledger.ledger.title import TITLE_KINDS
from copyledger.service.apikeys import ROLES
from copyledger.service.operations import (
    SHA,
    AnswerIn,
    CheckIn,
    ClaimIn,
    EvidenceIn,
    NoticeType,
    Regime,
    TransferIn,
    TransferType,
    WorkIn,
    closed,
)

__all__ = ["AnswerIn", "CheckIn", "ClaimIn", "EvidenceIn", "TransferIn", "WorkIn"]
TS = "2026-11-22T04:04:50.102030Z"
BUNDLE = "/v1/entries/5/bundle"

CHECKPOINT_EXAMPLE = (
    "localhost/copyledger\n1\nnqnn6B6z2v1mFpQl3gb4nXxYCS1fBGLiEz7qM5SWkCQ=\n\n"
    "— localhost/copyledger uQ3kU2Ww...==\n"
)


Role = Annotated[str, closed(ROLES)]
Verdict = Annotated[str, closed(("match", "possible", "none"))]  # matching.scoring.Verdict
MatchVerdict = Annotated[str, closed(("match", "possible"))]
Algorithm = Annotated[str, closed(("sha256", *fingerprint.ALGORITHMS))]
LinkKind = Annotated[str, closed(("work", *(k.KIND for k in TITLE_KINDS)))]


class ReceiptOut(BaseModel):
    tree_size: int
    root: str
    proof: list[str]
    checkpoint: str = Field(description="C2SP signed checkpoint of the block that sealed the entry")


REGISTRATION_EXAMPLE: dict[str, Any] = {
    "seq": 0,
    "leaf_hash": SHA,
    "block_height": 1,
    "entry": {"schema": "copyledger/entry/v1", "kind": "work", "registrant": "ada",
              "received_at": "2026-11-22T03:23:21.857848Z",
              "content": {"sha256": SHA, "size": 1048576, "media_type": "image/png"},
              "title": "Harbour at dawn", "creators": ["Ada Example"], "work_type": "image"},
    "receipt": {"tree_size": 1, "root": SHA, "proof": [], "checkpoint": CHECKPOINT_EXAMPLE},
}


class RegistrationOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [REGISTRATION_EXAMPLE]})
    seq: int
    leaf_hash: str
    block_height: int
    entry: dict[str, Any]
    receipt: ReceiptOut
    already_registered: bool | None = Field(
        default=None, description="present (true) only when the answer is this account's "
        "earlier registration of the same content (status 200), not a new entry")


class EntryOut(BaseModel):
    seq: int
    leaf_hash: str
    block_height: int
    entry: dict[str, Any]


class ProofOut(BaseModel):
    seq: int
    tree_size: int
    leaf_hash: str
    root: str
    proof: list[str]
    checkpoint: str | None = Field(
        default=None, description="signed checkpoint at exactly this tree size, if one was signed"
    )


class ConsistencyOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: int = Field(alias="from")
    to: int
    old_root: str
    new_root: str
    proof: list[str]


class LogOut(BaseModel):
    origin: str
    verifier_key: str = Field(description="Go note verifier key: name+hexkeyid+base64(0x01||key)")
    crypto_suite: str = Field(default="standard", description="`standard`, or `sm`: works "
                              "record SM3 digests and notes carry an SM2 signature line too")
    sm2_verifier_key: str | None = Field(default=None, description="the SM suite's SM2 key: "
                                         "name+hexkeyid+base64(0xff||type||04||x||y||ID)")
    tree_size: int
    root: str
    block_height: int


class BlockOut(BaseModel):
    height: int
    hash: str
    header: dict[str, Any]
    checkpoint: str
    block_note: str
    timestamps: list[dict[str, str]] = Field(
        default_factory=list, description="RFC 3161 tokens (base64 DER) over the block hash"
    )
    sm2_timestamps: list[dict[str, str]] | None = Field(
        default=None, description="an SM-suite registry's SM2/SM3 RFC 3161 tokens (base64 "
        "DER) over SM3 of the header's RFC 8785 bytes (absent otherwise)")


class SearchOut(BaseModel):
    sha256: str
    results: list[EntryOut]
    truncated: bool = False


class Timeline(BaseModel):
    seq: int
    notice_type: NoticeType
    regime: Regime
    registrant: str
    received_at: str
    claimant: str = Field(description="the claimant's name")
    bundle: str


class ClaimOut(BaseModel):
    """A claim and its timeline: the notice, then every counter-notice that refers to it."""

    seq: int
    leaf_hash: str
    block_height: int
    entry: dict[str, Any]
    timeline: list[Timeline]


class Registration(BaseModel):
    seq: int
    registrant: str
    registered_at: str
    title: str | None
    bundle: str


class Earliest(BaseModel):
    seq: int
    registrant: str
    registered_at: str


class Match(BaseModel):
    seq: int
    algorithm: Algorithm
    distance: int | None = Field(default=None, description="sha256, pdq, phash: bits apart")
    similarity: float | None = Field(default=None, description="minhash: estimated Jaccard")
    threshold: float = Field(description="the match threshold")
    possible_threshold: float | None = None
    verdict: MatchVerdict
    low_quality: bool | None = None


class ClaimSummary(BaseModel):
    seq: int
    notice_type: NoticeType
    regime: Regime
    registrant: str
    received_at: str
    refers_to: int | None = Field(default=None, description="null for a notice")


class ClaimCheckOut(BaseModel):
    """The signed answer to a claim check (docs/api.md: POST /v1/claims/check)."""

    verdict: Verdict = Field(description="over the matches on the claimed work only")
    work_registered: bool
    work_seq: int | None
    claimant: str
    claimant_is_registrant: bool
    claimant_is_holder: bool
    holder: str | None
    earliest_registration: Earliest | None
    registrations: list[Registration]
    matches: list[Match]
    claims: list[ClaimSummary]
    caveats: list[str]
    caveat_codes: list[str] | None = Field(
        default=None, description="one stable code per caveat, in the same order (D50): what a "
        "client renders in its reader's language; the English `caveats` are the same in every "
        "language")
    index_ready: bool
    checked_at: str
    tree_size: int
    origin: str
    signature: str = Field(description="C2SP signed note over SHA-256 of the RFC 8785 JSON of "
                           "the answer without `signature`")


class Licence(BaseModel):
    seq: int
    to: str
    transfer_type: TransferType


class Link(BaseModel):
    seq: int
    kind: LinkKind
    entry: dict[str, Any]
    leaf_hash: str
    holder_after: str
    proof: list[str] = Field(description="inclusion proof to the history's checkpoint")
    bundle: str


class PendingOffer(BaseModel):
    """An offer of assignment not yet accepted or withdrawn (D36)."""

    model_config = ConfigDict(populate_by_name=True)
    seq: int
    from_: str = Field(alias="from")
    to: str
    transfer_type: TransferType


class HistoryOut(BaseModel):
    """A work's chain of title, every link provable against one signed checkpoint."""

    work_seq: int
    registrant: str
    holder: str
    licences: list[Licence]
    pending_offer: PendingOffer | None = Field(
        default=None, description="the offer of assignment awaiting its recipient, or null")
    tree_size: int
    root: str
    checkpoint: str
    links: list[Link]


class Inclusion(BaseModel):
    tree_size: int
    root: str
    proof: list[str]


class BundleBlockOut(BaseModel):
    height: int
    hash: str
    header: dict[str, Any]
    block_note: str


class BundleTimestamp(BaseModel):
    tsa: str = Field(description="`notary`, or the external TSA's URL")
    hash_alg: str | None = None
    token: str = Field(description="RFC 3161 TimeStampToken, base64 DER")


class LogKey(BaseModel):
    verifier_key: str
    valid_from: str | None = None
    valid_until: str | None = None
    cosigns_until: str | None = Field(default=None, description="a retired key's overlap end")


class NotaryKeysOut(BaseModel):
    log_keys: list[LogKey]
    tsa_roots: list[str] = Field(description="PEM")
    tsa_chain: list[str] | None = Field(default=None, description="PEM, leaf first")
    sm2_keys: list[dict[str, str]] | None = Field(
        default=None, description="an SM-suite registry's SM2 note key(s) (bundles only)")
    sm2_tsa_roots: list[str] | None = Field(
        default=None, description="an SM-suite registry's SM2 TSA root, PEM")
    sm2_tsa_retired: list[dict[str, str]] | None = Field(
        default=None, description="SM2 TSA certificates a rotation retired: certificate_sm3 "
        "(hex SM3 of its DER) and retired_at; a token it signed later is refused")


class Witnessed(BaseModel):
    checkpoint: str
    consistency: list[str]


class BundleOut(BaseModel):
    """Everything needed to prove one entry offline (docs/verification.md)."""

    model_config = ConfigDict(extra="allow")
    format: str
    origin: str
    seq: int
    leaf_hash: str
    entry: dict[str, Any]
    inclusion: Inclusion
    checkpoint: str
    block: BundleBlockOut
    timestamps: list[BundleTimestamp]
    notary: NotaryKeysOut
    tlog_proof: str | None = None
    witnessed: Witnessed | None = None
    sm2_timestamps: list[BundleTimestamp] | None = Field(
        default=None, description="an SM-suite registry's SM2/SM3 tokens (hash_alg sm3)")


class FingerprintIndex(BaseModel):
    ready: bool
    entries: int
    read_through: int = Field(description="every entry below this seq has been read into the "
                              "index (D130); compare with tree_size")
    following: bool = Field(description="the index's thread is reading what the log appends")


class HealthOut(BaseModel):
    status: str
    tree_size: int
    external_tsa_missing: dict[str, int]
    witness_uncosigned: dict[str, int]
    fingerprint_index: FingerprintIndex


class WhoamiOut(BaseModel):
    """Who the API key acts for: never the key itself."""

    account: str = Field(description="recorded as `registrant` on what this key writes")
    role: Role
    key_id: int
    key_prefix: str = Field(description="the key's first characters, as `keys list` shows")
    created_at: str


# Examples for the OpenAPI description: the shapes of real answers, values shortened.
_NOTE = "example.org/copyledger\n7\n4YYgtqAU…gRE=\n\n— example.org/copyledger pE1/StOp…bgw=\n"
_WORK_ENTRY = REGISTRATION_EXAMPLE["entry"]
CLAIM_EXAMPLE = {
    "seq": 12, "leaf_hash": SHA, "block_height": 13,
    "entry": {"schema": "copyledger/entry/v1", "kind": "claim", "registrant": "tube",
              "received_at": "2026-11-22T05:10:00.123456Z", "notice_type": "notice",
              "regime": "dmca_512c3", "claimant": {"name": "Ada Example"},
              "works": [{"seq": 5, "sha256": SHA}]},
    "timeline": [{"seq": 12, "notice_type": "notice", "regime": "dmca_512c3",
                  "registrant": "tube", "received_at": "2026-11-22T05:10:00.123456Z",
                  "claimant": "Ada Example", "bundle": "/v1/entries/12/bundle"}],
}
CHECK_EXAMPLE = {
    "verdict": "match", "work_registered": True, "work_seq": 5, "claimant": "ada",
    "claimant_is_registrant": True, "claimant_is_holder": True, "holder": "ada",
    "earliest_registration": {"seq": 5, "registrant": "ada", "registered_at": TS},
    "registrations": [{"seq": 5, "registrant": "ada", "registered_at": TS,
                       "title": "Harbour at dawn", "bundle": BUNDLE}],
    "matches": [{"seq": 5, "algorithm": "sha256", "distance": 0, "threshold": 0,
                 "verdict": "match"},
                {"seq": 5, "algorithm": "pdq", "distance": 6, "threshold": 31,
                 "possible_threshold": 63, "verdict": "match", "low_quality": False}],
    "claims": [{"seq": 12, "notice_type": "notice", "regime": "dmca_512c3",
                "registrant": "tube", "received_at": "2026-11-22T05:10:00.123456Z",
                "refers_to": None}],
    "caveats": ["The registry proves who registered which content and when, as the operator "
                "authenticated them; it does not prove ownership of copyright."],
    "index_ready": True, "checked_at": "2026-11-22T05:20:31.000001Z", "tree_size": 15,
    "origin": "example.org/copyledger",
    "signature": "copyledger/claim-check/v1\nexample.org/copyledger\n15\nq1x…=\n\n"
                 "— example.org/copyledger pE1/Sg…\n",
}
HISTORY_EXAMPLE = {
    "work_seq": 5, "registrant": "ada", "holder": "harbour-press",
    "licences": [{"seq": 6, "to": "harbour-press", "transfer_type": "exclusive_licence"}],
    "tree_size": 9, "root": SHA, "checkpoint": _NOTE,
    "links": [{"seq": 5, "kind": "work", "entry": _WORK_ENTRY, "leaf_hash": SHA,
               "holder_after": "ada", "proof": [SHA], "bundle": BUNDLE}],
}
NOTARY_KEYS_EXAMPLE = {
    "log_keys": [{"verifier_key": "example.org/copyledger+dbf537b5+Aa95utrn…",
                  "valid_from": TS, "valid_until": None}],
    "tsa_roots": ["-----BEGIN CERTIFICATE-----\nMIIBvjCC…\n-----END CERTIFICATE-----\n"],
    "tsa_chain": ["-----BEGIN CERTIFICATE-----\nMIIB6jCC…\n-----END CERTIFICATE-----\n"],
}
BUNDLE_EXAMPLE: dict[str, Any] = {
    "format": "copyledger/bundle/v1", "origin": "example.org/copyledger", "seq": 5,
    "leaf_hash": SHA, "entry": _WORK_ENTRY,
    "inclusion": {"tree_size": 7, "root": SHA, "proof": [SHA]}, "checkpoint": _NOTE,
    "block": {"height": 6, "hash": SHA,
              "header": {"schema": "copyledger/block/v1", "height": 6, "tree_size": 7},
              "block_note": "copyledger/block/v1\nexample.org/copyledger\n6\nPllx…=\n\n— …\n"},
    "timestamps": [{"tsa": "notary", "hash_alg": "sha256", "token": "MIIEqgYJKoZIhvcN…"}],
    "notary": NOTARY_KEYS_EXAMPLE,
    "tlog_proof": "c2sp.org/tlog-proof@v1\nextra eyJ…\nindex 5\n…",
}
HEALTH_EXAMPLE = {"status": "ok", "tree_size": 3, "external_tsa_missing": {},
                  "witness_uncosigned": {}, "fingerprint_index": {"ready": True, "entries": 2,
                                                                   "read_through": 3,
                                                                   "following": True}}
WHOAMI_EXAMPLE = {"account": "ada", "role": "creator", "key_id": 3, "key_prefix": "cl_Xb3k9Q",
                  "created_at": TS}
ENTRY_EXAMPLE = {k: REGISTRATION_EXAMPLE[k] for k in ("seq", "leaf_hash", "block_height", "entry")}
PROOF_EXAMPLE = {"seq": 5, "tree_size": 7, "leaf_hash": SHA, "root": SHA, "proof": [SHA],
                 "checkpoint": _NOTE}
CONSISTENCY_EXAMPLE = {"from": 3, "to": 7, "old_root": SHA, "new_root": SHA, "proof": [SHA]}
LOG_EXAMPLE = {"origin": "example.org/copyledger",
               "verifier_key": "example.org/copyledger+dbf537b5+Aa95utrn…", "tree_size": 7,
               "root": SHA, "block_height": 6}
BLOCK_EXAMPLE = {**BUNDLE_EXAMPLE["block"], "checkpoint": _NOTE,
                 "timestamps": BUNDLE_EXAMPLE["timestamps"]}
SEARCH_EXAMPLE = {"sha256": SHA, "results": [ENTRY_EXAMPLE], "truncated": False}


class KeyIn(BaseModel):
    """A key to mint: its role and the account it acts for."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"role": "creator",
                                                               "account": "alice"}]})
    role: str = Field(description="creator, platform, court or admin")
    account: str = Field(description="1-64 characters from A-Z, a-z, 0-9, '.', '_', '-'; what "
                         "entries record as registrant")


class KeyOut(BaseModel):
    """A stored key, without its secret."""

    id: int
    prefix: str = Field(description="the key's first characters, to recognise it")
    role: str
    account: str
    created_at: str
    revoked_at: str | None = None


class KeyCreatedOut(KeyOut):
    key: str = Field(description="the secret; shown once, only its SHA-256 is stored")


class KeyListOut(BaseModel):
    keys: list[KeyOut]


class AccountIn(BaseModel):
    """Who stands behind an account, as the operator states it (decision D50)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"display_name": "上海某某文化传播有限公司", "kind": "organisation"}]})
    display_name: str = Field(max_length=200, description="a person's or an organisation's "
                              "name, 1-200 characters")
    kind: str = Field(description="person or organisation")


class AccountOut(BaseModel):
    """An account's profile: the operator's statement, not signed by the log."""

    account: str
    display_name: str
    kind: str = Field(description="person or organisation")
    updated_at: str


# Batches (POST /v1/works/batch, POST /v1/evidence/batch; decision D41)
_ITEM_KEY = Field(default=None, max_length=255, description="this item's Idempotency-Key: a "
                  "retried batch answers a kept item as it was first answered, writing nothing")


class KeyedWork(WorkIn):
    idempotency_key: str | None = _ITEM_KEY


class KeyedEvidence(EvidenceIn):
    idempotency_key: str | None = _ITEM_KEY


_WORK_IN_EXAMPLE = WorkIn.model_json_schema()["examples"][0]
_EVIDENCE_IN_EXAMPLE = EvidenceIn.model_json_schema()["examples"][0]


class WorksBatchIn(BaseModel):
    """Up to 1,000 works, each registered (or refused) as `POST /v1/works` would."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"works": [
        {**_WORK_IN_EXAMPLE, "idempotency_key": "catalogue-0001"}]}]})
    works: list[KeyedWork] = Field(min_length=1, max_length=1000)


class EvidenceBatchIn(BaseModel):
    """Up to 1,000 evidence deposits, each recorded (or refused) as `POST /v1/evidence` would."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"evidence": [
        _EVIDENCE_IN_EXAMPLE]}]})
    evidence: list[KeyedEvidence] = Field(min_length=1, max_length=1000)


class BatchItemOut(BaseModel):
    index: int = Field(description="the item's place in the request, from 0")
    status: int = Field(description="as the single request would have answered: 201 new, 200 "
                        "this account's earlier registration, 4xx/503 refused (nothing written)")
    registration: RegistrationOut | None = None
    problem: dict[str, Any] | None = Field(default=None, description="an RFC 9457 problem")
    replayed: bool | None = Field(default=None, description="true: the answer kept under the "
                                  "item's idempotency_key; nothing was written")


class BatchOut(BaseModel):
    results: list[BatchItemOut]
    registered: int
    already_registered: int
    refused: int


BATCH_EXAMPLE: dict[str, Any] = {
    "results": [
        {"index": 0, "status": 201, "registration": REGISTRATION_EXAMPLE},
        {"index": 1, "status": 422, "problem": {
            "type": "https://copyledger.dev/problems/invalid-input", "title": "Invalid input",
            "status": 422, "detail": "works[1].sha256: String should match pattern "
            "'^[0-9a-f]{64}$'", "instance": "/v1/works/batch"}},
    ],
    "registered": 1, "already_registered": 0, "refused": 1,
}
