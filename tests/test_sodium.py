"""libsodium's Ed25519 "yes" is only ever one the reference (OpenSSL) also says (D79)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.ledger import sodium

_L = 2**252 + 27742317777372353535851937790883648493
"""The order of Ed25519's base point: S must be below it."""


def _reference(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _signed(seed: bytes, message: bytes) -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), key.sign(message)


def test_libsodium_is_loaded() -> None:
    """`.ci/system-deps` installs it: the audit must get its speed where the tests run."""
    assert sodium.AVAILABLE


@settings(max_examples=150, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300),
       where=st.integers(0, 32 + 64 + 300 - 1), flip=st.integers(1, 255))
def test_a_changed_byte_of_key_signature_or_message_is_refused(
        seed: bytes, message: bytes, where: int, flip: int) -> None:
    public_key, signature = _signed(seed, message)
    assert sodium.verify(public_key, signature, message)
    parts = [bytearray(public_key), bytearray(signature), bytearray(message)]
    for part in parts:
        if where < len(part):
            part[where] ^= flip
            break
        where -= len(part)
    else:
        return  # past the end of a short message: nothing changed
    changed = tuple(map(bytes, parts))
    assert not sodium.verify(*changed)
    assert not _reference(*changed)


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=100))
def test_a_non_canonical_s_is_refused_by_both(seed: bytes, message: bytes) -> None:
    """S + L verifies the same equation; both libraries refuse it, as RFC 8032 requires."""
    public_key, signature = _signed(seed, message)
    s = int.from_bytes(signature[32:], "little") + _L
    if s >= 2**256:
        return
    forged = signature[:32] + s.to_bytes(32, "little")
    assert not sodium.verify(public_key, forged, message)
    assert not _reference(public_key, forged, message)


def test_small_order_key_and_wrong_lengths_are_not_accepted() -> None:
    """The identity point as key with the identity as R and S = 0 satisfies the verification
    equation for any message; libsodium refuses it (the reference decides)."""
    identity = (1).to_bytes(32, "little")
    assert not sodium.verify(identity, identity + bytes(32), b"any message")
    public_key, signature = _signed(bytes(32), b"m")
    assert not sodium.verify(public_key[:31], signature, b"m")
    assert not sodium.verify(public_key, signature[:63], b"m")
    assert not sodium.verify(public_key, signature + b"\0", b"m")


# --- Hostile vectors ("Taming the many EdDSAs", Chalkias et al. 2020; ed25519-speccheck) -------
# Made here with integer arithmetic on the curve, so each one is known to satisfy the equation
# it is meant to: libsodium may refuse any of them, but whatever it accepts OpenSSL must accept
# too, or the audit's quick "yes" (D79) would pass a signature the reference refuses.

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
Point = tuple[int, int]
_O: Point = (0, 1)


def _add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P,
            (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P)


def _mul(k: int, a: Point) -> Point:
    out = _O
    while k:
        if k & 1:
            out = _add(out, a)
        a, k = _add(a, a), k >> 1
    return out


def _x_of(y: int, sign: int) -> int | None:
    """The x with that sign bit on the curve at y (y taken mod p), or None."""
    y %= _P
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == (-u) % _P:
        x = x * _SQRT_M1 % _P
    if v * x * x % _P != u:
        return None
    if x & 1 != sign:
        x = (_P - x) % _P  # x = 0 keeps sign 0 whatever was asked: "negative zero"
    return x


def _decode(b: bytes) -> Point | None:
    """Lenient decoding (y >= p and a negative zero allowed), as a permissive verifier would."""
    n = int.from_bytes(b, "little")
    y, sign = n & (2**255 - 1), n >> 255
    x = _x_of(y, sign)
    return None if x is None else (x, y % _P)


def _encode(a: Point, y_plus_p: bool = False, negative_zero: bool = False) -> bytes:
    x, y = a
    y += _P if y_plus_p else 0
    sign = 1 if negative_zero else x & 1
    return (y | sign << 255).to_bytes(32, "little")


