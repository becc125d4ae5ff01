"""Offline verification of SM2/SM3 RFC 3161 time-stamp tokens (GM/T 0033 style, D51).

An SM-suite registry's TSA issues, beside its ECDSA token over each block hash, a second token
whose messageImprint is the SM3 digest of the block header's RFC 8785 bytes, signed with SM2
over SM3 and the default distinguishing ID 1234567812345678. OpenSSL 3.0 can neither issue nor
verify such a CMS SignedData (`openssl cms -verify` and `ts -verify` refuse it), and
`cryptography` cannot load an SM2 public key, so this module reads the token with asn1crypto and
checks it with `ledger.sm2`; every check is one the `openssl` command line can repeat piece by
piece (docs/verification.md §12.5). What is checked, in order:

1. a CMS SignedData (RFC 5652) with eContentType id-ct-TSTInfo, exactly one SignerInfo with
   signed attributes, digestAlgorithm SM3 and signatureAlgorithm SM2-with-SM3;
2. the TSTInfo is version 1 and its messageImprint is (SM3, the digest being verified);
3. contentType is id-ct-TSTInfo and messageDigest is SM3 of the encapsulated TSTInfo bytes;
4. the signer certificate (carried in the token, named by the SignerIdentifier) is the one the
   ESS signing-certificate-v2 attribute hashes (with SM3), carries only id-kp-timeStamping in a
   critical extendedKeyUsage, and its SM2 key signed the DER SET OF signed attributes;
5. a trusted root (an SM2 CA) signed the signer certificate, both valid at genTime;
6. the TSTInfo's `tsa` name, if present, is the signer certificate's subject.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asn1crypto import cms, core, parser, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509

from copyledger.ledger import sm2
from copyledger.ledger.errors import InvalidInput, VerificationError, said

__all__ = [
    "OID_SM2",
    "OID_SM2_WITH_SM3",
    "OID_SM3",
    "TSA_LABEL",
    "Sm2TimestampError",
    "Sm2TokenInfo",
    "certificate_public_key",
    "load_certificates",
    "verify_certificate_signature",
    "verify_sm2_token",
]

#: The `tsa` the registry keeps its own SM2 tokens under (block_timestamps, bundles).
TSA_LABEL = "notary-sm2"

# GM/T 0006-2012 object identifiers.
OID_SM2 = "1.2.156.10197.1.301"
OID_SM3 = "1.2.156.10197.1.401"
OID_SM2_WITH_SM3 = "1.2.156.10197.1.501"

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


class Sm2TimestampError(VerificationError):
    """An SM2 time-stamp token does not verify; `extra["reason"]` says how."""


@dataclass(frozen=True)
class Sm2TokenInfo:
    """What a verified SM2 token attests: this SM3 digest existed at gen_time, per this TSA."""

    gen_time: datetime
    serial_number: int
    policy: str
    accuracy: timedelta | None
    tsa_subject: str  # the signer certificate's subject, as RFC 4514 text
    tsa_certificate_sm3: str  # SM3 (hex) of the signer certificate's DER
    root_sha256: str  # SHA-256 (hex) of the trusted root's DER


def _fail(reason: str, detail: str) -> Sm2TimestampError:
    return Sm2TimestampError(detail, reason=reason)


def load_certificates(pem: bytes) -> list[bytes]:
    """The DER certificates of a PEM bundle (SM2 ones included, which `cryptography` cannot
    load); InvalidInput if a PEM block is not base64."""
    out = []
    for m in _PEM.finditer(pem):
        try:
            out.append(base64.b64decode(b"".join(m.group(1).split()), validate=True))
        except ValueError:
            raise InvalidInput("a PEM certificate is not base64") from None
    return out


def _children(der: bytes) -> list[bytes]:
    """The DER elements (header included) inside the constructed element der, as received."""
    _, _, _, _, contents, _ = parser.parse(der, strict=True)
    out, at = [], 0
    while at < len(contents):
        header, body = parser.parse(contents[at:])[3:5]
        out.append(header + body)
        at += len(header) + len(body)
    return out


def certificate_public_key(cert_der: bytes) -> bytes:
    """The 65-byte SM2 public key of a certificate; InvalidInput unless its key is SM2's."""
    tbs = _children(cert_der)[0]
    fields = _children(tbs)
    start = 1 if fields[0][0] == 0xA0 else 0  # [0] EXPLICIT version
    spki = fields[start + 5]
    if len(spki) != 91 or sm2.public_key_der(spki[-65:]) != spki:
        raise InvalidInput("the certificate's key is not an SM2 key")
    return spki[-65:]


