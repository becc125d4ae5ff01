"""Entry kinds, their validation, and the canonical bytes that become Merkle leaf data.

An entry is evidence in a dispute years from now, so what goes into the log is checked strictly
once, here: every field, every type, no unknown keys, no nulls, and one canonical encoding
(RFC 8785) whose bytes are what the log commits to. Pure: no I/O, no clock except utc_now().
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime
from urllib.parse import urlsplit

from copyledger.ledger import claims, jcs
from copyledger.ledger.contact import CONTACT_FIELDS
from copyledger.ledger.errors import InvalidInput, said

# The nouns the checks below name in their errors, said once (D56): translatable, and not
# rebuilt on every call of a hot path.
_ENTRY = said("entry")

__all__ = [
    "KINDS",
    "MAX_ENTRY_BYTES",
    "MAX_METADATA_DEPTH",
    "SCHEMA",
    "WORK_TYPES",
    "build_answer",
    "build_claim",
    "build_evidence",
    "build_transfer",
    "build_work",
    "canonical_bytes",
    "content_sha256",
    "utc_now",
    "validate",
]

SCHEMA = "copyledger/entry/v1"
MAX_ENTRY_BYTES = 16_384  # canonical size limit
KINDS = ("work", "evidence", "transfer", "claim", "rotation", "acceptance", "withdrawal")
ANSWER_KINDS = ("acceptance", "withdrawal")  # answers to an offer of assignment
TRANSFER_TYPES = ("assignment", "exclusive_licence", "non_exclusive_licence")
WORK_TYPES = ("text", "image", "audio", "video", "software", "dataset", "other")
MAX_METADATA_DEPTH = 5
MAX_REPORTED_ERRORS = 100

FieldError = dict[str, str]
Errors = list[FieldError]
Check = Callable[[object, str, Errors], None]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REGISTRANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MEDIA_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 restricted-name
_MEDIA_TYPE = re.compile(f"{_MEDIA_NAME}/{_MEDIA_NAME}")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


# ---------------------------------------------------------------- public API


def build_work(
    *,
    registrant: str,
    received_at: str,
    sha256: str,
    title: str,
    creators: list[str],
    work_type: str,
    size: int | None = None,
    media_type: str | None = None,
    license: str | None = None,
    metadata: dict[str, object] | None = None,
    fingerprints: Mapping[str, object] | None = None,
    check: bool = True,
    sm3: str | None = None,
) -> dict[str, object]:
    """Build a work registration entry (optional fields left out when None); validated unless
    `check` is False, for callers that go on to `encode` it (which validates) anyway. `sm3` is
    the content's SM3 digest, which SM-suite registries record beside its SHA-256 (D40)."""
    entry: dict[str, object] = {
        "schema": SCHEMA,
        "kind": "work",
        "registrant": registrant,
        "received_at": received_at,
        "content": _content(sha256, size, media_type, fingerprints, sm3),
        "title": title,
        "creators": list(creators),
        "work_type": work_type,
    }
    _put(entry, "license", license)
    _put(entry, "metadata", copy.deepcopy(metadata))
    return validate(entry) if check else entry


def build_evidence(
    *,
    registrant: str,
    received_at: str,
    sha256: str,
    source_url: str | None,
    captured_at: str,
    capture_method: str,
    description: str,
    related_work: int | None = None,
    size: int | None = None,
    media_type: str | None = None,
    metadata: dict[str, object] | None = None,
    warc_records: list[dict[str, object]] | None = None,
    check: bool = True,
) -> dict[str, object]:
    """Build an evidence deposit entry (optional fields left out when None); validated unless
    `check` is False."""
    entry: dict[str, object] = {
        "schema": SCHEMA,
        "kind": "evidence",
        "registrant": registrant,
        "received_at": received_at,
        "content": _content(sha256, size, media_type),
        "captured_at": captured_at,
        "capture_method": capture_method,
        "description": description,
    }
    _put(entry, "source_url", source_url)
    _put(entry, "related_work", related_work)
    _put(entry, "warc_records", copy.deepcopy(warc_records))
    _put(entry, "metadata", copy.deepcopy(metadata))
    return validate(entry) if check else entry


