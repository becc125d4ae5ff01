"""C2SP signed notes (c2sp.org/signed-note) and checkpoints (c2sp.org/tlog-checkpoint).

Everything the notary signs is a signed note, so that Go's `note.Open`, witnesses and monitors
read our statements as they are, and so that a court's verifier can be checked against the
public specs. This module formats, parses and verifies; it never holds a private key. It also
holds the block header (`BlockHeader`, its hash and chaining rules), the statement the block
note signs. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from copyledger.ledger import jcs
from copyledger.ledger.errors import IntegrityError, InvalidInput, SignatureError, said

# The nouns the checks below name in their errors, said once (D56): translatable, and not
# rebuilt on every call of a hot path.
_CHECKPOINT_ORIGIN = said("checkpoint origin")
_CHECKPOINT_EXTENSION_LINE = said("checkpoint extension line")
_CHECKPOINT = said("checkpoint")
_TREE_SIZE = said("tree size")
_ORIGIN = said("origin")
_BLOCK_NOTE = said("block note")
_BLOCK_HEIGHT = said("block height")

__all__ = [
    "ALG_ED25519",
    "BLOCK_NOTE_HEADER",
    "BLOCK_SCHEMA",
    "GENESIS_PREV",
    "MAX_SIGNATURES",
    "BlockHeader",
    "Checkpoint",
    "KeyVerifier",
    "Note",
    "Signature",
    "Verifier",
    "b64",
    "block_note_text",
    "check_header",
    "check_link",
    "check_text",
    "format_checkpoint",
    "format_note",
    "format_signature_line",
    "format_verifier_key",
    "is_valid_key_name",
    "key_id",
    "parse_block_note_text",
    "parse_checkpoint",
    "parse_note",
    "parse_verifier_key",
    "signature_message",
    "unb64",
    "verify_checkpoint",
    "verify_note",
]


ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # as Go's note.Open: stops a note with endless signature lines
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 everywhere else in the ecosystem
BLOCK_NOTE_HEADER = "copyledger/block/v1"

_SIG_PREFIX = "\u2014 "  # em dash, space
_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls other than newline
_SURROGATE = re.compile("[\ud800-\udfff]")


# ---------------------------------------------------------------- keys


@functools.lru_cache(maxsize=1024)
def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces, '+' or control characters."""
    return (
        bool(name)
        and "+" not in name
        and not _CONTROL.search(name)
        and not _SURROGATE.search(name)
        and not any(_is_go_space(char) for char in name)
    )


def _is_go_space(char: str) -> bool:
    """Go's unicode.IsSpace, which is what the reference implementation checks names with."""
    return char in "\t\n\v\f\r \x85\xa0" or unicodedata.category(char) in ("Zs", "Zl", "Zp")


def key_id(name: str, public_key: bytes) -> bytes:
    """Ed25519 key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A trusted Ed25519 key, identified in signature lines by its name and key ID."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise InvalidInput(said("invalid key name {name!r}", name=self.name))
        if len(self.key_id) != 4 or len(self.public_key) != 32:
            raise InvalidInput("an Ed25519 verifier has a 4-byte key ID and a 32-byte key")

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """True if sig is this key's Ed25519 signature of msg."""
        if len(sig) != 64:
            return False
        try:
            _ed25519(self.public_key).verify(sig, msg)
        except (InvalidSignature, ValueError):
            return False
        return True

    @property
    def vkey(self) -> str:
        return format_verifier_key(self.name, self.public_key)


@functools.lru_cache(maxsize=64)
def _ed25519(public_key: bytes) -> Ed25519PublicKey:
    """The key object, made once per key: an audit verifies millions of notes under one."""
    return Ed25519PublicKey.from_public_bytes(public_key)


