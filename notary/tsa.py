"""An RFC 3161 time-stamping authority: TimeStampReq in, TimeStampResp out.

Tokens are CMS SignedData (RFC 5652) over a DER TSTInfo, with signed attributes contentType,
signingTime, messageDigest and ESS signing-certificate-v2 (RFC 5035, as RFC 5816 allows), so
`openssl ts -verify`, rfc3161-client and ledger.timestamp.verify_token all accept them. The
second half of the module is the TSA's certificate chain, which the authority signs with.

Decisions, each a line in docs/notary.md:

- Hashes: SHA-256, SHA-384 and SHA-512 are accepted; SHA-1 (and anything else) is refused with
  badAlg. SHA-1 collisions are practical, and a stamp over a colliding digest vouches for two
  documents. `openssl ts -query` uses SHA-256 by default since OpenSSL 1.1.
- Policy: DEFAULT_POLICY_OID is 2.25.<UUID>.1 — an OID under the X.667 UUID arc, which needs no
  registration and cannot collide with anyone else's. It is a placeholder: an operator with an
  IANA Private Enterprise Number should publish a policy and configure its OID.
- Serial numbers are 128 random bits: unique without shared state, so several notary processes
  need no counter.
- A client can never make respond() raise: every failure is a DER TimeStampResp with status
  rejection and a failInfo bit; an internal failure is logged and answered with systemFailure.
- Queries must be DER (badDataFormat otherwise, an explicit certReq FALSE included): the
  imprint is copied into the token as sent, so a BER one would make a token that is not DER.
  A version other than 1, or a nonce over MAX_NONCE_BITS, is badRequest.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Protocol

from asn1crypto import cms, core, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from copyledger.ledger.errors import Conflict, InvalidInput, Unavailable, said
from copyledger.ledger.timestamp import (
    HASH_ALGORITHMS,
    HASH_CLASSES,
    TimestampError,
    TimeStampResp,
    check_tsa_certificate,
    validate_chain,
)
from copyledger.notary.signer import _write_new_private_file, load_private_pem, write_new_file

__all__ = [
    "DEFAULT_POLICY_OID",
    "MAX_NONCE_BITS",
    "ROOT_FILE",
    "TSA_CERT_FILE",
    "TSA_KEY_FILE",
    "FileTsaKey",
    "TimeStampAuthority",
    "TsaChainPaths",
    "TsaIdentity",
    "TsaKey",
    "TsaPrivateKey",
    "TsaPublicKey",
    "as_tsa_key",
    "create_tsa_chain",
    "import_tsa",
    "load_tsa",
    "self_signed",
    "set_aside_unfinished",
]


log = logging.getLogger("copyledger.tsa")

#: copyledger's placeholder TSA policy: UUID dc8c2867-a018-448c-933b-56c5f61b63ec as an OID
#: (X.667), then .1 for version 1 of the policy.
DEFAULT_POLICY_OID = "2.25.293157900139308192448035689079653491692.1"

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
#: The longest nonce echoed into a token. RFC 3161 sets no bound (its example is 64 bits, as
#: `openssl ts -query` sends); eight times that keeps any real client's nonce and stops a
#: request from making every token it is granted kilobytes longer.
MAX_NONCE_BITS = 512
_OID_TO_HASH = {oid: name for name, (oid, _size) in HASH_ALGORITHMS.items()}


class _AlgorithmIdentifier(core.Sequence):  # type: ignore[misc]
    """Any OID, any parameters: asn1crypto's DigestAlgorithm would call a bad one malformed
    (badDataFormat) where RFC 3161 wants badAlg."""

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("algorithm", core.ObjectIdentifier),
        ("parameters", core.Any, {"optional": True}),
    ]


class _MessageImprint(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("hash_algorithm", _AlgorithmIdentifier),
        ("hashed_message", core.OctetString),
    ]


class _TimeStampReq(core.Sequence):  # type: ignore[misc]
    """RFC 3161 TimeStampReq, read leniently enough to name each fault precisely."""

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("version", core.Integer),
        ("message_imprint", _MessageImprint),
        ("req_policy", core.ObjectIdentifier, {"optional": True}),
        ("nonce", core.Integer, {"optional": True}),
        ("cert_req", core.Boolean, {"default": False}),
        ("extensions", tsp.Extensions, {"implicit": 0, "optional": True}),
    ]


class _Rejected(Exception):
    """Internal: the query is refused with this failInfo bit and text."""

    def __init__(self, fail_info: str, text: str) -> None:
        super().__init__(text)
        self.fail_info = fail_info
        self.text = text


@dataclass(frozen=True)
class _Query:
    imprint: Any  # asn1crypto tsp.MessageImprint, copied into the TSTInfo as it came
    nonce: int | None
    cert_req: bool


class TimeStampAuthority:
    """Issues time-stamp tokens with one TSA identity. Thread-safe: it holds no mutable state."""

    def __init__(
        self,
        identity: TsaIdentity,
        *,
        policy_oid: str = DEFAULT_POLICY_OID,
        accuracy_ms: int = 1000,
        clock: Callable[[], datetime] | None = None,
        serial: Callable[[], int] | None = None,
    ) -> None:
        if accuracy_ms < 0:
            raise InvalidInput("accuracy_ms must not be negative")
        if not _OID.fullmatch(policy_oid):
            raise InvalidInput(said("{policy_oid!r} is not a dotted OID", policy_oid=policy_oid))
        self.identity = identity
        self.policy_oid = policy_oid
        self.accuracy_ms = accuracy_ms
        self._clock = clock or _utc_now
        self._serial = serial or _random_serial
        cert_der = identity.certificate.public_bytes(serialization.Encoding.DER)
        cert = asn1_x509.Certificate.load(cert_der)
        self._key = as_tsa_key(identity.private_key)  # a file key or an HSM key, signing alike
        self._digest_alg, self._signature_alg = _signature_algorithms(self._key)
        # The parts that never change, as DER. asn1crypto re-encodes (slowly: Names sort their
        # SETs) any object reused inside a new structure, but a freshly loaded one dumps as-is.
        self._cert_der = cert_der
        self._tsa_name_der = asn1_x509.GeneralName({"directory_name": cert.subject}).dump()
        self._sid_der = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": {
                    "issuer": cert.issuer,
                    "serial_number": cert.serial_number,
                }
            }
        ).dump()
        self._ess_der = cms.CMSAttribute(
            {
                "type": "signing_certificate_v2",
                "values": [_ess_signing_certificate_v2(cert_der, cert)],
            }
        ).dump()
        # The token is written as DER around these fixed pieces (D81): asn1crypto building it
        # field by field cost about 1.2 ms a block, most of the sequencer's CPU per block.
        self._digest_alg_der = cms.DigestAlgorithm(
            {"algorithm": self._digest_alg, "parameters": None}).dump()
        self._signature_alg_der = cms.SignedDigestAlgorithm(self._signature_alg).dump()
        self._tst_head_der = (core.Integer(1).dump()
                              + core.ObjectIdentifier(policy_oid).dump())
        accuracy = {key: value for key, value in zip(("seconds", "millis"),
                                                     divmod(accuracy_ms, 1000), strict=True)
                    if value}
        self._accuracy_der = tsp.Accuracy(accuracy).dump() if accuracy_ms else b""

    def respond(self, query_der: bytes) -> bytes:
        """Answer a DER TimeStampReq with a DER TimeStampResp; never raises for bad input."""
        try:
            query = _parse_query(query_der, self.policy_oid)
            token = self._token(query.imprint, query.nonce, include_certificate=query.cert_req)
        except _Rejected as rejected:
            return _rejection(rejected.fail_info, rejected.text)
        except Exception:
            log.exception("time-stamping failed")
            return _rejection("system_failure", "the TSA could not issue a time-stamp")
        granted = TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token})
        return bytes(granted.dump())

    def timestamp_digest(
        self,
        digest: bytes,
        hash_alg: str = "sha256",
        nonce: int | None = None,
        *,
        include_certificate: bool = True,
    ) -> bytes:
        """A DER TimeStampToken (ContentInfo) over digest: how each block hash is stamped."""
        if hash_alg not in HASH_ALGORITHMS:
            raise InvalidInput(said("hash algorithm {hash_alg!r} is not accepted",
                                    hash_alg=hash_alg))
        if len(digest) != HASH_ALGORITHMS[hash_alg][1]:
            raise InvalidInput(said("a {hash_alg} digest is {value} bytes",
                                    hash_alg=hash_alg, value=HASH_ALGORITHMS[hash_alg][1]))
        imprint = _der(0x30, _imprint_alg_der(hash_alg) + _der(0x04, digest))
        try:
            return self._token_der(imprint, nonce, include_certificate=include_certificate)
        except _Rejected as rejected:
            raise Unavailable(rejected.text) from None

    def _token(self, imprint: Any, nonce: int | None, *, include_certificate: bool) -> Any:
        """The signed token, as an asn1crypto cms.ContentInfo (read from `_token_der`)."""
        return cms.ContentInfo.load(self._token_der(imprint.dump(), nonce,
                                                    include_certificate=include_certificate))

    def _token_der(self, imprint_der: bytes, nonce: int | None, *,
                   include_certificate: bool) -> bytes:
        """The signed token (a DER cms.ContentInfo), written around the fixed pieces: the
        exact bytes asn1crypto would dump for it (`tests/test_tsa.py` checks it does)."""
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the TSA clock must return timezone-aware datetimes")
        now = now.astimezone(UTC)
        gen_time = now.replace(microsecond=now.microsecond // 1000 * 1000)
        cert = self.identity.certificate
        if not cert.not_valid_before_utc <= gen_time <= cert.not_valid_after_utc:
            raise _Rejected("system_failure", "the TSA certificate is not valid at this time")
        serial = self._serial()
        if not 0 < serial < 2**160:  # RFC 3161 2.4.2: clients handle up to 160 bits
            raise ValueError("time-stamp serial numbers must be positive and under 2**160")
        # TSTInfo: version, policy, messageImprint, serialNumber, genTime, accuracy, nonce, tsa.
        tst_der = _der(0x30, b"".join((
            self._tst_head_der, imprint_der, core.Integer(serial).dump(),
            core.GeneralizedTime(gen_time).dump(), self._accuracy_der,
            core.Integer(nonce).dump() if nonce is not None else b"",
            _der(0xA0, self._tsa_name_der))))
        # The signed attributes: content type, signing time, message digest, ESS certificate,
        # in DER's SET OF order; signed as a SET OF (0x31), carried as [0] IMPLICIT (RFC 5652).
        attrs = b"".join(sorted((
            _CONTENT_TYPE_ATTR,
            _der(0x30, _SIGNING_TIME_OID + _der(0x31, _cms_time(gen_time).dump())),
            _der(0x30, _MESSAGE_DIGEST_OID + _der(0x31, _der(
                0x04, hashlib.new(self._digest_alg, tst_der).digest()))),
            self._ess_der,
        )))
        signature = self._sign(_der(0x31, attrs))
        signer_info = _der(0x30, b"".join((
            _V1, self._sid_der, self._digest_alg_der, _der(0xA0, attrs),
            self._signature_alg_der, _der(0x04, signature))))
        signed_data = _der(0x30, b"".join((
            _V3,  # eContentType is not id-data (RFC 5652 5.1)
            _der(0x31, self._digest_alg_der),
            _der(0x30, _TST_INFO_OID + _der(0xA0, _der(0x04, tst_der))),
            _der(0xA0, self._cert_der) if include_certificate else b"",
            _der(0x31, signer_info))))
        return _der(0x30, _SIGNED_DATA_OID + _der(0xA0, signed_data))

    def _sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def _signature_algorithms(key: TsaKey) -> tuple[str, dict[str, Any]]:
    """(digest algorithm, SignerInfo signatureAlgorithm): the key's own hash and key type."""
    digest = key.digest_algorithm
    public_key = key.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return digest, {"algorithm": f"{digest}_ecdsa"}
    if isinstance(public_key, rsa.RSAPublicKey):
        return digest, {"algorithm": "rsassa_pkcs1v15", "parameters": None}
    raise InvalidInput(said("a TSA cannot sign with a {name}", name=type(public_key).__name__))