def build_transfer(
    *,
    registrant: str,
    received_at: str,
    work_seq: int,
    work_sha256: str,
    from_account: str,
    to_account: str,
    transfer_type: str,
    territory: str = "worldwide",
    term_start: str | None = None,
    term_end: str | None = None,
    terms_sha256: str | None = None,
    note: str | None = None,
    needs_acceptance: bool = False,
    check: bool = True,
) -> dict[str, object]:
    """Build an assignment or licence of rights on a registered work. `registrant` is the
    account that records it, which the API requires to be `from_account`, the current holder.
    With `needs_acceptance` an assignment is only an offer: the holder changes when `to_account`
    records an acceptance naming it (`build_answer`)."""
    entry: dict[str, object] = {
        "schema": SCHEMA,
        "kind": "transfer",
        "registrant": registrant,
        "received_at": received_at,
        "work": {"seq": work_seq, "sha256": work_sha256},
        "from": from_account,
        "to": to_account,
        "transfer_type": transfer_type,
        "territory": territory,
    }
    term: dict[str, object] = {}
    _put(term, "start", term_start)
    _put(term, "end", term_end)
    if term:
        entry["term"] = term
    _put(entry, "terms_sha256", terms_sha256)
    _put(entry, "note", note)
    _put(entry, "needs_acceptance", True if needs_acceptance else None)
    return validate(entry) if check else entry


def build_answer(
    *,
    kind: str,
    registrant: str,
    received_at: str,
    work_seq: int,
    work_sha256: str,
    offer: int,
    note: str | None = None,
    check: bool = True,
) -> dict[str, object]:
    """Build the answer to an offer of assignment: an `acceptance` by its recipient (who then
    holds the work) or a `withdrawal` by its offerer (who goes on holding it)."""
    entry: dict[str, object] = {
        "schema": SCHEMA,
        "kind": kind,
        "registrant": registrant,
        "received_at": received_at,
        "work": {"seq": work_seq, "sha256": work_sha256},
        "offer": offer,
    }
    _put(entry, "note", note)
    return validate(entry) if check else entry


def build_claim(
    *,
    registrant: str,
    received_at: str,
    body: dict[str, object],
    check: bool = True,
) -> dict[str, object]:
    """A takedown notice or counter-notice: `body` holds its fields (notice_type, regime,
    claimant, works, targets, ...); see ledger.claims for what each regime requires."""
    entry: dict[str, object] = {
        "schema": SCHEMA,
        "kind": "claim",
        "registrant": registrant,
        "received_at": received_at,
        **{k: copy.deepcopy(v) for k, v in body.items() if v is not None},
    }
    return validate(entry) if check else entry


def validate(entry: object) -> dict[str, object]:
    """Check any entry (freshly built or parsed back from the log) and return it unchanged.

    Raises InvalidInput with `errors=[{"field", "message"}, ...]` naming every bad field, so a
    client can fix all of them in one round trip. Entries logged under earlier rules stay valid
    (a claim with its claimant's contact details in clear, before D32); `encode(..., new=True)`
    applies the rules for what is written now.
    """
    return _check(entry)[0]


def validate_logged(entry: object, canonical: bytes) -> dict[str, object]:
    """`validate` for an entry read back from `canonical`, bytes already known to be its RFC
    8785 form (`jcs.parse_canonical`): the same rules, without encoding it again."""
    return _check(entry, canonical)[0]


def canonical_bytes(entry: dict[str, object]) -> bytes:
    """The RFC 8785 bytes of a valid entry: exactly what the log stores and hashes."""
    return _check(entry)[1]


def encode(entry: object, *, new: bool = False) -> tuple[dict[str, object], bytes]:
    """Validate once and return the entry with its RFC 8785 bytes. `new` is for the write path:
    it also refuses what may no longer enter the log (a claimant's address, phone or e-mail in
    clear: D32), which entries already logged may hold."""
    out = _check(entry)
    if new:
        _raise_if(_retired(out[0]))
    return out


def _retired(entry: dict[str, object]) -> Errors:
    """What entries logged before may hold but new ones may not."""
    claimant = entry.get("claimant") if entry.get("kind") == "claim" else None
    if not isinstance(claimant, dict):
        return []
    return [{"field": f"claimant.{k}", "message": "contact details are not logged: the "
             "registry keeps them off the log and logs a commitment (claimant.contact_commitment)"}
            for k in CONTACT_FIELDS if k in claimant]


