"""Offline verification of RFC 3161 time-stamp tokens (ours and external TSAs').

A court's expert must be able to check a token with nothing but this file, `cryptography` and
`asn1crypto`: no server code, no network, no revocation lookups. What is checked, in order:

1. the token is a CMS SignedData (RFC 5652) whose eContentType is id-ct-TSTInfo, with exactly
   one SignerInfo carrying signed attributes;
2. the TSTInfo is version 1 and its messageImprint equals the digest being verified (and the
   nonce, if the caller expects one);
3. the contentType attribute is id-ct-TSTInfo and the messageDigest attribute is the hash of the
   encapsulated TSTInfo bytes exactly as they were signed;
4. the ESS signing-certificate(-v2) attribute (RFC 2634 / RFC 5035) names the signer certificate,
   so the certificate cannot be swapped for another one with the same key;
5. the signature over the DER SET OF signed attributes verifies with the signer's public key;
6. the signer certificate carries only id-kp-timeStamping in a critical extendedKeyUsage
   (RFC 3161 section 2.3) and chains to one of the given roots, every certificate being valid at
   genTime (the time the TSA vouches for; the token is evidence of that moment, not of today);
7. a `tsa` name in the TSTInfo, if present, names the signer certificate.

Hash algorithms: SHA-256, SHA-384 and SHA-512 only. SHA-1 and MD5 are refused everywhere
because a stamp over a colliding digest is a stamp over two documents.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from asn1crypto import cms, core, parser, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from copyledger.ledger.errors import VerificationError, said

__all__ = [
    "HASH_ALGORITHMS",
    "HASH_CLASSES",
    "TimeStampResp",
    "TimestampError",
    "TokenInfo",
    "check_tsa_certificate",
    "load_pem_certs",
    "token_from_response",
    "validate_chain",
    "verify_token",
]

#: Accepted digest algorithms: asn1crypto name -> (dotted OID, digest size in bytes).
HASH_ALGORITHMS: dict[str, tuple[str, int]] = {
    "sha256": ("2.16.840.1.101.3.4.2.1", 32),
    "sha384": ("2.16.840.1.101.3.4.2.2", 48),
    "sha512": ("2.16.840.1.101.3.4.2.3", 64),
}
HASH_CLASSES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
#: The `tsa` the registry keeps its own TSA's tokens under (block_timestamps, bundles).
TSA_LABEL = "notary"
_MAX_CHAIN = 8


class TimeStampResp(core.Sequence):  # type: ignore[misc]
    """RFC 3161 TimeStampResp. asn1crypto's own makes timeStampToken mandatory, so it can
    neither write nor read a refusal; in the RFC the token is OPTIONAL."""

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class TimestampError(VerificationError):
    """A time-stamp token or reply is malformed or does not verify; `extra["reason"]` says how."""


@dataclass(frozen=True)
class TokenInfo:
    """What a verified token attests: this digest existed at gen_time, per this TSA."""

    gen_time: datetime
    serial_number: int
    policy: str
    hash_alg: str
    message_digest: bytes
    nonce: int | None
    accuracy: timedelta | None
    tsa_certificate: x509.Certificate
    root: x509.Certificate | None = None  # the trusted root the TSA certificate chains to


@dataclass(frozen=True)
class _Token:
    """The parts of a token that verification needs, as plain values."""

    tst_info: Any  # asn1crypto tsp.TSTInfo
    econtent: bytes
    certificates_der: bytes  # the CertificateSet as received (empty if absent)
    sid_der: bytes  # the SignerIdentifier as received
    digest_alg: str
    signature_alg: Any  # asn1crypto algos.SignedDigestAlgorithm
    signature: bytes
    signed_attrs_der: bytes
    attrs: dict[str, list[Any]]


def _fail(reason: str, detail: str) -> TimestampError:
    return TimestampError(detail, reason=reason)


def _hash_name(algorithm: Any) -> str:
    """The accepted hash name for an asn1crypto DigestAlgorithm, or TimestampError."""
    name = str(algorithm["algorithm"].native)
    if name not in HASH_ALGORITHMS:
        raise _fail("unsupported-hash", said("hash algorithm {name} is not accepted", name=name))
    return name


def token_from_response(response_der: bytes) -> bytes:
    """The TimeStampToken (DER ContentInfo) in a granted TimeStampResp; TimestampError if not.

    Meant for replies from external TSAs too, so a refusal names its status and failInfo.
    """
    try:
        response = TimeStampResp.load(response_der, strict=True)
        status = response["status"]
        code = int(status["status"])
        text = status["status_string"].native or []
        fail_info = sorted(status["fail_info"].native or ())
        token = response["time_stamp_token"]
        token_der = None if isinstance(token, core.Void) else bytes(token.dump())
    except Exception as exc:  # asn1crypto raises many types on bad input
        raise _fail("malformed-response", said("not a DER TimeStampResp: {exc}", exc=exc)) from None
    if code not in (0, 1):  # granted, grantedWithMods
        detail = f"the TSA refused the request (status {code}"
        detail += f", failInfo {', '.join(fail_info)}" if fail_info else ""
        detail += f": {' '.join(text)})" if text else ")"
        raise TimestampError(detail, reason="not-granted", status=code, fail_info=fail_info)
    if token_der is None:
        raise _fail("malformed-response", "the reply says granted but holds no token")
    return token_der


def verify_token(
    token_der: bytes,
    digest: bytes,
    roots_pem: bytes,
    *,
    untrusted_pem: bytes | None = None,
    nonce: int | None = None,
) -> TokenInfo:
    """Verify a DER TimeStampToken over digest against trusted roots; see the module docstring.

    untrusted_pem may hold the TSA certificate and intermediates when the token does not embed
    them (a query with certReq false). Raises TimestampError on any failure.
    """
    try:
        return _verify_token(token_der, digest, roots_pem, untrusted_pem, nonce)
    except TimestampError:
        raise
    except Exception as exc:  # fail closed: asn1crypto parses lazily and raises many types
        raise _fail("malformed-token", said("not a valid RFC 3161 token: {exc}", exc=exc)) from None


def _verify_token(
    token_der: bytes,
    digest: bytes,
    roots_pem: bytes,
    untrusted_pem: bytes | None,
    nonce: int | None,
) -> TokenInfo:
    if not _load_pem_certs(roots_pem, said("roots")):
        raise _fail("no-roots", "no trusted root certificate given")
    token = _parse_token(token_der)
    tst = token.tst_info

    # 2. What the token says.
    if tst["version"].native != "v1":
        raise _fail("bad-version", said("TSTInfo version {version} is not 1",
                                     version=tst["version"].native))
    imprint_alg = _hash_name(tst["message_imprint"]["hash_algorithm"])
    imprint = bytes(tst["message_imprint"]["hashed_message"].native)
    if len(imprint) != HASH_ALGORITHMS[imprint_alg][1]:  # (as OpenSSL's ts_check_imprints)
        raise _fail("imprint-mismatch", "the token's message imprint is not of its hash's size")
    if not hmac.compare_digest(imprint, digest):
        raise _fail("imprint-mismatch", "the token stamps a different digest")
    token_nonce = tst["nonce"].native
    if nonce is not None and token_nonce != nonce:
        raise _fail("nonce-mismatch", "the token does not echo the expected nonce")
    gen_time = tst["gen_time"].native
    if not isinstance(gen_time, datetime) or gen_time.tzinfo is None:
        raise _fail("malformed-token", "genTime is not a UTC GeneralizedTime")
    gen_time = gen_time.astimezone(UTC)

    # 3. The signed attributes commit to this TSTInfo.
    content_types = [v.native for v in token.attrs.get("content_type", [])]
    if content_types != ["tst_info"]:
        raise _fail("bad-attributes", "the contentType attribute is not id-ct-TSTInfo")
    digests = token.attrs.get("message_digest", [])
    if len(digests) != 1:
        raise _fail("bad-attributes", "there must be exactly one messageDigest attribute")
    econtent_hash = hashlib.new(token.digest_alg, token.econtent).digest()
    if not hmac.compare_digest(bytes(digests[0].native), econtent_hash):
        raise _fail("content-digest-mismatch", "messageDigest is not the hash of the TSTInfo")

    # 4-6. The signer certificate (named by the ESS attribute), a TSA certificate from a
    # trusted root, valid at genTime; then the signature.
    v2 = "signing_certificate_v2" in token.attrs
    ess = token.attrs.get("signing_certificate_v2") or token.attrs.get("signing_certificate")
    signer, path = _signer_of(
        token.certificates_der, untrusted_pem or b"", token.sid_der,
        ess[0].dump() if ess and len(ess) == 1 else b"", len(ess or ()), v2, roots_pem,
    )
    for cert in path:
        _check_validity(cert, gen_time)
    _verify_signature(signer, token)

    # 7. A tsa name, if given, must be the signer's.
    tsa = tst["tsa"]
    if not isinstance(tsa, core.Void):
        # [0] EXPLICIT: the GeneralName is the tag's content.
        _check_tsa_name(parser.parse(tsa.dump())[4], _cert_der(signer))

    return TokenInfo(
        gen_time=gen_time,
        serial_number=int(tst["serial_number"].native),
        policy=str(tst["policy"].dotted),
        hash_alg=imprint_alg,
        message_digest=imprint,
        nonce=token_nonce,
        accuracy=_accuracy(tst["accuracy"]),
        tsa_certificate=signer,
        root=path[-1],
    )


def check_tsa_certificate(cert: x509.Certificate) -> None:
    """RFC 3161 section 2.3 (as OpenSSL enforces it): EKU is exactly id-kp-timeStamping and
    critical; keyUsage, if present, is digitalSignature and/or nonRepudiation only."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise _fail("not-a-tsa", "the TSA certificate has no extendedKeyUsage") from None
    if not eku.critical:
        raise _fail("not-a-tsa", "the TSA certificate's extendedKeyUsage is not critical")
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise _fail(
            "not-a-tsa", "the TSA certificate's extendedKeyUsage must be id-kp-timeStamping only"
        )
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    signing = ku.digital_signature or ku.content_commitment
    other = ku.key_cert_sign or ku.crl_sign or ku.key_encipherment or ku.data_encipherment
    if not signing or other or ku.key_agreement:
        raise _fail(
            "not-a-tsa",
            "the TSA certificate's keyUsage must be digitalSignature and/or nonRepudiation only",
        )


