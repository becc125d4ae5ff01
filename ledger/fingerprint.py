"""Perceptual fingerprints: compute them, check client-supplied ones, and compare two of them.

A SHA-256 only finds byte-identical copies; a platform also needs to know whether a re-encoded,
resized or recoloured upload is a registered work. Images get PDQ (256 bits, Meta's hash for
exactly this job, with its quality score) and pHash (64 bits) as a second opinion; text gets a
MinHash over word 5-shingles. Every fingerprint names its algorithm and hasher version, because a
match report is evidence and must say what produced it.

The same functions run in the creator's CLI and on the server, so the bytes of a fingerprint do
not depend on where it was computed. Heavy libraries (Pillow, numpy, pdqhash, imagehash,
datasketch) are imported inside functions: importing this module costs nothing.

Thresholds are module constants, chosen from bench/fingerprint_rates.py; docs/platforms.md
holds the measured miss and false-match rates behind them.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import version as _dist_version
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol, TypeGuard

from copyledger.ledger.errors import InvalidInput

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "ALGORITHMS",
    "IMAGE_MEDIA_TYPES",
    "MAX_IMAGE_PIXELS",
    "MINHASH_MATCH",
    "MINHASH_POSSIBLE",
    "PDQ_LOW_QUALITY",
    "PDQ_MATCH",
    "PDQ_POSSIBLE",
    "PHASH_MATCH",
    "PHASH_POSSIBLE",
    "THUMBNAIL_PX",
    "Match",
    "Verdict",
    "compare",
    "fingerprints_for",
    "hamming",
    "image_fingerprints",
    "minhash_hashvalues",
    "minhash_similarity",
    "overall_verdict",
    "text_fingerprints",
    "text_shingles",
    "validate_fingerprints",
    "verdict_for_distance",
    "verdict_for_similarity",
]

Verdict = Literal["match", "possible", "none"]
Fingerprints = dict[str, dict[str, object]]

# ---------------------------------------------------------------- thresholds (measured)
# Hamming distances are "at most"; similarities are "at least". Measured by
# bench/fingerprint_rates.py on 300 generated originals x 5 transforms (1,500 variants, 44,850
# unrelated original pairs, 448,500 unrelated variant/original pairs) and on 140 prose texts;
# the tables are in docs/platforms.md.

PDQ_MATCH = 31
"""Meta's reference PDQ threshold (of 256 bits), kept so hashes from other PDQ tools compare
the same way. Measured: 97 % of variants within it; PDQ's misses are smooth gradients (JPEG 30,
+20 % brightness) and text shrunk to 25 % (up to 42 bits)."""
PDQ_POSSIBLE = 63
"""Up to a quarter of the bits: worth a human look. No unrelated pair came closer than 74;
4 of 1,500 variants (smooth gradients after JPEG 30 or brightening, 64 to 84 bits) fell
outside; pHash matched three of them and rated the fourth (10 bits) "possible"."""
PDQ_LOW_QUALITY = 50
"""PDQ quality below this (flat or featureless images) makes the hash unreliable: flagged.
14 of our 300 generated originals (soft gradients and noise) fell under it."""
PHASH_MATCH = 8
"""pHash (of 64 bits), the second opinion: 99.8 % of variants within 8 (max 10, after
brightening); no unrelated pair within 9."""
PHASH_POSSIBLE = 10
"""pHash 'possible' radius. Not 12: among a million registrations a random 64-bit code has
~0.22 neighbours within 12 bits by chance alone, ~0.01 within 10 (binomial tails; measured
0.25 at 12 by bench/index_bench.py). 3 of 448,500 unrelated variant pairs fell within 10."""
MINHASH_MATCH = 0.8
"""Estimated Jaccard similarity of word 5-shingles for a match: measured 100 % of texts with
1 % of words changed, 98 % at 1.5 %, 41 % at 2.5 % (the rest 'possible')."""
MINHASH_POSSIBLE = 0.5
"""Estimated Jaccard similarity for 'possible': 5 % of words changed lands here (99 %)."""

# ---------------------------------------------------------------- fixed parameters

ALGORITHMS = ("pdq", "phash", "minhash")
THUMBNAIL_PX = 512
"""Images are thumbnailed to this long side before hashing: PDQ downsamples to 64x64 anyway,
and hashing a 24-megapixel photo at full size costs ~20x more for the same bits."""
MAX_IMAGE_PIXELS = 89_478_485
"""Pillow's decompression-bomb limit (~ 0.25 GiB of RGB): larger images are refused."""
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
"""Formats Pillow may open; never EPS/PS (they run Ghostscript) or other exotic plugins."""
IMAGE_MEDIA_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"}
)
MINHASH_NUM_PERM = 128
MINHASH_SEED = 1
MINHASH_SHINGLE = 5
MINHASH_SCHEME = "legacy"
"""datasketch's bit-for-bit stable permutation scheme (the only one before datasketch 2.0):
the values must not change under a library upgrade, since they are kept in the log forever."""
TEXT_TOKENS = "nfkc-casefold-words-v1"
"""Names the text normalisation below; a different normalisation would need a new name."""

