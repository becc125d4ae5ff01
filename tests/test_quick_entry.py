"""The audit's quick paths (D61) decide exactly as the reference does: an entry the quick
path accepts is accepted by `documents.parse_logged_entry` and indexed the same way, and
whatever the reference refuses the quick path leaves to it; a block header's bytes are
RFC 8785's."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import jcs, note
from copyledger.ledger.audit import _quick_note, _signers
from copyledger.ledger.documents import parse_logged_entry
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.note import BlockHeader, _quick_header_bytes
from copyledger.ledger.quick_entry import (
    _by_field,
    _plain_field,
    _whole,
    matched_plain_work,
    plain_work,
    quick_canonical,
    quick_logged,
)


def reference(data: bytes) -> tuple[str, str, str] | None:
    """What the audit indexes an entry under, by the reference path; None if it refuses."""
    try:
        doc, obj = parse_logged_entry(data)
    except CopyledgerError:
        return None
    return doc.KIND, entry_mod.content_sha256(obj), doc.registrant


def agrees(data: bytes) -> bool:
    """The property: the quick path answers only what the reference says. True if it
    answered (so tests can require that it does, where it should)."""
    quick = quick_logged(data)
    if quick is not None:
        assert reference(data) == quick, data
    return quick is not None


def work(**over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "schema": entry_mod.SCHEMA, "kind": "work", "registrant": "alice",
        "received_at": "2026-11-30T06:00:00.123456Z",
        "content": {"sha256": hashlib.sha256(b"x").hexdigest()},
        "title": "A title", "creators": ["Ann"], "work_type": "image"}
    e.update(over)
    return e


tricky_text = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.sampled_from(["", " ", "\u200b", "\u2060 ", "a\u202eb", "x\x01y", "tab\there", "\x7f",
                     "caf\u00e9", "\U0001f600", "\ue000", "\u2028", '"q"', "back\\slash",
                     "a" * 500, "a" * 501, "b" * 200, "b" * 201, "c" * 100, "c" * 101,
                     "\x1c", " \x1f ", "ok"]))
timestamps = st.one_of(
    st.sampled_from(["2026-11-30T06:00:00Z", "2026-02-29T00:00:00Z", "2024-02-29T23:59:60Z",
                     "2024-02-29T12:00:60Z", "2026-11-30T24:00:00Z", "2026-11-30T06:00:00+02:00",
                     "2026-11-30T06:00:00.1234567891Z", "2026-11-30 06:00:00Z",
                     "2026-13-01T00:00:00Z", "2026-11-30T06:00:00.5+24:00"]),
    st.datetimes().map(lambda d: d.isoformat() + "Z"), tricky_text)
hexes = st.one_of(st.binary(min_size=32, max_size=32).map(bytes.hex),
                  st.sampled_from(["A" * 64, "0" * 63, "0" * 65, "g" * 64]), tricky_text)
anything = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=False, allow_infinity=False), tricky_text,
                     st.lists(tricky_text, max_size=3),
                     st.dictionaries(tricky_text, st.integers() | tricky_text, max_size=2))


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    content: dict[str, Any] = {"sha256": draw(hexes)}
    for key, values in (("sm3", hexes), ("size", st.integers(-1, 2**54) | anything),
                        ("media_type", st.sampled_from(["image/png", "bad", "a/b c"])
                         | tricky_text), ("fingerprints", anything)):
        if draw(st.integers(0, 3)) == 0:
            content[key] = draw(values)
    e = work(
        registrant=draw(st.sampled_from(["alice", "a" * 64, "a" * 65, "bad name", ""])
                        | tricky_text),
        received_at=draw(timestamps), content=content, title=draw(tricky_text),
        creators=draw(st.lists(tricky_text, max_size=3) | anything),
        work_type=draw(st.sampled_from([*entry_mod.WORK_TYPES, "poem"]) | anything))
    if draw(st.booleans()):
        e["kind"] = draw(st.sampled_from(["evidence", "Work", "transfer"]) | anything)
    if draw(st.integers(0, 4)) == 0:
        e["schema"] = draw(st.sampled_from(["copyledger/entry/v2"]) | anything)
    for key in draw(st.lists(st.sampled_from(["license", "metadata", "extra", "title",
                                              "content", "creators"]), max_size=2)):
        if key in e and draw(st.booleans()):
            del e[key]
        else:
            e[key] = draw(tricky_text | anything)
    return e


def encodings(e: dict[str, Any]) -> list[bytes]:
    """The compact sorted form first (the one that looks canonical), then others."""
    out = [json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8", "surrogatepass"),
           json.dumps(e, sort_keys=True).encode()]
    for make in (lambda: orjson.dumps(e, option=orjson.OPT_SORT_KEYS), lambda: orjson.dumps(e),
                 lambda: jcs.canonicalize(e)):
        with contextlib.suppress(TypeError, CopyledgerError):
            out.append(make())
    return out


@settings(max_examples=150, deadline=None)
@given(entries())
def test_the_quick_path_agrees_with_the_reference(e: dict[str, Any]) -> None:
    for data in encodings(e):
        agrees(data)


@settings(max_examples=150, deadline=None)
@given(entries(), st.data())
def test_changed_bytes_agree(e: dict[str, Any], data: st.DataObject) -> None:
    raw = encodings(e)[0]
    at = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.binary(min_size=0, max_size=2))
    agrees(raw[:at] + new + raw[at + 1:])


@settings(max_examples=200, deadline=None)
@given(entries())
def test_the_write_paths_quick_encoding_agrees_with_encode(e: dict[str, Any]) -> None:
    """What a registration stores: the quick path's bytes are `entry.encode`'s, and it
    answers only for entries `entry.encode` accepts as new."""
    _encodes_or_nothing(quick_canonical(e), e)


def _encodes_or_nothing(quick: bytes | None, e: dict[str, Any]) -> None:
    """`quick` is None, or `entry.encode`'s bytes of `e`, which it accepts as new."""
    try:
        _, want = entry_mod.encode(e, new=True)
    except CopyledgerError:
        assert quick is None, e
        return
    assert quick is None or quick == want, e