def _h(r: bytes, a: bytes, m: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + m).digest(), "little") % _L


_B: Point = (_x_of(4 * pow(5, _P - 2, _P), 0) or 0, 4 * pow(5, _P - 2, _P) % _P)


def _order(a: Point) -> int:
    for n in (1, 2, 4, 8):
        if _mul(n, a) == _O:
            return n
    return 8 * _L if _mul(_L, a) != _O else _L


def _torsion_generator() -> Point:
    """A point of order 8 (the first y from 2 up whose point's [L] multiple has order 8)."""
    for y in range(2, 1000):
        x = _x_of(y, 0)
        if x is not None and _order(t := _mul(_L, (x, y))) == 8:
            return t
    raise AssertionError("no point of order 8 found")


_T8 = _torsion_generator()
_SMALL = [_mul(k, _T8) for k in range(8)]  # every point of small order


def _equations(a_bytes: bytes, sig: bytes, m: bytes) -> tuple[bool, bool]:
    """(cofactorless SB = R + hA holds, cofactored 8SB = 8R + 8hA holds), leniently decoded."""
    a, r, s = _decode(a_bytes), _decode(sig[:32]), int.from_bytes(sig[32:], "little")
    if a is None or r is None:
        return False, False
    left, right = _mul(s, _B), _add(r, _mul(_h(sig[:32], a_bytes, m), a))
    return left == right, _mul(8, left) == _mul(8, right)


def _message_where(ok: Callable[[int], bool], r: bytes, a: bytes) -> bytes:
    """The first message (b"m0", b"m1", ...) whose h satisfies `ok`: deterministic."""
    for i in range(10_000):
        m = b"m%d" % i
        if ok(_h(r, a, m)):
            return m
    raise AssertionError("no such message")


def _hostile() -> dict[str, tuple[bytes, bytes, bytes]]:
    """name -> (public key, signature, message)."""
    out: dict[str, tuple[bytes, bytes, bytes]] = {}
    a_secret, r_secret = 0x1234567 * 2**200 + 987654321, 0x7654321 * 2**190 + 123456789
    a_pt, r_pt = _mul(a_secret, _B), _mul(r_secret, _B)
    good_a, good_r = _encode(a_pt), _encode(r_pt)

    def signed(a_bytes: bytes, r_bytes: bytes, m: bytes, a: int = a_secret,
               r: int = r_secret) -> bytes:
        return r_bytes + ((r + _h(r_bytes, a_bytes, m) * a) % _L).to_bytes(32, "little")

    out["prime order (control)"] = (good_a, signed(good_a, good_r, b"m"), b"m")
    zero = bytes(32)
    for k, t in enumerate(_SMALL):
        # Small-order key and R, S = 0: SB = O = R + hA when hA = -R, for a message whose h
        # makes it so (only when -R is a multiple of A).
        t_bytes = _encode(t)
        multiples = {_mul(n, t) for n in range(8)}
        for j, rt in enumerate(_SMALL):
            if not any(_add(rt, x) == _O for x in multiples):
                continue
            r_bytes = _encode(rt)
            m = _message_where(lambda h, t=t, rt=rt: _add(rt, _mul(h % 8, t)) == _O,
                               r_bytes, t_bytes)
            out[f"small A #{k}, small R #{j}, S = 0"] = (t_bytes, r_bytes + zero, m)
        # Small-order key, R = rB, S = r: cofactorless only if hT = 0.
        m = _message_where(lambda h, t=t: _mul(h % 8, t) == _O, good_r, t_bytes)
        out[f"small A #{k}, S = r"] = (t_bytes, good_r + r_secret.to_bytes(32, "little"), m)
        # Mixed-order key A + T signed with A's secret: cofactorless iff hT = 0.
        mixed = _encode(_add(a_pt, t))
        for want in (True, False):
            if want or k:
                m = _message_where(lambda h, t=t, w=want: (_mul(h % 8, t) == _O) == w,
                                   good_r, mixed)
                out[f"mixed A (T #{k}), hT {'=' if want else '!='} 0"] = (
                    mixed, signed(mixed, good_r, m), m)
        # Mixed-order R = rB + T: only a cofactored verifier accepts (T != O).
        r_mixed = _encode(_add(r_pt, t))
        out[f"mixed R (T #{k})"] = (good_a, signed(good_a, r_mixed, b"m"), b"m")
    # Non-canonical encodings: y + p (y < 19) and a negative zero x, of A and of R.
    odd = {"y+p": {"y_plus_p": True}, "-0": {"negative_zero": True},
           "y+p, -0": {"y_plus_p": True, "negative_zero": True}}
    for t in _SMALL:
        for how, kw in odd.items():
            if (how != "-0" and t[1] >= 19) or (how != "y+p" and t[0] != 0):
                continue
            bad = _encode(t, **kw)
            m = _message_where(lambda h, t=t: _mul(h % 8, t) == _O, _encode(_O), bad)
            tag = f"{bad.hex()[:4]}..{bad.hex()[-2:]} ({how})"
            out[f"non-canonical A {tag}"] = (bad, _encode(_O) + zero, m)
            # the same point as R, with a real key: S = h a makes SB = O + hA
            out[f"non-canonical R {tag}"] = (
                good_a, bad + (_h(bad, good_a, b"m") * a_secret % _L).to_bytes(32, "little"),
                b"m")
    for y in range(2, 19):  # points of full order with a y + p encoding
        x = _x_of(y, 0)
        if x is not None:
            bad = _encode((x, y), y_plus_p=True)
            out[f"non-canonical A, y = {y} + p"] = (bad, signed(bad, good_r, b"m"), b"m")
    # Non-canonical S: S + L, S + 2L, and S with the top bits set.
    sig = signed(good_a, good_r, b"m")
    s = int.from_bytes(sig[32:], "little")
    for n in (1, 2, 15):
        if s + n * _L < 2**256:
            out[f"S + {n}L"] = (good_a, sig[:32] + (s + n * _L).to_bytes(32, "little"), b"m")
    return out


