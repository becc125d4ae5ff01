"""An RFC 3161 time-stamping authority: TimeStampReq in, TimeStampResp out.

Tokens are CMS SignedData (RFC 5652) over a DER TSTInfo, with signed attributes contentType,
signingTime, messageDigest and ESS signing-certificate-v2 (RFC 5035, as RFC 5816 allows), so
`openssl ts -verify`, rfc3161-client and ledger.timestamp.verify_token all accept them.

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
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from asn1crypto import cms, core, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from copyledger.ledger.errors import InvalidInput, Unavailable
from copyledger.ledger.timestamp import HASH_ALGORITHMS, TimeStampResp
from copyledger.notary.tsa_certs import TsaIdentity, TsaKey, as_tsa_key

__all__ = ["DEFAULT_POLICY_OID", "TimeStampAuthority"]

log = logging.getLogger("copyledger.tsa")

#: copyledger's placeholder TSA policy: UUID dc8c2867-a018-448c-933b-56c5f61b63ec as an OID
#: (X.667), then .1 for version 1 of the policy.
DEFAULT_POLICY_OID = "2.25.293157900139308192448035689079653491692.1"

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
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
            raise InvalidInput(f"{policy_oid!r} is not a dotted OID")
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
            raise InvalidInput(f"hash algorithm {hash_alg!r} is not accepted")
        if len(digest) != HASH_ALGORITHMS[hash_alg][1]:
            raise InvalidInput(f"a {hash_alg} digest is {HASH_ALGORITHMS[hash_alg][1]} bytes")
        imprint = tsp.MessageImprint(
            {
                "hash_algorithm": {"algorithm": hash_alg, "parameters": None},
                "hashed_message": digest,
            }
        )
        try:
            token = self._token(imprint, nonce, include_certificate=include_certificate)
        except _Rejected as rejected:
            raise Unavailable(rejected.text) from None
        return bytes(token.dump())

    def _token(self, imprint: Any, nonce: int | None, *, include_certificate: bool) -> Any:
        """The signed token, as an asn1crypto cms.ContentInfo."""
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

        tst_fields: dict[str, Any] = {
            "version": "v1",
            "policy": self.policy_oid,
            "message_imprint": imprint,
            "serial_number": serial,
            "gen_time": gen_time,
            "tsa": asn1_x509.GeneralName.load(self._tsa_name_der),
        }
        if self.accuracy_ms:
            seconds, millis = divmod(self.accuracy_ms, 1000)
            tst_fields["accuracy"] = {
                key: value
                for key, value in (("seconds", seconds), ("millis", millis))
                if value
            }
        if nonce is not None:
            tst_fields["nonce"] = nonce
        tst_der = tsp.TSTInfo(tst_fields).dump()

        signed_attrs = cms.CMSAttributes(
            [
                {"type": "content_type", "values": ["tst_info"]},
                {"type": "signing_time", "values": [_cms_time(gen_time)]},
                {
                    "type": "message_digest",
                    "values": [hashlib.new(self._digest_alg, tst_der).digest()],
                },
                cms.CMSAttribute.load(self._ess_der),
            ]
        )
        # Signed as a DER SET OF (tag 0x31), which is what asn1crypto dumps here; it is then
        # carried as the [0] IMPLICIT field with the same contents (RFC 5652 5.4).
        signature = self._sign(signed_attrs.dump())
        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier.load(self._sid_der),
                "digest_algorithm": {"algorithm": self._digest_alg, "parameters": None},
                "signed_attrs": signed_attrs,
                "signature_algorithm": self._signature_alg,
                "signature": signature,
            }
        )
        signed_data: dict[str, Any] = {
            "version": "v3",  # eContentType is not id-data (RFC 5652 5.1)
            "digest_algorithms": [{"algorithm": self._digest_alg, "parameters": None}],
            "encap_content_info": {
                "content_type": "tst_info",
                "content": cms.ParsableOctetString(tst_der),
            },
            "signer_infos": [signer_info],
        }
        if include_certificate:
            signed_data["certificates"] = [asn1_x509.Certificate.load(self._cert_der)]
        return cms.ContentInfo({"content_type": "signed_data", "content": signed_data})

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
    raise InvalidInput(f"a TSA cannot sign with a {type(public_key).__name__}")


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
    if version != 1:
        raise _Rejected("bad_request", f"TimeStampReq version {version} is not supported")
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


def _cms_time(when: datetime) -> Any:
    """UTCTime through 2049, GeneralizedTime after, as RFC 5652 11.3 requires."""
    kind = "utc_time" if 1950 <= when.year < 2050 else "generalized_time"
    return cms.Time({kind: when.replace(microsecond=0)})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _random_serial() -> int:
    return secrets.randbelow(2**128 - 1) + 1