def test_a_plain_new_work_takes_the_quick_encoding() -> None:
    e = work(content={"sha256": "0f" * 32, "size": 7}, title="Caf\u00e9", license="CC0-1.0")
    assert quick_canonical(e) == entry_mod.encode(e, new=True)[1]
    assert quick_canonical(work(metadata={"a": 1})) is None  # the reference decides
    assert quick_canonical({1: "x"}) is None and quick_canonical(work(size=2**70)) is None


def test_what_orjson_encodes_but_encode_refuses_is_left_to_encode() -> None:
    """A tuple of creators or a datetime reads back as JSON text that `entry.encode` would
    accept, but the object given is not that JSON: the quick path does not decide."""
    from datetime import UTC, datetime

    for e in (work(creators=("A",)),
              work(received_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))):
        assert quick_canonical(e) is None
        with pytest.raises(CopyledgerError):
            entry_mod.encode(e, new=True)


def test_every_flipped_byte_of_a_work_agrees() -> None:
    """Exhaustive over one entry with every optional field the quick path reads."""
    e = work(license="CC-BY-4.0", content={"sha256": "ab" * 32, "sm3": "cd" * 32, "size": 12,
                                           "media_type": "image/png"},
             title="Caf\u00e9 \U0001f600 \"quoted\"", creators=["Ann", "B\\b"])
    raw = jcs.canonicalize(e)
    assert agrees(raw)
    for at in range(len(raw)):
        for change in (0x01, 0x20, 0x80):
            agrees(raw[:at] + bytes([raw[at] ^ change]) + raw[at + 1:])


@settings(max_examples=200, deadline=None)
@given(title=tricky_text, creators=st.lists(tricky_text, min_size=1, max_size=3),
       received_at=timestamps, size=st.integers(0, 2**53 - 1))
def test_plain_valid_works_take_the_quick_path(title: str, creators: list[str],
                                               received_at: str, size: int) -> None:
    """Not a test that cannot fail: every valid work without metadata or fingerprints is
    decided by the quick path (else the audit would be slow, not wrong)."""
    e = work(title=title, creators=creators, received_at=received_at,
             content={"sha256": "0f" * 32, "size": size})
    if reference(jcs.canonicalize(e)) is not None:
        assert agrees(jcs.canonicalize(e))