HOSTILE = _hostile()


def test_the_hostile_vectors_are_what_they_claim() -> None:
    """The arithmetic is right (the control verifies for both libraries and both equations),
    and the small-order and mixed-order vectors satisfy the equation they were made for."""
    assert _order(_B) == _L and sorted(map(_order, _SMALL)) == [1, 2, 4, 4, 8, 8, 8, 8]
    control = HOSTILE["prime order (control)"]
    assert _equations(*control) == (True, True)
    assert sodium.verify(*control) and _reference(*control)
    for name, v in HOSTILE.items():
        cofactorless, cofactored = _equations(*v)
        if name.startswith("small A") and "S = 0" in name:
            assert cofactorless, name
        if name.startswith(("mixed A", "mixed R", "small A")):
            assert cofactored, name
        if name.startswith("mixed R") and not name.endswith("#0)"):
            assert not cofactorless, name
        if "hT = 0" in name:
            assert cofactorless, name
        if "hT != 0" in name:
            assert not cofactorless, name


@pytest.mark.parametrize("name", list(HOSTILE))
def test_what_libsodium_accepts_openssl_accepts(name: str) -> None:
    """The property D79 rests on, over every hostile vector."""
    public_key, signature, message = HOSTILE[name]
    if sodium.verify(public_key, signature, message):
        assert _reference(public_key, signature, message), name


def test_libsodium_refuses_small_order_and_non_canonical_points() -> None:
    """Why D79 calls it the stricter one: it refuses small-order keys and R points, y >= p
    encodings and non-canonical S, whatever the equation says; mixed-order keys it judges by
    the same cofactorless equation as OpenSSL."""
    for name, v in HOSTILE.items():
        if name.startswith(("small A", "non-canonical", "S + ")):
            assert not sodium.verify(*v), name
        if name.startswith("mixed A") and "hT = 0" in name:
            assert sodium.verify(*v) and _reference(*v), name
