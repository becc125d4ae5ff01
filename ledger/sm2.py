"""SM3 digests and SM2 signature verification (GB/T 32905, GB/T 32918), for the SM suite (D40).

A registry created with the SM suite adds an SM2 signature line to every checkpoint and block
note, beside the Ed25519 one that C2SP verifiers read. This module is what an offline verifier
needs for that line: SM3 (from `cryptography`, that is OpenSSL's), the SM2 curve in small pure
functions, the signature-line key format, and a `Verifier` that `note.verify_note` accepts.
Public-key operations only: it never holds a private key (the notary's half is `notary.sm2`).

Key format (docs/verification.md §13): `name+hex(key ID)+base64(KEY_TYPE || 04 || x || y ||
distinguishing ID)`, with key ID = SHA-256(name || 0x0A || KEY_TYPE || 04 || x || y || ID)[:4]
as c2sp.org/signed-note recommends for the 0xff ("no byte assigned") signature type. The
signature in a note line is the DER SEQUENCE { r INTEGER, s INTEGER } that OpenSSL produces.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import IO

from cryptography.hazmat.primitives import hashes

from copyledger.ledger import note
from copyledger.ledger.errors import InvalidInput, said

__all__ = [
    "DEFAULT_ID",
    "KEY_TYPE",
    "Point",
    "Verifier",
    "decode_signature",
    "encode_signature",
    "format_verifier_key",
    "parse_verifier_key",
    "public_key_der",
    "scalar_mult",
    "sm3",
    "sm3_file",
    "sm3_hex",
    "verify",
    "za",
]

# The standard distinguishing ID (GB/T 35276 §5.3), what OpenSSL and GmSSL use by default.
DEFAULT_ID = b"1234567812345678"
# c2sp.org/signed-note type 0xff ("no identifier byte assigned") and a longer identifier.
KEY_TYPE = b"\xffcopyledger/sm2-sm3/v1"
MAX_ID_BYTES = 64

# The recommended curve, GB/T 32918.5-2017 (OID 1.2.156.10197.1.301).
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

Point = tuple[int, int] | None  # affine (x, y); None is the point at infinity
_Jacobian = tuple[int, int, int]  # (X, Y, Z) with x = X/Z², y = Y/Z³; Z = 0 at infinity

# SubjectPublicKeyInfo prefix: id-ecPublicKey with the SM2 curve, then the 66-byte BIT STRING.
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")


def sm3(data: bytes) -> bytes:
    """SM3 (GB/T 32905) of data, by OpenSSL through `cryptography`."""
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def sm3_hex(data: bytes) -> str:
    """SM3 of data as 64 lowercase hex characters, the form entries record it in."""
    return sm3(data).hex()


def sm3_file(file: IO[bytes]) -> str:
    """SM3 (hex) of a binary file from where it stands to its end, a megabyte at a time."""
    h = hashes.Hash(hashes.SM3())
    while chunk := file.read(1 << 20):
        h.update(chunk)
    return h.finalize().hex()


# ---------------------------------------------------------------- the curve


def on_curve(point: Point) -> bool:
    """True for a finite point of the SM2 curve with coordinates in [0, p)."""
    if point is None:
        return False
    x, y = point
    return 0 <= x < P and 0 <= y < P and (y * y - x * x * x - A * x - B) % P == 0


def _double(pt: _Jacobian) -> _Jacobian:
    x, y, z = pt
    if z == 0 or y == 0:
        return (1, 1, 0)
    # a = -3: M = 3(X - Z²)(X + Z²)
    zz = z * z % P
    m = 3 * (x - zz) * (x + zz) % P
    s = 4 * x * y * y % P
    x3 = (m * m - 2 * s) % P
    y3 = (m * (s - x3) - 8 * pow(y, 4, P)) % P
    return (x3, y3, 2 * y * z % P)


def _add(p1: _Jacobian, p2: _Jacobian) -> _Jacobian:
    if p1[2] == 0:
        return p2
    if p2[2] == 0:
        return p1
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    z1z1, z2z2 = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2z2 % P, x2 * z1z1 % P
    s1, s2 = y1 * z2 * z2z2 % P, y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(p1) if s1 == s2 else (1, 1, 0)
    h, r = (u2 - u1) % P, (s2 - s1) % P
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    return (x3, y3, h * z1 * z2 % P)


def _affine(pt: _Jacobian) -> Point:
    x, y, z = pt
    if z == 0:
        return None
    zi = pow(z, -1, P)
    zi2 = zi * zi % P
    return (x * zi2 % P, y * zi2 * zi % P)


def _jacobian(point: Point) -> _Jacobian:
    return (1, 1, 0) if point is None else (point[0], point[1], 1)


def scalar_mult(k: int, point: Point = (GX, GY)) -> Point:
    """k·point (the base point G by default), by a fixed-length double-and-add ladder."""
    r0, r1 = (1, 1, 0), _jacobian(point)
    for bit in bin(k % N)[2:].zfill(256):
        if bit == "1":
            r0, r1 = _add(r0, r1), _double(r1)
        else:
            r0, r1 = _double(r0), _add(r0, r1)
    return _affine(r0)


def _mult_add(k1: int, k2: int, q: Point) -> Point:
    """k1·G + k2·Q (Shamir's trick): what verification computes."""
    g, qj = _jacobian((GX, GY)), _jacobian(q)
    both = _add(g, qj)
    acc: _Jacobian = (1, 1, 0)
    for i in range(255, -1, -1):
        acc = _double(acc)
        b1, b2 = (k1 >> i) & 1, (k2 >> i) & 1
        if b1 and b2:
            acc = _add(acc, both)
        elif b1:
            acc = _add(acc, g)
        elif b2:
            acc = _add(acc, qj)
    return _affine(acc)


def encode_point(point: Point) -> bytes:
    """The 65-byte uncompressed SEC 1 encoding, 04 || x || y."""
    if point is None:
        raise InvalidInput("the point at infinity has no encoding")
    return b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")


def decode_point(data: bytes) -> Point:
    """An uncompressed SM2 public key (04 || x || y); InvalidInput unless it is on the curve."""
    if len(data) != 65 or data[0] != 4:
        raise InvalidInput("an SM2 public key is 65 bytes, 04 || x || y")
    point = (int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:], "big"))
    if not on_curve(point):
        raise InvalidInput("the SM2 public key is not a point of the SM2 curve")
    return point