def format_verifier_key(name: str, public_key: bytes) -> str:
    """The vkey others configure to trust us: name+hex(key ID)+base64(0x01 || key)."""
    if not is_valid_key_name(name):
        raise InvalidInput(said("invalid key name {name!r}", name=name))
    if len(public_key) != 32:
        raise InvalidInput("an Ed25519 public key is 32 bytes")
    encoded = b64(bytes([ALG_ED25519]) + public_key)
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> Verifier:
    """Read a vkey, checking algorithm, length and that the key ID matches the key.

    Only the first two '+' separate fields: the base64 key may itself contain '+'.
    """
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise InvalidInput("verifier key must be name+keyid+key")
    name, hex_id, encoded = parts
    if not is_valid_key_name(name):
        raise InvalidInput(said("verifier key has an invalid name {name!r}", name=name))
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise InvalidInput("verifier key ID must be 8 lowercase hex digits")
    key = unb64(encoded)
    if key is None or not key:
        raise InvalidInput("verifier key material is not valid base64")
    if key[0] != ALG_ED25519:
        raise InvalidInput(said("verifier key algorithm {key:#04x} is not Ed25519 (0x01)",
                                key=key[0]))
    if len(key) != 33:
        raise InvalidInput("an Ed25519 verifier key holds 32 bytes of key")
    public_key = key[1:]
    if key_id(name, public_key).hex() != hex_id:
        raise InvalidInput("verifier key ID does not match the key")
    return Verifier(name, bytes.fromhex(hex_id), public_key)


# ---------------------------------------------------------------- notes


