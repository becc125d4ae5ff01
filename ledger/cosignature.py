"""C2SP cosignatures (c2sp.org/tlog-cosignature, Ed25519 `cosignature/v1`) and the request
body of C2SP tlog-witness `add-checkpoint`.

A witness states "as of this time, this is the largest consistent tree I have seen for this
log" by signing `cosignature/v1`, a time line and the checkpoint text. This module builds that
message, reads and writes cosignature lines and witness vkeys (algorithm byte 0x04, so a
cosignature key ID never equals a log's 0x01 key ID for the same key), verifies a cosignature
under a witness key, and parses the add-checkpoint body. It holds no private key.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from copyledger.ledger import note
from copyledger.ledger.errors import InvalidInput, SignatureError, VerificationError, said

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_PROOF_LINES",
    "AddCheckpointRequest",
    "Cosignature",
    "CosignatureVerifier",
    "cosignatures_of",
    "format_verifier_key",
    "key_id",
    "parse_verifier_key",
    "signed_message",
    "verify_cosignature",
]

ALG_COSIGNATURE_V1 = 0x04
MAX_PROOF_LINES = 63  # tlog-witness: a client MUST NOT send more
MAX_TIMESTAMP = 2**63 - 1
HEADER = "cosignature/v1"

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


def key_id(name: str, public_key: bytes) -> bytes:
    """Cosignature/v1 key ID: SHA-256(name || 0x0A || 0x04 || Ed25519 public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1])
                          + public_key).digest()[:4]


def signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What the witness's Ed25519 key signs: `cosignature/v1`, `time <timestamp>`, then the
    whole checkpoint note text (extension lines included, signatures not)."""
    note.parse_checkpoint(checkpoint_text)
    _check_timestamp(timestamp)
    return f"{HEADER}\ntime {timestamp}\n".encode() + note.signature_message(checkpoint_text)


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not 0 < timestamp <= MAX_TIMESTAMP:
        raise InvalidInput("a cosignature timestamp is a POSIX time in 1..2**63-1")


@dataclass(frozen=True)
class CosignatureVerifier:
    """A trusted witness key: its name, cosignature key ID and raw Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        if not note.is_valid_key_name(self.name):
            raise InvalidInput(said("invalid key name {name!r}", name=self.name))
        if len(self.public_key) != 32 or self.key_id != key_id(self.name, self.public_key):
            raise InvalidInput("a cosignature verifier has a 32-byte key and its 0x04 key ID")


def format_verifier_key(name: str, public_key: bytes) -> str:
    """The witness's vkey: name+hex(key ID)+base64(0x04 || key)."""
    verifier = CosignatureVerifier(name, key_id(name, public_key), public_key)
    encoded = note.b64(bytes([ALG_COSIGNATURE_V1]) + public_key)
    return f"{name}+{verifier.key_id.hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> CosignatureVerifier:
    """Read a witness vkey, checking the 0x04 algorithm, the length and the key ID."""
    parts = vkey.split("+", 2)
    if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise InvalidInput("witness verifier key must be name+keyid+key (8 lowercase hex)")
    name, hex_id, encoded = parts
    key = note.unb64(encoded)
    if key is None or len(key) != 33 or key[0] != ALG_COSIGNATURE_V1:
        raise InvalidInput("witness verifier key must hold 0x04 and a 32-byte Ed25519 key")
    if not note.is_valid_key_name(name) or key_id(name, key[1:]).hex() != hex_id:
        raise InvalidInput("witness verifier key has a bad name or a key ID that does not match")
    return CosignatureVerifier(name, bytes.fromhex(hex_id), key[1:])


@dataclass(frozen=True)
class Cosignature:
    """One cosignature: a note signature whose bytes are timestamp (u64 big-endian) ||
    Ed25519 signature."""

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def to_note_signature(self) -> note.Signature:
        _check_timestamp(self.timestamp)
        if len(self.signature) != 64:
            raise InvalidInput("an Ed25519 cosignature is 64 bytes")
        return note.Signature(self.name, self.key_id,
                              struct.pack(">Q", self.timestamp) + self.signature)

    @classmethod
    def from_note_signature(cls, sig: note.Signature) -> Cosignature:
        """SignatureError unless the signature bytes are a timestamped Ed25519 signature."""
        if len(sig.signature) != 8 + 64:
            raise SignatureError(said("a cosignature by {name} must be 72 bytes",
                                      name=sig.name), key=sig.name)
        (timestamp,) = struct.unpack(">Q", sig.signature[:8])
        if not 0 < timestamp <= MAX_TIMESTAMP:
            raise SignatureError(said("cosignature by {name} has timestamp {timestamp}",
                                      name=sig.name, timestamp=timestamp),
                                 key=sig.name)
        return cls(sig.name, sig.key_id, timestamp, sig.signature[8:])

    def line(self) -> str:
        """The note signature line, `— name base64(key ID || timestamp || signature)\\n`."""
        return note.format_signature_line(self.to_note_signature())

    @classmethod
    def parse_line(cls, line: str) -> Cosignature:
        """Read one signature line (with or without its final newline)."""
        one = note.parse_note("x\n\n" + line.removesuffix("\n") + "\n").signatures
        return cls.from_note_signature(one[0])

    @classmethod
    def by(cls, lines: str, verifier: CosignatureVerifier) -> Cosignature:
        """The cosignature by `verifier` among one or more signature lines (a witness's answer
        to add-checkpoint, c2sp.org/tlog-witness: a witness may hold several keys, and a client
        ignores lines by keys it does not know); VerificationError if none is by it."""
        signatures = note.parse_note("x\n\n" + lines.removesuffix("\n") + "\n").signatures
        for sg in signatures:
            if (sg.name, sg.key_id) == (verifier.name, verifier.key_id):
                return cls.from_note_signature(sg)
        raise VerificationError(said("the witness answered no cosignature line by {name}",
                                     name=verifier.name))


