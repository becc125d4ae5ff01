"""RFC 8785 JSON Canonicalization Scheme (JCS).

Entries are hashed into the log as canonical JSON, so every verifier — ours, a court expert's,
any JCS library — must derive the very same bytes from the same value. This module is small on
purpose: a reader can check it against RFC 8785 line by line.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from copyledger.ledger.errors import InvalidInput, said

__all__ = [
    "MAX_SAFE_INTEGER",
    "canonicalize",
    "format_number",
    "parse",
    "parse_canonical",
    "parse_object",
]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer an IEEE 754 double holds exactly; JCS numbers are doubles (RFC 8785 3.2.2.3)."""

_ESCAPES: dict[str, str] = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
for _code in range(0x20):
    _ESCAPES.setdefault(chr(_code), f"\\u{_code:04x}")
del _code

_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_SURROGATE = re.compile("[\ud800-\udfff]")


def canonicalize(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of a JSON value.

    Accepts dict (str keys), list, str, int, float, bool and None; anything else, a lone
    surrogate, an integer outside +-(2**53-1) or a non-finite float is InvalidInput, because
    JCS could not give it one unambiguous encoding.
    """
    quick = _quick_canonicalize(value)
    if quick is not None:
        return quick
    out: list[str] = []
    try:
        _emit(value, out)
    except RecursionError:
        raise InvalidInput("JSON value is nested too deeply (or contains a cycle)") from None
    return "".join(out).encode("utf-8")


def parse(data: bytes) -> object:
    """Parse JSON bytes strictly, for reading canonical data back.

    Rejects invalid UTF-8, a byte order mark, duplicate object keys, NaN and Infinity, numbers
    that overflow a double and lone surrogate escapes: each would let two readers see different
    values in the same bytes. Integer literals beyond +-(2**53-1) are read as doubles, which is
    what they denote in JCS (a canonical 1e20 is written "100000000000000000000").
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(said("JSON is not valid UTF-8 (byte {start})",
                                start=exc.start)) from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as exc:
        raise InvalidInput(said("invalid JSON: {msg} at offset {pos}",
                                msg=exc.msg, pos=exc.pos)) from None
    except RecursionError:
        raise InvalidInput("JSON is nested too deeply") from None
    except ValueError as exc:  # int() digit limit
        raise InvalidInput(said("invalid JSON number: {exc}", exc=exc)) from None
    _reject_surrogates(value)
    return value


def parse_object(data: bytes) -> dict[str, Any]:
    """`parse` for the documents here, which are all JSON objects: anything else is
    InvalidInput, so callers need no isinstance check of their own."""
    value = parse(data)
    if not isinstance(value, dict):
        raise InvalidInput("JSON document is not an object")
    return value


def parse_canonical(data: bytes) -> object | None:
    """The value of `data` if `data` is its RFC 8785 form, else None: what `parse` and then
    `canonicalize` decide, for the log's own bytes, which nearly always are.

    Most entries hold no float, no integer of 16 digits or more and no character beyond
    U+FFFF; for those, Python's C encoder (sorted keys, no spaces, no ASCII escaping) writes
    exactly the RFC 8785 form, so parsing with the C decoder and writing back is enough. The
    rest (and anything the quick path cannot read) is decided by `parse` and `canonicalize`.
    Duplicate keys, NaN, lone surrogate escapes, a byte order mark or non-canonical
    spacing, escaping or order cannot survive the round trip, so they are never accepted.
    """
    quick = _quick_canonical(data)
    if quick is not _UNDECIDED:
        return quick
    value = parse(data)
    return value if canonicalize(value) == data else None


class _Undecided(Exception):
    """The quick path leaves this value to the full one."""


_UNDECIDED = _Undecided()
_ASTRAL = re.compile(rb"[\xf0-\xff]")  # lead bytes of 4-byte UTF-8 (and invalid bytes)


def _undecided(_literal: str) -> object:
    raise _UNDECIDED


def _small_int(literal: str) -> int:
    if len(literal) > 15:
        raise _UNDECIDED
    return int(literal)


def _quick_canonical(data: bytes) -> object:
    """The value of `data` read at C speed if it is canonical, `_UNDECIDED` if this cannot
    tell (not canonical, or not something it reads). Characters beyond U+FFFF sort
    differently (UTF-16 code units in RFC 8785), floats and large integers are written
    differently: undecided."""
    if _ASTRAL.search(data):
        return _UNDECIDED
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_float=_undecided, parse_int=_small_int,
                           parse_constant=_undecided)
        again = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    except _Undecided:
        return _UNDECIDED
    except (ValueError, RecursionError):  # not JSON, or too deep: `parse` says why
        return _UNDECIDED
    return value if again == text else _UNDECIDED


