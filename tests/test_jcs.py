"""RFC 8785 canonicalization: the RFC's own examples, and agreement with an independent library."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from copyledger.ledger import jcs
from copyledger.ledger.errors import InvalidInput

# RFC 8785 3.2.2.3 / Appendix B: IEEE 754 bit patterns and their canonical text.
NUMBER_VECTORS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), NUMBER_VECTORS)
def test_rfc8785_numbers(bits: str, expected: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(bits))
    assert jcs.canonicalize(number) == expected.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_non_finite_numbers_rejected(bits: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(bits))
    with pytest.raises(InvalidInput):
        jcs.canonicalize(number)


def test_rfc8785_section_3_2_4_example() -> None:
    source = (
        b'{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        b' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        b' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert jcs.canonicalize(jcs.parse(source)) == expected


def test_rfc8785_section_3_2_3_sorting() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode()
    assert jcs.canonicalize(value) == expected


def test_string_escapes() -> None:
    text = '\b\t\n\f\r"\\\x00\x1f\x7f/é\u2028'
    assert jcs.canonicalize(text) == '"\\b\\t\\n\\f\\r\\"\\\\\\u0000\\u001f\x7f/é\u2028"'.encode()


def test_integers() -> None:
    expected = b"[0,-1,9007199254740991,-9007199254740991]"
    assert jcs.canonicalize([0, -1, 2**53 - 1, -(2**53 - 1)]) == expected
    for bad in (2**53, -(2**53), 10**30):
        with pytest.raises(InvalidInput):
            jcs.canonicalize(bad)


def test_floats_that_are_integral() -> None:
    expected = b"[1,0,100000000000000000000,1e+21,0.1]"
    assert jcs.canonicalize([1.0, -0.0, 1e20, 1e21, 0.1]) == expected


@pytest.mark.parametrize(
    "bad",
    [
        {1: "x"},
        {"a": object()},
        (1, 2),
        b"bytes",
        {1.5},
        "lone \ud800 surrogate",
        {"\udfff": 1},
        float("nan"),
    ],
)
def test_unsupported_values_rejected(bad: object) -> None:
    with pytest.raises(InvalidInput):
        jcs.canonicalize(bad)


def test_cycle_rejected() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(InvalidInput):
        jcs.canonicalize(loop)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"x":{"b":1,"b":1}}',
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b"1e400",
        b'"\xff"',
        b"\xef\xbb\xbf{}",
        b'"\\ud800"',
        b'{"\\udc00":1}',
        b"{",
        b"[1,]",
        b"'a'",
        b'"tab\tinside"',
        b"1" * 5000,
    ],
)
def test_parse_rejects(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        jcs.parse(data)


def test_parse_reads_large_integers_as_doubles() -> None:
    assert jcs.parse(b"100000000000000000000") == 1e20
    assert jcs.parse(b"9007199254740991") == 2**53 - 1
    assert isinstance(jcs.parse(b"9007199254740991"), int)


def test_parse_accepts_surrogate_pairs() -> None:
    assert jcs.parse(b'"\\ud83d\\ude00"') == "\U0001f600"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
def test_matches_rfc8785_library(value: object) -> None:
    assert jcs.canonicalize(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


@given(json_values)
def test_parse_then_canonicalize_is_stable(value: object) -> None:
    canonical = jcs.canonicalize(value)
    assert jcs.canonicalize(jcs.parse(canonical)) == canonical


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_round_trip_exactly(number: float) -> None:
    assert float(jcs.canonicalize(number)) == number


# -- The quick paths (D49): Python's C encoder and decoder, where they give the same answer ----

any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None))
wild_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats()
    | any_text
    | st.sampled_from([1.0, -0.0, 1e16, 1e21, 1e-7, 2**53, 2**53 + 1, "\U0001f600", "\ufb01"])
)
wild_values = st.recursive(
    wild_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(any_text | st.sampled_from(["\U0001f600", "\uffff", "a"]),
                          children, max_size=5)
        | st.dictionaries(st.integers(0, 3) | st.booleans(), children, max_size=2)
    ),
    max_leaves=20,
)


def _outcome(f: object, *args: object) -> object:
    try:
        return ("value", f(*args))  # type: ignore[operator]
    except InvalidInput:
        return ("refused",)


def _emitted(value: object) -> bytes:
    """canonicalize by the RFC 8785 writer alone (no quick path)."""
    out: list[str] = []
    jcs._emit(value, out)
    return "".join(out).encode("utf-8")


@given(wild_values)
def test_quick_canonicalize_agrees_with_the_writer(value: object) -> None:
    """Floats, long integers, astral keys, lone surrogates, tuples and non-string keys
    included: the answer (bytes, or refusal) is the RFC 8785 writer's."""
    assert _outcome(jcs.canonicalize, value) == _outcome(_emitted, value)


def _by_the_rules(data: bytes) -> object:
    value = jcs.parse(data)
    return value if _emitted(value) == data else None


def _variants(value: object) -> list[bytes]:
    """The canonical bytes of a value and other ways of writing it, canonical or not."""
    out = []
    with contextlib.suppress(InvalidInput):
        out.append(_emitted(value))
    for kw in ({}, {"ensure_ascii": False}, {"sort_keys": True, "separators": (",", ":")},
               {"ensure_ascii": False, "separators": (",", ":"), "sort_keys": True}):
        with contextlib.suppress(TypeError, ValueError):
            out.append(json.dumps(value, **kw).encode("utf-8", "surrogatepass"))  # type: ignore[arg-type]
    return out


@given(wild_values, st.data())
def test_parse_canonical_agrees_with_parse_then_canonicalize(value: object, data: st.DataObject
                                                            ) -> None:
    """Whatever the bytes (canonical, spaced, escaped, reordered, cut, a byte changed), the
    quick reader accepts exactly what parse + canonicalize accept, with the same value."""
    for raw in _variants(value):
        cut = data.draw(st.integers(0, len(raw)))
        flip = data.draw(st.integers(0, 255))
        for b in (raw, raw[:cut], raw[:cut] + bytes([flip]) + raw[cut + 1:]):
            want, got = _outcome(_by_the_rules, b), _outcome(jcs.parse_canonical, b)
            assert got == want, b


def test_parse_canonical_refuses_what_only_the_c_reader_would_take() -> None:
    for b in (b'{"a":1,"a":1}', b"NaN", b'"\\ud800"', b"\xef\xbb\xbf{}", b"[1.0]", b"1e2",
              b'{"b":1,"a":2}', b'"\\u0041"', b"9007199254740993", b'{"a": 1}'):
        assert _outcome(jcs.parse_canonical, b) in (("value", None), ("refused",)), b
    assert jcs.parse_canonical(b'{"a":[1,true,null,"\xc3\xa9"]}') == {"a": [1, True, None, "é"]}
