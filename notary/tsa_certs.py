"""The TSA's certificate chain: create one, take an operator's own, load it for signing.

A relying party (a court, `openssl ts -verify`) trusts a time-stamp because it trusts a root
certificate and the root vouches for a key that signs time-stamps and nothing else. So the TSA
certificate carries a *critical* extendedKeyUsage of id-kp-timeStamping only (RFC 3161 2.3) and
the chain is checked on every load, not merely when it is created.

On disk, in one directory:

- `root.pem`     the trust anchor(s) to publish; what verifiers pass as -CAfile;
- `tsa.pem`      the TSA certificate first, then any intermediates; what they pass as -untrusted;
- `tsa-key.pem`  the TSA's PKCS#8 private key, mode 0600, optionally passphrase-encrypted.

`create_tsa_chain` makes a fresh root whose private key is used once and then discarded unless
the caller asks for it to be kept (`root_key_path`): a root that can sign nothing more is the
safest root, at the price of publishing a new root when the TSA certificate is rotated.

The TSA key may instead live in an HSM (notary.pkcs11): anything that is a `TsaKey` — it signs
and shows its public key, but cannot be exported — is certified by `create_tsa_chain(...,
tsa_key=...)` and used through `load_tsa(..., tsa_key=...)`; then there is no `tsa-key.pem`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from copyledger.ledger.errors import Conflict, InvalidInput
from copyledger.ledger.timestamp import (
    HASH_CLASSES,
    TimestampError,
    check_tsa_certificate,
    validate_chain,
)
from copyledger.notary.signer import _write_new_private_file, load_private_pem, write_new_file

__all__ = [
    "ROOT_FILE",
    "TSA_CERT_FILE",
    "TSA_KEY_FILE",
    "FileTsaKey",
    "TsaChainPaths",
    "TsaIdentity",
    "TsaKey",
    "TsaPrivateKey",
    "TsaPublicKey",
    "as_tsa_key",
    "create_tsa_chain",
    "import_tsa",
    "load_tsa",
]

ROOT_FILE = "root.pem"
TSA_CERT_FILE = "tsa.pem"
TSA_KEY_FILE = "tsa-key.pem"
ROOT_VALIDITY = timedelta(days=3653)  # ten years
TSA_VALIDITY = timedelta(days=1827)  # five years; rotate well before
BACKDATE = timedelta(hours=1)  # so verifiers whose clocks lag a little accept a new chain

TsaPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
TsaPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class TsaKey(Protocol):
    """A TSA signing key the TSA cannot look inside: a file key (FileTsaKey) or an HSM key.

    sign() returns the signature as it goes into a CMS SignerInfo: a DER ECDSA-Sig-Value for an
    EC key, a PKCS#1 v1.5 signature for an RSA key, either over digest_algorithm(data).
    """

    @property
    def digest_algorithm(self) -> str:
        """The hash sign() applies to its input: sha256, sha384 or sha512."""
        ...

    def public_key(self) -> TsaPublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


class FileTsaKey:
    """A TsaKey over a private key held in memory, with the hash matched to the key's size."""

    def __init__(self, private_key: TsaPrivateKey) -> None:
        self._private_key = private_key
        self.digest_algorithm = _digest_for(private_key.public_key())

    def __repr__(self) -> str:
        return f"FileTsaKey({type(self._private_key).__name__})"

    def public_key(self) -> TsaPublicKey:
        return self._private_key.public_key()

    def sign(self, data: bytes) -> bytes:
        hash_alg = HASH_CLASSES[self.digest_algorithm]()
        if isinstance(self._private_key, ec.EllipticCurvePrivateKey):
            return self._private_key.sign(data, ec.ECDSA(hash_alg))
        return self._private_key.sign(data, padding.PKCS1v15(), hash_alg)


