"""The fingerprint schema: what a `content.fingerprints` object in an entry may hold.

A work may carry perceptual fingerprints (PDQ, pHash and ORB keypoints of an image, MinHash of
a text). They
are kept in the log forever, so their shape is part of the entry format and is checked here,
strictly, with the rest of the entry. Computing and comparing them is copyledger.matching's
job; this module imports nothing beyond the standard library, so validating an entry never
loads Pillow, numpy or faiss.
"""

from __future__ import annotations

import array
import base64
import binascii
import re
import sys
from typing import NoReturn, TypeGuard

from copyledger.ledger.errors import InvalidInput, said

__all__ = [
    "ALGORITHMS",
    "CHROMAPRINT_SCHEME",
    "MAX_AUDIO_ITEMS",
    "MAX_MEDIA_SECONDS",
    "MAX_VIDEO_FRAMES",
    "MINHASH_NUM_PERM",
    "MINHASH_SCHEME",
    "MINHASH_SEED",
    "MINHASH_SHINGLE",
    "ORB_QUERY_LIMIT",
    "ORB_RECORD_BYTES",
    "ORB_REGISTERED_MAX",
    "ORB_SCHEME",
    "PDQ_LOW_QUALITY",
    "TEXT_TOKENS",
    "VIEW_TRANSFORMS",
    "VPDQ_FRAME_BYTES",
    "VPDQ_SCHEME",
    "Fingerprints",
    "validate_fingerprints",
]

Fingerprints = dict[str, dict[str, object]]

ALGORITHMS = ("pdq", "phash", "minhash", "orb", "chromaprint", "vpdq")
PDQ_LOW_QUALITY = 50
"""PDQ quality below this (flat or featureless images) makes the hash unreliable: flagged.
`low_quality` is recomputed from `quality` with it, so it is part of the schema. 14 of our 300
generated originals (soft gradients and noise) fell under it."""
MINHASH_NUM_PERM = 128
MINHASH_SEED = 1
MINHASH_SHINGLE = 5
MINHASH_SCHEME = "legacy"
"""datasketch's bit-for-bit stable permutation scheme (the only one before datasketch 2.0):
the values must not change under a library upgrade, since they are kept in the log forever."""
TEXT_TOKENS = "nfkc-casefold-words-v1"
"""Names the text normalisation (copyledger.matching.compute.text_shingles); a different
normalisation would need a new name."""

ORB_SCHEME = "orb-v1"
"""Names how keypoints are chosen and packed (copyledger.matching.local): ORB on the 512 px
thumbnail, the strongest spread over a 4x4 grid, each record x and y as little-endian uint16 in
1/8 pixel then the 32-byte descriptor. Entries without `orb` (all before it) stay valid."""
ORB_RECORD_BYTES = 36
ORB_REGISTERED_MAX = 128
"""Keypoints a registered work stores: 4,608 bytes, 6,144 in base64, within an entry's 16 KiB."""
ORB_QUERY_LIMIT = 2048
"""Keypoints a claim check's disputed content may send (each of `keypoints` and `mirrored`)."""
VIEW_TRANSFORMS = ("mirrored", "rotated 90°", "rotated 180°", "rotated 270°",
                   "mirrored, rotated 90°", "mirrored, rotated 180°", "mirrored, rotated 270°",
                   "content region", "content region, mirrored")
"""What a disputed image's extra PDQ `views` may be: its dihedral transforms (PDQ's), and its
content region once borders, letterbox bars and caption bars are trimmed."""
_MAX_VIEWS = 16
_VIEW_KEYS = frozenset({"transform", "hash", "region"})
_MAX_SIDE = 65_535
CHROMAPRINT_SCHEME = "chromaprint-test2-11025-high16-v1"
"""Chromaprint's default algorithm on mono 11,025 Hz PCM, keeping the high 16 bits of each
32-bit sub-fingerprint as little-endian uint16 (D38)."""
MAX_AUDIO_ITEMS = 4_096
"""Sub-fingerprints an entry may hold: 8.45 minutes at ~0.124 s each, 10.9 KB of base64, so
an entry stays under its 16 KiB limit (longer media are fingerprinted from the start)."""
VPDQ_SCHEME = "pdq-trimmed-centre-grey128-quarters-v1"
"""Frames scaled to 128x128 grey, dark borders trimmed, the centre hashed with PDQ; times in
quarter seconds (a registration hashes a frame a second, a claim check's probe several crops
of two frames a second, D38)."""
VPDQ_FRAME_BYTES = 35
"""Per frame: time in quarter seconds (uint16 little-endian), PDQ hash (32 bytes), PDQ quality
(1 byte)."""
MAX_VIDEO_FRAMES = 160
"""Frames an entry may hold (the first 160 s of a video, 7.5 KB of base64), leaving room for
its soundtrack's chromaprint in the same 16 KiB entry."""
MAX_MEDIA_SECONDS = 4 * 3600
"""Longest media decoded; `duration` fields are at most this."""