def _quick_canonicalize(value: object) -> bytes | None:
    """`canonicalize` by Python's C encoder, when that is sure to write the RFC 8785 form;
    None when it is not (then `_emit` writes it, or says why it cannot).

    The C encoder (sorted keys, no spaces, no ASCII escaping) escapes strings as RFC 8785
    does; it differs on floats, integers beyond 2**53, non-string keys, key order beyond
    U+FFFF, lone surrogates and non-JSON types. Reading its output back with floats and long
    integers refused and comparing with `value` rules each of these out, at C speed: the
    encoder writes dicts, lists, strings, integers, booleans and None as they are, and what
    it converts (a tuple to a list, a non-string key to a string) reads back unequal."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                          allow_nan=False)
        data = text.encode("utf-8")
        if _ASTRAL.search(data):
            return None
        back = json.loads(text, parse_float=_undecided, parse_int=_small_int,
                          parse_constant=_undecided)
    except (_Undecided, TypeError, ValueError, RecursionError):  # UnicodeError is a ValueError
        return None
    return data if back == value else None


def _emit(value: object, out: list[str]) -> None:
    # bool before int: bool is a subclass of int.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        number = int(value)
        if not -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            raise InvalidInput(said("integer {number} is outside the JSON safe range +-(2**53-1)",
                                    number=number))
        out.append(str(number))
    elif isinstance(value, float):
        out.append(format_number(float(value)))
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _emit(item, out)
        out.append("]")
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise InvalidInput(said("object keys must be strings, not {name}",
                                        name=type(key).__name__))
        out.append("{")
        for index, key in enumerate(sorted(value, key=_utf16_key)):
            if index:
                out.append(",")
            out.append(_quote(key))
            out.append(":")
            _emit(value[key], out)
        out.append("}")
    else:
        raise InvalidInput(said("{name} is not a JSON value", name=type(value).__name__))


def _utf16_key(key: str) -> bytes:
    """Sort key: RFC 8785 3.2.3 orders property names by UTF-16 code units."""
    return key.encode("utf-16-be", "surrogatepass")


def _quote(text: str) -> str:
    """A JSON string literal as ES6 JSON.stringify writes it (RFC 8785 3.2.2.2)."""
    if _SURROGATE.search(text):
        raise InvalidInput("string contains a lone surrogate (not valid Unicode)")
    if not _NEEDS_ESCAPE.search(text):  # the common case: nothing to escape
        return '"' + text + '"'
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], text) + '"'


def format_number(number: float) -> str:
    """ES6 Number.prototype.toString for a finite double (ECMA-262 7.1.12.1).

    Python's repr gives the shortest digits that round-trip, which are the digits ES picks;
    only the layout (plain, leading "0.", or exponent) differs and is redone here.
    """
    if not math.isfinite(number):
        raise InvalidInput(said("{number} is not a finite number; JSON cannot represent it",
                                number=number))
    if number == 0:
        return "0"  # also for -0.0
    if number < 0:
        return "-" + format_number(-number)
    mantissa, _, exp = repr(number).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exp) if exp else 0)  # value = 0.<digits> * 10**point
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    digits = significant.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    exponent = n - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidInput(said("duplicate object key {key!r}", key=key))
        result[key] = value
    return result


def _reject_constant(name: str) -> object:
    raise InvalidInput(said("{name} is not valid JSON", name=name))


def _parse_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise InvalidInput(said("number {literal} overflows a double", literal=literal))
    return number


def _parse_int(literal: str) -> int | float:
    number = int(literal)
    if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
        return number
    return _parse_float(literal)


def _reject_surrogates(value: object) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidInput("JSON string contains a lone surrogate escape")
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
