"""libsodium's Ed25519 "yes" is only ever one the reference (OpenSSL) also says (D79)."""

from __future__ import annotations

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