def validate_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: datetime,
) -> list[x509.Certificate]:
    """The path from leaf to a trusted root (leaf first), every certificate valid at `at`.

    A deliberately small path builder: issuer by name and signature, CA flag and keyCertSign on
    every issuer, pathLenConstraint honoured, no revocation (this runs offline). A root given as
    trusted is a trust anchor even if it is not self-signed; the leaf itself may be one. The
    path depends only on the certificates, so it is built once per distinct set of them; the
    validity at `at` is checked on every call.
    """
    _check_validity(leaf, at)
    path = _build_path(
        _cert_der(leaf),
        tuple(_cert_der(c) for c in intermediates),
        tuple(_cert_der(c) for c in roots),
    )
    for cert in path[1:]:
        _check_validity(cert, at)
    return list(path)


@functools.lru_cache(maxsize=64)
def _build_path(
    leaf_der: bytes, intermediate_ders: tuple[bytes, ...], root_ders: tuple[bytes, ...]
) -> tuple[x509.Certificate, ...]:
    leaf = x509.load_der_x509_certificate(leaf_der)
    intermediates = [x509.load_der_x509_certificate(d) for d in intermediate_ders]
    roots = [x509.load_der_x509_certificate(d) for d in root_ders]
    path = [leaf]
    current = leaf
    while current not in roots:
        if len(path) > _MAX_CHAIN:
            raise _fail("untrusted", "certificate chain too long")
        issuer = _find_issuer(current, roots) or _find_issuer(current, intermediates)
        if issuer is None or issuer in path:
            raise _fail(
                "untrusted",
                said("the certificate {subject} does not chain to a trusted root",
                     subject=current.subject.rfc4514_string()),
            )
        _check_ca(issuer, cas_below=len(path) - 1)
        path.append(issuer)
        current = issuer
    return tuple(path)