def test_what_the_quick_path_leaves_to_the_reference() -> None:
    assert not agrees(jcs.canonicalize(work(metadata={"a": 1})))
    assert not agrees(jcs.canonicalize(work(kind="evidence")))
    assert not agrees(json.dumps(work(), sort_keys=True).encode())  # spaces
    assert not agrees(orjson.dumps(work()))  # key order
    assert not agrees(jcs.canonicalize(work(title=" ")))


@settings(max_examples=300, deadline=None)
@given(ints=st.lists(st.integers(-2**60, 2**60) | st.integers(0, 1000), min_size=4,
                     max_size=4),
       sealed_at=tricky_text | st.sampled_from(["2026-11-30T06:00:00.123456Z"]))
def test_header_bytes_are_rfc_8785(ints: list[int], sealed_at: str) -> None:
    h = BlockHeader(height=ints[0], prev_block_hash=b"\1" * 32, batch_root=b"\2" * 32,
                    first_seq=ints[1], count=ints[2], tree_size=ints[3],
                    tree_root=b"\3" * 32, sealed_at=sealed_at)
    quick = _quick_header_bytes(h)
    try:
        want: bytes | None = jcs.canonicalize(h.to_json())
    except CopyledgerError:
        want = None
    assert quick is None or quick == want
    if all(abs(v) <= jcs.MAX_SAFE_INTEGER for v in ints):
        assert quick == want


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["title", "license", "received_at", "creators", "registrant",
                             "work_type", "schema", "content"]),
       value=tricky_text | timestamps | anything | st.lists(tricky_text, min_size=1,
                                                             max_size=51)
       | st.builds(lambda h, n: {"sha256": h, "size": n}, hexes, st.integers(-1, 2**54)))
def test_each_compiled_field_check_accepts_only_what_entry_accepts(name: str,
                                                                   value: Any) -> None:
    """The compiled checks hold the very limits `entry` has (500, 200, 100 characters, ...)."""
    errors: entry_mod.Errors = []
    entry_mod._KIND_FIELDS["work"][name][1](value, name, errors)
    if _plain_field(name, value):
        assert errors == [], (name, value)


def test_the_compiled_checks_reach_entrys_limits() -> None:
    """They accept right up to `entry`'s limits, so a plain work never falls back."""
    assert _plain_field("title", "a" * 500) and not _plain_field("title", "a" * 501)
    assert _plain_field("license", "c" * 100) and not _plain_field("license", "c" * 101)
    assert _plain_field("creators", ["b" * 200] * 50)
    assert not _plain_field("creators", ["b" * 201]) and not _plain_field("creators", [])
    assert _plain_field("received_at", "2024-02-29T23:59:59.123456789Z")
    assert not _plain_field("received_at", "2023-02-29T23:59:59Z")


# The whole-entry pattern (D73): on ASCII works in RFC 8785 form with a UTC time, it decides
# exactly as the reference does, refusals included; elsewhere it defers.

ascii_text = st.one_of(
    st.text(st.sampled_from(' aZ~!#[]"\\\x00\x1f\x7f\t'), max_size=8),
    st.sampled_from(["", " ", "  x ", '"', "\\", "a" * 500, "a" * 501, "b" * 200, "b" * 201,
                     "c" * 100, "c" * 101, '"' * 500, "\\" * 501, " " * 40]))
utc_times = st.one_of(
    st.sampled_from(["2026-11-30T06:00:00Z", "2024-02-29T23:59:59.123456789Z",
                     "2023-02-29T00:00:00Z", "2024-02-29T23:59:60Z", "2026-11-30T24:00:00Z",
                     "2026-00-10T00:00:00Z", "2026-11-31T00:00:00Z", "0000-01-01T00:00:00Z",
                     "2026-11-30T06:00:00.Z", "2026-11-30T06:00:00.1234567890Z"]),
    st.datetimes().map(lambda d: d.isoformat() + "Z"))


@st.composite
def ascii_works(draw: st.DrawFn) -> dict[str, Any]:
    content: dict[str, Any] = {"sha256": draw(hexes)}
    if draw(st.booleans()):
        content["size"] = draw(st.sampled_from([0, 7, 2**53 - 1, 2**53, 10**16, -1])
                               | st.integers(0, 2**54))
    if draw(st.booleans()):
        content["sm3"] = draw(hexes)
    e = work(content=content, title=draw(ascii_text), received_at=draw(utc_times),
             creators=draw(st.lists(ascii_text, max_size=3)
                           | st.sampled_from([["x"] * 50, ["x"] * 51])),
             registrant=draw(st.sampled_from(["alice", "a.b_c-D9", "a" * 64, "a" * 65, "",
                                              "bad name", "caf\u00e9"])),
             work_type=draw(st.sampled_from([*entry_mod.WORK_TYPES, "poem", "Image"])))
    if draw(st.booleans()):
        e["license"] = draw(ascii_text)
    return e