_PDQ_HEX = 64
_PHASH_HEX = 16
_MINHASH_MAX = (1 << 32) - 1  # datasketch stores 32-bit values in uint64
_HEX = re.compile(r"[0-9a-fA-F]+")
_VERSION = re.compile(r"[\x21-\x7e]{1,64}")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def validate_fingerprints(
    obj: object, *, field: str = "fingerprints", allow_bare: bool = False
) -> Fingerprints:
    """Check client-supplied fingerprints strictly and return them normalised.

    Keys are a subset of ALGORITHMS; each value has exactly the shape copyledger.matching
    computes (hex is lowercased, `low_quality` is recomputed from `quality`). With `allow_bare`
    (a claim check's disputed content), `pdq`/`phash` may also be a bare hex string, with no
    version or quality, `orb` may carry up to ORB_QUERY_LIMIT keypoints and their `mirrored`
    twins, and `views` lists extra PDQ hashes of transforms of the content. Raises InvalidInput
    naming the first bad field.
    """
    if not isinstance(obj, dict):
        _bad(field, "must be an object")
    out: Fingerprints = {}
    for name, value in obj.items():
        where = f"{field}.{name}"
        if allow_bare and name == "views":
            out["views"] = _validate_views(value, where)  # type: ignore[assignment]
            continue
        if name not in ALGORITHMS:
            _bad(where, f"unknown algorithm (known: {', '.join(ALGORITHMS)})")
        if allow_bare and name in ("pdq", "phash") and isinstance(value, str):
            value = {"algorithm": name, "hash": value}
        out[name] = _VALIDATORS[name](value, where, allow_bare)
    return out


def _validate_pdq(value: object, where: str, partial: bool) -> dict[str, object]:
    optional = {"version", "quality", "low_quality"} if partial else {"low_quality"}
    fp = _shape(value, where, "pdq", {"algorithm", "version", "hash", "quality", "low_quality"},
                optional)
    out: dict[str, object] = {"algorithm": "pdq"}
    if "version" in fp:
        out["version"] = _version(fp["version"], f"{where}.version")
    out["hash"] = _hex(fp["hash"], _PDQ_HEX, f"{where}.hash")
    if "quality" in fp:
        quality = fp["quality"]
        if not _is_int(quality) or not 0 <= quality <= 100:
            _bad(f"{where}.quality", "must be an integer from 0 to 100")
        low = quality < PDQ_LOW_QUALITY
        if "low_quality" in fp and fp["low_quality"] is not low:
            _bad(f"{where}.low_quality", f"must be {str(low).lower()} for quality {quality}")
        out["quality"] = quality
        out["low_quality"] = low
    elif "low_quality" in fp:
        _bad(f"{where}.low_quality", "needs quality")
    return out


def _validate_phash(value: object, where: str, partial: bool) -> dict[str, object]:
    fp = _shape(value, where, "phash", {"algorithm", "version", "hash"},
                {"version"} if partial else set())
    out: dict[str, object] = {"algorithm": "phash"}
    if "version" in fp:
        out["version"] = _version(fp["version"], f"{where}.version")
    out["hash"] = _hex(fp["hash"], _PHASH_HEX, f"{where}.hash")
    return out


