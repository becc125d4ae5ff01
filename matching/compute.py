"""Computing fingerprints: PDQ and pHash of an encoded image, MinHash of a text.

Images get PDQ (256 bits, Meta's hash for exactly this job, with its quality score) and pHash
(64 bits) as a second opinion; text gets a MinHash over word 5-shingles. Every fingerprint names
its algorithm and hasher version, because a match report is evidence and must say what produced
it; its shape is the entry schema in copyledger.ledger.fingerprint.

The same functions run in the creator's CLI and on the server, so the bytes of a fingerprint do
not depend on where it was computed. Heavy libraries (Pillow, numpy, pdqhash, imagehash,
datasketch) are imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import base64
import codecs
import io
import itertools
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from copyledger.ledger.components import MATCHING, PDQHASH, load, require
from copyledger.ledger.errors import InvalidInput, said
from copyledger.ledger.fingerprint import (
    MINHASH_NUM_PERM,
    MINHASH_SCHEME,
    MINHASH_SEED,
    MINHASH_SHINGLE,
    ORB_SCHEME,
    PDQ_LOW_QUALITY,
    TEXT_TOKENS,
    Fingerprints,
)

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "IMAGE_FORMATS",
    "IMAGE_MEDIA_TYPES",
    "MAX_DECODE_BYTES",
    "MAX_IMAGE_PIXELS",
    "THUMBNAIL_PX",
    "fingerprints_for",
    "image_fingerprints",
    "query_fingerprints",
    "text_fingerprints",
    "text_shingles",
]

MAX_FINGERPRINT_BYTES = 64 * 1024 * 1024  # larger files are hashed but not fingerprinted
THUMBNAIL_PX = 512
"""Images are thumbnailed to this long side before hashing: PDQ downsamples to 64x64 anyway,
and hashing a 24-megapixel photo at full size costs ~20x more for the same bits."""
MAX_IMAGE_PIXELS = 89_478_485
"""Pillow's decompression-bomb limit (~ 0.25 GiB of RGB): larger images are refused."""
MAX_DECODE_BYTES = MAX_IMAGE_PIXELS * 9
"""The most one image decode holds (~ 768 MiB at the pixel limit), the thumbnail and hashes
being small beside it. Bytes a pixel, measured: 16-bit greyscale ~2.3 (decoded as it is and
resampled in its own mode), bilevel 2, RGB 4, palette 5 (widened to RGB), RGBA 8 (Pillow
resamples a premultiplied copy), palette with transparency 9. JPEG is decoded at 1/2 to 1/8
size (DCT draft mode), so it takes far less."""
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
"""Formats Pillow may open; never EPS/PS (they run Ghostscript) or other exotic plugins."""
IMAGE_MEDIA_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"}
)

# CJK ideographs, kana and hangul are written without spaces: each is its own token.
_CJK = re.compile(
    "([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f])"
)
_WORD = re.compile(r"[^\W_]+")
_ORIENTATION_TAG = 0x0112
_SHINGLE_BATCH = 8_192  # a batch costs MINHASH_NUM_PERM * 24 bytes a shingle in datasketch
_TEXT_PIECE = 1 << 20  # bytes of a text file read, and normalised, at a time
_CUT_BEFORE = (" ", "\n", "\t", "\r", "\u3000")  # whitespace a piece of text may start at


_TEXT_LIBRARIES = ("numpy", "datasketch")  # datasketch loads SciPy
_IMAGE_LIBRARIES = ("numpy", "scipy.fftpack", "cv2", "imagehash")  # pHash's DCT is SciPy's

_DIHEDRAL = (None, "rotated 90°", "rotated 180°", "rotated 270°", "mirrored, rotated 180°",
             "mirrored", "mirrored, rotated 270°", "mirrored, rotated 90°")
"""What was done to an original whose hash is pdqhash.compute_dihedral's i-th of the upload
(the i-th hash undoes it: 1 turns the upload 90° counter-clockwise, 5 flips it left-right)."""
_BAR_SHARE = 0.6  # a bar's lines are on average at least this much the bar's colour
_CLEAN = 0.9  # a bar ends at a line at least this much the bar's colour (its margin)
_MAX_BAR = 0.45  # no side loses more than this share at a time
_BAR_TOLERANCE = 28  # per channel, for "the bar's colour" (JPEG noise, anti-aliased text)
_MIN_TRIM = 0.03  # trimmed less than this on every side: the content region is the image