def _find_issuer(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _check_ca(cert: x509.Certificate, *, cas_below: int) -> None:
    name = cert.subject.rfc4514_string()
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise _fail("untrusted", said("issuer {name} is not a CA (no basicConstraints)",
                                             name=name)) from None
    if not bc.ca:
        raise _fail("untrusted", said("issuer {name} is not a CA", name=name))
    if bc.path_length is not None and cas_below > bc.path_length:
        raise _fail("untrusted", said("issuer {name}'s pathLenConstraint is exceeded",
                                         name=name))
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.key_cert_sign:
        raise _fail("untrusted", said("issuer {name} may not sign certificates (keyUsage)",
                                         name=name))


def _check_validity(cert: x509.Certificate, at: datetime) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise _fail(
            "expired",
            said("the certificate {subject} was not valid at {at}",
                 subject=cert.subject.rfc4514_string(), at=at.isoformat()),
        )


def load_certificate(der: bytes) -> x509.Certificate:
    """A DER certificate, refused if its serial number is not positive (RFC 5280 4.1.2.2).

    cryptography only warns on such a serial today and will refuse to read it later; a token
    can carry any certificate, so the verifier refuses it itself, under every version alike.
    """
    try:
        serial = asn1_x509.Certificate.load(der)["tbs_certificate"]["serial_number"].native
    except Exception:  # asn1crypto raises many types; cryptography below says what is wrong
        serial = None
    if isinstance(serial, int) and serial <= 0:
        raise _fail("bad-certificate",
                    "a certificate's serial number is not positive (RFC 5280 4.1.2.2)")
    return x509.load_der_x509_certificate(der)


def load_pem_certs(pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle (none if it holds none); TimestampError if unreadable."""
    return _load_pem_certs(pem, said("certificates"))


def _load_pem_certs(pem: bytes, what: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        return []
    try:
        return list(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise _fail("bad-certificate",
                    said("cannot read the {what}: {exc}", what=what, exc=exc)) from None


def _parse_token(token_der: bytes) -> _Token:
    """Take the token apart; any structural surprise is a malformed-token TimestampError."""
    try:
        info = cms.ContentInfo.load(token_der, strict=True)
        if info["content_type"].native != "signed_data":
            raise ValueError("not a CMS SignedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise ValueError("eContentType is not id-ct-TSTInfo")
        econtent = bytes(encap["content"])
        tst_info = tsp.TSTInfo.load(econtent, strict=True)
        tst_info.native  # noqa: B018 - parse every field now, not lazily during the checks
        certificates = signed["certificates"]
        # [0] IMPLICIT as received; kept as a universal SET, like the signed attributes below.
        certificates_der = (
            b"" if isinstance(certificates, core.Void) else b"\x31" + certificates.dump()[1:]
        )
        signer_infos = signed["signer_infos"]
        if len(signer_infos) != 1:
            raise ValueError(f"{len(signer_infos)} SignerInfos, expected exactly one")
        si = signer_infos[0]
        signed_attrs = si["signed_attrs"]
        # The signature covers the attributes as a universal SET (tag 0x31), not as the [0]
        # IMPLICIT field they travel in (RFC 5652 section 5.4); the bytes as received are kept.
        # Taken before anything else is parsed: asn1crypto normalises some values while parsing
        # (NULL algorithm parameters), after which dump() re-encodes the whole structure. The
        # rest of the SignerInfo is parsed as the checks read it; a parse error there is still
        # a malformed-token error (verify_token catches every exception).
        raw = signed_attrs.dump()
        if not signed_attrs:
            raise ValueError("the SignerInfo has no signed attributes")
        signed_attrs_der = b"\x31" + raw[1:]
        attrs: dict[str, list[Any]] = {}
        for attr in signed_attrs:
            name = str(attr["type"].native)
            if name in attrs:
                raise ValueError(f"the {name} attribute appears twice")
            attrs[name] = list(attr["values"])
        return _Token(
            tst_info=tst_info,
            econtent=econtent,
            certificates_der=certificates_der,
            sid_der=si["sid"].dump(),
            digest_alg=_hash_name(si["digest_algorithm"]),
            signature_alg=si["signature_algorithm"],
            signature=bytes(si["signature"].native),
            signed_attrs_der=signed_attrs_der,
            attrs=attrs,
        )
    except TimestampError:
        raise
    except Exception as exc:  # asn1crypto raises many types on bad input
        raise _fail("malformed-token", said("not a valid RFC 3161 token: {exc}", exc=exc)) from None


@functools.lru_cache(maxsize=64)
def _signer_of(
    certificates_der: bytes,
    untrusted_pem: bytes,
    sid_der: bytes,
    ess_der: bytes,
    ess_count: int,
    ess_v2: bool,
    roots_pem: bytes,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """The signer certificate and its path to a trusted root (validity aside).

    All of it depends only on these bytes, which are the same for every token a TSA key
    issues, so an audit of a million blocks works it out once: the certificate the
    SignerIdentifier names, which the ESS signing-certificate attribute (its one value,
    `ess_der`) must identify (RFC 3161 2.4.1), with the TSA profile, chaining to a root.
    """
    roots = _load_pem_certs(roots_pem, said("roots"))
    extra = _load_pem_certs(untrusted_pem, said("untrusted certificates")) if untrusted_pem else []
    carried = [
        load_certificate(choice.chosen.dump())
        for choice in (cms.CertificateSet.load(certificates_der) if certificates_der else [])
        if choice.name == "certificate"
    ]
    signer = _find_signer(cms.SignerIdentifier.load(sid_der), [*carried, *extra])
    if ess_count == 0:
        raise _fail("no-ess-certid", "no ESS signing-certificate attribute (RFC 3161 2.4.1)")
    if ess_count != 1:
        raise _fail("no-ess-certid", "the ESS signing-certificate attribute is malformed")
    _check_ess((tsp.SigningCertificateV2 if ess_v2 else tsp.SigningCertificate).load(ess_der),
               signer)
    check_tsa_certificate(signer)
    intermediates = [c for c in [*carried, *extra] if c != signer]
    path = _build_path(
        _cert_der(signer),
        tuple(_cert_der(c) for c in intermediates),
        tuple(_cert_der(c) for c in roots),
    )
    return signer, path


def _find_signer(sid: Any, certificates: Sequence[x509.Certificate]) -> x509.Certificate:
    for cert in certificates:
        if _matches_sid(sid, cert):
            return cert
    raise _fail(
        "no-signer-certificate",
        "the signer's certificate is neither in the token nor among the untrusted certificates",
    )


def _matches_sid(sid: Any, cert: x509.Certificate) -> bool:
    if sid.name == "issuer_and_serial_number":
        chosen = sid.chosen
        return bool(
            chosen["serial_number"].native == cert.serial_number
            and _same_name(chosen["issuer"].dump(), _cert_der(cert), "issuer")
        )
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return bool(sid.chosen.native == ski)


def _check_ess(value: Any, signer: x509.Certificate) -> None:
    """The first ESS cert id must hash to the signer certificate (and name it, if it says)."""
    if len(value["certs"]) == 0:
        raise _fail("no-ess-certid", "the ESS signing-certificate attribute is malformed")
    cert_id = value["certs"][0]
    # ESSCertID (v1) is SHA-1 by definition (RFC 2634); it identifies, it does not sign.
    if isinstance(cert_id, tsp.ESSCertID):
        alg = "sha1"
    else:
        alg = cert_id["hash_algorithm"]["algorithm"].native
    if alg != "sha1" and alg not in HASH_ALGORITHMS:
        raise _fail("no-ess-certid", said("ESS cert id hash {alg} is not supported",
                                         alg=alg))
    der = signer.public_bytes(serialization.Encoding.DER)
    if not hmac.compare_digest(bytes(cert_id["cert_hash"].native), hashlib.new(alg, der).digest()):
        raise _fail("ess-mismatch", "the ESS cert id does not match the signer certificate")
    issuer_serial = cert_id["issuer_serial"]
    if issuer_serial.native is None:
        return
    der = _cert_der(signer)
    named = any(
        name.name == "directory_name" and _same_name(name.chosen.untag().dump(), der, "issuer")
        for name in issuer_serial["issuer"]
    )
    if not named or issuer_serial["serial_number"].native != signer.serial_number:
        raise _fail("ess-mismatch", "the ESS issuerSerial does not name the signer certificate")


def _verify_signature(signer: x509.Certificate, token: _Token) -> None:
    """ECDSA or RSA PKCS#1 v1.5 (what TSAs use); RSA-PSS and others are refused, not guessed."""
    sig_alg = token.signature_alg
    kind = sig_alg.signature_algo
    try:
        embedded = sig_alg.hash_algo
    except ValueError:  # plain rsaEncryption or id-ecPublicKey: digestAlgorithm says which hash
        embedded = None
    if embedded is not None and embedded != token.digest_alg:
        raise _fail("bad-signature", "signatureAlgorithm and digestAlgorithm disagree")
    hash_alg = HASH_CLASSES[token.digest_alg]()
    key = signer.public_key()
    try:
        if kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(token.signature, token.signed_attrs_der, ec.ECDSA(hash_alg))
        elif kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(token.signature, token.signed_attrs_der, padding.PKCS1v15(), hash_alg)
        else:
            raise _fail(
                "bad-signature", said("signature algorithm {kind} with this key is not supported",
                                  kind=kind)
            )
    except InvalidSignature:
        raise _fail("bad-signature", "the token's signature does not verify") from None


@functools.lru_cache(maxsize=64)
def _check_tsa_name(name_der: bytes, der: bytes) -> None:
    """As OpenSSL does: the name (a DER GeneralName) is the signer's subject or one of its
    subjectAltNames."""
    name = asn1_x509.GeneralName.load(name_der)
    if name.name == "directory_name" and _same_name(name.chosen.untag().dump(), der, "subject"):
        return
    alt_names = _asn1_cert(der).subject_alt_name_value
    if alt_names is not None and any(n.dump() == name.dump() for n in alt_names):
        return
    raise _fail("tsa-name-mismatch", "the TSTInfo's tsa name does not name the signer")


def _accuracy(accuracy: Any) -> timedelta | None:
    if accuracy.native is None:
        return None
    value = accuracy.native
    return timedelta(
        seconds=value.get("seconds") or 0,
        milliseconds=value.get("millis") or 0,
        microseconds=value.get("micros") or 0,
    )


def _cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# An audit checks one token per block, nearly all from the same few certificates; what depends
# only on certificate and name bytes is worked out once per distinct bytes (bounded caches).


@functools.lru_cache(maxsize=64)
def _asn1_cert(der: bytes) -> Any:
    return asn1_x509.Certificate.load(der)


@functools.lru_cache(maxsize=256)
def _same_name(name_der: bytes, cert_der: bytes, which: str) -> bool:
    """X.501 name equality as RFC 5280 7.1 compares (asn1crypto's, with string preparation),
    between a DER Name and the issuer or subject of a DER certificate."""
    cert = _asn1_cert(cert_der)
    return bool(asn1_x509.Name.load(name_der) == (cert.issuer if which == "issuer"
                                                   else cert.subject))