def _ess_signing_certificate_v2(cert_der: bytes, cert: Any) -> Any:
    """ESS signing-certificate-v2: binds the signature to this exact certificate (RFC 5035)."""
    return tsp.SigningCertificateV2(
        {
            "certs": [
                {
                    "cert_hash": hashlib.sha256(cert_der).digest(),  # hashAlgorithm: default
                    "issuer_serial": {
                        "issuer": [asn1_x509.GeneralName({"directory_name": cert.issuer})],
                        "serial_number": cert.serial_number,
                    },
                }
            ]
        }
    )


def _parse_query(query_der: bytes, policy_oid: str) -> _Query:
    """The query's fields, or _Rejected with the failInfo RFC 3161 2.4.2 names."""
    try:
        query = _TimeStampReq.load(query_der, strict=True)
        query.native  # noqa: B018 - parse every field now; asn1crypto is lazy
        # DER only: asn1crypto reads BER and skips what it does not expect (a field added to
        # the imprint, a nonce after certReq), and the imprint is copied into the token as
        # sent. Re-encoded, a DER request gives back its own bytes (an explicit certReq FALSE,
        # a DEFAULT value encoded, is not DER either, and is refused too).
        if query.dump(force=True) != query_der:
            raise ValueError("not DER")
        version = int(query["version"].native)
        imprint = query["message_imprint"]
        oid = str(imprint["hash_algorithm"]["algorithm"].dotted)
        parameters = imprint["hash_algorithm"]["parameters"]
        parameters_der = None if isinstance(parameters, core.Void) else bytes(parameters.dump())
        digest = bytes(imprint["hashed_message"].native)
        policy = query["req_policy"].dotted if query["req_policy"].native is not None else None
        nonce = query["nonce"].native
        cert_req = bool(query["cert_req"].native)
        extensions = query["extensions"].native or []
    except Exception:  # asn1crypto raises many types on bad input
        raise _Rejected("bad_data_format", "the query is not a DER TimeStampReq") from None
    if version != 1:  # never formatted: an INTEGER of 4,301 digits is a ValueError in str()
        raise _Rejected("bad_request", "only TimeStampReq version 1 (v1) is supported")
    name = _OID_TO_HASH.get(oid)
    if name is None:
        accepted = ", ".join(HASH_ALGORITHMS)
        raise _Rejected("bad_alg", f"hash algorithm {oid} is not accepted; use one of {accepted}")
    if parameters_der not in (None, b"\x05\x00"):
        raise _Rejected("bad_alg", "hash algorithm parameters must be absent or NULL")
    if len(digest) != HASH_ALGORITHMS[name][1]:
        raise _Rejected(
            "bad_data_format",
            f"a {name} digest is {HASH_ALGORITHMS[name][1]} bytes, not {len(digest)}",
        )
    if policy is not None and policy != policy_oid:
        raise _Rejected("unaccepted_policy", f"policy {policy} is not offered; {policy_oid} is")
    if extensions:
        raise _Rejected("unaccepted_extensions", "no request extensions are supported")
    if nonce is not None and nonce.bit_length() > MAX_NONCE_BITS:
        raise _Rejected("bad_request", f"the nonce is over {MAX_NONCE_BITS} bits")
    # Copied into the TSTInfo exactly as the client sent it (RFC 3161 2.4.2).
    copied = tsp.MessageImprint.load(bytes(imprint.dump()))
    return _Query(imprint=copied, nonce=nonce, cert_req=cert_req)


