"""Every API call as a pure description (`Call`): what to send, which status means success,
and how to turn the answer into a result. `Client` and `AsyncClient` only send it, so the two
share all request building, error mapping and verification.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import hashlib
import json
import math
import mimetypes
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, Generic, Literal, NotRequired, Required, TypedDict, TypeVar

import orjson

from copyledger.client import verify
from copyledger.client.errors import ClientError, ProblemError, ResponseError, UnverifiedAnswer
from copyledger.client.results import (
    ClaimCheck,
    ConsistencyProof,
    InclusionProof,
    Receipt,
    SignedCheckpoint,
)
from copyledger.ledger import note as note_mod
from copyledger.ledger.contact import Disclosure
from copyledger.ledger.errors import CopyledgerError, said
from copyledger.ledger.merkle import _gc_paused

T = TypeVar("T")


@dataclass(frozen=True)
class Trust:
    """The keys answers are checked with, and whether the caller pinned them (else they are
    the key the server itself published, which proves the answers agree, not who signed).
    `account`: for a write (`Call.needs_account`), the caller's own account, which every entry
    it records must name as registrant (D93)."""

    verifiers: tuple[note_mod.Verifier, ...]
    pinned: bool
    account: str | None = None


NO_TRUST = Trust((), pinned=False)


def _raw(data: Any, _: Trust) -> Any:
    return data


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP exchange. `finish` turns the decoded answer into the result; it gets the keys
    only when `needs_trust` is set (the client fetches the server's key first if none are
    pinned), with the caller's account when `needs_account` is set (fetched from
    GET /v1/whoami once if none was given, D93)."""

    method: str
    path: str
    finish: Callable[[Any, Trust], T]
    params: dict[str, str | int] | None = None
    json: Any = None
    data: dict[str, str | list[str]] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    expect: int | tuple[int, ...] = 200
    decode: Literal["json", "text", "bytes"] = "json"
    needs_trust: bool = False
    needs_account: bool = False
    keyed: bool = False  # the path takes an Idempotency-Key (D41)
    resendable: bool = False  # sending it twice records nothing twice (see `resend_pause`)
    items_wait: Callable[[bytes], float | None] | None = None  # a batch's items to resend
    item_keys: tuple[str | None, ...] | None = None  # a batch's works' Idempotency-Keys

    def request(self) -> dict[str, Any]:
        """Keyword arguments for httpx's `request`, sync or async alike."""
        kw: dict[str, Any] = {"method": self.method, "url": self.path}
        for name in ("params", "json", "data", "files", "content", "headers"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        return kw

    def read(self, status: int, body: bytes) -> Any:
        """The decoded answer; ProblemError for any other status than the expected one(s)."""
        if status not in ((self.expect,) if isinstance(self.expect, int) else self.expect):
            raise ProblemError.from_response(status, body)
        if self.decode == "bytes":
            return body
        try:
            if self.decode == "text":
                return body.decode()
            with _gc_paused(len(body) >= _BIG_ANSWER):
                return orjson.loads(body)
        except ValueError:  # UnicodeDecodeError is one
            kind = said("UTF-8 text") if self.decode == "text" else "JSON"
            raise ResponseError(said("{method} {path}: the answer is not {kind}",
                                     method=self.method, path=self.path, kind=kind)) from None

    def complete(self, status: int, body: bytes, trust: Trust) -> T:
        """`finish` of `read`. For a big answer the cycle collector is held off from the
        decoding to the end of `finish`, and the decoded answer is dropped before it resumes:
        with a pause for each of the two, the ~50,000 dicts and lists of a batch answer were
        alive at each resume, and the collections that followed scanned them, generation
        after generation (D101). Only what `finish` returns is left for the collector."""
        with _gc_paused(self.decode == "json" and len(body) >= _BIG_ANSWER):
            return self.finish(self.read(status, body), trust)


IDEMPOTENCY_KEY = "Idempotency-Key"
BACKOFF_S = 0.5
BACKOFF_MAX_S = 8.0
RESEND_WINDOW_S = 30.0
"""Resending (D131): the n-th resend waits BACKOFF_S·2ⁿ⁻¹ (at most BACKOFF_MAX_S), or the
server's Retry-After if longer, then up to a quarter more at random, so clients the same
answer told to wait do not all come back at once. No resend goes out more than
RESEND_WINDOW_S after the call's first try: a server takes over the key of a process that died
mid-write 60 s after its last sign of life and runs the write again if it was not recorded
(D69, D132; a server before D134 then recorded one still queued, unsealed, twice), and a
resend may wait there up to 10 s more for the key's first request (`idempotency.WAIT_S`,
counted from its arrival, once for a whole batch, however many retries queue on the key);
stopping at 30 s leaves 20 s for transit and clocks, so the server never records a write twice
for this client."""
_RESENT = frozenset({429, 502, 503, 504})


@contextlib.contextmanager
def naming_key(call: Call[Any]) -> Iterator[None]:
    """Errors raised within name the Idempotency-Key `call` was sent under (their
    `idempotency_key`; a batch's, work by work, `idempotency_keys`), so a caller can send the
    write again by hand under the same keys later, when the client's own resends are over."""
    try:
        yield
    except (ClientError, UnverifiedAnswer) as e:
        e.idempotency_key = (call.headers or {}).get(IDEMPOTENCY_KEY)
        e.idempotency_keys = call.item_keys
        raise


def with_key(call: Call[T]) -> Call[T]:
    """`call` with an Idempotency-Key of its own if its path takes one and it has none, so it
    can be resent (`resend_pause`): a write is only resent under a key."""
    if not call.keyed or IDEMPOTENCY_KEY in (call.headers or {}):
        return call
    return dataclasses.replace(call, resendable=True, headers={
        **(call.headers or {}), IDEMPOTENCY_KEY: str(uuid.uuid4())})


def resend_pause(call: Call[Any], attempt: int, status: int | None,
                 headers: Mapping[str, str], elapsed: float = 0.0,
                 body: bytes = b"") -> float | None:
    """Seconds to wait before sending `call` again, after its try number `attempt` (0 the
    first), `elapsed` seconds after the first began, got `status` and `body` (status None:
    no answer at all, which may be after the server acted on it), or None: return that
    answer (or failure) as it is.

    Only a call that records nothing twice is resent: a read, a check, a write under an
    Idempotency-Key (the server replays the first answer to a retry, D41), or a batch whose
    every item has a key or is a work the "already registered" rule answers (D36). It is
    resent when nothing answered, on 429, 502, 503 and 504, on 409 with Retry-After (the
    key's first request still running, D59), and on a batch answer in which an item is such
    a problem (`Call.items_wait`); never when the answer is a replay (`Idempotent-Replayed`:
    the first request's answer, final; a server before D135 replayed a 503 saying the write
    may or may not be recorded, where a later one answers with the entry or runs the write
    again); never past RESEND_WINDOW_S."""
    if not (call.resendable or call.method == "GET"):
        return None
    asked = None
    if status is not None:
        if headers.get("idempotent-replayed") == "true":
            return None
        asked = retry_after_s(headers.get("retry-after"))
        if status == 200 and call.items_wait is not None:
            if (asked := call.items_wait(body)) is None:
                return None
        elif status not in _RESENT and not (status == 409 and asked is not None):
            return None
    backoff = min(BACKOFF_S * 2.0 ** attempt, BACKOFF_MAX_S)
    pause = max(asked or 0.0, backoff) * random.uniform(1.0, 1.25)
    return pause if elapsed + pause <= RESEND_WINDOW_S else None


_DELAY = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit takes "²" too


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds from now: delay-seconds, or an HTTP-date (RFC 9110
    §10.2.3; a date past is 0); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


_ITEM_MAY_WAIT = re.compile(rb'"status":\s*(?:429|503)\b|"retry_after"')


def batch_items_wait(body: bytes) -> float | None:
    """For a batch answer (200): the seconds its items asked for if any item is to be sent
    again — a 429 or 503 not replayed, or a 409 naming a wait (its key's first request still
    running, D59) — else None. The whole batch is then resent under the same keys: items
    already answered are replayed (keyed) or answered by the already-registered rule (D36),
    so none is written twice. Most answers hold no such item, and are not parsed here."""
    if not _ITEM_MAY_WAIT.search(body):
        return None
    try:
        results = orjson.loads(body)["results"]
        waits = [float(r["problem"].get("retry_after") or 0) for r in results
                 if "problem" in r and not r.get("replayed")
                 and (r["status"] in (429, 503)
                      or (r["status"] == 409 and "retry_after" in r["problem"]))]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # malformed: `finish` says so
    return max(waits) if waits else None


_BIG_ANSWER = 1 << 16
"""Bytes of JSON past which the cycle collector is held off while orjson reads them: a batch
answer (~1.4 MB) makes ~50,000 dicts and lists that cannot form cycles, and the collections
their allocation sets off (full ones too, as they live on while verified) cost the reading
thread about as much again as the reading (D83); `Call.complete` holds it off until the
answer is checked and freed (D101)."""


def learn_trust(log: Any) -> Trust:
    """The key a server publishes at GET /v1/log, for when the caller pinned none."""
    try:
        return Trust((note_mod.parse_verifier_key(log["verifier_key"]),), pinned=False)
    except (KeyError, TypeError) as e:
        raise ResponseError(said("GET /v1/log: no verifier_key ({e})", e=e)) from None
    except CopyledgerError as e:
        raise ResponseError(said("GET /v1/log: bad verifier key: {detail}",
                                 detail=e.detail)) from None


def _body(fields: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(fields).items() if v is not None}


# ------------------------------------------------------------------ writes


class WorkFields(TypedDict, total=False):
    """A work to register by its hash (POST /v1/works, JSON)."""

    sha256: Required[str]
    sm3: str | None  # SM3 of the bytes: SM-suite registries require it (GET /v1/log says)
    title: Required[str]
    creators: Required[list[str]]
    work_type: Required[str]
    size: int | None
    media_type: str | None
    license: str | None
    metadata: dict[str, Any] | None
    fingerprints: dict[str, Any] | None
    again: bool


class UploadFields(TypedDict, total=False):
    """A work to register by uploading it (POST /v1/works, multipart): the server hashes and
    fingerprints it, then deletes it."""

    title: Required[str]
    creators: Required[list[str]]
    work_type: Required[str]
    filename: str
    media_type: str | None
    license: str | None
    metadata: dict[str, Any] | None
    again: bool


class EvidenceFields(TypedDict, total=False):
    """Evidence to deposit by its hash (POST /v1/evidence)."""

    sha256: Required[str]
    captured_at: Required[str]
    capture_method: Required[str]
    description: Required[str]
    source_url: str | None
    related_work: int | None
    size: int | None
    media_type: str | None
    metadata: dict[str, Any] | None
    warc_records: list[dict[str, Any]] | None


class TransferFields(TypedDict, total=False):
    """An assignment or licence of a registered work (POST /v1/transfers)."""

    work_seq: Required[int]
    to: Required[str]
    transfer_type: Required[str]
    territory: str | None
    term_start: str | None
    term_end: str | None
    terms_sha256: str | None
    note: str | None


class CheckFields(TypedDict):
    """Which work a claim is about and who claims it (POST /v1/claims/check)."""

    claimant: str
    work_seq: NotRequired[int | None]
    work_sha256: NotRequired[str | None]


def _receipt(path: str, body: Any = None, *, file_sha256: str | None = None,
             data: dict[str, str | list[str]] | None = None,
             files: dict[str, tuple[str, bytes, str]] | None = None,
             expect: int | tuple[int, ...] = 201,
             work: dict[str, Any] | None = None, key: str | None = None,
             keyed: bool = True, sent: tuple[str, dict[str, Any]] | None = None
             ) -> Call[Receipt]:
    """`work`: a work sent by hash, which a new entry must be (`verify.check_sent_work`).
    `sent`: another write's entry kind and fields, which its entry must record
    (`verify.check_sent`). `key`: the write's Idempotency-Key, on a path that takes one
    (`keyed`)."""
    def finish(answer: Any, trust: Trust) -> Receipt:
        return verify.check_receipt(answer, trust.verifiers, file_sha256=file_sha256,
                                    work=work, account=trust.account, sent=sent)

    return Call("POST", path, finish, json=body, data=data, files=files, expect=expect,
                headers=None if key is None else {IDEMPOTENCY_KEY: key},
                needs_trust=True, needs_account=True, keyed=keyed, resendable=key is not None)


REGISTERED = (200, 201)
"""A registration answers 201 with a new entry, or 200 with this account's earlier one
(`Receipt.already_registered`), unless `again` asked for a new entry."""


def register_work(fields: WorkFields, key: str | None = None) -> Call[Receipt]:
    body = _work_body(fields)
    return _receipt("/v1/works", body, file_sha256=body["sha256"], expect=REGISTERED, work=body,
                    key=key)


def _work_body(fields: WorkFields | BatchWork) -> dict[str, Any]:
    body = _body(fields)
    if not body.get("again"):
        body.pop("again", None)
    return body


class BatchWork(WorkFields, total=False):
    """A work in a batch (POST /v1/works/batch), with its own Idempotency-Key if wanted."""

    idempotency_key: str


MAX_BATCH = 1000
"""Works one batch request may carry."""


BatchResult = Receipt | ProblemError | UnverifiedAnswer
"""A batch item's answer: its verified receipt, the problem that refused it (nothing written
for it), or a receipt that does NOT verify (the exception holds what the server sent)."""


def strict_json(value: Any) -> bytes:
    """`value` as compact JSON by orjson, refused as httpx's `json=` (the standard library's
    encoder, `allow_nan=False`) refuses it: ValueError for NaN or an infinity, which orjson
    would write as null, and TypeError for anything that is not a JSON type (a datetime, UUID,
    dataclass or numpy value, which orjson would encode silently), so a caller never gets a
    receipt for data it did not send. Stricter than `json.dumps` in two ways: integers must fit
    in 53 bits (the registry's limit), and object keys must be strings (not silently made so)."""
    _only_json(value)
    return orjson.dumps(value, default=_not_json, option=orjson.OPT_STRICT_INTEGER)


_SCALARS = frozenset({str, int, bool, type(None)})
_KEYS = frozenset({str})


def _only_json(value: Any) -> None:
    """Raise unless `value` is made of str, int, bool, None, finite float, list, tuple and dict
    with str keys (what `json.dumps` takes, less its NaN). A dict or list whose members are
    all of those exact scalar types is passed whole, by their set of types: a batch of 1,000
    works is walked in about a microsecond a work instead of three (D83)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in _SCALARS:
            continue
        if t is dict and set(map(type, v)) <= _KEYS:
            members = v.values()
        elif t is list or t is tuple:
            members = v
        else:
            _check_one(v, stack)
            continue
        if not set(map(type, members)) <= _SCALARS:
            stack.extend(members)


def _check_one(v: Any, stack: list[Any]) -> None:
    """`_only_json` of a value that is not an exact dict, list, tuple or scalar: a float, a
    subclass of a JSON type (as `json.dumps` takes it), or what JSON cannot carry."""
    if isinstance(v, str | int) or v is None:  # bool is an int
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"Out of range float values are not JSON compliant: {v!r}")
    elif isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise TypeError("a JSON object's keys must be strings")
        stack.extend(v.values())
    elif isinstance(v, list | tuple):
        stack.extend(v)
    else:
        _not_json(v)


def _not_json(v: Any) -> Any:
    """orjson's `default`, and the walk's verdict: the wording of `json.dumps` (a programming
    error of the caller's, as there, not a message for a person)."""
    raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")


def register_works(works: Sequence[BatchWork], again: bool = False, keys: bool = False
                   ) -> Call[list[BatchResult]]:
    """Many works in one request: for each, in order, its verified receipt (a new entry, or
    `already_registered`), the problem that refused it, or UnverifiedAnswer. `keys`: give each
    work sent `again` without an `idempotency_key` one of its own, so the request can be
    resent; the others need none, since a resend of such a work is answered with its entry
    (D36), and a key costs the server two transactions an item."""
    bodies = [_work_body(w) for w in works]
    if keys:
        bodies = [{**b, "idempotency_key": str(uuid.uuid4())} if _needs_key(b, again) else b
                  for b in bodies]

    def finish(answer: Any, trust: Trust) -> list[BatchResult]:
        try:
            results = answer["results"]
            if [r["index"] for r in results] != list(range(len(bodies))):
                raise ResponseError("POST /v1/works/batch: the answer does not list each work "
                                    "once, in order")
            out: list[BatchResult | None] = [
                None if "registration" in r else ProblemError.from_problem(r["status"],
                                                                           r["problem"])
                for r in results]
            at = [i for i, r in enumerate(results) if "registration" in r]
            checked = verify.check_receipts(  # a block's shared parts checked once
                [results[i]["registration"] for i in at], trust.verifiers,
                file_sha256s=[bodies[i]["sha256"] for i in at],
                works=[{**bodies[i], "again": True} if again else bodies[i]  # ?again=true
                       for i in at],  # a sent work's entry written, not parsed
                account=trust.account)
            for i, got in zip(at, checked, strict=True):
                out[i] = got
            return [o for o in out if o is not None]
        except (KeyError, TypeError) as e:
            raise ResponseError(said("POST /v1/works/batch: malformed answer ({e!r})",
                                     e=e)) from None

    return Call("POST", "/v1/works/batch", finish, content=strict_json({"works": bodies}),
                headers={"Content-Type": "application/json"},
                params={"again": "true"} if again else None, expect=200, needs_trust=True,
                needs_account=True, items_wait=batch_items_wait,
                item_keys=tuple(b.get("idempotency_key") for b in bodies),
                resendable=bool(bodies) and not any(_needs_key(b, again) for b in bodies))


def _needs_key(work: dict[str, Any], again: bool) -> bool:
    """True for a batch's work that would be written twice if sent twice without a key: one
    sent `again` (the request's or its own)."""
    return not work.get("idempotency_key") and bool(again or work.get("again"))


def readable_name(path: Path) -> str:
    """A file's name as text a title or form can hold: a name that is not UTF-8 (its bytes
    kept as lone surrogates, which neither JSON nor a form can send) with U+FFFD for each
    bad byte."""
    return os.fsencode(path.name).decode("utf-8", "replace")


def read_file(file: bytes | Path, name: str | None, media_type: str | None
              ) -> tuple[bytes, str, str | None]:
    """An upload's bytes, file name and media type (guessed from the name if not given)."""
    if isinstance(file, Path):
        name = name or readable_name(file)
        file = file.read_bytes()
    name = name or "upload"
    return file, name, media_type or mimetypes.guess_type(name)[0]


def upload_work(file: bytes | Path, fields: UploadFields, key: str | None = None
                ) -> Call[Receipt]:
    f = _body(fields)
    content, name, media = read_file(file, f.get("filename"), f.get("media_type"))
    data: dict[str, str | list[str]] = {
        "title": f["title"], "creators": list(f["creators"]), "work_type": f["work_type"]}
    if "license" in f:
        data["license"] = f["license"]
    if "metadata" in f:
        data["metadata"] = json.dumps(f["metadata"])
    if f.get("again"):
        data["again"] = "true"
    upload = (name, content, media or "application/octet-stream")
    return _receipt("/v1/works", data=data, files={"file": upload},
                    file_sha256=hashlib.sha256(content).hexdigest(), expect=REGISTERED, key=key)


def deposit_evidence(fields: EvidenceFields, key: str | None = None) -> Call[Receipt]:
    body = _body(fields)
    return _receipt("/v1/evidence", body, file_sha256=body["sha256"], key=key,
                    sent=("evidence", body))


def transfer(fields: TransferFields, key: str | None = None) -> Call[Receipt]:
    body = _body(fields)
    return _receipt("/v1/transfers", body, key=key, sent=("transfer", body))


def answer_offer(offer_seq: int, what: Literal["accept", "withdraw"],
                 note: str | None) -> Call[Receipt]:
    """Accept (as its recipient) or withdraw (as its offerer) an offer of assignment. The path
    takes no Idempotency-Key, so it is never resent (a second one is refused, 409)."""
    body = {} if note is None else {"note": note}
    return _receipt(f"/v1/transfers/{offer_seq}/{what}", body, keyed=False,
                    sent=("acceptance" if what == "accept" else "withdrawal",
                          {**body, "offer": offer_seq}))


def file_claim(notice: dict[str, Any], key: str | None = None) -> Call[Receipt]:
    return _receipt("/v1/claims", notice, key=key, sent=("claim", notice))


def _claim_check(answer: Any, trust: Trust) -> ClaimCheck:
    return verify.check_claim_check(answer, trust.verifiers)


def check_claim(content: dict[str, Any], fields: CheckFields) -> Call[ClaimCheck]:
    f = _body(fields)
    body = {"claimant": f.pop("claimant"), "content": content, **f}
    return Call("POST", "/v1/claims/check", _claim_check, json=body, needs_trust=True,
                resendable=True)


def check_claim_upload(
    file: bytes | Path, fields: CheckFields, *, filename: str | None, media_type: str | None
) -> Call[ClaimCheck]:
    data: dict[str, str | list[str]] = {k: str(v) for k, v in _body(fields).items()}
    content, name, media = read_file(file, filename, media_type)
    upload = (name, content, media or "application/octet-stream")
    return Call("POST", "/v1/claims/check", _claim_check, data=data, files={"file": upload},
                needs_trust=True, resendable=True)


def timestamp(query: bytes) -> Call[bytes]:
    return Call("POST", "/v1/timestamp", _raw, content=query,
                headers={"Content-Type": "application/timestamp-query"}, decode="bytes",
                resendable=True)


# ------------------------------------------------------------------ reads


def get(path: str, params: dict[str, str | int] | None = None) -> Call[Any]:
    """A read whose answer is returned as parsed JSON (see results.py for why)."""
    return Call("GET", path, _raw, params=params)


def entry(seq: int) -> Call[Any]:
    return get(f"/v1/entries/{int(seq)}")


def bundle(seq: int) -> Call[Any]:
    return get(f"/v1/entries/{int(seq)}/bundle")


def search(sha256: str) -> Call[Any]:
    return get("/v1/search", {"sha256": sha256})


def claim(seq: int) -> Call[Any]:
    return get(f"/v1/claims/{int(seq)}")


def claim_contact(seq: int) -> Call[Disclosure]:
    return Call("GET", f"/v1/claims/{int(seq)}/contact",
                lambda answer, _: verify.check_contact(answer))


def erase_claim_contact(seq: int) -> Call[Any]:
    return Call("DELETE", f"/v1/claims/{int(seq)}/contact", _raw)


def log() -> Call[Any]:
    return get("/v1/log")


def notary_keys() -> Call[Any]:
    return get("/v1/notary/keys")


def block(height: int) -> Call[Any]:
    return get(f"/v1/blocks/{int(height)}")


def healthz() -> Call[Any]:
    return get("/healthz")


def whoami() -> Call[Any]:
    return get("/v1/whoami")


def learn_account(me: Any) -> str:
    """The account GET /v1/whoami names, for when the caller gave none (D93)."""
    account = me.get("account") if isinstance(me, dict) else None
    if type(account) is not str or not account:
        raise ResponseError(said("GET /v1/whoami: no account"))
    return account


def account_unknown(answer: Any, cause: CopyledgerError) -> UnverifiedAnswer:
    """A write answered, but GET /v1/whoami, asked after it for the account its entries must
    name, failed: the answer is refused as unverified and kept on the error (`answer`), so
    the caller sees what the registry answered (D99; before, only whoami's error was
    raised, as if the write had not been answered)."""
    return UnverifiedAnswer(said(
        "the registry answered this write (its answer is on this error), but the account its "
        "entries must name could not be learned (GET /v1/whoami: {cause}), so the answer is not "
        "verified; give the client account= (the CLI: --account) to check writes without asking",
        cause=cause.detail), answer)


def proof(seq: int, tree_size: int | None) -> Call[InclusionProof]:
    def finish(answer: Any, trust: Trust) -> InclusionProof:
        p = verify.check_proof(answer, trust.verifiers)
        if p.seq != seq or tree_size not in (None, 0, p.tree_size):  # (a genuine proof of
            raise UnverifiedAnswer(said(  # another entry, or tree, proves nothing of this one)
                "the proof is of seq {got} in a tree of {size}, not the one asked for",
                got=p.seq, size=p.tree_size), answer)
        return p

    params: dict[str, str | int] | None = {"tree_size": tree_size} if tree_size else None
    return Call("GET", f"/v1/entries/{int(seq)}/proof", finish, params=params, needs_trust=True)


def certificate(seq: int, pdf: bool) -> Call[bytes]:
    return Call("GET", f"/v1/entries/{int(seq)}/certificate", _raw,
                params={"format": "pdf" if pdf else "html"}, decode="bytes")


def history(seq: int) -> Call[dict[str, Any]]:
    def finish(answer: Any, trust: Trust) -> dict[str, Any]:
        return verify.check_history(answer, trust.verifiers, seq)

    return Call("GET", f"/v1/works/{int(seq)}/history", finish, needs_trust=True)


def checkpoint() -> Call[SignedCheckpoint]:
    def finish(text: Any, trust: Trust) -> SignedCheckpoint:
        return verify.check_checkpoint(text, trust.verifiers)

    return Call("GET", "/v1/log/checkpoint", finish, decode="text", needs_trust=True)


def cosigned_checkpoint() -> Call[SignedCheckpoint]:
    """The latest checkpoint a quorum of the log's witnesses cosigned; the log's signature is
    checked here, the cosignatures by whoever pins the witnesses' keys (`verify_bundle`)."""
    def finish(text: Any, trust: Trust) -> SignedCheckpoint:
        return verify.check_checkpoint(text, trust.verifiers)

    return Call("GET", "/v1/log/cosigned-checkpoint", finish, decode="text", needs_trust=True)


def bundle_checkpoint(bundle: dict[str, Any], trust: Trust) -> SignedCheckpoint:
    """The checkpoint an evidence bundle was sealed under, signed by a trusted key."""
    text = bundle.get("checkpoint") if isinstance(bundle, dict) else None
    if not isinstance(text, str):
        raise ResponseError("not an evidence bundle: it has no checkpoint")
    return verify.check_checkpoint(text, trust.verifiers)


def cosigned_since(old: SignedCheckpoint, witnessed: SignedCheckpoint) -> SignedCheckpoint:
    """`witnessed` if it covers the bundle's tree `old`; ResponseError if the witnesses have
    not cosigned a tree that large yet (a bundle sealed after their last cosignature)."""
    if witnessed.size >= old.size:
        return witnessed
    raise ResponseError(said(
        "the log's latest cosigned checkpoint (tree size {new}) is older than the bundle's (tree "
        "size {old}): its witnesses have not cosigned the bundle's tree yet; refresh it later",
        new=witnessed.size, old=old.size))


def refreshed(bundle: dict[str, Any], witnessed: SignedCheckpoint,
              proof: ConsistencyProof) -> dict[str, Any]:
    """The bundle with `witnessed` set to a later cosigned checkpoint and the (verified)
    consistency proof from the bundle's own checkpoint to it."""
    return {**bundle, "witnessed": {"checkpoint": witnessed.note,
                                    "consistency": list(proof.proof)}}


STALE_PAUSES = (0.05, 0.2, 0.5)
"""Seconds to wait before asking again for the log's latest checkpoint while it is older than
one the caller holds: a cache, or a process of the registry that has not yet heard of the
newest block, can answer an earlier one for a moment (D128, D129)."""


def not_older(old: SignedCheckpoint, latest: SignedCheckpoint) -> SignedCheckpoint:
    """`latest`, the log's answer on the last try, if `old` can be proved into it;
    UnverifiedAnswer (with the older signed checkpoint, the evidence) if the log still answers
    an older tree than `old`."""
    if latest.size >= old.size:
        return latest
    raise UnverifiedAnswer(said(
        "the log's latest checkpoint (tree size {new}) is older than the one given (tree size "
        "{old}), on {tries} tries: a stale copy of the log, or a rollback", new=latest.size,
        old=old.size, tries=len(STALE_PAUSES) + 1), latest.note)


def consistency(old: SignedCheckpoint, new: SignedCheckpoint) -> Call[ConsistencyProof]:
    def finish(answer: Any, _: Trust) -> ConsistencyProof:
        return verify.check_consistency(answer, old, new)

    return Call("GET", "/v1/log/consistency", finish, params={"from": old.size, "to": new.size})