@settings(max_examples=400, deadline=None)
@given(ascii_works())
def test_the_whole_pattern_decides_as_the_reference_does(e: dict[str, Any]) -> None:
    raw = encodings(e)[0]  # RFC 8785's form where it has one (not for 2**53)
    want = reference(raw)
    if b':60Z"' in raw:  # a leap second: the pattern leaves it to the field checks
        assert _whole(raw) is None and quick_logged(raw) == want, raw
    else:
        assert _whole(raw) == want, raw


@settings(max_examples=300, deadline=None)
@given(ascii_works() | entries())
def test_matched_plain_work_gives_encodes_bytes_or_nothing(e: dict[str, Any]) -> None:
    """D88's client check of an entry read from JSON: bytes only where `entry.encode` accepts
    the entry, and then its bytes (the pattern alone decides: no round trip)."""
    e = orjson.loads(orjson.dumps(e)) if _json_safe(e) else e
    _encodes_or_nothing(matched_plain_work(e), e)


def _json_safe(e: dict[str, Any]) -> bool:
    try:
        orjson.dumps(e)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(entries())
def test_the_whole_pattern_agrees_with_the_field_checks(e: dict[str, Any]) -> None:
    """Wherever the pattern answers, the field-by-field path (orjson's parse, each field's
    check, the round trip) gives the same answer."""
    for data in encodings(e):
        whole = _whole(data)
        assert whole is None or whole == _by_field(data), data


def test_the_whole_pattern_takes_the_commonest_entries() -> None:
    """Not a test that cannot fail: the plain works a large log holds match it whole."""
    for e in (work(), work(license="CC0-1.0", content={"sha256": "0f" * 32, "size": 2**53 - 1,
                                                        "sm3": "ab" * 32}),
              work(title='say "hi" \\ ', creators=["b" * 200] * 50)):
        raw = jcs.canonicalize(e)
        assert _whole(raw) == reference(raw) == ("work", e["content"]["sha256"], "alice")
    assert _whole(jcs.canonicalize(work(title="Caf\u00e9"))) is None  # the field path's


# The block notes' quick check (D73): it accepts a note only where `note.verify_note` and the
# text's parse accept it and find it says what the block says.

_LOG_KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
_OTHER_KEY = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
_LOG = "example.org/log"


def _verifier(k: Ed25519PrivateKey, name: str = _LOG) -> note.Verifier:
    raw = k.public_key().public_bytes_raw()
    return note.Verifier(name, note.key_id(name, raw), raw)


def _signed(text: str, *keys: tuple[str, Ed25519PrivateKey]) -> str:
    return note.format_note(text, [note.Signature(
        name, _verifier(k, name).key_id, k.sign(note.signature_message(text)))
        for name, k in keys])


def _full_path(signed: str, text: str, verifiers: list[note.Verifier]) -> bool:
    try:
        n, _ = note.verify_note(signed, verifiers)
    except CopyledgerError:
        return False
    return n.text == text


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 2**64), others=st.lists(st.sampled_from(
    [(_LOG, _OTHER_KEY), ("witness.example", _OTHER_KEY), (_LOG, _LOG_KEY)]), max_size=2),
       change=st.one_of(st.none(), st.tuples(st.integers(0, 400), st.binary(max_size=2))))
def test_the_quick_note_check_accepts_only_what_the_full_path_accepts(
        size: int, others: list[tuple[str, Ed25519PrivateKey]],
        change: tuple[int, bytes] | None) -> None:
    verifiers = [_verifier(_LOG_KEY)]
    text = f"{_LOG}\n{size}\n{note.b64(bytes(32))}\n"
    signed = _signed(text, (_LOG, _LOG_KEY), *others)
    if change is not None:
        at, new = change
        raw = signed.encode()
        signed = (raw[:at] + new + raw[at + 1:]).decode("utf-8", "replace")
    quick = _quick_note(signed, text, _LOG, _signers(verifiers))
    assert not quick or _full_path(signed, text, verifiers), signed
    if change is None and not others and size < 2**64:
        assert quick  # the common note takes it