_PDQ_HEX = 64
_PHASH_HEX = 16
_MINHASH_MAX = (1 << 32) - 1  # datasketch stores 32-bit values in uint64
_HEX = re.compile(r"[0-9a-fA-F]+")
_VERSION = re.compile(r"[\x21-\x7e]{1,64}")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# CJK ideographs, kana and hangul are written without spaces: each is its own token.
_CJK = re.compile(
    "([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f])"
)
_WORD = re.compile(r"[^\W_]+")
_ORIENTATION_TAG = 0x0112
_SHINGLE_BATCH = 65_536


# ---------------------------------------------------------------- computing


def image_fingerprints(data: bytes) -> Fingerprints:
    """PDQ and pHash of an encoded image, as stored in entries and sent by the CLI."""
    import imagehash
    import numpy as np
    import pdqhash  # type: ignore[import-untyped]

    image = _decode_image(data)
    bits, quality = pdqhash.compute(np.asarray(image, dtype=np.uint8))
    # pdqhash returns bit 255 first, so packing big-endian gives the canonical PDQ hex
    # (the one ThreatExchange and Meta's reference tools print).
    pdq_hex = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()
    phash_hex = str(imagehash.phash(image))
    return {
        "pdq": {
            "algorithm": "pdq",
            "version": _dist_version("pdqhash"),
            "hash": pdq_hex,
            "quality": int(quality),
            "low_quality": int(quality) < PDQ_LOW_QUALITY,
        },
        "phash": {
            "algorithm": "phash",
            "version": _dist_version("imagehash"),
            "hash": phash_hex,
        },
    }


def text_fingerprints(text: str) -> Fingerprints:
    """MinHash of the text's word 5-shingles; refuses text with no words."""
    import numpy as np

    shingles = text_shingles(text)
    if not shingles:
        raise InvalidInput(
            "text has no words to fingerprint",
            errors=[{"field": "text", "message": "empty after normalisation"}],
        )
    minhash = _new_minhash()
    for start in range(0, len(shingles), _SHINGLE_BATCH):  # bounded memory for long texts
        minhash.update_batch([s.encode("utf-8") for s in shingles[start : start + _SHINGLE_BATCH]])
    values = np.asarray(minhash.hashvalues, dtype="<u8")
    return {
        "minhash": {
            "algorithm": "minhash",
            "version": _dist_version("datasketch"),
            "scheme": MINHASH_SCHEME,
            "tokens": TEXT_TOKENS,
            "num_perm": MINHASH_NUM_PERM,
            "seed": MINHASH_SEED,
            "shingle": MINHASH_SHINGLE,
            "hashvalues": base64.b64encode(values.tobytes()).decode("ascii"),
        }
    }


def fingerprints_for(data: bytes, media_type: str | None) -> Fingerprints:
    """The fingerprints a file of this media type gets; {} when none applies.

    An image type Pillow should decode but cannot is refused (the file is not what it claims);
    text with no words and types we have no perceptual hash for get {}.
    """
    if not media_type:
        return {}
    essence = media_type.split(";", 1)[0].strip().lower()
    if essence in IMAGE_MEDIA_TYPES:
        return image_fingerprints(data)
    if essence.startswith("text/"):
        try:
            return text_fingerprints(data.decode("utf-8", errors="replace"))
        except InvalidInput:  # no words: nothing perceptual to compare
            return {}
    return {}


def text_shingles(text: str) -> list[str]:
    """Word 5-shingles after NFKC, casefolding, and dropping punctuation and spacing.

    Reflowed lines, changed quotes or dashes and case changes therefore do not change the
    fingerprint. A text shorter than five words is one shingle.
    """
    normal = unicodedata.normalize("NFKC", text).casefold()
    words = _WORD.findall(_CJK.sub(r" \1 ", normal))
    if len(words) <= MINHASH_SHINGLE:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + MINHASH_SHINGLE]) for i in range(len(words) - 4)]