def _rejection(fail_info: str, text: str) -> bytes:
    return bytes(
        TimeStampResp(
            {
                "status": {
                    "status": "rejection",
                    "status_string": [text],
                    "fail_info": {fail_info},
                }
            }
        ).dump()
    )


def _der(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


@functools.cache
def _imprint_alg_der(hash_alg: str) -> bytes:
    return cms.DigestAlgorithm({"algorithm": hash_alg, "parameters": None}).dump()  # type: ignore[no-any-return]


_V1 = core.Integer(1).dump()
_V3 = core.Integer(3).dump()
_SIGNED_DATA_OID = cms.ContentType("signed_data").dump()
_TST_INFO_OID = cms.ContentType("tst_info").dump()
_SIGNING_TIME_OID = cms.CMSAttributeType("signing_time").dump()
_MESSAGE_DIGEST_OID = cms.CMSAttributeType("message_digest").dump()
_CONTENT_TYPE_ATTR = cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}).dump()


def _cms_time(when: datetime) -> Any:
    """UTCTime through 2049, GeneralizedTime after, as RFC 5652 11.3 requires."""
    kind = "utc_time" if 1950 <= when.year < 2050 else "generalized_time"
    return cms.Time({kind: when.replace(microsecond=0)})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _random_serial() -> int:
    return secrets.randbelow(2**128 - 1) + 1