@dataclass(frozen=True)
class Signature:
    """One signature line: `— name base64(key ID || signature)`."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    """Note text (ending in a newline) and its signatures in the order they appeared."""

    text: str
    signatures: tuple[Signature, ...]


def signature_message(text: str) -> bytes:
    """What Ed25519 signs for a note: the UTF-8 note text, final newline included."""
    return text.encode("utf-8")


def check_text(text: str) -> None:
    """Raise InvalidInput unless text can be the text of a signed note."""
    if not text.endswith("\n"):
        raise InvalidInput("note text must end with a newline")
    if _CONTROL.search(text) or _SURROGATE.search(text):
        raise InvalidInput("note text must be valid UTF-8 without control characters but newline")


def format_note(text: str, signatures: Sequence[Signature]) -> str:
    """The signed note: text, a blank line, one signature line each."""
    check_text(text)
    if not signatures:
        raise InvalidInput("a signed note needs at least one signature")
    return text + "\n" + "".join(format_signature_line(sig) for sig in signatures)


def format_signature_line(sig: Signature) -> str:
    """One signature line, `— name base64(key ID || signature)`, with its newline."""
    if not is_valid_key_name(sig.name):
        raise InvalidInput(said("invalid key name {name!r}", name=sig.name))
    if len(sig.key_id) != 4 or not sig.signature:
        raise InvalidInput("a signature has a 4-byte key ID and a non-empty signature")
    return f"{_SIG_PREFIX}{sig.name} {b64(sig.key_id + sig.signature)}\n"


def parse_note(data: str | bytes) -> Note:
    """Parse a signed note by the C2SP grammar (as Go's note.Open does), verifying nothing.

    Stricter than Go in one way: signature base64 must be canonical, so that one signature
    has one spelling and a changed character can never leave it valid.
    """
    if isinstance(data, bytes):
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError("malformed note: not valid UTF-8") from None
    else:
        message = data
    if _SURROGATE.search(message):
        raise SignatureError("malformed note: not valid Unicode")
    if _CONTROL.search(message):
        raise SignatureError("malformed note: control character")
    split = message.rfind("\n\n")
    if split < 0:
        raise SignatureError("malformed note: no blank line before the signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block.endswith("\n"):
        raise SignatureError("malformed note: signatures must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise SignatureError(said("malformed note: more than {max_signatures} signatures",
                                  max_signatures=MAX_SIGNATURES))
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise SignatureError("malformed note: signature line must start with an em dash")
    name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    raw = unb64(encoded)
    if not is_valid_key_name(name) or raw is None or len(raw) < 5:
        raise SignatureError("malformed note: bad signature line")
    return Signature(name, raw[:4], raw[4:])


class KeyVerifier(Protocol):
    """What `verify_note` needs of a key: Ed25519 (`Verifier`) or SM2 (`sm2.Verifier`)."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    @property
    def public_key(self) -> bytes: ...
    def verify(self, msg: bytes, sig: bytes) -> bool: ...


V = TypeVar("V", bound=KeyVerifier)


def verify_note(data: str | bytes, verifiers: Sequence[V]) -> tuple[Note, list[V]]:
    """Open a signed note as Go's note.Open does: the note and the verifiers that signed it.

    Signatures by keys not in `verifiers` (other name or ID) are ignored, as the spec requires,
    so witnesses may cosign and keys may rotate. Every signature by a known key must verify;
    at least one must be present. Otherwise SignatureError.
    """
    known: dict[tuple[str, bytes], V] = {}
    for verifier in verifiers:
        other = known.setdefault((verifier.name, verifier.key_id), verifier)
        if other.public_key != verifier.public_key:
            raise InvalidInput(said("two verifiers share name and key ID: {name}",
                                    name=verifier.name))
    note = parse_note(data)
    message = signature_message(note.text)
    good: list[V] = []
    for sig in note.signatures:
        signer = known.get((sig.name, sig.key_id))
        if signer is None:
            continue
        if not signer.verify(message, sig.signature):
            raise SignatureError(said("invalid signature by {name}", name=sig.name), key=sig.name)
        if signer not in good:
            good.append(signer)
    if not good:
        raise SignatureError("no signature by a trusted key")
    return note, good


# ---------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size, RFC 6962 root, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def format_checkpoint(cp: Checkpoint) -> str:
    """The checkpoint note text: origin, size, base64 root, then any extension lines."""
    _check_line(_CHECKPOINT_ORIGIN, cp.origin)
    if isinstance(cp.size, bool) or not 0 <= cp.size <= MAX_TREE_SIZE:
        raise InvalidInput("checkpoint size must be an integer in 0..2**64-1")
    if len(cp.root) != 32:
        raise InvalidInput("checkpoint root must be a 32-byte SHA-256 hash")
    for line in cp.extensions:
        _check_line(_CHECKPOINT_EXTENSION_LINE, line)
    lines = [cp.origin, str(cp.size), b64(cp.root), *cp.extensions]
    return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Read checkpoint note text strictly: no leading zeros, canonical base64, 32-byte root."""
    lines = _split_lines(text, _CHECKPOINT)
    if len(lines) < 3:
        raise InvalidInput("checkpoint needs origin, size and root lines")
    origin, size, root, *extensions = lines
    if not origin or any(not line for line in extensions):
        raise InvalidInput("checkpoint lines must not be empty")
    return Checkpoint(origin, _parse_size(size, _TREE_SIZE), _parse_hash(root),
                      tuple(extensions))


def verify_checkpoint(data: str | bytes, verifiers: Sequence[V]) -> tuple[Checkpoint, list[V]]:
    """Open a signed checkpoint of the log a trusted key is for: the note verifies under
    `verifiers` (`verify_note`) and its origin is the name of a key that signed it, which is
    the log's origin (c2sp.org/tlog-checkpoint; a copyledger log's key is always named so).
    Otherwise a key that signs for several logs would lend one log's checkpoint to another.
    Returns the checkpoint and the keys named for its origin that signed it. Extension lines
    are read as the spec allows them (non-empty, opaque) and given to the caller, who must not
    present them as verified: nothing here says what they vouch for."""
    n, good = verify_note(data, verifiers)
    cp = parse_checkpoint(n.text)
    named = [v for v in good if v.name == cp.origin]
    if not named:
        raise SignatureError(said("the checkpoint is for log {origin!r}, not for the log of the "
                                  "trusted key that signed it ({names})", origin=cp.origin,
                                  names=", ".join(sorted({v.name for v in good}))))
    return cp, named


def block_note_text(origin: str, height: int, block_hash: bytes) -> str:
    """Our signed statement that block `height` of log `origin` has hash `block_hash`.

    The first line keeps it apart from checkpoints: no checkpoint can read as a block note.
    """
    _check_line(_ORIGIN, origin)
    if isinstance(height, bool) or not 0 <= height <= MAX_TREE_SIZE:
        raise InvalidInput("block height must be an integer in 0..2**64-1")
    if len(block_hash) != 32:
        raise InvalidInput("block hash must be 32 bytes")
    return f"{BLOCK_NOTE_HEADER}\n{origin}\n{height}\n{b64(block_hash)}\n"


def parse_block_note_text(text: str) -> tuple[str, int, bytes]:
    """Read block note text back as (origin, height, block hash)."""
    lines = _split_lines(text, _BLOCK_NOTE)
    if len(lines) != 4 or lines[0] != BLOCK_NOTE_HEADER:
        raise InvalidInput(said("block note must be {block_note_header}, origin, height and hash",
                                block_note_header=BLOCK_NOTE_HEADER))
    _, origin, height, block_hash = lines
    if not origin:
        raise InvalidInput("block note origin must not be empty")
    return origin, _parse_size(height, _BLOCK_HEIGHT), _parse_hash(block_hash)


# ---------------------------------------------------------------- helpers


def _check_line(what: str, line: str) -> None:
    if not line or "\n" in line or _CONTROL.search(line) or _SURROGATE.search(line):
        raise InvalidInput(said("{what} must be one non-empty line without control characters",
                                what=what))


def _split_lines(text: str, what: str) -> list[str]:
    if not text.endswith("\n"):
        raise InvalidInput(said("{what} text must end with a newline", what=what))
    if _CONTROL.search(text) or _SURROGATE.search(text):
        raise InvalidInput(said("{what} text contains control characters", what=what))
    return text[:-1].split("\n")


def _parse_size(line: str, what: str) -> int:
    if len(line) > 20 or not _SIZE.fullmatch(line) or int(line) > MAX_TREE_SIZE:
        raise InvalidInput(said("{what} must be a decimal uint64 without leading zeros", what=what))
    return int(line)


def _parse_hash(line: str) -> bytes:
    raw = unb64(line)
    if raw is None or len(raw) != 32:
        raise InvalidInput("hash must be the base64 of 32 bytes")
    return raw


def b64(data: bytes) -> str:
    """Standard padded base64, as text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes | None:
    """Standard padded base64, canonical only (re-encodes to the same text); None if not."""
    if not text.isascii():
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if b64(raw) == text else None