def _validate_minhash(value: object, where: str, partial: bool) -> dict[str, object]:
    keys = {"algorithm", "version", "scheme", "tokens", "num_perm", "seed", "shingle",
            "hashvalues"}
    fp = _shape(value, where, "minhash", keys, set())
    fixed: dict[str, object] = {
        "scheme": MINHASH_SCHEME,
        "tokens": TEXT_TOKENS,
        "num_perm": MINHASH_NUM_PERM,
        "seed": MINHASH_SEED,
        "shingle": MINHASH_SHINGLE,
    }
    for key, want in fixed.items():
        if fp[key] != want or type(fp[key]) is not type(want):
            _bad(f"{where}.{key}", f"must be {want!r}")
    out: dict[str, object] = {"algorithm": "minhash",
                              "version": _version(fp["version"], f"{where}.version")}
    out.update(fixed)
    raw = _b64(fp["hashvalues"], f"{where}.hashvalues")
    if len(raw) != 8 * MINHASH_NUM_PERM:
        _bad(f"{where}.hashvalues", f"must encode {MINHASH_NUM_PERM} uint64 values")
    values = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
    if max(values) > _MINHASH_MAX:
        _bad(f"{where}.hashvalues", "values must be below 2**32")
    if min(values) == _MINHASH_MAX:
        _bad(f"{where}.hashvalues", "is the empty MinHash")
    out["hashvalues"] = base64.b64encode(raw).decode("ascii")  # canonical padding
    return out


def _validate_orb(value: object, where: str, partial: bool) -> dict[str, object]:
    keys = {"algorithm", "version", "scheme", "width", "height", "keypoints"}
    fp = _shape(value, where, "orb", keys | ({"mirrored"} if partial else set()),
                {"version", "mirrored"} if partial else set())
    out: dict[str, object] = {"algorithm": "orb"}
    if "version" in fp:
        out["version"] = _version(fp["version"], f"{where}.version")
    if fp["scheme"] != ORB_SCHEME:
        _bad(f"{where}.scheme", f"must be {ORB_SCHEME!r}")
    out["scheme"] = ORB_SCHEME
    for side in ("width", "height"):
        length = fp[side]
        if not _is_int(length) or not 1 <= length <= _MAX_SIDE:
            _bad(f"{where}.{side}", f"must be an integer from 1 to {_MAX_SIDE}")
        out[side] = length
    limit = ORB_QUERY_LIMIT if partial else ORB_REGISTERED_MAX
    for key in ("keypoints", "mirrored"):
        if key in fp:
            out[key] = _keypoints(fp[key], limit, out, f"{where}.{key}")
    return out


def _keypoints(value: object, limit: int, size: dict[str, object], where: str) -> str:
    """Standard base64 of 1..limit records; every point inside the image."""
    raw = _b64(value, where)
    if not raw or len(raw) % ORB_RECORD_BYTES or len(raw) > limit * ORB_RECORD_BYTES:
        _bad(where, f"must encode 1 to {limit} records of {ORB_RECORD_BYTES} bytes")
    width, height = size["width"], size["height"]
    assert isinstance(width, int) and isinstance(height, int)
    # Every record as 18 uint16 (x, y, then the descriptor): a C-level stride, not a Python
    # loop over up to 2 x 2,048 records (which was a tenth of a claim check's CPU).
    words = array.array("H", raw)
    if sys.byteorder == "big":
        words.byteswap()
    step = ORB_RECORD_BYTES // 2
    if max(words[0::step]) > 8 * width or max(words[1::step]) > 8 * height:
        _bad(where, "a keypoint lies outside the image")
    return base64.b64encode(raw).decode("ascii")


def _validate_views(value: object, where: str) -> list[dict[str, object]]:
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_VIEWS:
        _bad(where, f"must be a list of 1 to {_MAX_VIEWS} views")
    out = []
    for i, view in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(view, dict) or not {"transform", "hash"} <= set(view) <= _VIEW_KEYS:
            _bad(at, "must be an object with transform, hash and, for a region, region")
        if view["transform"] not in VIEW_TRANSFORMS:
            _bad(f"{at}.transform", f"must be one of: {', '.join(VIEW_TRANSFORMS)}")
        item: dict[str, object] = {"transform": view["transform"],
                                   "hash": _hex(view["hash"], _PDQ_HEX, f"{at}.hash")}
        if "region" in view:
            item["region"] = _region(view["region"], f"{at}.region")
        out.append(item)
    return out