# --------------------------------------------------------------------------------------------
# The TSA's certificate chain: create one, take an operator's own, load it for signing.
#
# A relying party (a court, `openssl ts -verify`) trusts a time-stamp because it trusts a root
# certificate and the root vouches for a key that signs time-stamps and nothing else. So the TSA
# certificate carries a *critical* extendedKeyUsage of id-kp-timeStamping only (RFC 3161 2.3) and
# the chain is checked on every load, not merely when it is created.
#
# On disk, in one directory:
#
# - `root.pem`     the trust anchor(s) to publish; what verifiers pass as -CAfile;
# - `tsa.pem`      the TSA certificate first, then any intermediates; what they pass as -untrusted;
# - `tsa-key.pem`  the TSA's PKCS#8 private key, mode 0600, optionally passphrase-encrypted.
#
# `create_tsa_chain` makes a fresh root whose private key is used once and then discarded unless
# the caller asks for it to be kept (`root_key_path`): a root that can sign nothing more is the
# safest root, at the price of publishing a new root when the TSA certificate is rotated.
#
# The TSA key may instead live in an HSM (notary.pkcs11): anything that is a `TsaKey` — it signs
# and shows its public key, but cannot be exported — is certified by `create_tsa_chain(...,
# tsa_key=...)` and used through `load_tsa(..., tsa_key=...)`; then there is no `tsa-key.pem`.

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
        raise InvalidInput(said("a TSA cannot sign with a {name}", name=type(key).__name__))
    if key.digest_algorithm not in HASH_CLASSES:
        raise InvalidInput(said("a TSA key cannot sign with {digest_algorithm!r}",
                                digest_algorithm=key.digest_algorithm))
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
    files = [(paths.root, root.public_bytes(serialization.Encoding.PEM), False)]
    if file_key is not None:
        files.insert(0, (paths.key, _private_pem(file_key, passphrase), True))
    if root_key_path is not None:
        files.append((Path(root_key_path), _private_pem(root_key, passphrase), True))
    files.append((paths.certificate, tsa.public_bytes(serialization.Encoding.PEM), False))
    _write_all(files)
    return paths


