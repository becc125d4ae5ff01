"""The audit's quick path for the commonest entry: a work without metadata or fingerprints.

`entry.validate_logged` after `jcs.parse_canonical` is the reference; it costs about 50 µs
of Python per entry, most of it walking field tables and building error paths for errors a
logged entry almost never has. A log of millions of works needs less than 10 µs. Here the
bytes are read by orjson (a C parser that refuses invalid UTF-8, lone surrogate escapes,
NaN and a byte order mark), the value is held to the work kind's exact key set, each field
gets a compiled check for its plain form (ASCII text, a UTC time, lowercase hex: one
regular expression or two) that accepts only what `entry`'s own check accepts, and
anything else (non-ASCII text, a time with an offset, a media type) gets `entry`'s own
check; then orjson's sorted compact encoding must give back the stored bytes. Before all
that, the plain work with ASCII text and a UTC time (nearly every entry of a large log) is
matched whole by one compiled pattern over its bytes, `_PLAIN_WORK` (D73): about 3 µs instead
of 9, and it decides exactly as the field-by-field path does on what it matches.

For the values those checks accept (strings, lists of strings, an object of strings and
integers 0..2**53-1, ASCII keys), orjson's encoding is exactly RFC 8785's: the same
escapes (two-character ones for \\b \\t \\n \\f \\r \\" \\\\, lowercase \\u00xx for other
controls, everything else as is) and the same key order (code point order equals UTF-16
order below U+0080). Duplicate keys, spaces, another order, other escapes or numbers
written otherwise cannot survive the round trip.

`quick_logged` never refuses: it answers only for entries the reference accepts and says
what the reference would index them under; anything else (any other kind, metadata,
fingerprints, a doubtful byte) is None and the reference decides and names the fault
(`tests/test_quick_entry.py` checks this with Hypothesis and by flipping every byte).
"""

from __future__ import annotations

import functools
import re

import orjson

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import jcs

__all__ = ["matched_plain_work", "plain_work", "quick_canonical", "quick_logged"]

_WORK = entry_mod._KIND_FIELDS["work"]
_REQUIRED = frozenset(name for name, (required, _) in _WORK.items() if required)
_ALLOWED = frozenset(_WORK) - {"metadata"}
_CONTENT = frozenset({"sha256", "sm3", "size", "media_type"})  # not fingerprints
_CHECKS = {name: check for name, (_, check) in _WORK.items()}
_SORT = orjson.OPT_SORT_KEYS