def verify_cosignature(checkpoint_text: str, cosig: Cosignature,
                       verifier: CosignatureVerifier) -> None:
    """SignatureError unless `cosig` is `verifier`'s cosignature/v1 of the checkpoint text."""
    if (cosig.name, cosig.key_id) != (verifier.name, verifier.key_id):
        raise SignatureError(said("cosignature by {name} is not by {name2}",
                                  name=cosig.name, name2=verifier.name))
    message = signed_message(checkpoint_text, cosig.timestamp)
    try:
        Ed25519PublicKey.from_public_bytes(verifier.public_key).verify(cosig.signature, message)
    except (InvalidSignature, ValueError):
        raise SignatureError(said("invalid cosignature by {name}",
                                  name=cosig.name), key=cosig.name) from None


# ---------------------------------------------------------------- tlog-witness request


@dataclass(frozen=True)
class AddCheckpointRequest:
    """The add-checkpoint body: the size the client believes the witness last cosigned, the
    RFC 6962 consistency proof from it, and the signed checkpoint note (still unverified)."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint_note: bytes

    def to_bytes(self) -> bytes:
        if isinstance(self.old_size, bool) or not 0 <= self.old_size <= note.MAX_TREE_SIZE:
            raise InvalidInput("old size must be an integer in 0..2**64-1")
        if len(self.proof) > MAX_PROOF_LINES or any(len(h) != 32 for h in self.proof):
            raise InvalidInput(said("at most {max_proof_lines} proof hashes of 32 bytes",
                                    max_proof_lines=MAX_PROOF_LINES))
        lines = [f"old {self.old_size}", *(note.b64(h) for h in self.proof)]
        return "".join(line + "\n" for line in lines).encode() + b"\n" + self.checkpoint_note

    @classmethod
    def from_bytes(cls, body: bytes) -> AddCheckpointRequest:
        """Parse strictly (InvalidInput): `old <size>`, canonical base64 hashes, an empty line,
        then the note, which is returned as bytes for `note.verify_note` to judge."""
        end = body.find(b"\n\n")
        if end < 0:
            raise InvalidInput("add-checkpoint body needs an empty line before the checkpoint")
        try:
            head = body[:end].decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise InvalidInput("old size and proof lines must be ASCII") from None
        old, hashes = head[0], head[1:]
        if not old.startswith("old ") or not _DECIMAL.fullmatch(old[4:]) \
                or int(old[4:]) > note.MAX_TREE_SIZE:
            raise InvalidInput("the first line must be `old <size>` (decimal, no leading zeros)")
        if len(hashes) > MAX_PROOF_LINES:
            raise InvalidInput(said("more than {max_proof_lines} consistency proof lines",
                                    max_proof_lines=MAX_PROOF_LINES))
        proof = []
        for line in hashes:
            h = note.unb64(line)
            if h is None or len(h) != 32:
                raise InvalidInput("each proof line must be the base64 of a 32-byte hash")
            proof.append(h)
        return cls(int(old[4:]), tuple(proof), body[end + 2:])


def cosignatures_of(signed_note: str | bytes, verifiers: Sequence[CosignatureVerifier]
                    ) -> list[Cosignature]:
    """The valid cosignatures on a signed checkpoint by the given witnesses (others ignored,
    as a note verifier must); SignatureError if a known witness's line does not verify."""
    parsed = note.parse_note(signed_note)
    known = {(v.name, v.key_id): v for v in verifiers}
    good = []
    for sig in parsed.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is not None:
            cosig = Cosignature.from_note_signature(sig)
            verify_cosignature(parsed.text, cosig, verifier)
            good.append(cosig)
    return good