# ---------------------------------------------------------------- blocks
# The block header: the hash-chained "blockchain" view of the log, what the block note signs.
# The sequencer seals entries in batches. Each batch becomes one block whose header names the
# batch and the whole tree after it, and whose hash covers the previous block's hash, so a
# rewritten history shows as a broken link to anyone holding two headers.

BLOCK_SCHEMA = "copyledger/block/v1"
GENESIS_PREV = bytes(32)


@dataclass(frozen=True)
class BlockHeader:
    height: int
    prev_block_hash: bytes
    batch_root: bytes
    first_seq: int
    count: int
    tree_size: int
    tree_root: bytes
    sealed_at: str

    def to_json(self) -> dict[str, Any]:
        """The header as JSON with lowercase hex hashes; its canonical form is what gets hashed."""
        return {
            "schema": BLOCK_SCHEMA,
            "height": self.height,
            "prev_block_hash": self.prev_block_hash.hex(),
            "batch_root": self.batch_root.hex(),
            "first_seq": self.first_seq,
            "count": self.count,
            "tree_size": self.tree_size,
            "tree_root": self.tree_root.hex(),
            "sealed_at": self.sealed_at,
        }

    @classmethod
    def from_json(cls, obj: object) -> BlockHeader:
        if not isinstance(obj, dict) or obj.get("schema") != BLOCK_SCHEMA:
            raise InvalidInput(said("block header: expected an object with schema {block_schema!r}",
                                    block_schema=BLOCK_SCHEMA))
        try:
            return cls(
                height=_header_int(obj["height"]),
                prev_block_hash=_header_hash(obj["prev_block_hash"]),
                batch_root=_header_hash(obj["batch_root"]),
                first_seq=_header_int(obj["first_seq"]),
                count=_header_int(obj["count"]),
                tree_size=_header_int(obj["tree_size"]),
                tree_root=_header_hash(obj["tree_root"]),
                sealed_at=str(obj["sealed_at"]),
            )
        except KeyError as e:
            raise InvalidInput(said("block header: missing field {field!r}",
                                    field=e.args[0])) from None

    def canonical_bytes(self) -> bytes:
        return _quick_header_bytes(self) or jcs.canonicalize(self.to_json())

    def hash(self) -> bytes:
        """SHA-256 of the header's RFC 8785 canonical JSON, worked out once per header (the
        fields are frozen; the audit asks for each block's hash twice: its own, its link)."""
        known: bytes | None = self.__dict__.get("_hash")
        if known is None:
            known = hashlib.sha256(self.canonical_bytes()).digest()
            object.__setattr__(self, "_hash", known)
        return known


