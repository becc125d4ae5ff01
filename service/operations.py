"""The write operations of a registry: each takes the node, the authenticated principal and a
typed input, and returns a typed result or raises a domain error.

The HTTP routes and the CLI are thin adapters over these; nothing here knows about HTTP. Every
write ends in `record`, the one path from an entry to a durable receipt. The typed inputs come
first, with their documentation and examples (what `api.models` shows in OpenAPI).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import tempfile
from binascii import hexlify
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import IO, Annotated, Any, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, WithJsonSchema

from copyledger.ledger import claims, merkle, sm2
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import fingerprint as fp
from copyledger.ledger.documents import Transfer, parse_entry
from copyledger.ledger.entry import MAX_METADATA_DEPTH, TRANSFER_TYPES, WORK_TYPES
from copyledger.ledger.errors import (
    AlreadyRegistered,
    Conflict,
    CopyledgerError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unavailable,
    Uncertain,
    said,
)
from copyledger.ledger.links import LINKED_KINDS, links_of
from copyledger.ledger.quick_entry import plain_work, quick_canonical
from copyledger.ledger.sequencer import Pending, Receipt, Sequencer
from copyledger.ledger.store import EntryRow
from copyledger.matching import MAX_FINGERPRINT_BYTES, fingerprints_for
from copyledger.matching.compute import IMAGE_MEDIA_TYPES
from copyledger.matching.media import SNIFF_BYTES, sniff
from copyledger.service import contacts, idempotency
from copyledger.service.apikeys import Principal, list_keys
from copyledger.service.node import Node, init_notary_keys, open_store
from copyledger.service.rotation import keys_lock, retired_keys, rotate
from copyledger.service.settings import Settings
from copyledger.service.title import _parsed, claim_entry, load_title

# ---------------------------------------------------------------- inputs
# Typed inputs of the operations below, with their documentation and examples.
#
# The HTTP layer parses request bodies into these (`parse_input`), the CLI builds them directly;
# the field rules of an entry live in `ledger.entry` (one place), so these models give types,
# documentation and examples, and refuse unknown members.

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=CopyledgerError)


def _kept_refusal(e: E) -> E:
    """A refusal kept as an item's answer, without the traceback and the exception it was
    raised while handling: their frames hold the list that holds it, a cycle only the
    collector frees (18-30 objects a refused item, which an import of millions of refused
    rows kept until a rare full collection, D152). Its answer needs neither."""
    e.__traceback__ = None
    e.__context__ = None
    return e


MAX_INT = 2**63 - 1
"""The largest integer a request may carry: the database's 64-bit signed integer. A bigger one
is refused as input (422) instead of overflowing the driver (500); entries hold at most
2**53-1, which `ledger.entry` checks."""
Count = Annotated[int, Field(ge=0, le=MAX_INT)]


def closed(values: tuple[str, ...]) -> WithJsonSchema:
    """A closed set of strings as the OpenAPI description shows it (an enum). Validation stays
    with the entry rules in `ledger/`, whose messages list every allowed value."""
    return WithJsonSchema({"type": "string", "enum": list(values)})


WorkType = Annotated[str, closed(WORK_TYPES)]
TransferType = Annotated[str, closed(TRANSFER_TYPES)]
Regime = Annotated[str, closed(claims.REGIMES)]
NoticeType = Annotated[str, closed(claims.NOTICE_TYPES)]
Action = Annotated[str, closed(claims.ACTIONS)]


def _shape(schema: dict[str, Any]) -> WithJsonSchema:
    """The documented members of a JSON object the entry rules check (unknown ones refused)."""
    return WithJsonSchema({"type": "object", "additionalProperties": False, **schema})


_STR = {"type": "string"}
_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
Claimant = Annotated[dict[str, Any], _shape({"required": ["name"], "properties": {
    "name": _STR, "email": _STR, "phone": _STR, "address": _STR,
    "authority": {"type": "string", "enum": list(claims.AUTHORITIES)},
    "account": {**_STR, "description": "the claimant's account in this registry"}}})]
ClaimedWork = Annotated[dict[str, Any], _shape({"properties": {
    "seq": {"type": "integer", "minimum": 0}, "sha256": _HEX, "description": _STR}})]
Target = Annotated[dict[str, Any], _shape({"required": ["url"], "properties": {
    "url": _STR, "sha256": _HEX}})]
Statements = Annotated[dict[str, Any], _shape({"properties": {
    k: {"type": "boolean"} for k in ("good_faith", "accuracy", "perjury", "mistake",
                                     "jurisdiction_consent")}})]


def parse_input(model: type[M], body: bytes) -> M:
    """A JSON document as `model`, or InvalidInput naming every bad field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise _invalid(e, "") from None