def _decode_image(data: bytes) -> Image:
    """Decode, refuse bombs, thumbnail, apply EXIF orientation, flatten to RGB on white."""
    from PIL import Image, UnidentifiedImageError

    transpose = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
            _bad("file", f"image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS}")
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
        if image.mode not in _RESAMPLABLE_MODES:
            image = _to_rgb(image)  # palette/bilevel/16-bit: resampling needs real colours
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))  # decodes; JPEG in DCT draft mode
        if orientation in transpose:
            image = image.transpose(transpose[orientation])
        return _to_rgb(image)
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:
        _bad_file(f"image exceeds the limit of {MAX_IMAGE_PIXELS} pixels", exc)
    except UnidentifiedImageError as exc:
        _bad_file(f"not a supported image ({', '.join(IMAGE_FORMATS)})", exc)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        _bad_file(f"image does not decode: {exc}", exc)


_RESAMPLABLE_MODES = frozenset({"RGB", "RGBA", "L", "LA", "CMYK", "YCbCr"})


def _bad_file(message: str, cause: BaseException) -> NoReturn:
    raise InvalidInput(message, errors=[{"field": "file", "message": message}]) from cause


def _to_rgb(image: Image) -> Image:
    """RGB, with any transparency composited on white (what a viewer shows)."""
    from PIL import Image as PILImage

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit_grey(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(background, rgba).convert("RGB")


def _to_8bit_grey(image: Image) -> Image:
    """16-bit and 32-bit greyscale to 8 bits: Pillow's own conversion clips at 255, which
    would turn a 16-bit PNG white."""
    import numpy as np
    from PIL import Image as PILImage

    pixels = np.asarray(image.convert("F"), dtype=np.float64)
    high = float(pixels.max()) if pixels.size else 0.0
    if image.mode == "F" and high <= 1.0:
        pixels = pixels * 255.0  # float image in 0..1
    elif high > 255.0:
        pixels = pixels / 257.0  # 16-bit range (65535 -> 255)
    return PILImage.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _new_minhash(hashvalues: Any = None) -> Any:
    from datasketch import MinHash  # type: ignore[import-untyped]

    return MinHash(
        num_perm=MINHASH_NUM_PERM, seed=MINHASH_SEED, hashvalues=hashvalues, scheme=MINHASH_SCHEME
    )


# ---------------------------------------------------------------- validating


def validate_fingerprints(
    obj: object, *, field: str = "fingerprints", allow_bare: bool = False
) -> Fingerprints:
    """Check client-supplied fingerprints strictly and return them normalised.

    Keys are a subset of ALGORITHMS; each value has exactly the shape this module produces (hex
    is lowercased, `low_quality` is recomputed from `quality`). With `allow_bare` (a claim
    check's disputed content), `pdq`/`phash` may also be a bare hex string, with no version or
    quality. Raises InvalidInput naming the first bad field.
    """
    if not isinstance(obj, dict):
        _bad(field, "must be an object")
    out: Fingerprints = {}
    for name, value in obj.items():
        where = f"{field}.{name}"
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
    encoded = fp["hashvalues"]
    if not isinstance(encoded, str) or not _B64.fullmatch(encoded):
        _bad(f"{where}.hashvalues", "must be standard base64")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        _bad(f"{where}.hashvalues", "must be standard base64")
    if len(raw) != 8 * MINHASH_NUM_PERM:
        _bad(f"{where}.hashvalues", f"must encode {MINHASH_NUM_PERM} uint64 values")
    values = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
    if max(values) > _MINHASH_MAX:
        _bad(f"{where}.hashvalues", "values must be below 2**32")
    if min(values) == _MINHASH_MAX:
        _bad(f"{where}.hashvalues", "is the empty MinHash")
    out["hashvalues"] = base64.b64encode(raw).decode("ascii")  # canonical padding
    return out


_VALIDATORS = {"pdq": _validate_pdq, "phash": _validate_phash, "minhash": _validate_minhash}


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
    raise InvalidInput(f"{where}: {message}", errors=[{"field": where, "message": message}])


# ---------------------------------------------------------------- comparing


@dataclass(frozen=True, slots=True)
class Match:
    """One algorithm's opinion on two fingerprints; what a claim check reports per algorithm.

    `distance` (Hamming bits) is set for pdq/phash, `similarity` (estimated Jaccard) for minhash.
    `threshold` is the match threshold, `possible_threshold` the edge of the 'possible' band.
    `low_quality` means a PDQ hash involved has quality below PDQ_LOW_QUALITY: the verdict
    stands but needs a human look.
    """

    algorithm: str
    verdict: Verdict
    threshold: float
    possible_threshold: float
    version: str
    distance: int | None = None
    similarity: float | None = None
    low_quality: bool = False

    def to_json(self) -> dict[str, object]:
        return {**score_json(self), "version": self.version}


class Scored(Protocol):
    """What a match report shows of any score: a Match, or an index search's Candidate."""

    @property
    def algorithm(self) -> str: ...
    @property
    def verdict(self) -> Verdict: ...
    @property
    def threshold(self) -> float: ...
    @property
    def possible_threshold(self) -> float: ...
    @property
    def distance(self) -> int | None: ...
    @property
    def similarity(self) -> float | None: ...
    @property
    def low_quality(self) -> bool: ...


def score_json(m: Scored) -> dict[str, object]:
    """A score as JSON: distance (pdq/phash) or similarity (minhash), thresholds, verdict."""
    out: dict[str, object] = {"algorithm": m.algorithm}
    if m.distance is not None:
        out["distance"] = m.distance
    if m.similarity is not None:
        out["similarity"] = m.similarity
    out.update(threshold=m.threshold, possible_threshold=m.possible_threshold,
               verdict=m.verdict, low_quality=m.low_quality)
    return out


def hamming(a_hex: str, b_hex: str) -> int:
    """Bits that differ between two equal-length hex hashes."""
    if len(a_hex) != len(b_hex):
        raise InvalidInput(f"hash lengths differ ({len(a_hex)} vs {len(b_hex)} hex digits)")
    try:
        return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()
    except ValueError as exc:
        raise InvalidInput("hash is not hex") from exc


def minhash_hashvalues(fingerprint: dict[str, object]) -> Any:
    """The uint64 numpy array inside a (validated) minhash fingerprint."""
    import numpy as np

    raw = base64.b64decode(str(fingerprint["hashvalues"]))
    return np.frombuffer(raw, dtype="<u8")


def minhash_similarity(a: dict[str, object], b: dict[str, object]) -> float:
    """Estimated Jaccard similarity: the share of the 128 minima that agree."""
    import numpy as np

    va, vb = minhash_hashvalues(a), minhash_hashvalues(b)
    if va.shape != vb.shape:
        raise InvalidInput("minhash fingerprints have different num_perm")
    return float(np.count_nonzero(va == vb)) / float(len(va))


def verdict_for_distance(algorithm: str, distance: int) -> Verdict:
    match, possible = _RADII[algorithm]
    if distance <= match:
        return "match"
    return "possible" if distance <= possible else "none"


def verdict_for_similarity(similarity: float) -> Verdict:
    if similarity >= MINHASH_MATCH:
        return "match"
    return "possible" if similarity >= MINHASH_POSSIBLE else "none"


def overall_verdict(matches: Iterable[Match]) -> Verdict:
    """The best verdict among the algorithms (PDQ, pHash, MinHash) that were compared.

    Measured, not assumed: PDQ misses some smooth images and heavily shrunk text that pHash
    catches, and neither produced a false 'match' on unrelated pairs (docs/platforms.md).
    """
    best: Verdict = "none"
    for m in matches:
        if _RANK[m.verdict] > _RANK[best]:
            best = m.verdict
    return best


_RANK: dict[str, int] = {"none": 0, "possible": 1, "match": 2}


def compare(algorithm: str, a: dict[str, object], b: dict[str, object]) -> Match:
    """Compare two validated fingerprints of one algorithm; `a` is the registered one.

    The reported version is `a`'s (the registered hash), or "a-version/b-version" when the two
    were computed by different hasher versions.
    """
    if algorithm not in ALGORITHMS:
        raise InvalidInput(f"unknown algorithm {algorithm!r}")
    version = _versions(a, b)
    if algorithm == "minhash":
        similarity = minhash_similarity(a, b)
        return Match(
            algorithm=algorithm,
            verdict=verdict_for_similarity(similarity),
            threshold=MINHASH_MATCH,
            possible_threshold=MINHASH_POSSIBLE,
            version=version,
            similarity=similarity,
        )
    distance = hamming(str(a["hash"]), str(b["hash"]))
    match, possible = _RADII[algorithm]
    return Match(
        algorithm=algorithm,
        verdict=verdict_for_distance(algorithm, distance),
        threshold=match,
        possible_threshold=possible,
        version=version,
        distance=distance,
        low_quality=bool(a.get("low_quality")) or bool(b.get("low_quality")),
    )


_RADII: dict[str, tuple[int, int]] = {
    "pdq": (PDQ_MATCH, PDQ_POSSIBLE),
    "phash": (PHASH_MATCH, PHASH_POSSIBLE),
}


def _versions(a: dict[str, object], b: dict[str, object]) -> str:
    va, vb = str(a.get("version", "unknown")), str(b.get("version", "unknown"))
    return va if va == vb or vb == "unknown" else f"{va}/{vb}"