def image_fingerprints(data: bytes | IO[bytes]) -> Fingerprints:
    """PDQ, pHash and ORB keypoints of an encoded image (its bytes, or a seekable file holding
    them), as stored in entries and sent by the CLI."""
    require(MATCHING, *_IMAGE_LIBRARIES)
    from copyledger.matching.local import orb_keypoints

    image = _decode_image(data)
    fps = _global_hashes(image)
    if keypoints := orb_keypoints(image):
        fps["orb"] = _orb(image, keypoints)
    return fps


def query_fingerprints(data: bytes | IO[bytes]) -> Fingerprints:
    """What a claim check sends for a disputed image: its own PDQ and pHash, PDQ `views` of its
    dihedral transforms and of its content region (borders, letterbox and caption bars
    trimmed), and up to ORB_QUERY_MAX keypoints of it and of its mirror image."""
    require(MATCHING, *_IMAGE_LIBRARIES)
    import numpy as np

    from copyledger.matching.local import (
        ORB_QUERY_MAX,
        ORB_QUERY_PX,
        encode_keypoints,
        orb_keypoints,
    )

    image = _decode_image(data)
    fps = _global_hashes(image)
    pdqhash = _pdqhash()
    hashes, _ = pdqhash.compute_dihedral(np.asarray(image, dtype=np.uint8))
    views: list[dict[str, object]] = [
        {"transform": name, "hash": _pdq_hex(bits)}
        for name, bits in zip(_DIHEDRAL, hashes, strict=True) if name is not None]
    box = content_box(image)
    if box is not None:
        region = np.asarray(image.crop(box), dtype=np.uint8)
        where = [round(1000 * box[0] / image.width), round(1000 * box[1] / image.height),
                 round(1000 * box[2] / image.width), round(1000 * box[3] / image.height)]
        mirrored = np.ascontiguousarray(region[:, ::-1])
        views += [{"transform": "content region", "region": where,
                   "hash": _pdq_hex(pdqhash.compute(region)[0])},
                  {"transform": "content region, mirrored", "region": where,
                   "hash": _pdq_hex(pdqhash.compute(mirrored)[0])}]
    fps["views"] = views  # type: ignore[assignment]
    if isinstance(data, bytes):
        large = _decode_image(data, ORB_QUERY_PX)
    else:
        data.seek(0)
        large = _decode_image(data, ORB_QUERY_PX)
    if keypoints := orb_keypoints(large, ORB_QUERY_MAX):
        fps["orb"] = _orb(large, keypoints)
        if twins := orb_keypoints(large, ORB_QUERY_MAX, mirror=True):
            fps["orb"]["mirrored"] = encode_keypoints(twins)
    return fps