def _digest_for(public_key: TsaPublicKey) -> str:
    """The hash a TSA uses with this key: as strong as the curve, SHA-256 for RSA."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {384: "sha384", 521: "sha512"}.get(public_key.curve.key_size, "sha256")
    return "sha256"


def as_tsa_key(key: TsaPrivateKey | TsaKey) -> TsaKey:
    """Whatever TsaIdentity holds, as a TsaKey; cryptography keys are wrapped, others kept."""
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return FileTsaKey(key)
    if not isinstance(key.public_key(), ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidInput(f"a TSA cannot sign with a {type(key).__name__}")
    if key.digest_algorithm not in HASH_CLASSES:
        raise InvalidInput(f"a TSA key cannot sign with {key.digest_algorithm!r}")
    return key


@dataclass(frozen=True)
class TsaChainPaths:
    """Where a TSA chain lives."""

    root: Path
    certificate: Path
    key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> TsaChainPaths:
        directory = Path(directory)
        return cls(directory / ROOT_FILE, directory / TSA_CERT_FILE, directory / TSA_KEY_FILE)


@dataclass(frozen=True)
class TsaIdentity:
    """A TSA certificate, its issuers (intermediates first, root(s) last) and its signing key:
    a private key loaded from a file, or a TsaKey (an HSM key) that only signs."""

    certificate: x509.Certificate
    chain: list[x509.Certificate]
    private_key: TsaPrivateKey | TsaKey = field(repr=False)

    def chain_pem(self) -> bytes:
        """The TSA certificate then its issuers, as PEM: what /v1/notary/keys publishes."""
        certs = [self.certificate, *self.chain]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def create_tsa_chain(
    directory: Path,
    name: str,
    *,
    passphrase: bytes | None = None,
    root_key_path: Path | None = None,
    now: datetime | None = None,
    tsa_key: TsaKey | None = None,
) -> TsaChainPaths:
    """Create a root CA and a TSA certificate (both ECDSA P-256) in directory; never overwrite.

    name (say, the log origin) becomes the organisation of both subjects. The TSA key is
    written with mode 0600 and encrypted if a passphrase is given; so is the root key if
    root_key_path is given, otherwise the root key is discarded. Given tsa_key (an HSM key),
    the TSA certificate is issued for it and no TSA key file is written.
    """
    org = _check_name(name)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    paths = TsaChainPaths.in_directory(directory)
    targets = [paths.key, paths.certificate, paths.root]
    if root_key_path is not None:
        targets.append(Path(root_key_path))
    _refuse_existing(targets)

    root_key = ec.generate_private_key(ec.SECP256R1())
    file_key: TsaPrivateKey | None = None
    if tsa_key is None:
        file_key = ec.generate_private_key(ec.SECP256R1())
        tsa_public: TsaPublicKey = file_key.public_key()
    else:
        tsa_public = as_tsa_key(tsa_key).public_key()
    root_name = _subject(org, "copyledger TSA root CA")
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    tsa = (
        x509.CertificateBuilder()
        .subject_name(_subject(org, "copyledger TSA"))
        .issuer_name(root_name)
        .public_key(tsa_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + TSA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, content_commitment=True), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(tsa_public), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    files = [
        (paths.certificate, tsa.public_bytes(serialization.Encoding.PEM), False),
        (paths.root, root.public_bytes(serialization.Encoding.PEM), False),
    ]
    if file_key is not None:
        files.insert(0, (paths.key, _private_pem(file_key, passphrase), True))
    if root_key_path is not None:
        files.append((Path(root_key_path), _private_pem(root_key, passphrase), True))
    _write_all(files)
    return paths


def import_tsa(
    directory: Path,
    cert_pem: bytes,
    key_pem: bytes,
    chain_pem: bytes,
    *,
    passphrase: bytes | None = None,
) -> TsaChainPaths:
    """Install an operator's own TSA certificate and key, after checking they are usable.

    chain_pem holds the issuers: intermediates (kept in tsa.pem after the TSA certificate) and
    at least one self-signed root (kept in root.pem). The key is stored as given, so an
    encrypted key stays encrypted under the operator's passphrase.
    """
    certs = _parse_certs(cert_pem, "TSA certificate")
    issuers = _parse_certs(chain_pem, "certificate chain")
    roots = [c for c in issuers if _self_signed(c)]
    if not roots:
        raise InvalidInput("the certificate chain must include the self-signed root to publish")
    intermediates = [c for c in [*certs[1:], *issuers] if c not in roots]
    key = _load_private_key(key_pem, passphrase, "the TSA key")
    _check_identity(certs[0], intermediates + roots, key, datetime.now(UTC))

    paths = TsaChainPaths.in_directory(directory)
    _refuse_existing([paths.key, paths.certificate, paths.root])
    pem = serialization.Encoding.PEM
    _write_all(
        [
            (paths.key, key_pem, True),
            (paths.certificate, b"".join(c.public_bytes(pem) for c in [certs[0], *intermediates]),
             False),
            (paths.root, b"".join(c.public_bytes(pem) for c in roots), False),
        ]
    )
    return paths


def load_tsa(
    directory: Path,
    passphrase: bytes | None = None,
    *,
    now: datetime | None = None,
    tsa_key: TsaKey | None = None,
) -> TsaIdentity:
    """Load and check the TSA chain in directory: a usable TSA certificate, valid now, whose
    key is the one on disk (or tsa_key, an HSM key, if given) and which chains to root.pem."""
    paths = TsaChainPaths.in_directory(directory)
    certs = _parse_certs(_read(paths.certificate, "TSA certificate"), str(paths.certificate))
    roots = _parse_certs(_read(paths.root, "TSA root certificate"), str(paths.root))
    key: TsaPrivateKey | TsaKey
    if tsa_key is not None:
        key = as_tsa_key(tsa_key)
    else:
        key = _load_private_key(_read(paths.key, "TSA key"), passphrase, f"key file {paths.key}")
    chain = [*certs[1:], *roots]
    _check_identity(certs[0], chain, key, (now or datetime.now(UTC)).astimezone(UTC))
    return TsaIdentity(certificate=certs[0], chain=chain, private_key=key)


def _check_identity(
    cert: x509.Certificate,
    issuers: list[x509.Certificate],
    key: TsaPrivateKey | TsaKey,
    now: datetime,
) -> None:
    """Everything that would otherwise only show up as tokens that no one can verify."""
    try:
        check_tsa_certificate(cert)
    except TimestampError as exc:
        raise InvalidInput(f"not a usable TSA certificate: {exc.detail}") from None
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != cert.public_key().public_bytes(*public):
        raise InvalidInput("the TSA key does not match the TSA certificate")
    roots = [c for c in issuers if _self_signed(c)]
    try:
        validate_chain(cert, [c for c in issuers if c not in roots], roots, at=now)
    except TimestampError as exc:
        raise InvalidInput(f"the TSA certificate chain is not usable: {exc.detail}") from None


def _check_name(name: str) -> str:
    if not name or len(name) > 64 or not name.isprintable():
        raise InvalidInput("the TSA name must be 1 to 64 printable characters")
    return name


def _subject(org: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # InvalidSignature, or a key type that cannot sign
        return False
    return True


def _private_pem(key: TsaPrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"no {what} at {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from None


def _parse_certs(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise InvalidInput(f"{what}: no PEM certificate could be read") from None
    return list(certs)


def _load_private_key(pem: bytes, passphrase: bytes | None, what: str) -> TsaPrivateKey:
    """An EC or RSA private key from PEM, with one clear message for each way that fails."""
    key = load_private_pem(pem, passphrase, what)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidInput(f"{what} holds a {type(key).__name__}; a TSA needs an EC or RSA key")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise InvalidInput(f"{what} is a {key.key_size}-bit RSA key; at least 2048 bits needed")
    return key


def _refuse_existing(paths: list[Path]) -> None:
    for path in paths:
        if path.exists():
            raise Conflict(f"{path} already exists; refusing to overwrite a TSA chain")
        path.parent.mkdir(parents=True, exist_ok=True)


def _write_all(files: list[tuple[Path, bytes, bool]]) -> None:
    """Write each new file (private ones 0600, certificates 0644); on failure remove them all."""
    written: list[Path] = []
    try:
        for path, data, private in files:
            if private:
                _write_new_private_file(path, data)
            else:
                write_new_file(path, data, 0o644)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


