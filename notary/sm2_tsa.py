"""The SM suite's second time-stamping authority: SM2/SM3 RFC 3161 tokens (GM/T 0033 style, D51).

An SM-suite registry stamps each block twice: the ECDSA P-256 token of `notary.tsa` over the
block hash (which `openssl ts -verify` checks), and an SM2-with-SM3 token from this module over
the SM3 digest of the block header's RFC 8785 bytes. OpenSSL 3.0 cannot sign SM2 CMS, so the
SignedData is built here with asn1crypto: signed attributes contentType, signingTime,
messageDigest (SM3) and ESS signing-certificate-v2 (with an SM3 cert hash); the signature is
`notary.sm2`'s, with the default distinguishing ID 1234567812345678; the OIDs are GM/T 0006's.
`ledger.sm2_timestamp` verifies it, and the `openssl` command line checks each part.

On disk, beside the ECDSA chain in the TSA directory:

- `sm2-root.pem`     the SM2 root CA to publish (its key is used once and discarded, as D15);
- `sm2-tsa.pem`      the SM2 TSA certificate (critical extendedKeyUsage id-kp-timeStamping);
- `sm2-tsa-key.pem`  its PKCS#8 SM2 key, mode 0600, encrypted under the key passphrase if any.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import cms, core, keys, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509

from copyledger.ledger import sm2
from copyledger.ledger.errors import Conflict, InvalidInput, Unavailable, said
from copyledger.ledger.sm2_timestamp import (
    OID_SM2_WITH_SM3,
    OID_SM3,
    certificate_public_key,
    load_certificates,
    verify_certificate_signature,
)
from copyledger.notary.signer import write_new_file
from copyledger.notary.sm2 import Sm2Signer, _pem
from copyledger.notary.tsa import (
    DEFAULT_POLICY_OID,
    TsaChainPaths,
    _cms_time,
    _random_serial,
    _utc_now,
)

__all__ = [
    "SM2_ROOT_FILE",
    "SM2_TSA_CERT_FILE",
    "SM2_TSA_KEY_FILE",
    "Sm2TimeStampAuthority",
    "create_sm2_tsa_chain",
    "load_sm2_tsa",
    "sm2_tsa_paths",
]

SM2_ROOT_FILE = "sm2-root.pem"
SM2_TSA_CERT_FILE = "sm2-tsa.pem"
SM2_TSA_KEY_FILE = "sm2-tsa-key.pem"
ROOT_VALIDITY = timedelta(days=3653)
TSA_VALIDITY = timedelta(days=1827)
BACKDATE = timedelta(hours=1)
_SIG_ALG = {"algorithm": OID_SM2_WITH_SM3}
_SM3_ALG = {"algorithm": OID_SM3}


class Sm2TimeStampAuthority:
    """Issues SM2/SM3 time-stamp tokens with one SM2 key and certificate; holds no mutable
    state, so it is thread-safe like `TimeStampAuthority`."""

    def __init__(self, key: Sm2Signer, certificate_der: bytes, root_der: bytes, *,
                 policy_oid: str = DEFAULT_POLICY_OID, accuracy_ms: int = 1000,
                 clock: Callable[[], datetime] | None = None,
                 serial: Callable[[], int] | None = None) -> None:
        if certificate_public_key(certificate_der) != key.public_key:
            raise InvalidInput("the SM2 TSA key does not match the SM2 TSA certificate")
        if not verify_certificate_signature(certificate_der, certificate_public_key(root_der)):
            raise InvalidInput("the SM2 TSA certificate is not issued by the SM2 root")
        if key.verifier.distid != sm2.DEFAULT_ID:
            raise InvalidInput("an SM2 TSA signs with the default distinguishing ID")
        self._key = key
        self.certificate_der = certificate_der
        self.root_der = root_der
        self.policy_oid = policy_oid
        self.accuracy_ms = accuracy_ms
        self._clock = clock or _utc_now
        self._serial = serial or _random_serial
        cert = asn1_x509.Certificate.load(certificate_der)
        self._not_before = cert["tbs_certificate"]["validity"]["not_before"].native
        self._not_after = cert["tbs_certificate"]["validity"]["not_after"].native
        self._tsa_name_der = asn1_x509.GeneralName({"directory_name": cert.subject}).dump()
        self._sid_der = cms.SignerIdentifier({"issuer_and_serial_number": {
            "issuer": cert.issuer, "serial_number": cert.serial_number}}).dump()
        self._ess_der = cms.CMSAttribute({"type": "signing_certificate_v2", "values": [
            tsp.SigningCertificateV2({"certs": [{
                "hash_algorithm": _SM3_ALG,
                "cert_hash": sm2.sm3(certificate_der),
                "issuer_serial": {
                    "issuer": [asn1_x509.GeneralName({"directory_name": cert.issuer})],
                    "serial_number": cert.serial_number},
            }]})]}).dump()

    @property
    def root_pem(self) -> str:
        return _pem(self.root_der, "CERTIFICATE").decode()

    @property
    def certificate_pem(self) -> str:
        return _pem(self.certificate_der, "CERTIFICATE").decode()

    def timestamp(self, data: bytes) -> bytes:
        """A DER TimeStampToken over SM3(data): how each block header is stamped."""
        return self.timestamp_digest(sm2.sm3(data))

    def timestamp_digest(self, digest: bytes) -> bytes:
        """A DER TimeStampToken (ContentInfo) whose messageImprint is (SM3, digest)."""
        if len(digest) != 32:
            raise InvalidInput("an SM3 digest is 32 bytes")
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the TSA clock must return timezone-aware datetimes")
        now = now.astimezone(UTC)
        gen_time = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if not self._not_before <= gen_time <= self._not_after:
            raise Unavailable("the SM2 TSA certificate is not valid at this time")
        serial = self._serial()
        if not 0 < serial < 2**160:
            raise ValueError("time-stamp serial numbers must be positive and under 2**160")
        tst: dict[str, Any] = {
            "version": "v1", "policy": self.policy_oid,
            "message_imprint": {"hash_algorithm": _SM3_ALG, "hashed_message": digest},
            "serial_number": serial, "gen_time": gen_time,
            "tsa": asn1_x509.GeneralName.load(self._tsa_name_der),
        }
        if self.accuracy_ms:
            seconds, millis = divmod(self.accuracy_ms, 1000)
            tst["accuracy"] = {k: v for k, v in (("seconds", seconds), ("millis", millis)) if v}
        tst_der = tsp.TSTInfo(tst).dump()
        signed_attrs = cms.CMSAttributes([
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "signing_time", "values": [_cms_time(gen_time)]},
            {"type": "message_digest", "values": [sm2.sm3(tst_der)]},
            cms.CMSAttribute.load(self._ess_der),
        ])
        signer_info = cms.SignerInfo({
            "version": "v1",
            "sid": cms.SignerIdentifier.load(self._sid_der),
            "digest_algorithm": _SM3_ALG,
            "signed_attrs": signed_attrs,
            "signature_algorithm": _SIG_ALG,
            "signature": self._key.sign(signed_attrs.dump()),  # the DER SET OF, RFC 5652 5.4
        })
        return bytes(cms.ContentInfo({"content_type": "signed_data", "content": {
            "version": "v3",
            "digest_algorithms": [_SM3_ALG],
            "encap_content_info": {"content_type": "tst_info",
                                   "content": cms.ParsableOctetString(tst_der)},
            "certificates": [asn1_x509.Certificate.load(self.certificate_der)],
            "signer_infos": [signer_info],
        }}).dump())


def sm2_tsa_paths(directory: Path) -> TsaChainPaths:
    """Where the SM2 TSA chain lives: beside the ECDSA one, in the same TSA directory."""
    d = Path(directory)
    return TsaChainPaths(d / SM2_ROOT_FILE, d / SM2_TSA_CERT_FILE, d / SM2_TSA_KEY_FILE)


def create_sm2_tsa_chain(directory: Path, name: str, *, passphrase: bytes | None = None,
                         now: datetime | None = None) -> TsaChainPaths:
    """An SM2 root CA (its key discarded) and an SM2 TSA certificate it issues, in directory;
    never overwrites. name (the origin) is the organisation of both subjects."""
    paths = sm2_tsa_paths(directory)
    for path in (paths.root, paths.certificate, paths.key):
        if path.exists():
            raise Conflict(said("{path} already exists; refusing to overwrite an SM2 TSA chain",
                                path=path))
    Path(directory).mkdir(parents=True, exist_ok=True, mode=0o700)
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    root_key = Sm2Signer(name, secrets.randbelow(sm2.N - 2) + 1)
    root_name = _name(name, "copyledger SM2 TSA root CA")
    root = _certificate(root_key, root_name, root_name, root_key.public_key, now,
                        ROOT_VALIDITY, ca=True)
    tsa_key = Sm2Signer.generate(name, paths.key, passphrase=passphrase)
    try:
        tsa = _certificate(root_key, root_name, _name(name, "copyledger SM2 TSA"),
                           tsa_key.public_key, now, TSA_VALIDITY, ca=False)
        write_new_file(paths.root, _pem(root, "CERTIFICATE"), 0o644)
        # last: the chain is whole once it exists (`tsa.set_aside_unfinished`)
        write_new_file(paths.certificate, _pem(tsa, "CERTIFICATE"), 0o644)
    except BaseException:
        for path in (paths.key, paths.root):
            path.unlink(missing_ok=True)
        raise
    return paths


def load_sm2_tsa(directory: Path, name: str, passphrase: bytes | None = None,
                 **kw: Any) -> Sm2TimeStampAuthority:
    """The SM2 TSA in directory, checked: its key matches its certificate, which the root
    signed."""
    paths = sm2_tsa_paths(directory)
    certs = [load_certificates(p.read_bytes()) if p.exists() else []
             for p in (paths.certificate, paths.root)]
    if not all(certs):
        raise InvalidInput(said("no SM2 TSA chain in {directory}: run `copyledger init`",
                                directory=directory))
    key = Sm2Signer.load(name, paths.key, passphrase=passphrase)
    return Sm2TimeStampAuthority(key, certs[0][0], certs[1][0], **kw)


def _name(org: str, common_name: str) -> Any:
    if not org or len(org) > 64 or not org.isprintable():
        raise InvalidInput("the TSA name must be 1 to 64 printable characters")
    return asn1_x509.Name.build({"organization_name": org, "common_name": common_name})


def _certificate(issuer_key: Sm2Signer, issuer: Any, subject: Any, public_key: bytes,
                 now: datetime, validity: timedelta, *, ca: bool) -> bytes:
    """An X.509 v3 certificate signed with SM2-with-SM3 (default ID, GM/T 0015)."""
    ski = hashlib.sha1(public_key).digest()
    usage = {"key_cert_sign", "crl_sign"} if ca else {"digital_signature", "non_repudiation"}
    extensions = [
        {"extn_id": "basic_constraints", "critical": True,
         "extn_value": {"ca": True, "path_len_constraint": 0} if ca else {"ca": False}},
        {"extn_id": "key_usage", "critical": True, "extn_value": usage},
        {"extn_id": "key_identifier", "critical": False, "extn_value": ski},
    ]
    if not ca:
        extensions.insert(2, {"extn_id": "extended_key_usage", "critical": True,
                              "extn_value": ["time_stamping"]})
        extensions.append({"extn_id": "authority_key_identifier", "critical": False,
                           "extn_value": {"key_identifier":
                                          hashlib.sha1(issuer_key.public_key).digest()}})
    tbs = asn1_x509.TbsCertificate({
        "version": "v3",
        "serial_number": int.from_bytes(secrets.token_bytes(16), "big") | 1 << 126,
        "signature": _SIG_ALG,
        "issuer": issuer,
        "validity": {"not_before": _x509_time(now - BACKDATE),
                     "not_after": _x509_time(now + validity)},
        "subject": subject,
        "subject_public_key_info": keys.PublicKeyInfo.load(sm2.public_key_der(public_key)),
        "extensions": extensions,
    }).dump()
    signature = issuer_key.sign(tbs)
    return bytes(asn1_x509.Certificate({
        "tbs_certificate": asn1_x509.TbsCertificate.load(tbs),
        "signature_algorithm": _SIG_ALG,
        "signature_value": core.OctetBitString(signature),
    }).dump())


def _x509_time(when: datetime) -> Any:
    kind = "utc_time" if 1950 <= when.year < 2050 else "general_time"
    return asn1_x509.Time({kind: when})