_TEXT_LIMITS = {"title": 500, "license": 100}
_CREATOR_LIMIT = 200
"""The lengths `entry` allows these texts (`tests/test_quick_entry.py` holds them to it)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ASCII_CONTROL = re.compile("[\x00-\x1f\x7f]")
_UTC_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                       r"(?:\.[0-9]{1,9})?Z")


def _plain_text(value: object, limit: int) -> bool:
    """True only if `entry`'s free-text check accepts `value` (False: let it decide). For
    ASCII, that check comes down to: something besides whitespace, within the limit, no
    control character (no ASCII character is a surrogate, a bidi control or a format one)."""
    return (type(value) is str and value.isascii() and len(value) <= limit
            and bool(value.strip()) and _ASCII_CONTROL.search(value) is None)


@functools.lru_cache(maxsize=4096)
def _valid_date(date: str) -> bool:
    return entry_mod._valid_timestamp(date + "T00:00:00Z")


def _plain_time(value: object) -> bool:
    """True only if `entry` accepts the timestamp: UTC, no leap second, a real date."""
    if type(value) is not str:
        return False
    m = _UTC_TIME.fullmatch(value)
    return m is not None and _valid_date(m.group(1))


def _plain_field(name: str, value: object) -> bool:
    """True only if `entry`'s check of this work field accepts `value`; False: the reference
    check decides (usually: accepts what this does not read, such as non-ASCII text)."""
    if name == "title" or name == "license":
        return _plain_text(value, _TEXT_LIMITS[name])
    if name == "received_at":
        return _plain_time(value)
    if name == "creators":
        return (type(value) is list and 1 <= len(value) <= 50
                and all(_plain_text(c, _CREATOR_LIMIT) for c in value))
    if name == "registrant":
        return entry_mod.valid_registrant(value)
    if name == "work_type":
        return value in entry_mod.WORK_TYPES and type(value) is str
    if name == "schema":
        return value == entry_mod.SCHEMA and type(value) is str
    if name == "content":
        return (type(value) is dict and "sha256" in value
                and all(_plain_content(k, v) for k, v in value.items()))
    return name == "kind"  # "work": read before


def _hex64(value: object) -> bool:
    """64 lowercase hex digits: `_HEX64`'s compiled match, about half the time of the
    `str.strip` check it replaced (246 against 452 ns a call, timeit on Python 3.11)."""
    return type(value) is str and _HEX64.fullmatch(value) is not None


def _plain_content(name: str, value: object) -> bool:
    if name == "sha256" or name == "sm3":
        return _hex64(value)
    if name == "size":
        return type(value) is int and 0 <= value <= jcs.MAX_SAFE_INTEGER
    return False  # media_type: the reference decides


def _text_pattern(limit: int) -> bytes:
    """An RFC 8785 JSON string of printable ASCII that `_plain_text` accepts: 1..limit
    characters (an escape, \\" or \\\\, is one), one of them not a space; any other escape
    (a control) or byte (non-ASCII) is not matched."""
    return rb'"(?= *[!#-~])(?:[ !#-\[\]-~]|\\["\\]){1,%d}"' % limit


_CREATOR = _text_pattern(_CREATOR_LIMIT)
_PLAIN_WORK = re.compile(
    rb'\{"content":\{"sha256":"([0-9a-f]{64})"(?:,"size":(0|[1-9][0-9]{0,15}))?'
    rb'(?:,"sm3":"[0-9a-f]{64}")?\},'
    rb'"creators":\[' + _CREATOR + rb'(?:,' + _CREATOR + rb'){0,49}\],'
    rb'"kind":"work",'
    rb'(?:"license":' + _text_pattern(_TEXT_LIMITS["license"]) + rb',)?'
    rb'"received_at":"([0-9]{4}-[0-9]{2}-[0-9]{2})T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]'
    rb'(?:\.[0-9]{1,9})?Z",'
    rb'"registrant":"([A-Za-z0-9._-]{1,64})",'
    rb'"schema":"' + re.escape(entry_mod.SCHEMA.encode()) + rb'",'
    rb'"title":' + _text_pattern(_TEXT_LIMITS["title"]) + rb','
    rb'"work_type":"(?:' + b"|".join(re.escape(t.encode()) for t in entry_mod.WORK_TYPES)
    + rb')"\}')
"""The plain work's whole RFC 8785 form as one compiled check (D73): the work kind's keys in
their order, no metadata, content without a media type or fingerprints, each value in the
plain form `_plain_field` accepts, written as RFC 8785 writes it. A match is decided without
parsing; anything else goes to the field-by-field path below."""


def _whole(data: bytes) -> tuple[str, str, str] | None:
    """`quick_logged`'s answer from `_PLAIN_WORK` alone, None if it does not match or the
    two checks a pattern cannot make (a real date, the largest safe integer) fail."""
    m = _PLAIN_WORK.fullmatch(data)
    if m is None:
        return None
    sha256, size, date, registrant = m.groups()
    if size is not None and len(size) == 16 and int(size) > jcs.MAX_SAFE_INTEGER:
        return None
    if not _valid_date(date.decode()):
        return None
    return "work", sha256.decode(), registrant.decode()


def matched_plain_work(obj: dict[str, object]) -> bytes | None:
    """The RFC 8785 bytes of `obj`, a JSON object holding only JSON's own types (str, int,
    list, dict), when they are a plain work `_PLAIN_WORK` matches whole: then `entry.validate`
    accepts them (D73). orjson's sorted encoding matched, with no round trip: the caller
    vouches for the types (orjson also writes a tuple as a list, a UUID as text), as
    `check_receipts` does by comparing `obj` with the work it sent (D88). None otherwise."""
    try:
        data = orjson.dumps(obj, option=_SORT)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return data if len(data) <= entry_mod.MAX_ENTRY_BYTES and _whole(data) else None


def quick_logged(data: bytes) -> tuple[str, str, str] | None:
    """(kind, content sha256, registrant) of the logged entry `data` if it is a work without
    metadata or fingerprints, stored in its RFC 8785 form, that `entry.validate` accepts;
    None when this path does not decide (then `documents.parse_logged_entry` does)."""
    if len(data) > entry_mod.MAX_ENTRY_BYTES:
        return None
    return _whole(data) or _by_field(data)


def _by_field(data: bytes) -> tuple[str, str, str] | None:
    """`quick_logged` for what `_PLAIN_WORK` leaves: non-ASCII text, a time with an offset, a
    media type, and everything the reference refuses (None)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or obj.get("kind") != "work":
        return None
    keys = obj.keys()
    if not _REQUIRED <= keys <= _ALLOWED:
        return None
    content = obj["content"]
    if type(content) is not dict or not content.keys() <= _CONTENT:
        return None
    errors: entry_mod.Errors = []
    for name, value in obj.items():
        if not _plain_field(name, value):
            if value is None:
                return None
            _CHECKS[name](value, name, errors)
            if errors:
                return None
    if orjson.dumps(obj, option=_SORT) != data:
        return None
    return "work", content["sha256"], obj["registrant"]