def content_sha256(entry: dict[str, object]) -> str:
    """The registered content hash, the key every lookup and claim check uses. A transfer is
    indexed under its work's hash, so a lookup by content also finds the chain of title."""
    content = entry.get("content", entry.get("work"))
    if content is None and entry.get("kind") == "claim":
        return _claim_index(entry)
    if isinstance(content, dict):
        digest = content.get("sha256")
        if isinstance(digest, str):
            return digest
    raise InvalidInput(
        "entry has no content.sha256",
        errors=[{"field": "content.sha256", "message": "required"}],
    )


def _claim_index(entry: dict[str, object]) -> str:
    """A claim is indexed under its first work's hash, else its first target's content hash,
    else the SHA-256 of its first target URL (a DSA notice may name no work)."""
    for key in ("works", "targets"):
        items = entry.get(key)
        first = items[0] if isinstance(items, list) and items else None
        if isinstance(first, dict) and isinstance(first.get("sha256"), str):
            return str(first["sha256"])
    targets = entry.get("targets")
    first = targets[0] if isinstance(targets, list) and targets else None
    if isinstance(first, dict) and isinstance(first.get("url"), str):
        return hashlib.sha256(str(first["url"]).encode()).hexdigest()
    raise InvalidInput("a claim needs a work or a target to be found by",
                       errors=[{"field": "works", "message": "or targets: required"}])


