"""The notary's SM2 key (D40): signs checkpoints and block notes of an SM-suite registry with
SM2 over SM3 and a distinguishing ID, as an extra signature line beside the Ed25519 one.

The key is a PKCS#8 PEM file (id-ecPublicKey on the SM2 curve, OID 1.2.156.10197.1.301), the
form `openssl genpkey -algorithm SM2` writes and `openssl pkeyutl` reads, created 0600 exactly
as the Ed25519 key is. Neither `cryptography` nor SoftHSM2 offers SM2 signing, so the signature
equation is ours (GB/T 32918.2 §6.1) on `ledger.sm2`'s curve arithmetic; tests check it against
the `openssl` command line both ways.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from asn1crypto import core, keys  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from copyledger.ledger import note, sm2
from copyledger.ledger.errors import InvalidInput, said
from copyledger.notary.signer import write_new_file

__all__ = ["Sm2Signer", "private_key_der"]

_ALG_ID = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")
_PEM_LABEL = "PRIVATE KEY"
_ENCRYPTED_LABEL = "ENCRYPTED PRIVATE KEY"
PBKDF2_ITERATIONS = 600_000  # PBKDF2-HMAC-SHA256, as OWASP advises (2023)


class Sm2Signer:
    """An SM2 key held in memory: signs notes under its own key name and key ID."""

    def __init__(self, name: str, private_key: int, distid: bytes = sm2.DEFAULT_ID) -> None:
        if not note.is_valid_key_name(name):
            raise InvalidInput(said("invalid key name {name!r}: no spaces, '+' or control "
                                    "characters",
                                    name=name))
        if not 1 <= private_key <= sm2.N - 2:
            raise InvalidInput("an SM2 private key is an integer in [1, n-2]")
        self.name = name
        self._d = private_key
        self.public_key = sm2.encode_point(sm2.scalar_mult(private_key))
        self.verifier = sm2.Verifier.of(name, self.public_key, distid)
        self.key_id = self.verifier.key_id

    def __repr__(self) -> str:
        return f"Sm2Signer(name={self.name!r}, key_id={self.key_id.hex()})"

    @property
    def verifier_key(self) -> str:
        return self.verifier.vkey

    def sign(self, message: bytes) -> bytes:
        """The DER SM2 signature of message: e = SM3(Z_A || M), a fresh k for each."""
        e = sm2.message_digest(message, self.public_key, self.verifier.distid)
        d = self._d
        while True:
            k = self._nonce(e)
            point = sm2.scalar_mult(k)
            assert point is not None  # k in [1, n-1]
            r = (e + point[0]) % sm2.N
            if r == 0 or r + k == sm2.N:
                continue
            s = pow(1 + d, -1, sm2.N) * (k - r * d) % sm2.N
            if s != 0:
                return sm2.encode_signature(r, s)

    def _nonce(self, e: int) -> int:
        """k from the OS's randomness hedged with the key and digest (as RFC 6979 §3.6 allows),
        so a weak random source alone cannot repeat a nonce and reveal the key."""
        seed = hmac.new(secrets.token_bytes(32), self._d.to_bytes(32, "big")
                        + e.to_bytes(32, "big"), hashlib.sha512).digest()
        return int.from_bytes(seed, "big") % (sm2.N - 1) + 1

    @classmethod
    def generate(cls, name: str, path: Path, distid: bytes = sm2.DEFAULT_ID,
                 passphrase: bytes | None = None) -> Sm2Signer:
        """Create a new key at path (0600, never overwriting one), encrypted (PKCS#8 PBES2:
        PBKDF2-HMAC-SHA256, AES-256-CBC, as OpenSSL writes) if a passphrase is given."""
        signer = cls(name, secrets.randbelow(sm2.N - 2) + 1, distid)
        der = private_key_der(signer._d, signer.public_key)
        pem = _pem(encrypt(der, passphrase), _ENCRYPTED_LABEL) if passphrase else _pem(der)
        write_new_file(Path(path), pem, 0o600)
        return signer

    @classmethod
    def load(cls, name: str, path: Path, distid: bytes = sm2.DEFAULT_ID,
             passphrase: bytes | None = None) -> Sm2Signer:
        """Load a PKCS#8 PEM SM2 key, ours or one `openssl genpkey` made, encrypted or not."""
        path = Path(path)
        try:
            text = path.read_text("ascii")
        except FileNotFoundError:
            raise InvalidInput(said("no SM2 key file at {path}", path=path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(said("cannot read SM2 key file {path}: {exc}",
                                    path=path, exc=exc)) from None
        encrypted = f"-----BEGIN {_ENCRYPTED_LABEL}-----" in text
        if encrypted and not passphrase:
            raise InvalidInput(said("SM2 key file {path} is encrypted: a passphrase is needed",
                                    path=path))
        if not encrypted and passphrase:
            raise InvalidInput(said("SM2 key file {path} is not encrypted, but a passphrase was "
                                    "given",
                                    path=path))
        if not (encrypted and passphrase):
            return cls(name, _read_private_key(_unpem(text, path)), distid)
        der = decrypt(_unpem(text, path, _ENCRYPTED_LABEL), passphrase, path)
        try:  # a wrong passphrase may still unpad (1 in 256): then the key does not parse
            return cls(name, _read_private_key(der), distid)
        except InvalidInput:
            raise InvalidInput(said("cannot load SM2 key file {path}: wrong passphrase or corrupt "
                                    "key",
                                    path=path)) from None


def _kek(passphrase: bytes, salt: bytes, iterations: int) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    return kdf.derive(passphrase)


def encrypt(der: bytes, passphrase: bytes) -> bytes:
    """PKCS#8 EncryptedPrivateKeyInfo (RFC 5958, PBES2 of RFC 8018) of a PrivateKeyInfo."""
    salt, iv = secrets.token_bytes(16), secrets.token_bytes(16)
    padder = padding.PKCS7(128).padder()
    plain = padder.update(der) + padder.finalize()
    enc = Cipher(algorithms.AES(_kek(passphrase, salt, PBKDF2_ITERATIONS)),
                 modes.CBC(iv)).encryptor()
    return bytes(keys.EncryptedPrivateKeyInfo({
        "encryption_algorithm": {"algorithm": "pbes2", "parameters": {
            "key_derivation_func": {"algorithm": "pbkdf2", "parameters": {
                "salt": core.OctetString(salt), "iteration_count": PBKDF2_ITERATIONS,
                "prf": {"algorithm": "sha256", "parameters": core.Null()}}},
            "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv}}},
        "encrypted_data": enc.update(plain) + enc.finalize(),
    }).dump())


def decrypt(der: bytes, passphrase: bytes, path: Path) -> bytes:
    """The PrivateKeyInfo inside a PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) EncryptedPrivateKeyInfo;
    InvalidInput for another scheme, a wrong passphrase or a corrupt file."""
    try:
        info = keys.EncryptedPrivateKeyInfo.load(der)
        alg = info["encryption_algorithm"]
        scheme = (alg.kdf, alg.kdf_hmac, alg.encryption_cipher, alg.encryption_mode,
                  alg.key_length)
        salt, iterations, iv = alg.kdf_salt, alg.kdf_iterations, alg.encryption_iv
        data = info["encrypted_data"].native
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(said("{path} is not an encrypted PKCS#8 private key",
                                path=path)) from None
    if scheme != ("pbkdf2", "sha256", "aes", "cbc", 32) or not 1 <= iterations <= 10_000_000:
        raise InvalidInput(said("{path}: only PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC is "
                                "read",
                                path=path))
    dec = Cipher(algorithms.AES(_kek(passphrase, salt, iterations)), modes.CBC(iv)).decryptor()
    try:
        plain = dec.update(data) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(plain) + unpadder.finalize()
    except ValueError:
        raise InvalidInput(said("cannot load SM2 key file {path}: wrong passphrase or corrupt key",
                                path=path)) from None


def private_key_der(d: int, public_key: bytes) -> bytes:
    """PKCS#8 PrivateKeyInfo holding the RFC 5915 ECPrivateKey (with its public key)."""
    ec_key = _tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, d.to_bytes(32, "big"))
                  + _tlv(0xA1, _tlv(0x03, b"\x00" + public_key)))
    return _tlv(0x30, b"\x02\x01\x00" + _ALG_ID + _tlv(0x04, ec_key))


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else bytes([0x82]) \
        + n.to_bytes(2, "big")
    return bytes([tag]) + length + body


def _read_tlv(data: bytes, tag: int) -> tuple[bytes, bytes]:
    """(body, rest) of the DER element of `tag` at the start of data."""
    if len(data) < 2 or data[0] != tag:
        raise InvalidInput("the SM2 key file is not a PKCS#8 SM2 private key")
    n, at = data[1], 2
    if n & 0x80:
        width = n & 0x7F
        n, at = int.from_bytes(data[2 : 2 + width], "big"), 2 + width
    if len(data) < at + n:
        raise InvalidInput("the SM2 key file is truncated")
    return data[at : at + n], data[at + n :]


def _read_private_key(der: bytes) -> int:
    info, _ = _read_tlv(der, 0x30)
    version, rest = _read_tlv(info, 0x02)
    alg, rest = _read_tlv(rest, 0x30)
    if version != b"\x00" or _tlv(0x30, alg) != _ALG_ID:
        raise InvalidInput("the key file does not hold a key on the SM2 curve")
    octets, _ = _read_tlv(rest, 0x04)
    ec_key, _ = _read_tlv(octets, 0x30)
    _, rest = _read_tlv(ec_key, 0x02)
    d, _ = _read_tlv(rest, 0x04)
    return int.from_bytes(d, "big")


def _pem(der: bytes, label: str = _PEM_LABEL) -> bytes:
    b64 = note.b64(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines)
            + f"\n-----END {label}-----\n").encode()


def _unpem(text: str, path: Path, label: str = _PEM_LABEL) -> bytes:
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if begin not in text or end not in text:
        raise InvalidInput(said("{path} is not a PKCS#8 PEM private key", path=path))
    body = "".join(text.split(begin, 1)[1].split(end, 1)[0].split())
    der = note.unb64(body)
    if der is None:
        raise InvalidInput(said("{path} holds invalid base64", path=path))
    return der