def public_key_der(public_key: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER of a 65-byte SM2 key, as `openssl pkey -pubin` reads it."""
    decode_point(public_key)
    return _SPKI_PREFIX + public_key


# ---------------------------------------------------------------- signatures


def za(public_key: bytes, distid: bytes = DEFAULT_ID) -> bytes:
    """Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA), GB/T 32918.2 §5.5."""
    if len(distid) > MAX_ID_BYTES:
        raise InvalidInput(said("an SM2 distinguishing ID is at most {max_id_bytes} bytes",
                                max_id_bytes=MAX_ID_BYTES))
    decode_point(public_key)
    fixed = b"".join(v.to_bytes(32, "big") for v in (A, B, GX, GY))
    return sm3((len(distid) * 8).to_bytes(2, "big") + distid + fixed + public_key[1:])


def message_digest(message: bytes, public_key: bytes, distid: bytes = DEFAULT_ID) -> int:
    """e = SM3(Z_A || M) as an integer: what the signature equation signs."""
    return int.from_bytes(sm3(za(public_key, distid) + message), "big")


def verify(public_key: bytes, message: bytes, signature: bytes,
           distid: bytes = DEFAULT_ID) -> bool:
    """True if signature (DER) is an SM2 signature of message under public_key and distid."""
    try:
        r, s = decode_signature(signature)
        q = decode_point(public_key)
        e = message_digest(message, public_key, distid)
    except InvalidInput:
        return False
    t = (r + s) % N
    if t == 0:
        return False
    point = _mult_add(s, t, q)
    return point is not None and (e + point[0]) % N == r


def encode_signature(r: int, s: int) -> bytes:
    """DER SEQUENCE { r INTEGER, s INTEGER } (GB/T 35276 §7.3), as OpenSSL writes it."""
    body = _der_int(r) + _der_int(s)
    return b"\x30" + bytes([len(body)]) + body


def decode_signature(data: bytes) -> tuple[int, int]:
    """(r, s) from DER, strictly: minimal encodings, nothing after, both in [1, n-1]."""
    if len(data) < 8 or data[0] != 0x30 or data[1] != len(data) - 2:
        raise InvalidInput("an SM2 signature is a DER SEQUENCE of two INTEGERs")
    r, rest = _read_der_int(data[2:])
    s, rest = _read_der_int(rest)
    if rest or not (1 <= r < N and 1 <= s < N):
        raise InvalidInput("an SM2 signature's r and s are integers in [1, n-1], nothing else")
    if encode_signature(r, s) != data:
        raise InvalidInput("the SM2 signature is not in minimal DER")
    return r, s


def _der_int(v: int) -> bytes:
    raw = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return b"\x02" + bytes([len(raw)]) + raw


def _read_der_int(data: bytes) -> tuple[int, bytes]:
    if len(data) < 3 or data[0] != 2 or data[1] > 33 or len(data) < 2 + data[1]:
        raise InvalidInput("an SM2 signature holds DER INTEGERs of at most 33 bytes")
    raw = data[2 : 2 + data[1]]
    if not raw or raw[0] & 0x80:
        raise InvalidInput("an SM2 signature's INTEGERs are positive")
    return int.from_bytes(raw, "big"), data[2 + data[1] :]


# ---------------------------------------------------------------- verifier keys


def key_id(name: str, public_key: bytes, distid: bytes) -> bytes:
    """SHA-256(name || 0x0A || KEY_TYPE || public key || distinguishing ID)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + KEY_TYPE + public_key + distid).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A trusted SM2 key and its distinguishing ID; a drop-in for `note.Verifier` in
    `note.verify_note`, which then checks the SM2 line and ignores every other."""

    name: str
    key_id: bytes
    public_key: bytes
    distid: bytes = DEFAULT_ID

    def __post_init__(self) -> None:
        if not note.is_valid_key_name(self.name):
            raise InvalidInput(said("invalid key name {name!r}", name=self.name))
        decode_point(self.public_key)
        if not 1 <= len(self.distid) <= MAX_ID_BYTES:
            raise InvalidInput(said("an SM2 distinguishing ID is 1 to {max_id_bytes} bytes",
                                    max_id_bytes=MAX_ID_BYTES))
        if self.key_id != key_id(self.name, self.public_key, self.distid):
            raise InvalidInput("SM2 key ID does not match the key")

    @classmethod
    def of(cls, name: str, public_key: bytes, distid: bytes = DEFAULT_ID) -> Verifier:
        return cls(name, key_id(name, public_key, distid), public_key, distid)

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """True if sig is this key's SM2 signature (with SM3 and the ID) of msg."""
        return verify(self.public_key, msg, sig, self.distid)

    @property
    def vkey(self) -> str:
        return format_verifier_key(self.name, self.public_key, self.distid)


