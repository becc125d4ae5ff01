"""The audit's quick path for the commonest entry: a work without metadata or fingerprints.

`entry.validate_logged` after `jcs.parse_canonical` is the reference; it costs about 50 µs
of Python per entry, most of it walking field tables and building error paths for errors a
logged entry almost never has. A log of millions of works needs less than 10 µs. Here the
bytes are read by orjson (a C parser that refuses invalid UTF-8, lone surrogate escapes,
NaN and a byte order mark), the value is held to the work kind's exact key set, the very
field checks of `entry` run on each value (no path strings, no error list unless one
fails), and orjson's sorted compact encoding must give back the stored bytes.

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

import orjson

from copyledger.ledger import entry as entry_mod

__all__ = ["quick_logged"]

_WORK = entry_mod._KIND_FIELDS["work"]
_REQUIRED = frozenset(name for name, (required, _) in _WORK.items() if required)
_ALLOWED = frozenset(_WORK) - {"metadata"}
_CONTENT = frozenset({"sha256", "sm3", "size", "media_type"})  # not fingerprints
_CHECKS = {name: check for name, (_, check) in _WORK.items()}
_SORT = orjson.OPT_SORT_KEYS


def quick_logged(data: bytes) -> tuple[str, str, str] | None:
    """(kind, content sha256, registrant) of the logged entry `data` if it is a work without
    metadata or fingerprints, stored in its RFC 8785 form, that `entry.validate` accepts;
    None when this path does not decide (then `documents.parse_logged_entry` does)."""
    if len(data) > entry_mod.MAX_ENTRY_BYTES:
        return None
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
        if value is None:
            return None
        _CHECKS[name](value, name, errors)
    if errors or orjson.dumps(obj, option=_SORT) != data:
        return None
    return "work", content["sha256"], obj["registrant"]