def test_the_quick_note_check_defers_on_doubt() -> None:
    text = f"{_LOG}\n5\n{note.b64(bytes(32))}\n"
    good = _signed(text, (_LOG, _LOG_KEY))
    assert _quick_note(good, text, _LOG, _signers([_verifier(_LOG_KEY)]))
    assert not _quick_note(good, text, _LOG, _signers([_verifier(_OTHER_KEY)]))
    assert not _quick_note(good.encode(), text, _LOG, _signers([_verifier(_LOG_KEY)]))
    assert not _quick_note(good, text.replace("5", "6"), _LOG,
                           _signers([_verifier(_LOG_KEY)]))
    # Two keys with one name and key ID: the full path refuses (and says so), so no quick check.
    twin = note.Verifier(_LOG, _verifier(_LOG_KEY).key_id,
                         _OTHER_KEY.public_key().public_bytes_raw())
    assert _signers([_verifier(_LOG_KEY), twin]) is None
    twin_witness = note.Verifier("w", _verifier(_LOG_KEY, "w").key_id,
                                 _OTHER_KEY.public_key().public_bytes_raw())
    assert _signers([_verifier(_LOG_KEY), _verifier(_LOG_KEY, "w"), twin_witness]) is None
    # A rotated key signs: its note is checked under it.
    rotated = _signed(text, (_LOG, _OTHER_KEY))
    assert _quick_note(rotated, text, _LOG,
                       _signers([_verifier(_LOG_KEY), _verifier(_OTHER_KEY)]))


@st.composite
def work_fields(draw: st.DrawFn) -> dict[str, Any]:
    """`plain_work`'s arguments: mostly plain, often not (any type, any text)."""
    text = ascii_text | tricky_text
    return {
        "registrant": draw(st.sampled_from(["alice", "a.b_c-D9", "a" * 64, "a" * 65, "",
                                            "bad name", "caf\u00e9"]) | anything),
        "received_at": draw(utc_times | timestamps | anything),
        "sha256": draw(hexes | anything), "title": draw(text | anything),
        "creators": draw(st.lists(text, max_size=3) | st.sampled_from([["x"] * 50, ["x"] * 51])
                         | anything),
        "work_type": draw(st.sampled_from([*entry_mod.WORK_TYPES, "poem"]) | anything),
        "size": draw(st.none() | st.sampled_from([0, 2**53 - 1, 2**53, -1, True])
                     | st.integers(0, 2**54) | anything),
        "license": draw(st.none() | text | anything),
        "sm3": draw(st.none() | hexes | anything)}


@settings(max_examples=500, deadline=None)
@given(work_fields())
def test_plain_work_bytes_are_encodes(fields: dict[str, Any]) -> None:
    """The batch path's bytes (D82) are exactly what `entry.encode` makes of `build_work`'s
    entry, and it answers only for entries `entry.encode` accepts as new."""
    quick = plain_work(**fields)
    try:
        _, want = entry_mod.encode(entry_mod.build_work(**fields, check=False), new=True)
    except (CopyledgerError, TypeError):
        assert quick is None, fields
        return
    assert quick is None or quick == want, fields


@settings(max_examples=200, deadline=None)
@given(title=ascii_text, creators=st.lists(ascii_text, min_size=1, max_size=3),
       received_at=utc_times, size=st.none() | st.integers(0, 2**53 - 1),
       license=st.none() | ascii_text, sm3=st.none() | hexes)
def test_plain_valid_ascii_works_take_plain_work(title: str, creators: list[str],
                                                 received_at: str, size: int | None,
                                                 license: str | None, sm3: str | None) -> None:
    """Not a test that cannot fail: every valid plain work in printable ASCII is written by
    `plain_work` (else the batch path would be slow, not wrong)."""
    fields = {"registrant": "alice", "received_at": received_at, "sha256": "0f" * 32,
              "title": title, "creators": creators, "work_type": "image", "size": size,
              "license": license, "sm3": sm3}
    try:
        _, want = entry_mod.encode(entry_mod.build_work(**fields, check=False), new=True)
    except CopyledgerError:
        return
    if b':60Z"' not in want:  # a leap second is left to the general path
        assert plain_work(**fields) == want