def parse_value(model: type[M], value: Any, where: str = "") -> M:
    """An already decoded JSON value as `model` (one item of a batch), or InvalidInput naming
    every bad field, prefixed with `where` (`works[3].`)."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise _invalid(e, where) from None


def parse_item(model: type[M], value: Any, where: str = "") -> M | PlainWorkIn:
    """`parse_value` for a batch's item or a catalogue's row: a `WorkIn` that is a plain work
    whose every member has JSON's own type is read as a `PlainWorkIn`, without pydantic
    (D155); anything else, and any other model, by `parse_value`."""
    if model is WorkIn and (plain := _plain_work_in(value)) is not None:
        return plain
    return parse_value(model, value, where)


def _plain_work_in(value: Any) -> PlainWorkIn | None:
    """The PlainWorkIn of `value`, if it is a dict of PlainWorkIn's members only, each of the
    one type pydantic keeps as it is (the text, the list of text, the integer in `Count`'s
    range, the boolean, or null where WorkIn allows it; an optional member left out is null);
    None for anything else, a missing required member included, which `parse_value` then
    accepts or refuses and names."""
    if type(value) is not dict or not value.keys() <= _PLAIN_WORK_IN:
        return None
    get = value.get
    sha256, title, creators, work_type = (get("sha256"), get("title"), get("creators"),
                                          get("work_type"))
    size, license, sm3, again = get("size"), get("license"), get("sm3"), get("again")
    if (type(sha256) is str and type(title) is str and type(work_type) is str
            and type(creators) is list and all(type(c) is str for c in creators)
            and (size is None or (type(size) is int and 0 <= size <= MAX_INT))
            and (license is None or type(license) is str)
            and (sm3 is None or type(sm3) is str)
            and (again is None or type(again) is bool)):
        return PlainWorkIn(sha256, title, creators, work_type, size, license, sm3, again)
    return None


def _invalid(e: ValidationError, where: str) -> InvalidInput:
    errors = [
        {"field": where + ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in e.errors()
    ]
    detail = "; ".join(f"{x['field']}: {x['message']}" for x in errors)  # pydantic's words
    return InvalidInput(detail, errors=errors)


def parse_count(raw: str, field: str) -> int:
    """A form field holding a non-negative integer: ASCII digits only (`str.isdigit` also
    accepts "²" and "٣", which `int` refuses), at most MAX_INT."""
    if not re.fullmatch(r"[0-9]{1,19}", raw) or int(raw) > MAX_INT:
        raise InvalidInput(said("{field}: must be an integer from 0 to {max_int}",
                                field=field, max_int=MAX_INT),
                           errors=[{"field": field, "message": f"must be an integer from 0 to "
                                    f"{MAX_INT}"}])
    return int(raw)


def parse_metadata(raw: str) -> dict[str, Any] | None:
    """A form's `metadata` field (a JSON object as text), or None when empty. Nesting past the
    entry limit is refused by a scan before parsing, so a document nested thousands deep never
    reaches the recursive JSON parser."""
    if raw == "":
        return None
    if _nesting(raw) > MAX_METADATA_DEPTH:
        message = f"nested deeper than {MAX_METADATA_DEPTH} levels"
        raise InvalidInput(said("metadata: {message}", message=message),
                           errors=[{"field": "metadata", "message": message}])
    try:
        v = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, or an integer over Python's 4,300 digits
        raise InvalidInput(said("metadata: not JSON: {e}", e=e),
                           errors=[{"field": "metadata", "message": "not JSON"}]) from None
    if not isinstance(v, dict):
        raise InvalidInput("metadata: must be a JSON object",
                           errors=[{"field": "metadata", "message": "must be a JSON object"}])
    return v


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text, brackets inside strings not
    counted; linear, and needs no valid JSON (the parser judges that afterwards)."""
    depth = deepest = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


class WorkIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sha256": SHA,
                    "size": 1048576,
                    "media_type": "image/png",
                    "title": "Harbour at dawn",
                    "creators": ["Ada Example"],
                    "work_type": "image",
                    "license": "CC-BY-4.0",
                    "metadata": {"year": 2026},
                }
            ]
        },
    )
    sha256: str = Field(description="SHA-256 of the work's bytes, 64 lowercase hex characters")
    sm3: str | None = Field(
        default=None,
        description="SM3 (GB/T 32905) of the work's bytes, 64 lowercase hex characters: required "
        "by registries created with the SM suite (GET /v1/log says crypto_suite), optional "
        "elsewhere; `copyledger register` computes it",
    )
    title: str
    creators: list[str]
    work_type: WorkType
    size: Count | None = Field(default=None, description="size in bytes")
    media_type: str | None = None
    license: str | None = None
    metadata: dict[str, Any] | None = None
    fingerprints: dict[str, Any] | None = Field(
        default=None,
        description="perceptual fingerprints computed on the creator's machine "
        "(`copyledger register` does): pdq, phash (images), minhash (text), chromaprint "
        "(audio), vpdq and chromaprint (video)",
    )
    again: StrictBool | None = Field(
        default=None,
        description="register anew even if this account already registered this content "
        "(otherwise the earlier registration is the answer, status 200); not recorded",
    )


class PlainWorkIn(NamedTuple):
    """A plain work (no media type, metadata or fingerprints) as `WorkIn.model_validate` reads
    it, field for field, read without pydantic (`parse_item`): pydantic took ~2.9 µs a work,
    6.5 % of a batch-registering server's time in the interpreter (D155).
    `tests/test_batch.py` holds the two equal for any value this one accepts."""

    sha256: str
    title: str
    creators: list[str]
    work_type: str
    size: int | None = None
    license: str | None = None
    sm3: str | None = None
    again: bool | None = None
    media_type: None = None
    metadata: None = None
    fingerprints: None = None


_PLAIN_WORK_IN = frozenset(PlainWorkIn._fields) - {"media_type", "metadata", "fingerprints"}
"""The members a plain work may carry: PlainWorkIn's, but those it holds only as None."""

Work = WorkIn | PlainWorkIn
"""A work to register, as the service layer takes it."""


class EvidenceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sha256": SHA,
                    "source_url": "https://example.org/listing/42",
                    "captured_at": "2026-11-20T10:00:00Z",
                    "capture_method": "screenshot",
                    "description": "Listing offering copies of the registered photograph",
                    "related_work": 0,
                }
            ]
        },
    )
    sha256: str
    captured_at: str
    capture_method: str
    description: str
    source_url: str | None = None
    related_work: Count | None = None
    size: Count | None = None
    media_type: str | None = None
    metadata: dict[str, Any] | None = None
    warc_records: list[dict[str, Any]] | None = Field(
        default=None,
        description="for a WARC capture: each response record's target_uri, warc_date, "
        "record_id and payload_sha256 (the CLI computes them)",
    )


class TransferIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "work_seq": 0, "to": "harbour-press", "transfer_type": "exclusive_licence",
            "territory": "EU", "term_start": "2027-01-01T00:00:00Z",
            "term_end": "2032-01-01T00:00:00Z",
            "terms_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        }]},
    )
    work_seq: Count = Field(description="seq of the registered work")
    to: str = Field(description="the receiving account")
    transfer_type: TransferType
    territory: str = "worldwide"
    term_start: str | None = None
    term_end: str | None = None
    terms_sha256: str | None = Field(default=None, description="SHA-256 of the signed contract")
    note: str | None = None


class AnswerIn(BaseModel):
    """The body of an acceptance or withdrawal of an offer of assignment (may be empty)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "note": "accepted under the contract of 2027-01-01"}]})
    note: str | None = Field(default=None, description="a short public note")


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "notice_type": "notice", "regime": "dmca_512c3",
        "claimant": {"name": "Ada Example", "email": "ada@example.org", "phone": "+1 555 0100",
                     "address": "1 Harbour St, Springfield", "authority": "owner",
                     "account": "ada"},
        "works": [{"seq": 0}],
        "targets": [{"url": "https://video.example/watch/123"}],
        "statements": {"good_faith": True, "accuracy": True, "perjury": True},
        "requested_action": "remove", "signature": "/Ada Example/",
    }]})
    notice_type: NoticeType = "notice"
    regime: Regime
    refers_to: Count | None = Field(default=None, description="a counter-notice's claim seq")
    claimant: Claimant
    works: list[ClaimedWork] | None = None
    targets: list[Target] | None = None
    substantiation: str | None = None
    statements: Statements | None = None
    requested_action: Action | None = None
    signature: str | None = None


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "claimant": "ada", "work_seq": 0,
        "content": {"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "pdq": "f" * 64},
    }]})
    claimant: str = Field(description="the claimant's account in this registry")
    work_seq: Count | None = None
    work_sha256: str | None = None
    content: dict[str, Any] = Field(default_factory=dict,
                                    description="disputed content: sha256, pdq, phash, minhash, "
                                                "chromaprint, vpdq")


# ---------------------------------------------------------------- operations

class Recorded(NamedTuple):
    """A durable entry: its receipt (inclusion proof to the sealing block's checkpoint) and
    the canonical entry as recorded. A named tuple: a batch makes thousands (D82)."""

    receipt: Receipt
    # The entry as a dict, or None where only `data` holds it: a batch's new plain works,
    # answered from their bytes (`to_json`), whose dicts nothing read (D154). `document()`
    # gives the dict either way, reading the bytes at each call where it is None.
    entry: dict[str, Any] | None
    existing: bool = False  # an earlier registration, answered instead of recording again
    data: bytes | None = None  # the entry's canonical bytes, when at hand (`to_json`)
    replayed: bool = False  # the entry a keyed request's earlier send recorded (D132, D134)

    def document(self) -> dict[str, Any]:
        """The entry as a dict: `entry`, or its canonical bytes read back."""
        if self.entry is not None:
            return self.entry
        assert self.data is not None, "a Recorded holds its entry or its bytes"
        parsed: dict[str, Any] = orjson.loads(self.data)
        return parsed

    def to_dict(self) -> dict[str, Any]:
        """The registration answer (`RegistrationOut`); an earlier registration answered again
        says so with `already_registered`."""
        r = self.receipt
        marker = {"already_registered": True} if self.existing else {}
        return {
            "seq": r.seq,
            "leaf_hash": r.leaf_hash.hex(),
            "block_height": r.block_height,
            "entry": self.document(),
            "receipt": {
                "tree_size": r.tree_size,
                "root": r.root.hex(),
                "proof": [p.hex() for p in r.proof],
                "checkpoint": r.checkpoint,
            },
            **marker,
        }

    def to_json(self) -> orjson.Fragment:
        """`to_dict` as JSON (equal to it as a value), written for a batch's thousands (D82):
        the entry's canonical bytes as they are instead of its dict encoded again, the hashes
        hexed in C. Without the bytes, or for an earlier registration, `to_dict` encoded."""
        if self.data is None or self.existing:
            return orjson.Fragment(orjson.dumps(self.to_dict()))
        r = self.receipt
        return orjson.Fragment(b"".join((
            b'{"seq":%d,"leaf_hash":"' % r.seq, hexlify(r.leaf_hash),
            b'","block_height":%d,"entry":' % r.block_height, self.data,
            b',"receipt":{"tree_size":%d,"root":"' % r.tree_size, hexlify(r.root),
            b'","proof":[' + (b'"' + b'","'.join(map(hexlify, r.proof)) + b'"' if r.proof
                              else b"") + b'],"checkpoint":', orjson.dumps(r.checkpoint),
            b"}}")))


log = logging.getLogger("copyledger.operations")

MAX_BATCH = 1_000
"""Works (or evidence deposits) one batch request may carry."""

MAX_IMPORT_CHUNK = 10_000
"""Works an operator's in-process import (`import_works`) hands over at once: a block each."""

Outcome = Recorded | CopyledgerError
"""One item's answer in a batch: its registration, or the domain error that refused it."""


@dataclass(frozen=True)
class FileFacts:
    """What the registry learns from an uploaded file before discarding it."""

    sha256: str
    size: int
    media_type: str | None
    fingerprints: dict[str, Any]
    sm3: str | None = None  # computed for SM-suite registries only (D40)


async def record(node: Node, entry: dict[str, Any], *, once: bool = False) -> Recorded:
    """Validate and canonicalise an entry, hand it to the sequencer, and wait for its receipt,
    which exists only once the block holding it is durably committed. `once`: a work written
    only if its registrant has none with its content yet, else AlreadyRegistered (D94)."""
    entry, pending = _pending(entry)
    claim = idempotency.WRITING.get()
    if once or claim is not None:
        pending = pending._replace(once=once, claim=claim)
    try:
        receipt = await node.sequencer.submit_async(pending)
    except AlreadyRegistered as e:
        if (first := await _own_entry(node, e.seq)) is not None:
            return first
        raise
    return Recorded(receipt, entry)


async def _own_entry(node: Node, seq: int) -> Recorded | None:
    """The entry at `seq` as its receipt was sealed, marked replayed, if it was recorded under
    the claim the current write runs under (`idempotency.WRITING`): the request's own earlier
    send (D134, D135). None otherwise."""
    claim = idempotency.WRITING.get()
    if claim is None or not (await _recorded_under(node, [claim], [seq]))[0]:
        return None
    [first] = await recorded_before(node, [seq])
    idempotency.REPLAYED.set(True)
    return first


async def _recorded_under(node: Node, claims: Sequence[tuple[str, str, str] | None],
                          seqs: Sequence[int]) -> list[bool]:
    """Whether the entry at each `seqs[i]` was recorded under `claims[i]`. The sequencer's
    AlreadyRegistered for a claimed request names that request's own entry when it was
    recorded before (D134), or, for a work, an earlier registration of its content (D36),
    which is answered as such. Unavailable (retry) if the database cannot tell now."""
    try:
        found = await asyncio.to_thread(node.store.claims_at, seqs)
    except Exception as e:
        raise Unavailable(said("nothing new was written for this request: whether an entry "
                               "already in the log answers it could not be read now; retry "
                               "shortly"),
                          internal=f"{type(e).__name__}: {e}") from e
    return [c is not None and found.get(s) == c for c, s in zip(claims, seqs, strict=True)]


def _pending(entry: dict[str, Any]) -> tuple[dict[str, Any], Pending]:
    """The canonical entry and what the sequencer takes (InvalidInput if the entry is bad).
    A plain work takes D61's quick path, proven to decide as `entry.encode` does; anything
    else, and anything it doubts, is checked by `entry.encode`."""
    data = quick_canonical(entry)
    if data is None:
        entry, data = entry_mod.encode(entry, new=True)
    kind = str(entry["kind"])
    return entry, Pending(data=data, kind=kind, sha256=entry_mod.content_sha256(entry),
                          registrant=str(entry["registrant"]),
                          links=links_of(parse_entry(entry)) if kind in LINKED_KINDS else (),
                          received_at=str(entry["received_at"]))


Built = tuple[dict[str, Any] | None, Pending]
"""An entry already validated and canonicalised (`_pending`), ready for the sequencer; its
dict None where only its bytes (`Pending.data`) were made (`_plain_built`, D154)."""


async def record_many(node: Node, entries: Sequence[dict[str, Any] | Built | CopyledgerError]
                      ) -> list[Outcome]:
    """`record` for many entries at once, in order, all queued to the sequencer as one so they
    share blocks: a bad entry is answered with its error and not written; the rest are. An
    entry given as `Built` was validated already (`prepare_works`, in another process)."""
    slots: list[Built | CopyledgerError] = []  # an entry awaiting its receipt
    pendings: list[Pending] = []
    claims = idempotency.WRITING_MANY.get()  # the items' keys, in the entries' order (D132)
    for i, e in enumerate(entries):
        try:
            if isinstance(e, CopyledgerError):
                raise e
            built = e if isinstance(e, tuple) else _pending(e)
        except CopyledgerError as err:
            slots.append(_kept_refusal(err))
            continue
        if claims is not None and claims[i] is not None:
            built = (built[0], built[1]._replace(claim=claims[i]))
        slots.append(built)
        pendings.append(built[1])
    seq = node.sequencer
    try:  # one waiter for the batch where the sequencer is this process's (D87)
        waiting = (seq.submit_group_async(pendings) if isinstance(seq, Sequencer)
                   else _each(seq.submit_many_async(pendings)))
    except CopyledgerError as err:  # nothing queued: the queue is full, or sequencing stopped
        kept = _kept_refusal(err)  # (one answer for every item left: kept as the others are)
        return [kept if isinstance(o, tuple) else o for o in slots]
    outcomes = iter(await waiting)
    result: list[Outcome] = []
    for slot in slots:
        if not isinstance(slot, tuple):
            result.append(slot)
            continue
        got = next(outcomes)
        if isinstance(got, CopyledgerError):
            result.append(got)
        elif isinstance(got, BaseException):  # anything else ends the batch
            raise got
        else:
            result.append(Recorded(got, slot[0], data=slot[1].data))
    if claims is not None:
        await _answer_recorded(node, result, claims)
    return result


async def _answer_recorded(node: Node, result: list[Outcome],
                           claims: Sequence[tuple[str, str, str] | None]) -> None:
    """In place: each item the sequencer answered AlreadyRegistered with its own claim's
    entry (recorded before, D134) becomes that entry, as `record` answers it."""
    found = [(i, o.seq) for i, o in enumerate(result)
             if isinstance(o, AlreadyRegistered) and claims[i] is not None]
    if not found:
        return
    try:
        mine = await _recorded_under(node, [claims[i] for i, _ in found],
                                     [seq for _, seq in found])
    except CopyledgerError as e:  # which they are cannot be told now: each is retried
        for i, _ in found:
            result[i] = _kept_refusal(e)
        return
    ours = [(i, seq) for (i, seq), yes in zip(found, mine, strict=True) if yes]
    answers: Sequence[Outcome]
    try:
        answers = await recorded_before(node, [seq for _, seq in ours]) if ours else []
    except CopyledgerError as e:  # the other items' answers stand
        answers = [_kept_refusal(e)] * len(ours)
    for (i, _), answer in zip(ours, answers, strict=True):
        result[i] = answer


async def _each(futures: Sequence[asyncio.Future[Receipt]]) -> list[Receipt | BaseException]:
    """A future an entry (a sequencer in another process, D48) as `submit_group_async`'s one
    list: each receipt or domain error, in order; anything else is raised, and the futures
    not awaited are still retrieved, or asyncio would log "exception was never retrieved"
    once per entry."""
    out: list[Receipt | BaseException] = []
    waiting = iter(futures)
    # In order, not `gather`: a block's futures are all settled in one turn of the loop, so
    # after the first, each is done already (no callback, no wake-up per entry).
    for fut in waiting:
        try:
            out.append(await fut)
        except CopyledgerError as err:
            out.append(_kept_refusal(err))
        except BaseException:
            for rest in waiting:
                rest.add_done_callback(_retrieved)
            raise
    return out


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a settled future's exception as retrieved (nobody is left to await it)."""
    if not future.cancelled():
        future.exception()


def _facts(file: IO[bytes], sha256: str, size: int, media_type: str | None,
           query: bool = False, sm3: bool = False) -> FileFacts:
    """Hash facts plus fingerprints."""
    return _fingerprinted(file, _identified(file, sha256, size, media_type, sm3), query)


def _identified(file: IO[bytes], sha256: str, size: int, media_type: str | None,
                sm3: bool = False) -> FileFacts:
    """Hash facts without fingerprints. With no declared type (or application/octet-stream: an
    upload kept as `blob-8721`) the type comes from the bytes, as it does when the bytes are an
    image declared as something else; a declared image type stays, so bytes that are not an
    image are refused when fingerprinted (D21). With `sm3` (an SM-suite registry) the file is
    read again for its SM3 digest."""
    declared = (media_type or "").split(";")[0].strip().lower() or None
    if declared == "application/octet-stream":
        declared = None
    file.seek(0)
    sniffed = sniff(file.read(SNIFF_BYTES))
    if declared is None or (sniffed in IMAGE_MEDIA_TYPES and declared not in IMAGE_MEDIA_TYPES):
        media = sniffed
    else:
        media = declared
    sm3_hex = None
    if sm3:
        file.seek(0)
        sm3_hex = sm2.sm3_file(file)
    return FileFacts(sha256, size, media, {}, sm3_hex)


def _fingerprinted(file: IO[bytes], facts: FileFacts, query: bool = False) -> FileFacts:
    """`facts` with the file's fingerprints for its media type (none past
    MAX_FINGERPRINT_BYTES or for a type matching does not know)."""
    fps: dict[str, Any] = {}
    if facts.media_type and facts.size <= MAX_FINGERPRINT_BYTES:
        file.seek(0)
        fps = dict(fingerprints_for(file, facts.media_type, query=query))
    return replace(facts, fingerprints=fps)


FINGERPRINT_WORKERS = 2
"""Uploads fingerprinted at once, however many arrive: each decode may take up to
`matching.MAX_DECODE_BYTES`, so this, not the number of clients, bounds that memory. Audio and
video are decoded by one FFmpeg process each, streamed (matching.audio), within the same pool."""
_fingerprinting = ThreadPoolExecutor(FINGERPRINT_WORKERS, thread_name_prefix="fingerprint")
_identifying = ThreadPoolExecutor(FINGERPRINT_WORKERS, thread_name_prefix="identify")
"""Uploads identified at once (`Upload.identify`: the first bytes sniffed, and on an SM-suite
registry the whole file read for SM3): bounded apart from the decodes, so an answer that needs
no decode (D140) does not wait behind them, nor the loop's executor behind large files."""


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

    async def describe(self, *, query: bool = False, sm3: bool = False) -> FileFacts:
        """The facts of the complete upload; fingerprinting runs in the bounded pool. `query`:
        a claim check's disputed content (an image gets matching's query fingerprints). With
        `sm3` (an SM-suite registry) the spooled file is read again for its SM3 digest."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _fingerprinting, _facts, self._file, self._hash.hexdigest(), self.size,
            self.media_type, query, sm3)

    async def identify(self, *, sm3: bool = False) -> FileFacts:
        """`describe` without the fingerprints, which cost far more: what identifies an upload
        under its Idempotency-Key, so a retry answered with the first send's answer is not
        fingerprinted again (D140). `fingerprint` adds them. It decodes nothing (it sniffs the
        first bytes, and reads the file for SM3 in chunks), so it runs in a pool of its own,
        not the one that bounds decodes: neither a retry's answer nor an upload's place in
        that pool waits for it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _identifying, _identified, self._file, self._hash.hexdigest(), self.size,
            self.media_type, sm3)

    async def fingerprint(self, facts: FileFacts) -> FileFacts:
        """`facts` (from `identify`) with the upload's fingerprints, in the bounded pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_fingerprinting, _fingerprinted, self._file, facts)


async def register_work(
    node: Node, who: Principal, w: WorkIn, computed: dict[str, Any] | None = None,
    *, again: bool = False,
) -> Recorded:
    """Register a work by its hash. `computed` holds fingerprints the server computed from an
    upload; otherwise fingerprints the client sent are validated as given.

    Content this account already registered is not registered twice by mistake: the earlier
    registration is the answer (`existing`), unless `again` (or `w.again`) asks for a new entry.
    The sequencer decides it as it seals (D94), so simultaneous requests, in this process or
    another, make one registration."""
    entry = _work_entry(node.sm_suite, who.account, w, computed)
    try:
        return await record(node, entry, once=not (again or w.again))
    except AlreadyRegistered as e:
        return (await _earlier(node, [e.seq]))[0]


async def _earlier(node: Node, seqs: Sequence[int]) -> list[Recorded]:
    """The answers for registrations the sequencer found already made (`AlreadyRegistered`):
    each earlier entry with its receipt, as it was sealed, read in a few queries."""
    return await recorded_at(node, seqs, existing=True)


async def recorded_before(node: Node, seqs: Sequence[int]) -> list[Recorded]:
    """The answers of requests under an Idempotency-Key that were recorded at `seqs` but
    never answered (D132): each entry with its receipt as it was sealed, as its first request
    would have been answered (marked `replayed`). Unavailable (retry) if the database cannot
    give them now."""
    try:
        return await recorded_at(node, seqs, replayed=True)
    except CopyledgerError:
        raise
    except Exception as e:
        raise Unavailable(said("this request was recorded, but its entry could not be read "
                               "to answer it; retry shortly"),
                          internal=f"{type(e).__name__}: {e}") from e


async def recorded_at(node: Node, seqs: Sequence[int], *, existing: bool = False,
                      replayed: bool = False) -> list[Recorded]:
    """The entries at `seqs`, each with its receipt as it was sealed (`existing`: marked as an
    earlier registration answered again; `replayed`: as a keyed request's earlier send)."""
    def read() -> list[Recorded]:
        rows = {r.seq: r for r in node.store.get_entries(seqs)}
        receipts = {r.seq: r for r in sealed_receipts(node, list(rows.values()))}
        return [Recorded(receipts[s], _parsed(rows[s]), existing=existing, data=rows[s].data,
                         replayed=replayed) for s in seqs]
    return await asyncio.to_thread(read)


async def register_works(
    node: Node, who: Principal, works: Sequence[Work | CopyledgerError], *,
    again: bool = False, most: int = MAX_BATCH,
    built: Sequence[Built | CopyledgerError | None] | None = None,
) -> list[Outcome]:
    """Register many works at once, each exactly as `register_work` would, in order: the
    earlier registration for content this account already registered (also earlier in this
    batch), unless `again` or the item's `again` asks for a new entry.

    Items already refused (a CopyledgerError in `works`) or refused here are not written; the
    others are queued to the sequencer as one, so they share blocks, and the sequencer answers
    those already registered (D94). `built`, when given, is each work's entry as
    `prepare_works` made it (in `works`' order), so none is built here."""
    _batch_size(works, most)
    entries: list[Built | CopyledgerError] = []
    received_at = entry_mod.utc_now()  # one request: its entries were received together
    for i, w in enumerate(works):
        if isinstance(w, CopyledgerError):
            entries.append(w)
            continue
        once = not (again or w.again)
        try:
            made = (built[i] if built is not None
                    else _plain_built(node.sm_suite, who.account, w, received_at, once)
                    or _pending(_work_entry(node.sm_suite, who.account, w, None, received_at)))
            if isinstance(made, CopyledgerError):
                raise made
            assert made is not None  # None only for a refused work, answered above
        except CopyledgerError as e:
            entries.append(_kept_refusal(e))
            continue
        entries.append((made[0], made[1]._replace(once=once)) if once != made[1].once
                       else made)
    done = await record_many(node, entries)
    found = [(i, o.seq) for i, o in enumerate(done) if isinstance(o, AlreadyRegistered)]
    if found:
        answers: Sequence[Outcome]
        try:
            answers = await _earlier(node, [seq for _, seq in found])
        except Exception as e:  # the new entries ARE written: their answers must stand
            log.exception("reading %d earlier registrations failed", len(found))
            answers = [Unavailable(said("this content is already registered by this account "
                                        "and nothing was written for it, but its earlier "
                                        "registration could not be read; retry shortly"),
                                   internal=f"{type(e).__name__}: {e}")] * len(found)
        for (i, _), answer in zip(found, answers, strict=True):
            done[i] = answer
    return done


async def deposit_evidence_many(
    node: Node, who: Principal, deposits: Sequence[EvidenceIn | CopyledgerError],
) -> list[Outcome]:
    """Record many evidence deposits at once, each as `deposit_evidence` would, in order,
    queued to the sequencer as one."""
    _batch_size(deposits)
    entries: list[dict[str, Any] | CopyledgerError] = []
    for ev in deposits:
        try:
            entries.append(ev if isinstance(ev, CopyledgerError)
                           else _evidence_entry(node, who, ev))
        except CopyledgerError as e:
            entries.append(_kept_refusal(e))
    return await record_many(node, entries)


def _batch_size(items: Sequence[object], most: int = MAX_BATCH) -> None:
    if len(items) > most:
        raise InvalidInput(said("a batch holds at most {most} items, not {n}", most=most,
                                n=len(items)))


Prepared = list[tuple[Work | CopyledgerError, Built | CopyledgerError | None]]
"""Each catalogue row as `prepare_works` leaves it: the work (or why it is refused) and its
entry, validated and canonicalised (or why it cannot be; None for a refused row)."""


def prepare_works(sm_suite: bool, account: str, docs: Sequence[tuple[str, Any]]) -> Prepared:
    """The CPU-bound half of an import, needing no registry, so a process pool can run it for
    pieces of a chunk at once: each (where, JSON value) validated as `POST /v1/works/batch`
    validates an item, and its entry built, checked and canonicalised as `register_works`
    would build it."""
    out: Prepared = []
    for where, doc in docs:
        try:
            w = parse_item(WorkIn, doc, where)
        except CopyledgerError as e:
            out.append((_kept_refusal(e), None))
            continue
        try:
            out.append((w, _pending(_work_entry(sm_suite, account, w, None))))
        except CopyledgerError as e:
            out.append((w, _kept_refusal(e)))
    return out


async def import_works(node: Node, account: str, prepared: Sequence[Prepared]
                       ) -> list[Outcome]:
    """An operator's catalogue import in this process (`copyledger import --local`): works
    `prepare_works` prepared (in pieces, in order) registered exactly as `register_works`
    registers them (same sequencer, same D36 answer for content the account already
    registered, so a chunk imported twice writes nothing twice), up to MAX_IMPORT_CHUNK at
    once, with no HTTP and no per-item answer document."""
    _require_account(node, account)
    who = Principal(account=account, role="creator", key_id=0)
    rows = [row for piece in prepared for row in piece]
    return await register_works(node, who, [w for w, _ in rows], most=MAX_IMPORT_CHUNK,
                                built=[b for _, b in rows])


def sealed_receipts(node: Node, rows: Sequence[EntryRow]) -> list[Receipt]:
    """The receipts of entries already in the log, in order, each its inclusion proof to the
    checkpoint of the block that sealed it, exactly as its registration answered: a block read
    once and its entries' proofs in one read (`merkle.inclusion_proofs`), not a block and a
    proof an entry (a resent chunk of 10,000 works answered the D36 way took a minute)."""
    by_block: dict[int, list[EntryRow]] = {}
    for row in rows:
        by_block.setdefault(row.block_height, []).append(row)
    made: dict[int, Receipt] = {}
    for height, group in by_block.items():
        blk = node.store.get_block(height)
        size = blk.header.tree_size
        proofs = merkle.inclusion_proofs([r.seq for r in group], size, node.store)
        for row, proof in zip(group, proofs, strict=True):
            made[row.seq] = Receipt(seq=row.seq, leaf_hash=row.leaf_hash,
                                    block_height=height, tree_size=size,
                                    root=blk.header.tree_root, proof=proof,
                                    checkpoint=blk.checkpoint)
    return [made[row.seq] for row in rows]


def _plain_built(sm_suite: bool, account: str, w: Work, received_at: str,
                 once: bool = False) -> Built | None:
    """`_pending(_work_entry(...))` for a plain work (no media type, metadata or
    fingerprints), its canonical bytes written straight from the fields (`plain_work`, proven
    to give `entry.encode`'s bytes) and its dict left to be read from them if asked
    (`Recorded.document`, D154); None for anything else, which `_work_entry` builds.
    `once` as `Pending.once` (given here: a named tuple's `_replace` costs ~0.7 µs a work)."""
    if (w.fingerprints or w.metadata is not None or w.media_type is not None
            or (sm_suite and w.sm3 is None)):
        return None
    data = plain_work(registrant=account, received_at=received_at, sha256=w.sha256,
                      title=w.title, creators=w.creators, work_type=w.work_type, size=w.size,
                      license=w.license, sm3=w.sm3)
    if data is None:
        return None
    return None, Pending(data=data, kind="work", sha256=w.sha256, registrant=account,
                         once=once, received_at=received_at)


def _work_entry(sm_suite: bool, account: str, w: Work, computed: dict[str, Any] | None,
                received_at: str | None = None) -> dict[str, Any]:
    """The work entry for `w`, refused if it lacks what this registry records (an SM-suite
    registry's SM3 digest, D40); received now unless `received_at` says when."""
    if computed is not None:
        fps = computed or None
    else:
        fps = fp.validate_fingerprints(w.fingerprints) if w.fingerprints else None
    if sm_suite and w.sm3 is None:
        raise InvalidInput(
            "sm3: this registry uses the SM suite, so a work records its SM3 digest too "
            "(copyledger register computes it)",
            errors=[{"field": "sm3", "message": "required by this SM-suite registry"}])
    return entry_mod.build_work(
        registrant=account, received_at=received_at or entry_mod.utc_now(), sha256=w.sha256,
        size=w.size,
        media_type=w.media_type, title=w.title, creators=w.creators, work_type=w.work_type,
        license=w.license, metadata=w.metadata, fingerprints=fps, check=False, sm3=w.sm3,
    )


def _require_work(node: Node, seq: int, field: str) -> None:
    msg = None
    try:
        row = node.store.get_entry(seq)
        if row.kind != "work":
            msg = f"entry {seq} is a {row.kind}, not a work"
    except NotFound:
        msg = f"no entry with seq {seq}"
    if msg:
        raise InvalidInput(said("{field}: {msg}",
                                field=field, msg=msg), errors=[{"field": field, "message": msg}])


async def deposit_evidence(node: Node, who: Principal, ev: EvidenceIn) -> Recorded:
    """Record the hash of captured evidence, optionally tied to a registered work."""
    return await record(node, _evidence_entry(node, who, ev))


def _evidence_entry(node: Node, who: Principal, ev: EvidenceIn) -> dict[str, Any]:
    if ev.related_work is not None:
        _require_work(node, ev.related_work, "related_work")
    return entry_mod.build_evidence(
        registrant=who.account, received_at=entry_mod.utc_now(), sha256=ev.sha256,
        source_url=ev.source_url, captured_at=ev.captured_at, capture_method=ev.capture_method,
        description=ev.description, related_work=ev.related_work, size=ev.size,
        media_type=ev.media_type, metadata=ev.metadata, warc_records=ev.warc_records,
        check=False,
    )


def _require_account(node: Node, account: str) -> None:
    """InvalidInput unless `account` holds a key on this registry (revoked keys do not count):
    a right sent to an account no one can use would be lost to a typo."""
    if not any(k.revoked_at is None for k in list_keys(node.store, account)):
        msg = f"no account {account!r} on this registry; check the spelling"
        raise InvalidInput(said("to: {msg}", msg=msg), errors=[{"field": "to", "message": msg}])


async def record_transfer(node: Node, who: Principal, t: TransferIn) -> Recorded:
    """Record a licence, or an offer of assignment (the holder changes only when the recipient
    accepts it, `answer_offer`); only the work's current holder may, to an existing account,
    and not while an offer on the work is pending."""
    # One transfer per work at a time, until sealed, so the holder check cannot race.
    async with node.transfer_locks.hold(t.work_seq):
        try:
            title, work, _ = load_title(node, t.work_seq)
        except NotFound:
            raise InvalidInput(said("work_seq: no entry with seq {work_seq}", work_seq=t.work_seq),
                               errors=[{"field": "work_seq", "message": "no such entry"}]) from None
        if title.holder != who.account:
            raise Forbidden(said("only the current holder of work {work_seq} ({holder}) may "
                                 "transfer or license it, not {account}", work_seq=t.work_seq,
                                 holder=repr(title.holder), account=repr(who.account)))
        entry = entry_mod.build_transfer(  # validated: bad fields are named before the rest
            registrant=who.account, received_at=entry_mod.utc_now(), work_seq=t.work_seq,
            work_sha256=entry_mod.content_sha256(work), from_account=title.holder,
            to_account=t.to, transfer_type=t.transfer_type, territory=t.territory,
            term_start=t.term_start, term_end=t.term_end, terms_sha256=t.terms_sha256,
            note=t.note, needs_acceptance=t.transfer_type == "assignment",
        )
        _require_account(node, t.to)
        if title.pending is not None:
            # Its own earlier send's offer (sealed after this retry's key was taken over,
            # D135) is this request's answer, not a conflict (Unavailable, retry, if that
            # cannot be read now: the offer may be this request's own).
            if (first := await _own_entry(node, title.pending.seq)) is not None:
                return first
            raise Conflict(said("offer {seq} of work {work_seq} to {to_account} is pending; "
                                "withdraw it first (POST /v1/transfers/{seq}/withdraw)",
                                seq=title.pending.seq, work_seq=t.work_seq,
                                to_account=repr(title.pending.to_account)))
        return await record(node, entry)


async def answer_offer(
    node: Node, who: Principal, offer_seq: int, kind: str, note: str | None = None
) -> Recorded:
    """Record the `acceptance` (by its recipient) or `withdrawal` (by its offerer) of the
    pending offer of assignment at `offer_seq`. NotFound if that entry is no offer, Conflict if
    it was already answered, Forbidden for anyone else."""
    row = node.store.get_entry(offer_seq)
    offer = parse_entry(row.data)
    if not isinstance(offer, Transfer) or not offer.is_offer:
        raise NotFound(said("entry {offer_seq} is not an offer of assignment",
                            offer_seq=offer_seq))
    async with node.transfer_locks.hold(offer.work.seq):
        title, _, _ = load_title(node, offer.work.seq)
        pending = title.pending
        if pending is None or pending.seq != offer_seq:
            raise Conflict(said("offer {offer_seq} is no longer pending: it was accepted or "
                                "withdrawn (see GET /v1/works/{seq}/history)", offer_seq=offer_seq,
                                seq=offer.work.seq))
        entitled = pending.to_account if kind == "acceptance" else pending.from_account
        if who.account != entitled:
            values = {"entitled": repr(entitled), "offer_seq": offer_seq,
                      "account": repr(who.account)}
            raise Forbidden(
                said("only {entitled} may accept offer {offer_seq}, not {account}", **values)
                if kind == "acceptance" else
                said("only {entitled} may withdraw offer {offer_seq}, not {account}", **values))
        entry = entry_mod.build_answer(
            kind=kind, registrant=who.account, received_at=entry_mod.utc_now(),
            work_seq=offer.work.seq, work_sha256=offer.work.sha256, offer=offer_seq, note=note,
            check=False)
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
                raise InvalidInput(said("works[{i}].seq: no entry {seq}", i=i,
                                        seq=w["seq"])) from None
            if row.kind != "work":
                raise InvalidInput(said("works[{i}].seq: entry {seq} is a {kind}", i=i,
                                        seq=w["seq"], kind=row.kind))
            if w.setdefault("sha256", row.sha256) != row.sha256:
                raise InvalidInput(said("works[{i}]: sha256 is not that of work {seq}", i=i,
                                        seq=w["seq"]))
    if c.notice_type == "counter_notice":
        if c.refers_to is None:
            raise InvalidInput("refers_to: a counter-notice names the claim it answers",
                               missing=["refers_to"])
        try:
            answered, claim = claim_entry(node, c.refers_to)
        except NotFound as e:
            raise InvalidInput(said("refers_to: {detail}", detail=e.detail)) from None
        if who.role != "admin" and answered.registrant != who.account:
            raise Forbidden(said("refers_to: claim {refers_to} was filed through another "
                                 "platform account; a counter-notice is filed where the "
                                 "notice was", refers_to=c.refers_to))
        if "works" in claim:
            body.setdefault("works", claim["works"])
        elif "targets" in claim:  # a DSA notice may name no work: it is found by its targets
            body.setdefault("targets", claim["targets"])
    entry = entry_mod.build_claim(registrant=who.account, received_at=entry_mod.utc_now(),
                                  body=body, check=False)
    logged = contacts.seal_claim(node.store, entry)
    try:
        done = await record(node, logged)
    except Uncertain:  # the entry may still be sealed: its details go only if it was not
        contacts.forget_later(node.store, logged)
        raise
    except CopyledgerError:
        await asyncio.to_thread(contacts.forget_unless_logged, node.store, logged)
        raise
    if done.replayed:  # the claim its earlier send recorded (D134): this one's details go
        await asyncio.to_thread(contacts.forget_unless_logged, node.store, logged)
    return done


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
    store = open_store(s, current=True)
    try:
        try:
            store.acquire_sequencer_lock()  # refuse while a server sequences this log
        except CopyledgerError as e:
            raise type(e)(said("{detail} (stop the server before rotating)", detail=e.detail),
                          **e.extra) from None
        store.release_sequencer_lock()
        genesis = store.get_block(0) if store.latest_block() else None
    finally:
        store.close()
    # The keys lock from the last rotation read to the sealed entry: no start sets aside the
    # keys being made, and no other rotation retires them before their entry names them.
    with keys_lock(s.data_dir / "notary"):
        done = retired_keys(s)
        valid_from = (done[-1].valid_until if done
                      else genesis.header.sealed_at if genesis else None)
        old = rotate(s, overlap=overlap, valid_from=valid_from)
        _, new_vkey = init_notary_keys(s)
        node = Node.open(replace(s, handoff_listen=""))  # offline: no other host to listen for
        try:
            node.start()  # (which, leading, queues the rotation's entry: `Node.seal_rotations`)
            sealed = node.rotation_sealed  # (read once: a retry may replace it)
            if not sealed:
                raise Conflict("the key rotation's entry was not sealed (see the log)")
            receipt = [f.result(60) for f in sealed][-1]
        finally:
            node.stop()
    return Rotation(old.verifier_key, new_vkey, old.overlap_until, receipt.seq,
                    receipt.block_height)
