"""Entry validation and canonical bytes: every rule names its field; bytes never depend on order."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copyledger.ledger import entry, jcs
from copyledger.ledger.errors import InvalidInput

SHA = "ab" * 32
WHEN = "2024-05-01T12:00:00.123456Z"


def work(**overrides: Any) -> dict[str, object]:
    fields: dict[str, Any] = {
        "registrant": "alice.studio-1",
        "received_at": WHEN,
        "sha256": SHA,
        "title": "Nocturne in Blue",
        "creators": ["Alice Example", "Bob Exemple"],
        "work_type": "image",
    }
    fields.update(overrides)
    return entry.build_work(**fields)


def evidence(**overrides: Any) -> dict[str, object]:
    fields: dict[str, Any] = {
        "registrant": "court_7",
        "received_at": WHEN,
        "sha256": SHA,
        "source_url": "https://example.com/copy?id=1",
        "captured_at": "2024-04-30T09:15:00+02:00",
        "capture_method": "warc",
        "description": "Screenshot of the listing.\nTaken by the clerk.",
    }
    fields.update(overrides)
    return entry.build_evidence(**fields)


def full_work() -> dict[str, object]:
    return work(
        size=123456,
        media_type="image/png",
        license="CC-BY-4.0",
        metadata={"isbn": None, "tags": ["a", "b"], "ratio": 1.5, "nested": {"x": [1, {"y": 2}]}},
    )


def full_evidence() -> dict[str, object]:
    return evidence(related_work=42, size=0, media_type="application/warc", metadata={"n": 1})


def errors_of(bad: object) -> list[dict[str, str]]:
    with pytest.raises(InvalidInput) as info:
        entry.validate(bad)
    errors = info.value.extra["errors"]
    assert isinstance(errors, list)
    return errors


def fields_of(bad: object) -> list[str]:
    return [error["field"] for error in errors_of(bad)]


# ---------------------------------------------------------------- good entries


@pytest.mark.parametrize("make", [work, evidence, full_work, full_evidence])
def test_round_trip(make: Callable[[], dict[str, object]]) -> None:
    built = make()
    data = entry.canonical_bytes(built)
    parsed = jcs.parse(data)
    assert entry.validate(parsed) == built
    assert isinstance(parsed, dict)
    assert entry.canonical_bytes(parsed) == data


def test_work_shape() -> None:
    built = work(size=5)
    assert built == {
        "schema": entry.SCHEMA,
        "kind": "work",
        "registrant": "alice.studio-1",
        "received_at": WHEN,
        "content": {"sha256": SHA, "size": 5},
        "title": "Nocturne in Blue",
        "creators": ["Alice Example", "Bob Exemple"],
        "work_type": "image",
    }


def test_evidence_without_url_omits_it() -> None:
    built = evidence(source_url=None)
    assert "source_url" not in built
    assert "related_work" not in built and "metadata" not in built


def test_canonical_bytes_golden() -> None:
    expected = (
        '{"content":{"media_type":"image/png","sha256":"' + SHA + '","size":3},'
        '"creators":["Zoë","Ann"],"kind":"work","license":"CC0-1.0",'
        '"metadata":{"a":"\\u0000","b":[1.5,1e+21,null]},'
        '"received_at":"2024-05-01T12:00:00.123456Z","registrant":"alice.studio-1",'
        '"schema":"copyledger/entry/v1","title":"Nocturne in Blue","work_type":"image"}'
    ).encode()
    built = work(
        creators=["Zoë", "Ann"],
        size=3,
        media_type="image/png",
        license="CC0-1.0",
        metadata={"b": [1.5, 1e21, None], "a": "\x00"},
    )
    assert entry.canonical_bytes(built) == expected


def test_builders_copy_mutable_arguments() -> None:
    creators = ["A"]
    metadata: dict[str, object] = {"k": [1]}
    built = work(creators=creators, metadata=metadata)
    creators.append("B")
    metadata["k"] = "changed"
    assert built["creators"] == ["A"]
    assert built["metadata"] == {"k": [1]}


def test_content_sha256() -> None:
    assert entry.content_sha256(work()) == SHA
    with pytest.raises(InvalidInput):
        entry.content_sha256({"content": {}})


def test_utc_now_is_valid_and_microseconds() -> None:
    now = entry.utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", now)
    work(received_at=now)


def test_control_characters_allowed_in_description_and_metadata_values() -> None:
    evidence(description="line\ttab\r\nend", metadata={"raw": "a\x00b\x1b"})


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-02-29T00:00:00Z",
        "2024-05-01T12:00:00+14:00",
        "2024-05-01T12:00:00-00:00",
        "2024-05-01T12:00:00.1Z",
        "2024-05-01T12:00:00.123456789Z",
        "2016-12-31T23:59:60Z",
        "2017-01-01T00:59:60+01:00",
        "0001-01-01T00:00:00Z",
    ],
)
def test_valid_timestamps(stamp: str) -> None:
    work(received_at=stamp)


@pytest.mark.parametrize(
    "url", ["http://example.com", "https://例え.jp/パス", "https://[2001:db8::1]:8443/a#b"]
)
def test_valid_urls(url: str) -> None:
    evidence(source_url=url)


# ---------------------------------------------------------------- every rule, with its field


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(target: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(target: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        del target[last]

    return mutate


WORK_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("schema wrong", _set("schema", "copyledger/entry/v2"), "schema"),
    ("schema missing", _delete("schema"), "schema"),
    ("kind missing", _delete("kind"), "kind"),
    ("kind unknown", _set("kind", "transfer-x"), "kind"),
    ("unknown top-level key", _set("color", "red"), "color"),
    ("evidence key on a work", _set("captured_at", WHEN), "captured_at"),
    ("null optional", _set("license", None), "license"),
    ("registrant empty", _set("registrant", ""), "registrant"),
    ("registrant too long", _set("registrant", "a" * 65), "registrant"),
    ("registrant bad char", _set("registrant", "alice@example"), "registrant"),
    ("registrant not str", _set("registrant", 7), "registrant"),
    ("received_at no zone", _set("received_at", "2024-05-01T12:00:00"), "received_at"),
    ("received_at date only", _set("received_at", "2024-05-01"), "received_at"),
    ("received_at bad day", _set("received_at", "2023-02-29T00:00:00Z"), "received_at"),
    ("received_at bad hour", _set("received_at", "2024-05-01T24:00:00Z"), "received_at"),
    ("received_at bad offset", _set("received_at", "2024-05-01T12:00:00+24:00"), "received_at"),
    ("received_at lowercase", _set("received_at", "2024-05-01t12:00:00z"), "received_at"),
    ("received_at space", _set("received_at", "2024-05-01 12:00:00Z"), "received_at"),
    ("received_at bad leap", _set("received_at", "2024-05-01T12:00:60Z"), "received_at"),
    (
        "received_at 10 digits",
        _set("received_at", "2024-05-01T12:00:00.1234567890Z"),
        "received_at",
    ),
    ("received_at unicode digit", _set("received_at", "2024-05-01T12:00:0\u0661Z"), "received_at"),
    ("content missing", _delete("content"), "content"),
    ("content not object", _set("content", SHA), "content"),
    ("sha256 missing", _delete("content.sha256"), "content.sha256"),
    ("sha256 upper", _set("content.sha256", "AB" * 32), "content.sha256"),
    ("sha256 short", _set("content.sha256", "ab" * 31), "content.sha256"),
    ("sha256 trailing newline", _set("content.sha256", SHA + "\n"), "content.sha256"),
    ("content unknown key", _set("content.md5", "x"), "content.md5"),
    ("size negative", _set("content.size", -1), "content.size"),
    ("size bool", _set("content.size", True), "content.size"),
    ("size float", _set("content.size", 5.0), "content.size"),
    ("size too big", _set("content.size", 2**53), "content.size"),
    ("media_type no slash", _set("content.media_type", "png"), "content.media_type"),
    (
        "media_type params",
        _set("content.media_type", "text/plain; charset=utf-8"),
        "content.media_type",
    ),
    ("media_type too long", _set("content.media_type", "a/" + "b" * 126), "content.media_type"),
    ("title missing", _delete("title"), "title"),
    ("title blank", _set("title", "   "), "title"),
    ("title too long", _set("title", "t" * 501), "title"),
    ("title control", _set("title", "a\nb"), "title"),
    ("title C1 control", _set("title", "a\x85b"), "title"),
    ("title surrogate", _set("title", "a\ud800"), "title"),
    ("title not str", _set("title", ["x"]), "title"),
    ("creators empty", _set("creators", []), "creators"),
    ("creators too many", _set("creators", ["c"] * 51), "creators"),
    ("creators not list", _set("creators", "Alice"), "creators"),
    ("creator blank", _set("creators", ["ok", " "]), "creators[1]"),
    ("creator too long", _set("creators", ["c" * 201]), "creators[0]"),
    ("creator not str", _set("creators", [None]), "creators[0]"),
    ("work_type unknown", _set("work_type", "painting"), "work_type"),
    ("license too long", _set("license", "l" * 101), "license"),
    ("license control", _set("license", "MIT\x00"), "license"),
    ("metadata not object", _set("metadata", [1]), "metadata"),
    (
        "metadata too deep",
        _set("metadata", {"a": {"b": {"c": {"d": {"e": [1]}}}}}),
        "metadata.a.b.c.d.e",
    ),
    ("metadata big int", _set("metadata", {"n": 2**53}), "metadata.n"),
    ("metadata nan", _set("metadata", {"f": float("nan")}), "metadata.f"),
    ("metadata inf", _set("metadata", {"l": [float("inf")]}), "metadata.l[0]"),
    ("metadata non-str key", _set("metadata", {"k": {1: 2}}), "metadata.k.1"),
    ("metadata control key", _set("metadata", {"a\nb": 1}), "metadata.a\nb"),
    ("metadata surrogate", _set("metadata", {"s": "\udc00"}), "metadata.s"),
    ("metadata bytes", _set("metadata", {"b": b"x"}), "metadata.b"),
    ("metadata tuple", _set("metadata", {"t": (1, 2)}), "metadata.t"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), WORK_CASES, ids=[c[0] for c in WORK_CASES])
def test_work_rule(case: str, mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    bad = copy.deepcopy(full_work())
    mutate(bad)
    errors = errors_of(bad)
    assert field in [error["field"] for error in errors], errors
    assert all(error["message"] for error in errors)


EVIDENCE_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("work key on evidence", _set("title", "x"), "title"),
    ("url ftp", _set("source_url", "ftp://example.com/x"), "source_url"),
    ("url no host", _set("source_url", "https:///path"), "source_url"),
    ("url relative", _set("source_url", "/just/a/path"), "source_url"),
    ("url javascript", _set("source_url", "javascript:alert(1)"), "source_url"),
    ("url space", _set("source_url", "https://example.com/a b"), "source_url"),
    ("url newline", _set("source_url", "https://example.com/\n"), "source_url"),
    ("url too long", _set("source_url", "https://e.com/" + "a" * 2040), "source_url"),
    ("url bad port", _set("source_url", "https://example.com:99999/"), "source_url"),
    ("url bad ipv6", _set("source_url", "https://[::1/"), "source_url"),
    ("url empty", _set("source_url", ""), "source_url"),
    ("captured_at missing", _delete("captured_at"), "captured_at"),
    ("captured_at bad", _set("captured_at", "yesterday"), "captured_at"),
    ("capture_method blank", _set("capture_method", ""), "capture_method"),
    ("capture_method long", _set("capture_method", "m" * 101), "capture_method"),
    ("capture_method control", _set("capture_method", "a\tb"), "capture_method"),
    ("description missing", _delete("description"), "description"),
    ("description blank", _set("description", "\n\t "), "description"),
    ("description long", _set("description", "d" * 5001), "description"),
    ("related_work negative", _set("related_work", -5), "related_work"),
    ("related_work str", _set("related_work", "42"), "related_work"),
    ("related_work null", _set("related_work", None), "related_work"),
]


@pytest.mark.parametrize(
    ("case", "mutate", "field"), EVIDENCE_CASES, ids=[c[0] for c in EVIDENCE_CASES]
)
def test_evidence_rule(case: str, mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    bad = copy.deepcopy(full_evidence())
    mutate(bad)
    assert field in fields_of(bad)


def test_precise_message() -> None:
    bad = copy.deepcopy(work())
    bad["content"] = {"sha256": "XYZ"}
    with pytest.raises(InvalidInput) as info:
        entry.validate(bad)
    assert info.value.detail == "invalid entry: content.sha256: must be 64 lowercase hex characters"


def test_all_errors_are_collected() -> None:
    bad: dict[str, Any] = copy.deepcopy(work())
    bad["title"] = ""
    bad["registrant"] = "no spaces"
    bad["content"]["sha256"] = "0"
    bad["extra"] = 1
    assert sorted(fields_of(bad)) == ["content.sha256", "extra", "registrant", "title"]


def test_builders_validate() -> None:
    with pytest.raises(InvalidInput):
        work(work_type="sculpture")
    with pytest.raises(InvalidInput):
        evidence(source_url="file:///etc/passwd")


@pytest.mark.parametrize("bad", [None, [], "entry", 3])
def test_not_an_object(bad: object) -> None:
    assert fields_of(bad) == ["entry"]


def test_size_limit_counts_metadata() -> None:
    fits = work(metadata={"pad": ""})
    room = entry.MAX_ENTRY_BYTES - len(entry.canonical_bytes(fits))
    at_limit = work(metadata={"pad": "x" * room})
    assert len(entry.canonical_bytes(at_limit)) == entry.MAX_ENTRY_BYTES
    with pytest.raises(InvalidInput) as info:
        work(metadata={"pad": "x" * (room + 1)})
    assert info.value.extra["errors"] == [
        {
            "field": "entry",
            "message": f"canonical entry is {entry.MAX_ENTRY_BYTES + 1} bytes; "
            f"the limit is {entry.MAX_ENTRY_BYTES}",
        }
    ]


def test_size_limit_counts_escapes() -> None:
    # Control characters escape to six bytes each (\u0000), and the limit is on canonical bytes.
    with pytest.raises(InvalidInput):
        evidence(description="\x00" * 3000)


def test_metadata_depth_limit_is_five() -> None:
    work(metadata={"a": {"b": {"c": {"d": {"e": 1}}}}})
    work(metadata={"a": [[[[1]]]]})
    with pytest.raises(InvalidInput):
        work(metadata={"a": [[[[[1]]]]]})


# ---------------------------------------------------------------- properties

# Valid text: no control characters, and (entry rules) no bidi embeddings or overrides and not
# invisible-only; those are format characters (Cf), refused or tested in tests/test_bad_input.py.
_words = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Cf")), min_size=1,
    max_size=30,
).filter(str.strip)
_stamps = st.datetimes().map(lambda d: d.isoformat(timespec="microseconds") + "Z")
_keys = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=8)
_metadata_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=10,
)
_metadata = st.none() | st.dictionaries(_words, _metadata_values, max_size=4)
_sha = st.binary(min_size=32, max_size=32).map(bytes.hex)
_registrant = st.from_regex(r"\A[A-Za-z0-9._-]{1,64}\Z")


@st.composite
def valid_entries(draw: st.DrawFn) -> dict[str, object]:
    common: dict[str, Any] = {
        "registrant": draw(_registrant),
        "received_at": draw(_stamps),
        "sha256": draw(_sha),
        "size": draw(st.none() | st.integers(0, 2**53 - 1)),
        "media_type": draw(st.sampled_from([None, "image/png", "text/plain", "application/x.y+z"])),
        "metadata": draw(_metadata),
    }
    if draw(st.booleans()):
        return entry.build_work(
            title=draw(_words),
            creators=draw(st.lists(_words, min_size=1, max_size=4)),
            work_type=draw(st.sampled_from(entry.WORK_TYPES)),
            license=draw(st.none() | _words),
            **common,
        )
    return entry.build_evidence(
        source_url=draw(st.sampled_from([None, "https://example.org/x", "http://h:80/?q=1"])),
        captured_at=draw(_stamps),
        capture_method=draw(_words),
        description=draw(st.text(min_size=1, max_size=80).filter(str.strip)),
        related_work=draw(st.none() | st.integers(0, 10**9)),
        **common,
    )


def _reorder(value: object, rnd: Any) -> object:
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {key: _reorder(value[key], rnd) for key in keys}
    if isinstance(value, list):
        return [_reorder(item, rnd) for item in value]
    return value


@given(valid_entries(), st.randoms(use_true_random=False))
def test_canonical_bytes_ignore_insertion_order(built: dict[str, object], rnd: Any) -> None:
    shuffled = _reorder(built, rnd)
    assert isinstance(shuffled, dict)
    assert entry.canonical_bytes(shuffled) == entry.canonical_bytes(built)


@given(valid_entries())
def test_random_entries_round_trip(built: dict[str, object]) -> None:
    data = entry.canonical_bytes(built)
    parsed = entry.validate(jcs.parse(data))
    assert entry.canonical_bytes(parsed) == data


@given(st.datetimes(min_value=__import__("datetime").datetime(1, 1, 2),
                    max_value=__import__("datetime").datetime(9999, 12, 30),
                    timezones=st.timezones(), allow_imaginary=False),
       st.sampled_from(["Z", "offset"]), st.integers(0, 999))
def test_parse_timestamp_reads_what_rfc3339_writes(dt: Any, zone: str, extra_ns: int) -> None:
    """The one RFC 3339 parser returns the instant written, whatever the offset or precision."""
    from datetime import UTC, timedelta, timezone

    aware = dt.replace(tzinfo=dt.tzinfo or UTC)
    offset = aware.utcoffset() or timedelta(0)
    if offset.seconds % 60 or abs(offset) >= timedelta(hours=24):
        return  # RFC 3339 offsets are whole minutes
    # A fixed offset: Python never finds an ambiguous (DST fold) local time equal across zones.
    aware = aware.replace(tzinfo=timezone(offset))
    def clock(t: Any) -> str:
        return (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:"
                f"{t.second:02d}.{t.microsecond:06d}")

    if zone == "Z":
        aware = aware.astimezone(UTC)
        text = clock(aware) + f"{extra_ns:03d}Z"
    else:
        mins = int(offset.total_seconds()) // 60
        sign = "+" if mins >= 0 else "-"
        text = clock(aware) + f"{sign}{abs(mins) // 60:02d}:{abs(mins) % 60:02d}"
    assert entry.parse_timestamp(text) == aware


@pytest.mark.parametrize("text", ["2024-02-30T00:00:00Z", "2024-05-01 12:00:00Z",
                                  "2024-05-01T12:00:00", "now", ""])
def test_parse_timestamp_refuses_what_is_not_rfc3339(text: str) -> None:
    with pytest.raises(InvalidInput):
        entry.parse_timestamp(text)
