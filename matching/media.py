"""What a file is, from its first bytes rather than its name: a name can be wrong (`photo.txt`
that is a PNG), and the work type and fingerprints a registration records should follow the
content. Pure functions over bytes; nothing is read here."""

from __future__ import annotations

import mimetypes

__all__ = ["SNIFF_BYTES", "media_type_of", "sniff", "work_type_of"]

SNIFF_BYTES = 4096
"""How much of a file `sniff` needs: every signature below is in the first 12 bytes, and the
rest lets the UTF-8 test see enough text to judge."""

# (offset, signature, media type), tried in order.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"\x1aE\xdf\xa3", "video/webm"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"\x7fELF", "application/x-executable"),
    (0, b"\x00asm", "application/wasm"),
)
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
_FTYP = {b"M4A ": "audio/mp4", b"M4B ": "audio/mp4", b"qt  ": "video/quicktime",
         b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif",
         b"avif": "image/avif"}
_TEXTUAL = ("application/json", "application/xml", "application/javascript",
            "application/x-sh", "image/svg+xml")


def _is_text(head: bytes) -> bool:
    """UTF-8 with no NUL and few control characters (a cut-off last character is allowed)."""
    if not head or b"\x00" in head:
        return False
    for cut in range(4):  # the head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f")
    return controls * 100 <= len(text)


def sniff(head: bytes) -> str | None:
    """The media type the first bytes of a file show (`SNIFF_BYTES` suffice): a known magic
    number, else `text/plain` for UTF-8 text; None when the bytes say nothing."""
    for offset, magic, media in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return media
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12], "video/mp4")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "audio/mpeg"  # an MPEG audio frame header without an ID3 tag
    if _is_text(head):
        return "text/plain"
    return None


def media_type_of(head: bytes, name: str) -> str | None:
    """The media type to record: the content's when its bytes show one, refined by the name
    only where the bytes cannot tell (`data.json` and `notes.txt` are both UTF-8 text; an
    unknown binary keeps the name's guess)."""
    sniffed = sniff(head)
    guessed = mimetypes.guess_type(name)[0]
    if sniffed == "text/plain" and guessed and (guessed.startswith("text/")
                                                or guessed in _TEXTUAL):
        return guessed
    if sniffed == "application/zip" and guessed and guessed.startswith("application/"):
        return guessed  # .docx, .epub, .jar, ... are zip files
    if sniffed is None and guessed and not (guessed.startswith("text/") or guessed in _TEXTUAL):
        return guessed  # binary the name explains; a "text" name on non-text bytes is wrong
    return sniffed


def work_type_of(media_type: str | None) -> str:
    """The registration's `work_type` for a media type: text, image, audio, video, software,
    dataset or other."""
    if media_type is None:
        return "other"
    major = media_type.split("/", 1)[0]
    if media_type in ("text/csv", "text/tab-separated-values", "application/json",
                      "application/x-parquet", "application/vnd.apache.parquet"):
        return "dataset"
    if media_type in ("application/x-executable", "application/wasm", "application/java-archive",
                      "application/x-msdownload", "application/javascript",
                      "text/javascript", "text/x-python", "application/x-sh", "text/x-c",
                      "text/x-sh"):
        return "software"
    if major in ("image", "audio", "video", "text"):
        return major
    if media_type in ("application/pdf", "application/epub+zip", "application/xml",
                      "application/msword", "application/rtf") or "wordprocessing" in media_type:
        return "text"
    return "other"