def utc_now(ahead_s: float = 0.0) -> str:
    """Now (or `ahead_s` seconds from now) as RFC 3339 UTC with microseconds, e.g.
    2024-05-01T12:00:00.123456Z. Always 27 characters, so two of these compare as their times
    do: the sequencer compares entries' `received_at` with its clock so (D117)."""
    seconds, micros = divmod(time.time_ns() // 1000 + round(ahead_s * 1e6), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


# ---------------------------------------------------------------- building


def _content(
    sha256: str, size: int | None, media_type: str | None,
    fingerprints: Mapping[str, object] | None = None, sm3: str | None = None,
) -> dict[str, object]:
    content: dict[str, object] = {"sha256": sha256}
    _put(content, "sm3", sm3)
    _put(content, "size", size)
    _put(content, "media_type", media_type)
    if fingerprints:
        content["fingerprints"] = copy.deepcopy(fingerprints)
    return content


def _put(target: dict[str, object], key: str, value: object) -> None:
    if value is not None:
        target[key] = value


# ---------------------------------------------------------------- validation


def _check(entry: object, canonical: bytes | None = None) -> tuple[dict[str, object], bytes]:
    if not isinstance(entry, dict):
        raise InvalidInput(
            "entry must be a JSON object",
            errors=[{"field": "entry", "message": "must be a JSON object"}],
        )
    errors: Errors = []
    kind = entry.get("kind")
    fields = _KIND_FIELDS.get(kind) if isinstance(kind, str) else None
    _check_object(entry, fields if fields is not None else _BASE, "", errors)
    # Without a known kind we cannot tell which other keys belong; the kind check said why.
    if fields is not None:
        for key in entry:
            if key not in fields:
                errors.append({"field": _key_path("", key), "message": "unknown field"})
    if kind == "claim" and isinstance(entry.get("claimant"), dict):
        _check_contact_commitment(entry["claimant"], errors)
    _raise_if(errors)
    if kind == "transfer" and "needs_acceptance" in entry \
            and entry["transfer_type"] != "assignment":
        _raise_if([{"field": "needs_acceptance",
                    "message": "only an assignment waits for acceptance"}])
    if kind == "claim":
        missing = claims.missing_fields(entry)
        if missing:
            raise InvalidInput(
                said("the {regime} {notice_type} lacks what the regime requires: {missing}",
                     regime=entry['regime'], notice_type=entry['notice_type'],
                     missing=', '.join(missing)),
                missing=missing,
                errors=[{"field": m, "message": "required by the regime"} for m in missing],
            )
    if canonical is None:
        canonical = jcs.canonicalize(entry)
    if len(canonical) > MAX_ENTRY_BYTES:
        message = f"canonical entry is {len(canonical)} bytes; the limit is {MAX_ENTRY_BYTES}"
        _raise_if([{"field": "entry", "message": message}])
    return entry, canonical


def _check_object(
    value: Mapping[object, object],
    fields: Mapping[str, tuple[bool, Check]],
    prefix: str,
    errors: Errors,
) -> None:
    """Required/optional fields and their checks; unknown keys are the caller's business."""
    for name, (required, check) in fields.items():
        path = _key_path(prefix, name)
        if name not in value:
            if required:
                errors.append({"field": path, "message": "required"})
        elif value[name] is None:
            errors.append({"field": path, "message": "must be left out rather than null"})
        else:
            check(value[name], path, errors)


def _raise_if(errors: Errors) -> None:
    raise_invalid(_ENTRY, errors)


def raise_invalid(what: str, errors: Errors) -> None:
    """InvalidInput naming every bad field (up to MAX_REPORTED_ERRORS) in `detail` as well as
    in `errors`: a reader of the message alone sees the whole list, with every allowed value."""
    if not errors:
        return
    shown = errors[:MAX_REPORTED_ERRORS]
    listed = "; ".join(f"{e['field']}: {e['message']}" for e in shown)
    if len(errors) > len(shown):
        raise InvalidInput(said("invalid {what}: {listed}; and {more} more", what=what,
                                listed=listed, more=len(errors) - len(shown)), errors=shown)
    raise InvalidInput(said("invalid {what}: {listed}", what=what, listed=listed), errors=shown)


def _key_path(prefix: str, key: object) -> str:
    name = key if isinstance(key, str) else repr(key)
    return f"{prefix}.{name}" if prefix else name


def _enum(values: tuple[str, ...]) -> Check:
    def check(value: object, path: str, errors: Errors) -> None:
        if not isinstance(value, str) or value not in values:
            errors.append({"field": path, "message": f"must be one of {', '.join(values)}"})

    return check


def _obj(fields: dict[str, tuple[bool, Check]], *, non_empty: bool = False) -> Check:
    def check(value: object, path: str, errors: Errors) -> None:
        if not isinstance(value, dict) or (non_empty and not value):
            errors.append({"field": path, "message": "must be a non-empty JSON object"
                           if non_empty else "must be a JSON object"})
            return
        _check_object(value, fields, path, errors)
        for key in value:
            if key not in fields:
                errors.append({"field": _key_path(path, key), "message": "unknown field"})

    return check


def _list_of(item: Check, low: int, high: int, noun: str = "items") -> Check:
    def check(value: object, path: str, errors: Errors) -> None:
        if not isinstance(value, list) or not low <= len(value) <= high:
            errors.append({"field": path, "message": f"must be a list of {low} to {high} {noun}"})
            return
        for i, v in enumerate(value):
            item(v, f"{path}[{i}]", errors)

    return check


def _check_schema(value: object, path: str, errors: Errors) -> None:
    if value != SCHEMA:
        errors.append({"field": path, "message": f"must be {SCHEMA!r}"})


def valid_sha256(value: object) -> bool:
    """64 lowercase hex characters, the only form content hashes take here."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def valid_registrant(value: object) -> bool:
    """An account name entries can record: 1-64 of [A-Za-z0-9._-]."""
    return isinstance(value, str) and _REGISTRANT.fullmatch(value) is not None


def _check_registrant(value: object, path: str, errors: Errors) -> None:
    if not valid_registrant(value):
        message = "must be 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
        errors.append({"field": path, "message": message})


def _check_sha256(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        errors.append({"field": path, "message": "must be 64 lowercase hex characters"})


def valid_count(value: object) -> bool:
    """A non-negative integer (a size, a sequence number) that JSON can carry exactly."""
    return not isinstance(value, bool) and isinstance(value, int) \
        and 0 <= value <= jcs.MAX_SAFE_INTEGER


def _check_count(value: object, path: str, errors: Errors) -> None:
    """Non-negative integers (sizes, sequence numbers) that JSON can carry exactly."""
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append({"field": path, "message": "must be an integer"})
    elif not valid_count(value):
        errors.append({"field": path, "message": f"must be between 0 and {jcs.MAX_SAFE_INTEGER}"})


def _check_media_type(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, str) or len(value) > 127 or not _MEDIA_TYPE.fullmatch(value):
        message = "must be a media type 'type/subtype' (RFC 6838), at most 127 characters"
        errors.append({"field": path, "message": message})


def _text(max_length: int, *, controls: bool = False) -> Check:
    """A check for free text: non-blank, capped, something visible, no bidi override (text a
    court reads must show what it says), and free of control characters unless allowed."""

    def check(value: object, path: str, errors: Errors) -> None:
        if not isinstance(value, str):
            errors.append({"field": path, "message": "must be a string"})
        elif _SURROGATE.search(value):
            errors.append({"field": path, "message": "must be valid Unicode (lone surrogate)"})
        elif not value.strip():
            errors.append({"field": path, "message": "must not be empty"})
        elif len(value) > max_length:
            errors.append({"field": path, "message": f"must be at most {max_length} characters"})
        elif _BIDI.search(value):
            errors.append({"field": path, "message": "must not contain bidirectional embedding, "
                           "override or isolate characters (U+202A-U+202E, U+2066-U+2069)"})
        elif _invisible(value):
            errors.append({"field": path, "message": "must contain a visible character, not "
                           "only whitespace and format characters such as U+200B"})
        elif not controls and _has_control(value):
            errors.append({"field": path, "message": "must not contain control characters"})

    return check


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # exactly Unicode category Cc
# Embeddings, overrides and isolates reorder what is displayed ("evil\u202egpj.exe" shows as
# "evilexe.jpg"); the implicit marks U+200E/U+200F only set direction and stay allowed.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _invisible(text: str) -> bool:
    """Only whitespace and format characters (Unicode category Cf: U+200B, U+2060, U+FEFF,
    ...), so it displays as nothing: a title or a name no one can read or tell apart."""
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in text)


def _check_creators(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, list):
        errors.append({"field": path, "message": "must be a list of names"})
    elif not 1 <= len(value) <= 50:
        errors.append({"field": path, "message": "must list 1 to 50 creators"})
    else:
        check = _text(200)
        for index, name in enumerate(value):
            check(name, f"{path}[{index}]", errors)


def _check_timestamp(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, str) or not _valid_timestamp(value):
        message = "must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z or ...+02:00"
        errors.append({"field": path, "message": message})


def _valid_timestamp(text: str) -> bool:
    """RFC 3339 date-time with "T" and "Z" (or a numeric offset), up to nanosecond digits."""
    match = _TIMESTAMP.fullmatch(text)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    try:
        datetime(year, month, day)
    except ValueError:
        return False
    offset = 0
    if match.group(8) != "Z":
        offset_hour, offset_minute = int(match.group(10)), int(match.group(11))
        if offset_hour > 23 or offset_minute > 59:
            return False
        offset = (offset_hour * 60 + offset_minute) * (1 if match.group(9) == "+" else -1)
    if hour > 23 or minute > 59 or second > 60:
        return False
    # A leap second exists only as 23:59:60 UTC.
    return second < 60 or (hour * 60 + minute - offset) % 1440 == 23 * 60 + 59


def _check_url(value: object, path: str, errors: Errors) -> None:
    message = "must be an http or https URL with a host, at most 2048 characters"
    if not isinstance(value, str) or len(value) > 2048 or _SURROGATE.search(value):
        errors.append({"field": path, "message": message})
        return
    if _has_control(value) or any(char.isspace() for char in value):
        errors.append({"field": path, "message": "must not contain spaces or control characters"})
        return
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        errors.append({"field": path, "message": message})
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append({"field": path, "message": message})


def _check_metadata(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, dict):
        errors.append({"field": path, "message": "must be a JSON object"})
        return
    _check_json(value, path, 1, errors)


def _check_json(value: object, path: str, depth: int, errors: Errors) -> None:
    """Free-form JSON that JCS can encode; control characters allowed in string values."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -jcs.MAX_SAFE_INTEGER <= value <= jcs.MAX_SAFE_INTEGER:
            errors.append({"field": path, "message": "integer outside +-(2**53-1)"})
    elif isinstance(value, float):
        if not math.isfinite(value):
            errors.append({"field": path, "message": "must be a finite number"})
    elif isinstance(value, str):
        if _SURROGATE.search(value):
            errors.append({"field": path, "message": "must be valid Unicode (lone surrogate)"})
    elif isinstance(value, list | dict):
        if depth > MAX_METADATA_DEPTH:
            message = f"nested deeper than {MAX_METADATA_DEPTH} levels"
            errors.append({"field": path, "message": message})
        elif isinstance(value, list):
            for index, item in enumerate(value):
                _check_json(item, f"{path}[{index}]", depth + 1, errors)
        else:
            for key, item in value.items():
                item_path = _key_path(path, key)
                if not isinstance(key, str):
                    errors.append({"field": item_path, "message": "keys must be strings"})
                elif _SURROGATE.search(key) or _has_control(key):
                    message = "keys must be valid Unicode without control characters"
                    errors.append({"field": item_path, "message": message})
                else:
                    _check_json(item, item_path, depth + 1, errors)
    else:
        errors.append({"field": path, "message": f"{type(value).__name__} is not a JSON value"})


def _check_fingerprints(value: object, path: str, errors: Errors) -> None:
    from copyledger.ledger import (
        fingerprint,  # heavy libraries load only when they compute, not here
    )

    try:
        normal = fingerprint.validate_fingerprints(value, field=path)
    except InvalidInput as e:
        errors.append({"field": path, "message": e.detail})
        return
    if normal != value:
        errors.append({"field": path, "message": "not in normal form (lowercase hex, "
                       "low_quality as its quality implies)"})


_CONTENT: dict[str, tuple[bool, Check]] = {
    "sha256": (True, _check_sha256),
    "sm3": (False, _check_sha256),  # SM3 digest (same form), SM-suite registries (D40)
    "size": (False, _check_count),
    "media_type": (False, _check_media_type),
    "fingerprints": (False, _check_fingerprints),
}
_check_content = _obj(_CONTENT)

def _check_term(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, dict) or not value:
        errors.append({"field": path, "message": "must be an object with start and/or end"})
        return
    _check_object(value, _TERM, path, errors)
    for key in value:
        if key not in _TERM:
            errors.append({"field": _key_path(path, key), "message": "unknown field"})
    start, end = value.get("start"), value.get("end")
    if isinstance(start, str) and isinstance(end, str) and _valid_timestamp(start) \
            and _valid_timestamp(end) and parse_timestamp(end) <= parse_timestamp(start):
        errors.append({"field": _key_path(path, "end"), "message": "must be after start"})


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp (as entries hold them) as an aware datetime: the one parser for
    entries, certificates and rotation records. Digits past microseconds are dropped and a leap
    second reads as :59; anything that is not RFC 3339 raises InvalidInput, never a guess."""
    if not _valid_timestamp(text):
        raise InvalidInput(said("not an RFC 3339 timestamp: {text!r}", text=text))
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(re.sub(r":60(?=[.+-])", ":59", text))


_WARC_RECORD: dict[str, tuple[bool, Check]] = {
    "target_uri": (True, _text(2048)),
    "warc_date": (True, _check_timestamp),
    "record_id": (False, _text(200)),
    "payload_sha256": (True, _check_sha256),
}
_check_warc_records = _list_of(_obj(_WARC_RECORD), 1, 1000, "records")

def _check_bool(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, bool):
        errors.append({"field": path, "message": "must be true or false"})


def _check_contact_fields(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, list) or not value or any(v not in CONTACT_FIELDS for v in value) \
            or value != sorted(set(value), key=CONTACT_FIELDS.index):
        errors.append({"field": path, "message": "must list distinct fields among "
                       f"{', '.join(CONTACT_FIELDS)}, in that order"})


def _check_contact_commitment(claimant: dict[object, object], errors: Errors) -> None:
    """A commitment comes with the names of the fields it covers, and never with the fields
    themselves in clear (`ledger.contact`)."""
    committed = "contact_commitment" in claimant
    if committed != ("contact_fields" in claimant):
        errors.append({"field": "claimant.contact_fields", "message": "contact_fields and "
                       "contact_commitment come together"})
    if committed:
        errors += [{"field": f"claimant.{k}", "message": "must be left out: the claimant's "
                    "contact details are committed to, not logged"}
                   for k in CONTACT_FIELDS if k in claimant]


def _check_true(value: object, path: str, errors: Errors) -> None:
    """A flag with one canonical form: present and true, or left out."""
    if value is not True:
        errors.append({"field": path, "message": "must be true (or left out)"})


_CLAIMANT: dict[str, tuple[bool, Check]] = {
    "name": (True, _text(200)),
    "email": (False, _text(254)),  # only in claims logged before D32
    "phone": (False, _text(50)),
    "address": (False, _text(500)),
    "contact_fields": (False, _check_contact_fields),
    "contact_commitment": (False, _check_sha256),
    "authority": (False, _enum(claims.AUTHORITIES)),
    "account": (False, _check_registrant),
}
_CLAIMED_WORK: dict[str, tuple[bool, Check]] = {
    "seq": (False, _check_count),
    "sha256": (False, _check_sha256),
    "description": (False, _text(2000)),
}
_TARGET: dict[str, tuple[bool, Check]] = {
    "url": (True, _check_url),
    "sha256": (False, _check_sha256),
}
_STATEMENTS: dict[str, tuple[bool, Check]] = {
    k: (False, _check_bool)
    for k in ("good_faith", "accuracy", "perjury", "mistake", "jurisdiction_consent")
}

_WORK_REF: dict[str, tuple[bool, Check]] = {
    "seq": (True, _check_count),
    "sha256": (True, _check_sha256),
}
_check_work_ref = _obj(_WORK_REF)

_TERM: dict[str, tuple[bool, Check]] = {
    "start": (False, _check_timestamp),
    "end": (False, _check_timestamp),
}

_BASE: dict[str, tuple[bool, Check]] = {
    "schema": (True, _check_schema),
    "kind": (True, _enum(KINDS)),
    "registrant": (True, _check_registrant),
    "received_at": (True, _check_timestamp),
}
_COMMON: dict[str, tuple[bool, Check]] = {**_BASE, "content": (True, _check_content)}

_KIND_FIELDS: dict[str, dict[str, tuple[bool, Check]]] = {
    "work": {
        **_COMMON,
        "title": (True, _text(500)),
        "creators": (True, _check_creators),
        "work_type": (True, _enum(WORK_TYPES)),
        "license": (False, _text(100)),
        "metadata": (False, _check_metadata),
    },
    "evidence": {
        **_COMMON,
        "source_url": (False, _check_url),
        "captured_at": (True, _check_timestamp),
        "capture_method": (True, _text(100)),
        "description": (True, _text(5000, controls=True)),
        "related_work": (False, _check_count),
        "warc_records": (False, _check_warc_records),
        "metadata": (False, _check_metadata),
    },
    "transfer": {
        **_BASE,
        "work": (True, _check_work_ref),
        "from": (True, _check_registrant),
        "to": (True, _check_registrant),
        "transfer_type": (True, _enum(TRANSFER_TYPES)),
        "territory": (True, _text(200)),
        "term": (False, _check_term),
        "terms_sha256": (False, _check_sha256),
        "note": (False, _text(2000)),
        "needs_acceptance": (False, _check_true),
    },
    **{kind: {  # an answer to an offer: `offer` is the offer's seq
        **_BASE,
        "work": (True, _check_work_ref),
        "offer": (True, _check_count),
        "note": (False, _text(2000)),
    } for kind in ANSWER_KINDS},
    "rotation": {  # the notary's keys changed; indexed under SHA-256 of the new key
        **_BASE,
        "content": (True, _check_content),
        "old_verifier_key": (True, _text(300)),
        "new_verifier_key": (True, _text(300)),
        "old_tsa_root_sha256": (True, _check_sha256),
        "new_tsa_root_sha256": (True, _check_sha256),
        "overlap_until": (True, _check_timestamp),
        # An SM-suite registry's SM2 note key and SM2 TSA root rotate with the others (D57).
        "old_sm2_verifier_key": (False, _text(300)),
        "new_sm2_verifier_key": (False, _text(300)),
        "old_sm2_tsa_root_sha256": (False, _check_sha256),
        "new_sm2_tsa_root_sha256": (False, _check_sha256),
    },
    "claim": {
        **_BASE,
        "notice_type": (True, _enum(claims.NOTICE_TYPES)),
        "regime": (True, _enum(claims.REGIMES)),
        "refers_to": (False, _check_count),
        "claimant": (True, _obj(_CLAIMANT)),
        "works": (False, _list_of(_obj(_CLAIMED_WORK, non_empty=True), 1, 50)),
        "targets": (False, _list_of(_obj(_TARGET), 1, 100)),
        "substantiation": (False, _text(10_000, controls=True)),
        "statements": (False, _obj(_STATEMENTS)),
        "requested_action": (False, _enum(claims.ACTIONS)),
        "signature": (False, _text(200)),
    },
}