def quick_canonical(entry: object) -> bytes | None:
    """The RFC 8785 bytes of an entry the write path built, when `quick_logged` decides them:
    then `entry.encode(entry, new=True)` accepts it and gives these same bytes (a work holds
    none of the fields D32 retired). None when this path does not decide; the write path then
    calls `entry.encode`, which decides and names the fault. The check is `quick_logged`'s
    own: orjson's sorted encoding, held to the reference's rules and round trip. orjson also
    encodes what `entry.encode` refuses (a tuple, a datetime), so the bytes must read back as
    the very object given, or this path does not decide."""
    try:
        data = orjson.dumps(entry, option=_SORT)
    except (TypeError, orjson.JSONEncodeError):  # a key or value JSON cannot carry as is
        return None
    if quick_logged(data) is None or orjson.loads(data) != entry:
        return None
    return data



_SCHEMA_JSON = orjson.dumps(entry_mod.SCHEMA)
# A batch's entries share the account and the time received: each is checked once.
_same_time = functools.lru_cache(maxsize=16)(_plain_time)
_same_registrant = functools.lru_cache(maxsize=16)(entry_mod.valid_registrant)


def plain_work(*, registrant: str, received_at: str, sha256: str, title: str,
               creators: list[str], work_type: str, size: int | None = None,
               license: str | None = None, sm3: str | None = None) -> bytes | None:
    """The RFC 8785 bytes of `entry.build_work`'s entry for these fields when it is a plain
    work (no media type, metadata or fingerprints) that `entry.encode` accepts, written
    straight from the fields instead of building, encoding and reading back a dict (the batch
    path, D82). Each field must pass the compiled check `_plain_field` makes of it (proven to
    accept only what `entry` accepts: ASCII text, a UTC time, lowercase hex), and for such
    values orjson writes RFC 8785's bytes, in the keys' fixed order here. None when a check
    does not decide (non-ASCII text, anything doubtful or wrong): the caller then takes the
    general path, which decides and names the fault."""
    if not (_plain_text(title, _TEXT_LIMITS["title"])
            and type(creators) is list and 1 <= len(creators) <= 50
            and all(_plain_text(c, _CREATOR_LIMIT) for c in creators)
            and (license is None or _plain_text(license, _TEXT_LIMITS["license"]))
            and _hex64(sha256) and (sm3 is None or _hex64(sm3))
            and (size is None or (type(size) is int and 0 <= size <= jcs.MAX_SAFE_INTEGER))
            and type(work_type) is str and work_type in entry_mod.WORK_TYPES
            and type(registrant) is str and _same_registrant(registrant)
            and type(received_at) is str and _same_time(received_at)):
        return None
    dumps = orjson.dumps
    data = b"".join((
        b'{"content":{"sha256":"', sha256.encode(), b'"',
        b"" if size is None else b',"size":%d' % size,
        b"" if sm3 is None else b',"sm3":"' + sm3.encode() + b'"',
        b'},"creators":', dumps(creators), b',"kind":"work",',
        b"" if license is None else b'"license":' + dumps(license) + b",",
        b'"received_at":"', received_at.encode(), b'","registrant":"', registrant.encode(),
        b'","schema":', _SCHEMA_JSON, b',"title":', dumps(title),
        b',"work_type":"', work_type.encode(), b'"}'))
    return data if len(data) <= entry_mod.MAX_ENTRY_BYTES else None