def _quick_header_bytes(h: BlockHeader) -> bytes | None:
    """The header's RFC 8785 form written by orjson, or None when that might differ: orjson
    sorts these ASCII keys and escapes every string as RFC 8785 does, and writes integers
    within +-(2**53-1) alike; anything else (a tampered row's text or float, a lone
    surrogate) is left to `jcs`. Twelve times quicker: the audit hashes every header."""
    ints = (h.height, h.first_seq, h.count, h.tree_size)
    if not all(type(v) is int and -jcs.MAX_SAFE_INTEGER <= v <= jcs.MAX_SAFE_INTEGER
               for v in ints) or type(h.sealed_at) is not str:
        return None
    try:
        return orjson.dumps(h.to_json(), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError, ValueError):
        return None


def _header_int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise InvalidInput(said("block header: expected a non-negative integer, got {v!r}", v=v))
    return v


def _header_hash(v: object) -> bytes:
    if not isinstance(v, str) or len(v) != 64:
        raise InvalidInput(said("block header: expected 64 hex characters, got {v!r}", v=v))
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise InvalidInput(said("block header: not hex: {v!r}", v=v)) from None


def check_header(header: BlockHeader) -> None:
    """Rules a header must satisfy on its own."""
    if header.tree_size != header.first_seq + header.count:
        raise IntegrityError(
            said("block {height}: tree_size {tree_size} != first_seq + count",
                 height=header.height, tree_size=header.tree_size),
            height=header.height,
        )
    if header.height == 0 and (header.prev_block_hash != GENESIS_PREV or header.first_seq != 0):
        raise IntegrityError("block 0: genesis must start at seq 0 with a zero prev hash", height=0)


def check_link(prev: BlockHeader, header: BlockHeader) -> None:
    """Rules that chain a header to its predecessor: height, hash link, no sequence gap."""
    check_header(header)
    if header.height != prev.height + 1:
        raise IntegrityError(
            said("block {height}: follows block {height2}",
                 height=header.height, height2=prev.height), height=header.height
        )
    if header.prev_block_hash != prev.hash():
        raise IntegrityError(
            said("block {height}: prev_block_hash does not match block {height2}'s hash",
                 height=header.height, height2=prev.height),
            height=header.height,
        )
    if header.first_seq != prev.tree_size:
        raise IntegrityError(
            said("block {height}: first_seq {first_seq} != previous tree size {tree_size}",
                 height=header.height, first_seq=header.first_seq, tree_size=prev.tree_size),
            height=header.height,
        )