def content_box(image: Image) -> tuple[int, int, int, int] | None:
    """The picture inside added borders, letterbox or pillarbox bars, caption bars and the
    plain page around a screenshot: each side is trimmed, again and again while that changes
    something, down to the deepest clean line (one almost all the edge's colour) before which
    most lines are mostly that colour (text on a bar leaves them mostly so). None when less
    than _MIN_TRIM of the image would go on every side, or nearly all of it would."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.int16)
    height, width = pixels.shape[:2]
    left, top, right, bottom = 0, 0, width, height
    for _ in range(4):
        region = pixels[top:bottom, left:right]
        cuts = (_bar_depth(region.transpose(1, 0, 2)), _bar_depth(region),
                _bar_depth(region.transpose(1, 0, 2)[::-1]), _bar_depth(region[::-1]))
        if not any(cuts):
            break
        left, top, right, bottom = (left + cuts[0], top + cuts[1], right - cuts[2],
                                    bottom - cuts[3])
    if right - left < width * 0.2 or bottom - top < height * 0.2:
        return None
    trims = (left / width, top / height, 1 - right / width, 1 - bottom / height)
    return (left, top, right, bottom) if max(trims) >= _MIN_TRIM else None


def _bar_depth(lines: Any) -> int:
    """How many leading lines (rows of `lines`, each a row of RGB pixels) form a bar."""
    import numpy as np

    colour = np.median(lines[0], axis=0)
    near = np.all(np.abs(lines - colour) <= _BAR_TOLERANCE, axis=2).mean(axis=1)
    limit = int(len(lines) * _MAX_BAR)
    if limit < 1 or near[0] < _CLEAN:
        return 0
    share = np.cumsum(near[:limit]) / np.arange(1, limit + 1)
    ends = np.flatnonzero((near[:limit] >= _CLEAN) & (share >= _BAR_SHARE))
    return int(ends[-1]) + 1 if ends.size else 0


def _global_hashes(image: Image) -> Fingerprints:
    import imagehash
    import numpy as np

    bits, quality = _pdqhash().compute(np.asarray(image, dtype=np.uint8))
    pdq_hex = _pdq_hex(bits)
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


def _pdqhash() -> Any:
    """pdqhash, built from source after `make run` starts serving (D45)."""
    return load("pdqhash", PDQHASH)


def _pdq_hex(bits: Any) -> str:
    """pdqhash returns bit 255 first, so packing big-endian gives the canonical PDQ hex (the
    one ThreatExchange and Meta's reference tools print)."""
    import numpy as np

    return bytes(np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()).hex()


def _orb(image: Image, keypoints: bytes) -> dict[str, object]:
    from copyledger.matching.local import encode_keypoints

    return {"algorithm": "orb", "version": _dist_version("opencv-python-headless"),
            "scheme": ORB_SCHEME, "width": image.width, "height": image.height,
            "keypoints": encode_keypoints(keypoints)}


def text_fingerprints(text: str) -> Fingerprints:
    """MinHash of the text's word 5-shingles; refuses text with no words."""
    fps = _minhash_of(_shingles(_words([text])))
    if fps is None:
        raise InvalidInput(
            "text has no words to fingerprint",
            errors=[{"field": "text", "message": said("empty after normalisation")}],
        )
    return fps


def _minhash_of(shingles: Iterator[str]) -> Fingerprints | None:
    """MinHash of the shingles, taken a batch at a time (memory does not grow with the text;
    a MinHash is a minimum over the set, so batching does not change it); None if none."""
    require(MATCHING, *_TEXT_LIBRARIES)
    import numpy as np

    minhash, empty = _new_minhash(), True
    while batch := [s.encode("utf-8") for s in itertools.islice(shingles, _SHINGLE_BATCH)]:
        minhash.update_batch(batch)
        empty = False
    if empty:
        return None
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


def fingerprints_for(data: bytes | IO[bytes] | Path, media_type: str | None,
                     progress: Callable[[float], None] | None = None, *,
                     query: bool = False) -> Fingerprints:
    """The fingerprints a file of this media type gets; {} when none applies.

    An image type Pillow should decode but cannot is refused (the file is not what it claims);
    so is audio or video FFmpeg cannot decode. Text with no words and types we have no
    perceptual hash for get {}. `progress` hears the seconds of audio or video decoded.
    `query`: the file is a claim check's disputed content, so an image gets
    query_fingerprints (PDQ views, more keypoints) and a video is sampled more densely, as a
    probe (see matching.video.video_fingerprints).
    """
    if not media_type:
        return {}
    essence = media_type.split(";", 1)[0].strip().lower()
    major = essence.split("/", 1)[0]
    if major in ("audio", "video"):
        from copyledger.matching.audio import audio_fingerprints
        from copyledger.matching.video import video_fingerprints

        source = io.BytesIO(data) if isinstance(data, bytes) else data
        if major == "audio":
            return audio_fingerprints(source, progress)
        return video_fingerprints(source, progress, probe=query)
    if isinstance(data, Path):
        data = data.read_bytes()
    if essence in IMAGE_MEDIA_TYPES:
        return query_fingerprints(data) if query else image_fingerprints(data)
    if essence.startswith("text/"):  # no words: nothing perceptual to compare, so {}
        pieces = ([data.decode("utf-8", errors="replace")] if isinstance(data, bytes)
                  else _text_pieces(data))
        return _minhash_of(_shingles(_words(pieces))) or {}
    return {}


def text_shingles(text: str) -> list[str]:
    """Word 5-shingles after NFKC, casefolding, and dropping punctuation and spacing.

    Reflowed lines, changed quotes or dashes and case changes therefore do not change the
    fingerprint. A text shorter than five words is one shingle.
    """
    return list(_shingles(_words([text])))


def _words(pieces: Iterable[str]) -> Iterator[str]:
    """The words of a text given in pieces that each start at whitespace (or at its start):
    NFKC keeps whitespace whitespace, so no word or normalisation spans two pieces."""
    for piece in pieces:
        normal = unicodedata.normalize("NFKC", piece).casefold()
        yield from _WORD.findall(_CJK.sub(r" \1 ", normal))


def _shingles(words: Iterable[str]) -> Iterator[str]:
    """Every run of five consecutive words, or all of them if there are fewer."""
    window: deque[str] = deque(maxlen=MINHASH_SHINGLE)
    for n, word in enumerate(words, 1):
        window.append(word)
        if n >= MINHASH_SHINGLE:
            yield " ".join(window)
    if 0 < len(window) < MINHASH_SHINGLE:
        yield " ".join(window)


def _text_pieces(file: IO[bytes]) -> Iterator[str]:
    """A UTF-8 file's text (bad bytes replaced) in pieces of about _TEXT_PIECE characters, each
    cut just before whitespace; a run of 4 pieces with no whitespace at all is cut anyway,
    which bounds memory and can change at most the shingles across that cut."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    while raw := file.read(_TEXT_PIECE):
        text += decoder.decode(raw)
        cut = max(text.rfind(c) for c in _CUT_BEFORE)
        if cut <= 0:
            if len(text) < 4 * _TEXT_PIECE:
                continue
            cut = len(text)
        yield text[:cut]
        text = text[cut:]
    yield text + decoder.decode(b"", final=True)


def _decode_image(data: bytes | IO[bytes], side: int = THUMBNAIL_PX) -> Image:
    """Decode, refuse bombs, thumbnail to `side`, apply EXIF orientation, flatten to RGB on
    white.

    Memory is bounded by the full-size decode and nothing more: JPEG is decoded at reduced size
    (DCT draft mode, in `thumbnail`), every other image is thumbnailed in its own mode before
    any conversion, so no full-size copy in a wider mode is ever made (a 16-bit 9400x9400 PNG
    once took 2.5 GiB that way). Palette and bilevel images, which cannot be resampled, are
    widened first (see MAX_DECODE_BYTES).
    """
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
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        image: Image.Image = Image.open(source, formats=IMAGE_FORMATS)
        width, height = image.size
        if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
            message = said("image is {width}x{height} pixels; the limit is {limit}",
                           width=width, height=height, limit=MAX_IMAGE_PIXELS)
            raise InvalidInput(said("file: {message}", message=message),
                               errors=[{"field": "file", "message": message}])
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
        high = None
        if image.mode.startswith("I;16") and image.mode != "I;16":
            image = image.convert("I")  # byte-order variants (TIFF): Pillow resamples "I"
        if image.mode in _WIDE_GREY_MODES:
            extrema = image.getextrema()  # scale by the whole image, as before
            high = float(extrema[1]) if isinstance(extrema[1], (int, float)) else None
        elif image.mode not in _RESAMPLABLE_MODES:
            image = _widen(image)  # palette/bilevel: resampling needs real colours
        # Decodes; JPEG in DCT draft mode. Pillow cannot reduce() "I;16": resample it directly.
        gap = None if image.mode == "I;16" else 2.0
        image.thumbnail((side, side), reducing_gap=gap)
        if orientation in transpose:
            image = image.transpose(transpose[orientation])
        return _to_rgb(image, high)
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:
        _bad_file(f"image exceeds the limit of {MAX_IMAGE_PIXELS} pixels", exc)
    except UnidentifiedImageError as exc:
        _bad_file(said("not a supported image ({formats})", formats=", ".join(IMAGE_FORMATS)), exc)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        _bad_file(said("image does not decode: {exc}", exc=exc), exc)


_RESAMPLABLE_MODES = frozenset({"RGB", "RGBA", "L", "LA", "CMYK", "YCbCr"})
_WIDE_GREY_MODES = frozenset({"I;16", "I", "F"})  # resampled as they are, scaled to 8 bits after


def _bad_file(message: str, cause: BaseException) -> NoReturn:
    raise InvalidInput(message, errors=[{"field": "file", "message": message}]) from cause


def _widen(image: Image) -> Image:
    """A mode Pillow can resample with the same colours: L for bilevel, RGB(A) otherwise."""
    if image.mode == "1":
        return image.convert("L")
    has_alpha = image.mode in ("PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    return image.convert("RGBA" if has_alpha else "RGB")


def _to_rgb(image: Image, high: float | None = None) -> Image:
    """RGB, with any transparency composited on white (what a viewer shows). `high` is the
    brightest value of a 16/32-bit greyscale image before it was thumbnailed."""
    from PIL import Image as PILImage

    if image.mode in _WIDE_GREY_MODES:
        image = _to_8bit_grey(image, high)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(background, rgba).convert("RGB")


def _to_8bit_grey(image: Image, high: float | None) -> Image:
    """16-bit and 32-bit greyscale to 8 bits: Pillow's own conversion clips at 255, which
    would turn a 16-bit PNG white. `high` (default: this image's) picks the range."""
    import numpy as np
    from PIL import Image as PILImage

    pixels = np.asarray(image.convert("F"), dtype=np.float64)
    if high is None:
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
