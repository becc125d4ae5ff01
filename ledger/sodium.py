"""Ed25519 verification by libsodium, for the audit's many signatures (D79).

The audit verifies two Ed25519 signatures a block, millions of them. `cryptography`'s
binding (OpenSSL) costs about twice what libsodium's `crypto_sign_ed25519_verify_detached`
does on this machine (116 µs against 52, the same signature and key, one process), and no
locked dependency has a faster one. libsodium is the stricter of the two (Chalkias et al.,
"Taming the many EdDSAs", 2020): besides the non-canonical S both refuse, it refuses
small-order and non-canonical keys and R points, so what it accepts OpenSSL accepts too.
It is only ever the quick "yes": `verify` answers False for anything it does not accept,
and the caller then asks `note.Verifier.verify` (OpenSSL), the reference, which decides.

libsodium is loaded from the system (Debian's `libsodium23`, in `.ci/system-deps`); without
it `AVAILABLE` is False and `verify` always answers False, so the audit costs what it did.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["AVAILABLE", "verify"]


def _load() -> ctypes._NamedFuncPointer | None:
    """libsodium's detached Ed25519 verification, or None if the library is not there."""
    for name in ("libsodium.so.23", ctypes.util.find_library("sodium")):
        if name is None:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.sodium_init() < 0:
            return None
        fn = lib.crypto_sign_ed25519_verify_detached
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p]
        fn.restype = ctypes.c_int
        return fn
    return None


_VERIFY = _load()
AVAILABLE = _VERIFY is not None
"""Whether libsodium was found (else `verify` always answers False)."""


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True only if libsodium accepts `signature` as `public_key`'s Ed25519 signature of
    `message`; False means "not decided here" (ask the reference)."""
    if _VERIFY is None or len(public_key) != 32 or len(signature) != 64:
        return False
    return bool(_VERIFY(signature, message, len(message), public_key) == 0)