def set_aside_unfinished(paths: TsaChainPaths) -> None:
    """Make room for a chain that a stopped creation (kill -9, power lost) left unfinished.

    A chain's certificate is written last, so a key or root with no certificate beside it is
    such a leftover: its key never signed a token, since a TSA loads only a whole chain. Each
    is renamed `<name>.unfinished-<UTC time>` (kept, not deleted) and logged; nothing is
    touched where the certificate exists. Whether a chain that is missing was made
    and lost is for the caller to rule out first (`service.node`'s lost-key check)."""
    if paths.certificate.exists():
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for path in (paths.key, paths.root):
        if path.exists():
            dest = path.with_name(f"{path.name}.unfinished-{stamp}")
            os.rename(path, dest)
            log.warning("set aside %s: left by a chain's creation that stopped before its "
                        "certificate was written (never used to sign)", dest)


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
    certs = _parse_certs(cert_pem, said("TSA certificate"))
    issuers = _parse_certs(chain_pem, said("certificate chain"))
    roots = [c for c in issuers if self_signed(c)]
    if not roots:
        raise InvalidInput("the certificate chain must include the self-signed root to publish")
    intermediates = [c for c in [*certs[1:], *issuers] if c not in roots]
    key = _load_private_key(key_pem, passphrase, said("the TSA key"))
    _check_identity(certs[0], intermediates + roots, key, datetime.now(UTC))

    paths = TsaChainPaths.in_directory(directory)
    _refuse_existing([paths.key, paths.certificate, paths.root])
    pem = serialization.Encoding.PEM
    _write_all(
        [
            (paths.key, key_pem, True),
            (paths.root, b"".join(c.public_bytes(pem) for c in roots), False),
            (paths.certificate, b"".join(c.public_bytes(pem) for c in [certs[0], *intermediates]),
             False),
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
    certs = _parse_certs(_read(paths.certificate, said("TSA certificate")), str(paths.certificate))
    roots = _parse_certs(_read(paths.root, said("TSA root certificate")), str(paths.root))
    key: TsaPrivateKey | TsaKey
    if tsa_key is not None:
        key = as_tsa_key(tsa_key)
    else:
        key = _load_private_key(_read(paths.key, said("TSA key")), passphrase,
                                said("key file {path}", path=paths.key))
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
        raise InvalidInput(said("not a usable TSA certificate: {detail}",
                                detail=exc.detail)) from None
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != cert.public_key().public_bytes(*public):
        raise InvalidInput("the TSA key does not match the TSA certificate")
    roots = [c for c in issuers if self_signed(c)]
    try:
        validate_chain(cert, [c for c in issuers if c not in roots], roots, at=now)
    except TimestampError as exc:
        raise InvalidInput(said("the TSA certificate chain is not usable: {detail}",
                                detail=exc.detail)) from None


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


def self_signed(cert: x509.Certificate) -> bool:
    """A root: its own issuer, and its signature verifies under its own key."""
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
        raise InvalidInput(said("no {what} at {path}", what=what, path=path)) from None
    except OSError as exc:
        raise InvalidInput(said("cannot read {what} {path}: {strerror}",
                                what=what, path=path, strerror=exc.strerror)) from None


def _parse_certs(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise InvalidInput(said("{what}: no PEM certificate could be read", what=what)) from None
    return list(certs)


def _load_private_key(pem: bytes, passphrase: bytes | None, what: str) -> TsaPrivateKey:
    """An EC or RSA private key from PEM, with one clear message for each way that fails."""
    key = load_private_pem(pem, passphrase, what)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidInput(said("{what} holds a {name}; a TSA needs an EC or RSA key",
                                what=what, name=type(key).__name__))
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise InvalidInput(said("{what} is a {key_size}-bit RSA key; at least 2048 bits needed",
                                what=what, key_size=key.key_size))
    return key


def _refuse_existing(paths: list[Path]) -> None:
    for path in paths:
        if path.exists():
            raise Conflict(said("{path} already exists; refusing to overwrite a TSA chain",
                                path=path))
        path.parent.mkdir(parents=True, exist_ok=True)


def _write_all(files: list[tuple[Path, bytes, bool]]) -> None:
    """Write each new file (private ones 0600, certificates 0644); on failure remove them all.
    The TSA certificate comes last: a chain is whole once it exists (`set_aside_unfinished`)."""
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