def _region(value: object, where: str) -> list[int]:
    """[left, top, right, bottom] of the upload in thousandths: 0 <= left < right <= 1000."""
    if (not isinstance(value, list) or len(value) != 4 or not all(_is_int(v) for v in value)
            or not 0 <= value[0] < value[2] <= 1000 or not 0 <= value[1] < value[3] <= 1000):
        _bad(where, "must be [left, top, right, bottom] in thousandths of the upload")
    return list(value)


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not _B64.fullmatch(value):
        _bad(where, "must be standard base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        _bad(where, "must be standard base64")




def _validate_chromaprint(value: object, where: str, partial: bool) -> dict[str, object]:
    fp = _shape(value, where, "chromaprint",
                {"algorithm", "version", "scheme", "duration", "items"}, set())
    raw = _media_head(fp, where, CHROMAPRINT_SCHEME)
    if not 2 <= len(raw) <= 2 * MAX_AUDIO_ITEMS or len(raw) % 2:
        _bad(f"{where}.items", f"must encode 1 to {MAX_AUDIO_ITEMS} uint16 values")
    return _media_out(fp, "items", raw)


def _validate_vpdq(value: object, where: str, partial: bool) -> dict[str, object]:
    fp = _shape(value, where, "vpdq", {"algorithm", "version", "scheme", "duration", "frames"},
                set())
    raw = _media_head(fp, where, VPDQ_SCHEME, "frames")
    size = VPDQ_FRAME_BYTES
    if not size <= len(raw) <= size * MAX_VIDEO_FRAMES or len(raw) % size:
        _bad(f"{where}.frames", f"must encode 1 to {MAX_VIDEO_FRAMES} frames of {size} bytes")
    last = -1
    for i in range(0, len(raw), size):
        tick = int.from_bytes(raw[i : i + 2], "little")
        if tick < last or tick > 4 * fp["duration"]:  # type: ignore[operator]
            _bad(f"{where}.frames", "frame times must not decrease and lie within duration")
        if raw[i + size - 1] > 100:
            _bad(f"{where}.frames", "frame quality must be 0 to 100")
        last = tick
    return _media_out(fp, "frames", raw)


def _media_head(fp: dict[str, object], where: str, scheme: str, key: str = "items") -> bytes:
    """Checks shared by the audio and video schemas; returns the decoded `key` bytes."""
    _version(fp["version"], f"{where}.version")
    if fp["scheme"] != scheme:
        _bad(f"{where}.scheme", f"must be {scheme!r}")
    duration = fp["duration"]
    if not _is_int(duration) or not 0 <= duration <= MAX_MEDIA_SECONDS:
        _bad(f"{where}.duration", f"must be an integer from 0 to {MAX_MEDIA_SECONDS}")
    return _b64(fp[key], f"{where}.{key}")


def _media_out(fp: dict[str, object], key: str, raw: bytes) -> dict[str, object]:
    return {"algorithm": fp["algorithm"], "version": fp["version"], "scheme": fp["scheme"],
            "duration": fp["duration"], key: base64.b64encode(raw).decode("ascii")}


_VALIDATORS = {"pdq": _validate_pdq, "phash": _validate_phash, "minhash": _validate_minhash,
               "orb": _validate_orb, "chromaprint": _validate_chromaprint,
               "vpdq": _validate_vpdq}


def _shape(
    value: object, where: str, algorithm: str, allowed: set[str], optional: set[str]
) -> dict[str, object]:
    if not isinstance(value, dict):
        _bad(where, "must be an object")
    for key in value:
        if key not in allowed:
            _bad(f"{where}.{key}", "unknown field")
    for key in sorted(allowed - optional):
        if key not in value:
            _bad(f"{where}.{key}", "required")
    if value["algorithm"] != algorithm:
        _bad(f"{where}.algorithm", f"must be {algorithm!r}")
    return value


def _hex(value: object, length: int, where: str) -> str:
    if not isinstance(value, str) or len(value) != length or not _HEX.fullmatch(value):
        _bad(where, f"must be {length} hex digits")
    return value.lower()


def _version(value: object, where: str) -> str:
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        _bad(where, "must be 1 to 64 printable ASCII characters")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(where: str, message: str) -> NoReturn:
    raise InvalidInput(said("{where}: {message}",
                            where=where, message=message),
                            errors=[{"field": where, "message": message}])