def format_verifier_key(name: str, public_key: bytes, distid: bytes = DEFAULT_ID) -> str:
    """name+hex(key ID)+base64(KEY_TYPE || 65-byte key || distinguishing ID)."""
    v = Verifier.of(name, public_key, distid)
    return f"{name}+{v.key_id.hex()}+{note.b64(KEY_TYPE + public_key + distid)}"


def parse_verifier_key(vkey: str) -> Verifier:
    """Read an SM2 vkey, checking type, point, ID length and that the key ID matches."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise InvalidInput("SM2 verifier key must be name+keyid+key")
    name, hex_id, encoded = parts
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise InvalidInput("SM2 verifier key ID must be 8 lowercase hex digits")
    raw = note.unb64(encoded)
    if raw is None or not raw.startswith(KEY_TYPE):
        raise InvalidInput(said("not an SM2 verifier key (base64 of {key_type!r} || key || ID)",
                                key_type=KEY_TYPE))
    body = raw[len(KEY_TYPE) :]
    return Verifier(name, bytes.fromhex(hex_id), body[:65], body[65:])


def is_verifier_key(vkey: str) -> bool:
    """True if vkey claims to be an SM2 key (its key type says so), valid or not."""
    raw = note.unb64(vkey.split("+", 2)[-1])
    return raw is not None and raw.startswith(KEY_TYPE)