def verify_certificate_signature(cert_der: bytes, issuer_public_key: bytes) -> bool:
    """True if issuer_public_key signed the certificate with SM2-with-SM3 (default ID)."""
    parts = _children(cert_der)
    if len(parts) != 3:
        return False
    alg = asn1_x509.Certificate.load(cert_der)["signature_algorithm"]["algorithm"].dotted
    if alg != OID_SM2_WITH_SM3 or parts[2][0] != 0x03 or len(parts[2]) < 4:
        return False
    body = parser.parse(parts[2])[4]
    if body[:1] != b"\x00":
        return False
    return sm2.verify(issuer_public_key, parts[0], body[1:])


def verify_sm2_token(token_der: bytes, digest: bytes, roots_pem: bytes) -> Sm2TokenInfo:
    """Verify a DER SM2 TimeStampToken over an SM3 digest against trusted SM2 roots (PEM);
    see the module docstring. Raises Sm2TimestampError (a VerificationError) on any failure."""
    try:
        return _verify(token_der, digest, roots_pem)
    except Sm2TimestampError:
        raise
    except Exception as exc:  # fail closed: asn1crypto parses lazily and raises many types
        raise _fail("malformed-token", said("not a valid SM2 RFC 3161 token: {exc}",
                                                 exc=exc)) from None


def _verify(token_der: bytes, digest: bytes, roots_pem: bytes) -> Sm2TokenInfo:
    roots = load_certificates(roots_pem)
    if not roots:
        raise _fail("no-roots", "no trusted SM2 root certificate given")
    info = cms.ContentInfo.load(token_der, strict=True)
    if info["content_type"].native != "signed_data":
        raise _fail("malformed-token", "the token is not a CMS SignedData")
    signed = info["content"]
    encap = signed["encap_content_info"]
    if encap["content_type"].native != "tst_info":
        raise _fail("malformed-token", "eContentType is not id-ct-TSTInfo")
    signer_infos = signed["signer_infos"]
    if len(signer_infos) != 1:
        raise _fail("malformed-token", "the token must have exactly one SignerInfo")
    si = signer_infos[0]
    raw_attrs = si["signed_attrs"].dump()  # as received, before anything else is parsed
    if not si["signed_attrs"]:
        raise _fail("malformed-token", "the SignerInfo has no signed attributes")
    signed_attrs_der = b"\x31" + raw_attrs[1:]  # signed as a universal SET (RFC 5652 5.4)
    econtent = bytes(encap["content"])
    tst = tsp.TSTInfo.load(econtent, strict=True)
    tst.native  # noqa: B018 - parse every field now
    if signed["version"].native != "v3" or si["version"].native != "v1":
        raise _fail("malformed-token", "SignedData version must be 3 and SignerInfo version 1")
    if [a["algorithm"].dotted for a in signed["digest_algorithms"]] != [OID_SM3]:
        raise _fail("unsupported-hash", "the SignedData's digest algorithms are not SM3 alone")
    if si["digest_algorithm"]["algorithm"].dotted != OID_SM3:
        raise _fail("unsupported-hash", "the SignerInfo's digest algorithm is not SM3")
    if si["signature_algorithm"]["algorithm"].dotted != OID_SM2_WITH_SM3:
        raise _fail("bad-signature", "the signature algorithm is not SM2-with-SM3")

    # 2. What the token says.
    if tst["version"].native != "v1":
        raise _fail("bad-version", "TSTInfo version is not 1")
    imprint = tst["message_imprint"]
    if imprint["hash_algorithm"]["algorithm"].dotted != OID_SM3:
        raise _fail("unsupported-hash", "the messageImprint is not an SM3 digest")
    if not hmac.compare_digest(bytes(imprint["hashed_message"].native), digest):
        raise _fail("imprint-mismatch", "the token stamps a different digest")
    gen_time = tst["gen_time"].native
    if not isinstance(gen_time, datetime) or gen_time.tzinfo is None:
        raise _fail("malformed-token", "genTime is not a UTC GeneralizedTime")
    gen_time = gen_time.astimezone(UTC)

    # 3. The signed attributes commit to this TSTInfo.
    attrs: dict[str, list[Any]] = {}
    for attr in si["signed_attrs"]:
        name = str(attr["type"].native)
        if name in attrs:
            raise _fail("bad-attributes", said("the {name} attribute appears twice", name=name))
        attrs[name] = list(attr["values"])
    if [v.native for v in attrs.get("content_type", [])] != ["tst_info"]:
        raise _fail("bad-attributes", "the contentType attribute is not id-ct-TSTInfo")
    digests = attrs.get("message_digest", [])
    if len(digests) != 1 or not hmac.compare_digest(bytes(digests[0].native), sm2.sm3(econtent)):
        raise _fail("content-digest-mismatch", "messageDigest is not SM3 of the TSTInfo")

    # 4. The signer certificate, bound by ESS, a TSA certificate; then the signature.
    certs = signed["certificates"]
    carried = [] if isinstance(certs, core.Void) else [
        c.chosen.dump() for c in certs if c.name == "certificate"]
    sid = si["sid"]
    if sid.name != "issuer_and_serial_number":
        raise _fail("no-signer-certificate", "the SignerIdentifier is not issuerAndSerialNumber")
    signer = next((d for d in carried if _names(sid.chosen, asn1_x509.Certificate.load(d))), None)
    if signer is None:
        raise _fail("no-signer-certificate", "the token does not carry the signer's certificate")
    cert = asn1_x509.Certificate.load(signer)
    _check_ess(attrs.get("signing_certificate_v2", []), signer, cert)
    _check_tsa_certificate(cert)
    public_key = certificate_public_key(signer)
    if not sm2.verify(public_key, signed_attrs_der, bytes(si["signature"].native)):
        raise _fail("bad-signature", "the token's SM2 signature does not verify")

    # 5. A trusted root signed it; both valid at genTime.
    root = next((r for r in roots if r == signer or _issued_by(signer, r)), None)
    if root is None:
        raise _fail("untrusted", said("the SM2 TSA certificate {subject} does not chain to a "
                                      "trusted SM2 root", subject=cert.subject.human_friendly))
    for c in {signer, root}:
        _check_validity(asn1_x509.Certificate.load(c), gen_time)

    # 6. A tsa name, if given, is the signer's.
    tsa = tst["tsa"]
    if not isinstance(tsa, core.Void) and (
            tsa.name != "directory_name" or tsa.chosen != cert.subject):
        raise _fail("tsa-name-mismatch", "the TSTInfo's tsa name does not name the signer")
    acc = tst["accuracy"].native
    return Sm2TokenInfo(
        gen_time=gen_time,
        serial_number=int(tst["serial_number"].native),
        policy=str(tst["policy"].dotted),
        accuracy=None if acc is None else timedelta(
            seconds=acc.get("seconds") or 0, milliseconds=acc.get("millis") or 0,
            microseconds=acc.get("micros") or 0),
        tsa_subject=cert.subject.human_friendly,
        tsa_certificate_sm3=sm2.sm3(signer).hex(),
        root_sha256=hashlib.sha256(root).hexdigest(),
    )


def _names(iss: Any, cert: Any) -> bool:
    return bool(iss["serial_number"].native == cert.serial_number
                and iss["issuer"] == cert.issuer)


@functools.lru_cache(maxsize=64)
def _issued_by(cert_der: bytes, root_der: bytes) -> bool:
    """The root is an SM2 CA whose subject is the certificate's issuer and whose key signed it.
    The same for every token a TSA key issues, so an audit works it out once."""
    cert = asn1_x509.Certificate.load(cert_der)
    root = asn1_x509.Certificate.load(root_der)
    if root.subject != cert.issuer or not root.ca:
        return False
    try:
        return verify_certificate_signature(cert_der, certificate_public_key(root_der))
    except (InvalidInput, ValueError):
        return False


def _check_ess(values: list[Any], signer_der: bytes, cert: Any) -> None:
    """ESS signing-certificate-v2 (RFC 5035): its first cert id is SM3 of the signer's DER."""
    if len(values) != 1 or len(values[0]["certs"]) == 0:
        raise _fail("no-ess-certid", "no ESS signing-certificate-v2 attribute (RFC 3161 2.4.1)")
    cert_id = values[0]["certs"][0]
    if cert_id["hash_algorithm"]["algorithm"].dotted != OID_SM3:
        raise _fail("no-ess-certid", "the ESS cert id is not an SM3 hash")
    if not hmac.compare_digest(bytes(cert_id["cert_hash"].native), sm2.sm3(signer_der)):
        raise _fail("ess-mismatch", "the ESS cert id does not match the signer certificate")
    issuer_serial = cert_id["issuer_serial"]
    if issuer_serial.native is not None and not (
            issuer_serial["serial_number"].native == cert.serial_number
            and any(n.name == "directory_name" and n.chosen == cert.issuer
                    for n in issuer_serial["issuer"])):
        raise _fail("ess-mismatch", "the ESS issuerSerial does not name the signer certificate")


def _check_tsa_certificate(cert: Any) -> None:
    """RFC 3161 2.3: a critical extendedKeyUsage of id-kp-timeStamping alone."""
    ekus = [e for e in cert["tbs_certificate"]["extensions"]
            if e["extn_id"].native == "extended_key_usage"]
    if len(ekus) != 1 or not ekus[0]["critical"].native:
        raise _fail("not-a-tsa", "the SM2 TSA certificate has no critical extendedKeyUsage")
    if ekus[0]["extn_value"].parsed.native != ["time_stamping"]:
        raise _fail("not-a-tsa", "the SM2 TSA certificate's extendedKeyUsage must be "
                    "id-kp-timeStamping only")


def _check_validity(cert: Any, at: datetime) -> None:
    validity = cert["tbs_certificate"]["validity"]
    if not validity["not_before"].native <= at <= validity["not_after"].native:
        raise _fail("expired", said("the certificate {subject} was not valid at {at}",
                                    subject=cert.subject.human_friendly, at=at.isoformat()))
