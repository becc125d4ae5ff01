"""RFC 3161: our TSA's replies and tokens verify with OpenSSL, rfc3161-client and our own offline
verifier; bad queries get a proper refusal, never an exception; the chain on disk is checked."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms, core, tsp  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copyledger.ledger.errors import Conflict, InvalidInput, Unavailable, VerificationError
from copyledger.ledger.timestamp import (
    TimestampError,
    TimeStampResp,
    token_from_response,
    verify_token,
)
from copyledger.notary.tsa import (
    DEFAULT_POLICY_OID,
    MAX_NONCE_BITS,
    TimeStampAuthority,
    TsaChainPaths,
    TsaIdentity,
    create_tsa_chain,
    import_tsa,
    load_tsa,
)

DATA = b"The Raven, by Edgar Allan Poe, first edition scan\n"
OPENSSL = shutil.which("openssl")


# --------------------------------------------------------------------------- fixtures, helpers


@dataclass(frozen=True)
class Chain:
    paths: TsaChainPaths
    identity: TsaIdentity

    @property
    def root_pem(self) -> bytes:
        return self.paths.root.read_bytes()

    @property
    def tsa_pem(self) -> bytes:
        return self.paths.certificate.read_bytes()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    paths = create_tsa_chain(tmp_path_factory.mktemp("tsa"), "example.org/log")
    return Chain(paths, load_tsa(paths.root.parent))


@pytest.fixture(scope="module")
def other_chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    paths = create_tsa_chain(tmp_path_factory.mktemp("other-tsa"), "evil.example/log")
    return Chain(paths, load_tsa(paths.root.parent))


@pytest.fixture
def tsa(chain: Chain) -> TimeStampAuthority:
    return TimeStampAuthority(chain.identity)


@pytest.fixture(scope="module")
def short_ess() -> TsaIdentity:
    """A P-521 TSA (SHA-512) whose certificate has an empty issuer name and serial 1: its ESS
    attribute encodes shorter than its message-digest attribute, so the signed attributes
    listed in the writer's order (content type, signing time, digest, ESS) are not in DER's
    SET OF order, and only sorting them makes the token right."""
    key = ec.generate_private_key(ec.SECP521R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2061, 1, 1, tzinfo=UTC))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return TsaIdentity(cert, [cert], key)


@pytest.fixture
def openssl() -> str:
    if OPENSSL is None:
        if os.environ.get("COPYLEDGER_REQUIRE_OPENSSL") == "1":
            pytest.fail("the openssl CLI is required in this run but is not installed")
        pytest.skip("the openssl CLI is not installed")
    return OPENSSL


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, cwd=cwd)


def ossl_query(openssl: str, data: Path, *flags: str) -> bytes:
    r = subprocess.run([openssl, "ts", "-query", "-data", str(data), *flags],
                       capture_output=True, check=True, timeout=30)
    return r.stdout


def ossl_verify(openssl: str, chain: Chain, *args: str) -> subprocess.CompletedProcess[str]:
    return run(openssl, "ts", "-verify", *args, "-CAfile", str(chain.paths.root),
               "-untrusted", str(chain.paths.certificate))


def parse_resp(der: bytes) -> Any:
    resp = TimeStampResp.load(der, strict=True)
    resp.native  # noqa: B018 - fully parse: it must be valid DER
    return resp


def fail_bits(der: bytes) -> tuple[int, set[str]]:
    status = parse_resp(der)["status"]
    return int(status["status"]), set(status["fail_info"].native or ())


def request(digest: bytes, alg: str = "sha256", **fields: Any) -> bytes:
    """A TimeStampReq built field by field, so tests can get each field wrong."""
    imprint = {"hash_algorithm": {"algorithm": alg, "parameters": None}, "hashed_message": digest}
    return bytes(tsp.TimeStampReq({"version": 1, "message_imprint": imprint, **fields}).dump())


def tst_info(token: bytes) -> Any:
    return cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed


def build_chain(
    directory: Path,
    *,
    rsa_keys: bool = False,
    intermediate: bool = False,
    eku_critical: bool = True,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> tuple[Path, Path, Path]:
    """An operator's own chain made outside create_tsa_chain: (tsa cert, tsa key, chain) PEMs."""
    def key() -> Any:
        return rsa.generate_private_key(65537, 2048) if rsa_keys else ec.generate_private_key(
            ec.SECP384R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.now(UTC)
    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name("Operator Root")).issuer_name(
        name("Operator Root")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256()))
    issuers = [ca]
    issuer, issuer_key = ca, ca_key
    if intermediate:
        mid_key = key()
        mid = (x509.CertificateBuilder().subject_name(name("Operator Issuing CA"))
               .issuer_name(ca.subject).public_key(mid_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1))
               .not_valid_after(now + timedelta(days=1000))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
        issuers.insert(0, mid)
        issuer, issuer_key = mid, mid_key
    tsa_key = key()
    cert = (x509.CertificateBuilder().subject_name(name("Operator TSA"))
            .issuer_name(issuer.subject).public_key(tsa_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=900))
            .add_extension(x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.TIME_STAMPING]),
                           critical=eku_critical)
            .sign(issuer_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    out = (directory / "op-tsa.pem", directory / "op-tsa-key.pem", directory / "op-chain.pem")
    out[0].write_bytes(cert.public_bytes(pem))
    out[1].write_bytes(tsa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    out[2].write_bytes(b"".join(c.public_bytes(pem) for c in issuers))
    return out


# --------------------------------------------------------------------------- the chain on disk


def test_create_tsa_chain_files_modes_and_extensions(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        paths = create_tsa_chain(tmp_path / "tsa", "example.org/log")
    finally:
        os.umask(old)
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.certificate.stat().st_mode) == 0o644
    root = x509.load_pem_x509_certificate(paths.root.read_bytes())
    cert = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    root_ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert root_ku.critical and root_ku.value.key_cert_sign and root_ku.value.crl_sign
    cert.verify_directly_issued_by(root)
    assert cert.not_valid_after_utc <= root.not_valid_after_utc
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=4 * 365)


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    paths = create_tsa_chain(tmp_path, "example.org/log")
    before = {p: p.read_bytes() for p in (paths.root, paths.certificate, paths.key)}
    with pytest.raises(Conflict):
        create_tsa_chain(tmp_path, "example.org/log")
    assert {p: p.read_bytes() for p in before} == before
    # One stray file is enough to refuse, and nothing else is written.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "root.pem").write_text("mine")
    with pytest.raises(Conflict):
        create_tsa_chain(lone, "example.org/log")
    assert sorted(p.name for p in lone.iterdir()) == ["root.pem"]


def test_create_rejects_bad_names(tmp_path: Path) -> None:
    for name in ("", "x" * 65, "bad\nname"):
        with pytest.raises(InvalidInput):
            create_tsa_chain(tmp_path / "t", name)


def test_passphrase_and_root_key(tmp_path: Path) -> None:
    paths = create_tsa_chain(tmp_path, "example.org/log", passphrase=b"s3cret",
                             root_key_path=tmp_path / "keep" / "root-key.pem")
    assert paths.key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    root_key = tmp_path / "keep" / "root-key.pem"
    assert stat.S_IMODE(root_key.stat().st_mode) == 0o600
    with pytest.raises(InvalidInput, match="passphrase is needed"):
        load_tsa(tmp_path)
    with pytest.raises(InvalidInput, match="wrong passphrase"):
        load_tsa(tmp_path, b"nope")
    identity = load_tsa(tmp_path, b"s3cret")
    key = serialization.load_pem_private_key(root_key.read_bytes(), b"s3cret")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert identity.chain[-1].public_key() == key.public_key()
    unencrypted = create_tsa_chain(tmp_path / "plain", "example.org/log")
    with pytest.raises(InvalidInput, match="not encrypted"):
        load_tsa(unencrypted.root.parent, b"s3cret")


def test_load_errors(tmp_path: Path, chain: Chain, other_chain: Chain) -> None:
    with pytest.raises(InvalidInput, match="no TSA certificate"):
        load_tsa(tmp_path / "nowhere")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(chain.paths.root, mixed / "root.pem")
    shutil.copy(chain.paths.certificate, mixed / "tsa.pem")
    shutil.copy(other_chain.paths.key, mixed / "tsa-key.pem")
    with pytest.raises(InvalidInput, match="does not match"):
        load_tsa(mixed)
    shutil.copy(chain.paths.key, mixed / "tsa-key.pem")
    assert load_tsa(mixed).certificate == chain.identity.certificate
    shutil.copy(other_chain.paths.root, mixed / "root.pem")
    with pytest.raises(InvalidInput, match="does not chain"):
        load_tsa(mixed)
    (mixed / "root.pem").write_text("not a certificate")
    with pytest.raises(InvalidInput, match="no PEM certificate"):
        load_tsa(mixed)
    with pytest.raises(InvalidInput, match="not valid"):
        load_tsa(chain.paths.root.parent, now=datetime.now(UTC) + timedelta(days=6 * 365))


def test_import_operator_chain_rsa_with_intermediate(tmp_path: Path, openssl: str) -> None:
    cert, key, issuers = build_chain(tmp_path, rsa_keys=True, intermediate=True)
    paths = import_tsa(tmp_path / "tsa", cert.read_bytes(), key.read_bytes(), issuers.read_bytes())
    identity = load_tsa(paths.root.parent)
    assert len(identity.chain) == 2 and identity.chain_pem().count(b"BEGIN CERTIFICATE") == 3
    assert isinstance(identity.private_key, rsa.RSAPrivateKey)
    imported = Chain(paths, identity)
    data = tmp_path / "work.txt"
    data.write_bytes(DATA)
    reply = TimeStampAuthority(identity).respond(ossl_query(openssl, data, "-sha256", "-cert"))
    (tmp_path / "r.tsr").write_bytes(reply)
    r = ossl_verify(openssl, imported, "-data", str(data), "-in", str(tmp_path / "r.tsr"))
    assert "Verification: OK" in r.stdout, r.stderr
    info = verify_token(token_from_response(reply), hashlib.sha256(DATA).digest(),
                        paths.root.read_bytes(), untrusted_pem=paths.certificate.read_bytes())
    assert info.tsa_certificate == identity.certificate


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eku_critical": False}, "not critical"),
        ({"eku": [ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING]},
         "only"),
    ],
)
def test_import_refuses_unusable_certificates(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    cert, key, issuers = build_chain(tmp_path, **kwargs)
    with pytest.raises(InvalidInput, match=message):
        import_tsa(tmp_path / "tsa", cert.read_bytes(), key.read_bytes(), issuers.read_bytes())
    assert not (tmp_path / "tsa").exists() or not any((tmp_path / "tsa").iterdir())


def test_import_refuses_mismatched_key_and_missing_root(tmp_path: Path, chain: Chain) -> None:
    cert, _key, issuers = build_chain(tmp_path)
    with pytest.raises(InvalidInput, match="does not match"):
        import_tsa(tmp_path / "t", cert.read_bytes(), chain.paths.key.read_bytes(),
                   issuers.read_bytes())
    with pytest.raises(InvalidInput, match="self-signed root"):
        import_tsa(tmp_path / "t", cert.read_bytes(), _key.read_bytes(), cert.read_bytes())


# --------------------------------------------------------------------------- OpenSSL interop


@pytest.mark.interop
@pytest.mark.parametrize(
    "flags",
    [
        ("-sha256", "-cert"),
        ("-sha256", "-cert", "-no_nonce"),
        ("-sha256",),  # certReq false: the certificate comes from -untrusted
        ("-sha384", "-cert"),
        ("-sha512", "-no_nonce"),
        ("-sha256", "-cert", "-tspolicy", DEFAULT_POLICY_OID),
    ],
)
def test_openssl_verifies_replies(
    tmp_path: Path, chain: Chain, tsa: TimeStampAuthority, openssl: str, flags: tuple[str, ...]
) -> None:
    data = tmp_path / "work.bin"
    data.write_bytes(DATA)
    query = ossl_query(openssl, data, *flags)
    (tmp_path / "q.tsq").write_bytes(query)
    reply = tsa.respond(query)
    (tmp_path / "reply.tsr").write_bytes(reply)

    r = ossl_verify(openssl, chain, "-data", str(data), "-in", str(tmp_path / "reply.tsr"))
    assert r.returncode == 0 and "Verification: OK" in r.stdout, r.stdout + r.stderr
    # Against the query itself, OpenSSL also checks the imprint, the nonce and the policy.
    r = ossl_verify(openssl, chain, "-queryfile", str(tmp_path / "q.tsq"),
                    "-in", str(tmp_path / "reply.tsr"))
    assert r.returncode == 0 and "Verification: OK" in r.stdout, r.stdout + r.stderr

    text = run(openssl, "ts", "-reply", "-in", str(tmp_path / "reply.tsr"), "-text")
    assert text.returncode == 0, text.stderr
    assert "Status: Granted." in text.stdout
    assert f"Policy OID: {DEFAULT_POLICY_OID}" in text.stdout
    assert ("Nonce: unspecified" in text.stdout) == ("-no_nonce" in flags)
    certs = cms.ContentInfo.load(token_from_response(reply))["content"]["certificates"]
    assert (certs.native is not None) == ("-cert" in flags)

    # Someone else's root does not vouch for it.
    other = tmp_path / "other-root.pem"
    create_tsa_chain(tmp_path / "o", "other.example/log")
    shutil.copy(tmp_path / "o" / "root.pem", other)
    r = run(openssl, "ts", "-verify", "-data", str(data), "-in", str(tmp_path / "reply.tsr"),
            "-CAfile", str(other), "-untrusted", str(chain.paths.certificate))
    assert "Verification: OK" not in r.stdout


@pytest.mark.interop
def test_openssl_verifies_block_tokens(
    tmp_path: Path, chain: Chain, tsa: TimeStampAuthority, openssl: str
) -> None:
    block_hash = hashlib.sha256(b"block 7 header").digest()
    (tmp_path / "token.der").write_bytes(tsa.timestamp_digest(block_hash))
    r = ossl_verify(openssl, chain, "-digest", block_hash.hex(), "-in",
                    str(tmp_path / "token.der"), "-token_in")
    assert r.returncode == 0 and "Verification: OK" in r.stdout, r.stdout + r.stderr
    wrong = hashlib.sha256(b"block 8 header").hexdigest()
    r = ossl_verify(openssl, chain, "-digest", wrong, "-in", str(tmp_path / "token.der"),
                    "-token_in")
    assert "Verification: OK" not in r.stdout
    text = run(openssl, "ts", "-reply", "-in", str(tmp_path / "token.der"), "-token_in",
               "-token_out", "-text")
    assert text.returncode == 0 and "Accuracy: 0x01 seconds" in text.stdout, text.stderr


@pytest.mark.interop
def test_openssl_rejects_tampered_token(
    tmp_path: Path, chain: Chain, tsa: TimeStampAuthority, openssl: str
) -> None:
    block_hash = hashlib.sha256(b"block").digest()
    tampered = tamper_gen_time(tsa.timestamp_digest(block_hash))
    (tmp_path / "t.der").write_bytes(tampered)
    r = ossl_verify(openssl, chain, "-digest", block_hash.hex(), "-in", str(tmp_path / "t.der"),
                    "-token_in")
    assert "Verification: OK" not in r.stdout


@pytest.mark.interop
def test_openssl_reads_refusals(tmp_path: Path, tsa: TimeStampAuthority, openssl: str) -> None:
    reply = tsa.respond(request(bytes(20), "sha1"))
    (tmp_path / "r.tsr").write_bytes(reply)
    text = run(openssl, "ts", "-reply", "-in", str(tmp_path / "r.tsr"), "-text")
    assert text.returncode == 0, text.stderr
    assert "Status: Rejected." in text.stdout
    assert "Failure info: unrecognized or unsupported algorithm identifier" in text.stdout


@pytest.mark.interop
def test_openssl_as_the_tsa_and_we_verify(tmp_path: Path, openssl: str) -> None:
    """ledger.timestamp also verifies tokens we did not issue (external TSAs): here OpenSSL's,
    RSA-signed, with its default ESS signing-certificate (v1, SHA-1 cert id) or v2."""
    cert, key, issuers = build_chain(tmp_path, rsa_keys=True)
    data = tmp_path / "work.bin"
    data.write_bytes(DATA)
    query = tmp_path / "q.tsq"
    query.write_bytes(ossl_query(openssl, data, "-sha256", "-cert"))
    (tmp_path / "serial").write_text("01\n")
    for ess_alg in ("sha1", "sha256"):
        (tmp_path / "tsa.cnf").write_text(
            "[ tsa ]\ndefault_tsa = t\n[ t ]\n"
            f"serial = {tmp_path / 'serial'}\nsigner_digest = sha256\n"
            "default_policy = 1.2.3.4.1\ndigests = sha256\naccuracy = secs:1\n"
            f"ess_cert_id_alg = {ess_alg}\n"
        )
        out = tmp_path / f"openssl-{ess_alg}.tsr"
        r = run(openssl, "ts", "-reply", "-config", str(tmp_path / "tsa.cnf"), "-queryfile",
                str(query), "-inkey", str(key), "-signer", str(cert), "-out", str(out))
        assert r.returncode == 0, r.stderr
        info = verify_token(token_from_response(out.read_bytes()), hashlib.sha256(DATA).digest(),
                            issuers.read_bytes())
        assert info.policy == "1.2.3.4.1" and info.accuracy == timedelta(seconds=1)


# --------------------------------------------------------------------------- rfc3161-client


@pytest.mark.interop
@pytest.mark.parametrize(("alg", "nonce", "cert_req"),
                         [("SHA256", True, True), ("SHA512", True, False),
                          ("SHA256", False, True)])
def test_rfc3161_client_verifies_replies(
    chain: Chain, tsa: TimeStampAuthority, alg: str, nonce: bool, cert_req: bool
) -> None:
    import rfc3161_client as rc

    req = (rc.TimestampRequestBuilder().data(DATA).hash_algorithm(rc.HashAlgorithm[alg])
           .nonce(nonce=nonce).cert_request(cert_request=cert_req).build())
    resp = rc.decode_timestamp_response(tsa.respond(req.as_bytes()))
    root = x509.load_pem_x509_certificate(chain.root_pem)
    verifier = rc.VerifierBuilder.from_request(req).add_root_certificate(root).tsa_certificate(
        chain.identity.certificate).build()
    assert verifier.verify_message(resp, DATA)
    assert resp.tst_info.policy.dotted_string == DEFAULT_POLICY_OID
    assert resp.tst_info.nonce == req.nonce

    other = x509.load_pem_x509_certificate(create_tsa_root_pem())
    with pytest.raises(rc.VerificationError):
        rc.VerifierBuilder(roots=[other], tsa_certificate=chain.identity.certificate).build() \
            .verify_message(resp, DATA)
    with pytest.raises(rc.VerificationError):
        rc.VerifierBuilder(roots=[root], tsa_certificate=chain.identity.certificate).build() \
            .verify_message(resp, DATA + b"!")


@pytest.mark.interop
def test_rfc3161_client_verifies_block_tokens(chain: Chain, tsa: TimeStampAuthority) -> None:
    import rfc3161_client as rc

    block_hash = hashlib.sha256(b"block 9").digest()
    token = tsa.timestamp_digest(block_hash)
    # rfc3161-client reads replies, not bare tokens: wrap the stored token as a granted reply.
    reply = TimeStampResp({"status": {"status": "granted"},
                           "time_stamp_token": cms.ContentInfo.load(token)}).dump()
    resp = rc.decode_timestamp_response(reply)
    root = x509.load_pem_x509_certificate(chain.root_pem)
    assert rc.VerifierBuilder(roots=[root]).build().verify(resp, block_hash)
    with pytest.raises(rc.VerificationError):
        rc.VerifierBuilder(roots=[root]).build().verify(resp, hashlib.sha256(b"x").digest())


_OTHER_ROOT: list[bytes] = []


def create_tsa_root_pem() -> bytes:
    """A root that vouches for nothing we issued."""
    if not _OTHER_ROOT:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "copyledger TSA root CA")])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1)
                .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        _OTHER_ROOT.append(cert.public_bytes(serialization.Encoding.PEM))
    return _OTHER_ROOT[0]


# --------------------------------------------------------------------------- our own verifier


def tamper_gen_time(token: bytes) -> bytes:
    """Change one digit of genTime inside the signed TSTInfo: the DER stays valid."""
    gen_time = tst_info(token)["gen_time"].dump()
    at = token.index(gen_time) + 2  # skip tag and length: the first digit of the year
    assert token[at : at + 1] == b"2"
    return token[:at] + b"3" + token[at + 1 :]


def test_verify_token_accepts_good_tokens(chain: Chain) -> None:
    fixed = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    tsa = TimeStampAuthority(chain.identity, clock=lambda: fixed, serial=lambda: 42,
                             accuracy_ms=1500)
    digest = hashlib.sha384(DATA).digest()
    info = verify_token(tsa.timestamp_digest(digest, "sha384", nonce=7), digest, chain.root_pem,
                        nonce=7)
    assert info.gen_time == fixed.replace(microsecond=123000)
    assert info.serial_number == 42 and info.nonce == 7 and info.hash_alg == "sha384"
    assert info.policy == DEFAULT_POLICY_OID and info.message_digest == digest
    assert info.accuracy == timedelta(seconds=1, milliseconds=500)
    assert info.tsa_certificate == chain.identity.certificate


@pytest.mark.parametrize("break_it", ["digest", "root", "tst_info", "signature", "nonce", "cert"])
def test_verify_token_rejects(
    chain: Chain, other_chain: Chain, tsa: TimeStampAuthority, break_it: str
) -> None:
    digest = hashlib.sha256(DATA).digest()
    token = tsa.timestamp_digest(digest, nonce=5, include_certificate=break_it != "cert")
    roots, expect_nonce, reason = chain.root_pem, 5, ""
    if break_it == "digest":
        digest, reason = hashlib.sha256(DATA + b".").digest(), "imprint-mismatch"
    elif break_it == "root":
        roots, reason = other_chain.root_pem, "untrusted"
    elif break_it == "tst_info":
        token, reason = tamper_gen_time(token), "content-digest-mismatch"
    elif break_it == "signature":
        token, reason = token[:-5] + bytes([token[-5] ^ 1]) + token[-4:], "bad-signature"
    elif break_it == "nonce":
        expect_nonce, reason = 6, "nonce-mismatch"
    elif break_it == "cert":
        reason = "no-signer-certificate"
    with pytest.raises(TimestampError) as caught:
        verify_token(token, digest, roots, nonce=expect_nonce)
    assert isinstance(caught.value, VerificationError)
    assert caught.value.extra["reason"] == reason, caught.value.detail


def test_verify_token_refuses_an_imprint_not_of_its_hashs_size(
        chain: Chain, tsa: TimeStampAuthority) -> None:
    """A token whose imprint names SHA-512 but holds the 32 bytes asked about is refused, as
    OpenSSL's ts_check_imprints refuses it: the bytes alone matching is not the imprint."""
    from copyledger.notary.tsa import _der, _imprint_alg_der

    digest = hashlib.sha256(DATA).digest()
    odd = tsa._token_der(_der(0x30, _imprint_alg_der("sha512") + _der(0x04, digest)), None,
                         include_certificate=True)
    with pytest.raises(TimestampError) as caught:
        verify_token(odd, digest, chain.root_pem)
    assert caught.value.extra["reason"] == "imprint-mismatch", caught.value.detail
    verify_token(tsa.timestamp_digest(digest), digest, chain.root_pem)  # (as made, it passes)


def test_verify_token_rejects_token_from_another_tsa_passed_as_ours(
    chain: Chain, other_chain: Chain
) -> None:
    digest = hashlib.sha256(DATA).digest()
    token = TimeStampAuthority(other_chain.identity).timestamp_digest(digest)
    with pytest.raises(TimestampError, match="does not chain"):
        verify_token(token, digest, chain.root_pem, untrusted_pem=chain.tsa_pem)


def test_ess_binds_the_exact_certificate(tmp_path: Path) -> None:
    """A second certificate for the same key, issuer and serial (say, with other extensions or
    dates) verifies the signature, but is not the certificate the TSA signed under."""
    paths = create_tsa_chain(tmp_path, "example.org/log", root_key_path=tmp_path / "root-key.pem")
    identity = load_tsa(tmp_path)
    root_key = serialization.load_pem_private_key((tmp_path / "root-key.pem").read_bytes(), None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    original = identity.certificate
    builder = (x509.CertificateBuilder().subject_name(original.subject)
               .issuer_name(original.issuer).public_key(identity.private_key.public_key())
               .serial_number(original.serial_number)
               .not_valid_before(original.not_valid_before_utc)
               .not_valid_after(original.not_valid_after_utc + timedelta(days=1)))
    for ext in original.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    twin = builder.sign(root_key, hashes.SHA256())
    twin_pem = twin.public_bytes(serialization.Encoding.PEM)
    token = TimeStampAuthority(identity).timestamp_digest(SHA256, include_certificate=False)
    assert verify_token(token, SHA256, paths.root.read_bytes(),
                        untrusted_pem=paths.certificate.read_bytes()).serial_number > 0
    with pytest.raises(TimestampError) as caught:
        verify_token(token, SHA256, paths.root.read_bytes(), untrusted_pem=twin_pem)
    assert caught.value.extra["reason"] == "ess-mismatch"
    if OPENSSL:  # OpenSSL agrees
        (tmp_path / "twin.pem").write_bytes(twin_pem)
        (tmp_path / "t.der").write_bytes(token)
        r = run(OPENSSL, "ts", "-verify", "-digest", SHA256.hex(), "-in", str(tmp_path / "t.der"),
                "-token_in", "-CAfile", str(paths.root), "-untrusted", str(tmp_path / "twin.pem"))
        assert "Verification: OK" not in r.stdout
        assert "ess cert id not found" in r.stderr.lower(), r.stderr


def test_verify_token_refuses_non_tsa_certificates(tmp_path: Path) -> None:
    """A key certified for something else must not make time-stamps, even from a trusted root."""
    cert, key, issuers = build_chain(tmp_path, eku_critical=False)
    pem_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(pem_key, ec.EllipticCurvePrivateKey)
    identity = TsaIdentity(x509.load_pem_x509_certificate(cert.read_bytes()),
                           list(x509.load_pem_x509_certificates(issuers.read_bytes())), pem_key)
    digest = hashlib.sha256(DATA).digest()
    token = TimeStampAuthority(identity).timestamp_digest(digest)
    with pytest.raises(TimestampError, match="not critical"):
        verify_token(token, digest, issuers.read_bytes())


def test_verify_token_rejects_garbage(chain: Chain) -> None:
    for junk in (b"", b"\x30\x00", b"not a token", bytes(100)):
        with pytest.raises(TimestampError) as caught:
            verify_token(junk, bytes(32), chain.root_pem)
        assert caught.value.extra["reason"] == "malformed-token"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_tokens_fail_cleanly(chain: Chain, data: st.DataObject) -> None:
    """Whatever is damaged, verify_token answers with a TimestampError, never anything else."""
    token = bytearray(_GOOD_TOKEN.setdefault(
        "t", TimeStampAuthority(chain.identity).timestamp_digest(SHA256, nonce=99)))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(token) - 1))
        token[i] = data.draw(st.integers(0, 255))
    try:
        info = verify_token(bytes(token), SHA256, chain.root_pem)
    except TimestampError:
        return
    # Only bytes no one signs may change harmlessly (e.g. the embedded certificate's padding).
    assert info.message_digest == SHA256


_GOOD_TOKEN: dict[str, bytes] = {}


@pytest.mark.parametrize("serial", [0, -1])
def test_a_carried_certificate_with_a_serial_not_positive_is_refused(
    chain: Chain, serial: int
) -> None:
    """RFC 5280 4.1.2.2: cryptography only warns on such a certificate and will later raise;
    the verifier refuses it itself, with a TimestampError and no warning either way."""
    token = cms.ContentInfo.load(TimeStampAuthority(chain.identity).timestamp_digest(SHA256))
    cert = token["content"]["certificates"][0].chosen
    cert["tbs_certificate"]["serial_number"] = serial
    tampered = token.dump(force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TimestampError) as caught:
            verify_token(tampered, SHA256, chain.root_pem)
    assert caught.value.extra["reason"] == "bad-certificate"
    assert "not positive" in str(caught.value)


def test_token_from_response(tsa: TimeStampAuthority) -> None:
    with pytest.raises(TimestampError) as caught:
        token_from_response(tsa.respond(request(bytes(20), "sha1")))
    assert caught.value.extra["reason"] == "not-granted"
    assert caught.value.extra["fail_info"] == ["bad_alg"]
    with pytest.raises(TimestampError, match="not a DER TimeStampResp"):
        token_from_response(b"\x01\x02")


# --------------------------------------------------------------------------- bad queries


SHA256 = hashlib.sha256(DATA).digest()
SHA256_OID = "2.16.840.1.101.3.4.2.1"


def der(tag: int, content: bytes) -> bytes:
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


def with_hash_oid(oid: str, digest: bytes, parameters: bytes = b"") -> bytes:
    """A query with any hash OID and raw parameters, which asn1crypto would not let us build."""
    alg = der(0x30, core.ObjectIdentifier(oid).dump() + parameters)
    return der(0x30, b"\x02\x01\x01" + der(0x30, alg + der(0x04, digest)))


def der_long(tag: int, content: bytes) -> bytes:
    """One element with its length in the long form, even where DER wants the short one."""
    size = len(content).to_bytes(max(1, (len(content).bit_length() + 7) // 8), "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


IMPRINT_ALG = der(0x30, core.ObjectIdentifier(SHA256_OID).dump() + b"\x05\x00")
IMPRINT = der(0x30, IMPRINT_ALG + der(0x04, SHA256))


def raw_request(*fields: bytes) -> bytes:
    """A TimeStampReq of these raw fields after version 1 and the imprint: DER or not."""
    body = b"\x02\x01\x01" + IMPRINT + b"".join(fields)
    return der(0x30, body) if len(body) < 128 else der_long(0x30, body)


# Requests asn1crypto reads (leniently) that are not DER: each was granted, and its imprint
# copied into the token as it came.
NOT_DER: list[tuple[str, bytes]] = [
    ("a field added to the imprint", der(0x30, b"\x02\x01\x01" + der(
        0x30, IMPRINT_ALG + der(0x04, SHA256) + b"\x02\x01\x05"))),
    ("imprint length in the long form", der(0x30, b"\x02\x01\x01" + der_long(
        0x30, IMPRINT_ALG + der(0x04, SHA256)))),
    ("digest length in the long form", der(0x30, b"\x02\x01\x01" + der(
        0x30, IMPRINT_ALG + der_long(0x04, SHA256)))),
    ("request length in the long form", der_long(0x30, b"\x02\x01\x01" + IMPRINT)),
    ("nonce after certReq", raw_request(b"\x01\x01\xff", b"\x02\x01\x07")),
    ("two nonces", raw_request(b"\x02\x01\x07", b"\x02\x01\x08")),
    ("nonce not minimal", raw_request(b"\x02\x02\x00\x07")),
    ("version not minimal", der(0x30, b"\x02\x02\x00\x01" + IMPRINT)),
    ("certReq TRUE as 01", raw_request(b"\x01\x01\x01")),
    ("explicit certReq FALSE", raw_request(b"\x01\x01\x00")),
]

HUGE_VERSION = der_long(0x30, der_long(0x02, b"\x7f" + b"\x11" * 2000) + IMPRINT)

BAD_QUERIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "bad_data_format"),
    ("random bytes", bytes(range(7, 90)), "bad_data_format"),
    ("truncated", request(SHA256)[:-3], "bad_data_format"),
    ("trailing garbage", request(SHA256) + b"\x00", "bad_data_format"),
    ("not a request", core.Integer(5).dump(), "bad_data_format"),
    ("sha1", request(hashlib.sha1(DATA).digest(), "sha1"), "bad_alg"),
    ("md5", request(hashlib.md5(DATA).digest(), "md5"), "bad_alg"),
    ("unknown OID", with_hash_oid("1.2.3.4.5", SHA256), "bad_alg"),
    ("hash parameters", with_hash_oid(SHA256_OID, SHA256, b"\x02\x01\x01"), "bad_alg"),
    ("digest too short", request(SHA256[:31]), "bad_data_format"),
    ("digest too long", request(SHA256 + b"\x00"), "bad_data_format"),
    ("sha512 length for sha256", request(hashlib.sha512(DATA).digest()), "bad_data_format"),
    ("unsupported policy", request(SHA256, req_policy="1.2.3.4"), "unaccepted_policy"),
    ("extensions", request(SHA256, extensions=[
        {"extn_id": "1.2.3.4", "critical": False, "extn_value": b"x"}]), "unaccepted_extensions"),
    ("version 2", request(SHA256).replace(b"\x02\x01\x01", b"\x02\x01\x02", 1), "bad_request"),
    ("version of 4,800 digits", HUGE_VERSION, "bad_request"),
    ("nonce over 512 bits", request(SHA256, nonce=2**MAX_NONCE_BITS), "bad_request"),
    ("negative nonce over 512 bits", request(SHA256, nonce=-(2**MAX_NONCE_BITS)), "bad_request"),
    *((case, query, "bad_data_format") for case, query in NOT_DER),
]


@pytest.mark.parametrize(("case", "query", "bit"), BAD_QUERIES, ids=[c[0] for c in BAD_QUERIES])
def test_bad_queries_are_refused_properly(
    tsa: TimeStampAuthority, case: str, query: bytes, bit: str
) -> None:
    reply = tsa.respond(query)
    assert fail_bits(reply) == (2, {bit})
    resp = parse_resp(reply)
    assert isinstance(resp["time_stamp_token"], core.Void)
    assert resp["status"]["status_string"].native  # a human-readable reason
    assert resp.dump(force=True) == reply  # canonical DER, named bits trimmed


def test_a_huge_version_is_refused_without_a_traceback(
    tsa: TimeStampAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="4300 digits"):  # what formatting it would meet
        str(int.from_bytes(b"\x7f" + b"\x11" * 2000, "big"))
    reply = tsa.respond(HUGE_VERSION)
    assert fail_bits(reply) == (2, {"bad_request"})
    assert parse_resp(reply)["status"]["status_string"].native == [
        "only TimeStampReq version 1 (v1) is supported"]
    assert not caplog.records  # refused, not a system failure logged with its traceback


def test_the_raw_builder_makes_der_the_tsa_grants(tsa: TimeStampAuthority) -> None:
    """The NOT_DER cases differ from these, granted, in their one fault only."""
    for query in (raw_request(), raw_request(b"\x02\x01\x07"), raw_request(b"\x01\x01\xff"),
                  raw_request(b"\x02\x01\x07", b"\x01\x01\xff")):
        assert fail_bits(tsa.respond(query)) == (0, set())


@pytest.mark.parametrize("nonce", [2**MAX_NONCE_BITS - 1, 1 - 2**MAX_NONCE_BITS, 2**64 + 1, -1, 0])
def test_nonces_up_to_512_bits_are_echoed(tsa: TimeStampAuthority, nonce: int) -> None:
    info = tst_info(token_from_response(tsa.respond(request(SHA256, nonce=nonce))))
    assert info["nonce"].native == nonce


@pytest.mark.interop
@pytest.mark.parametrize(("case", "query"), NOT_DER, ids=[c[0] for c in NOT_DER])
def test_openssl_reads_the_refusal_of_a_request_not_der(
    tmp_path: Path, tsa: TimeStampAuthority, openssl: str, case: str, query: bytes
) -> None:
    (tmp_path / "reply.tsr").write_bytes(tsa.respond(query))
    r = run(openssl, "ts", "-reply", "-in", str(tmp_path / "reply.tsr"), "-text")
    assert r.returncode == 0, r.stderr
    assert "Status: Rejected." in r.stdout, r.stdout
    assert "Failure info: the data submitted has the wrong format" in r.stdout, r.stdout


def test_bad_alg_failinfo_is_minimal_der(tsa: TimeStampAuthority) -> None:
    # PKIStatusInfo{rejection, failInfo badAlg(0)}: BIT STRING 03 02 07 80.
    reply = tsa.respond(request(bytes(20), "sha1"))
    assert reply.endswith(b"\x03\x02\x07\x80")


def test_our_own_policy_and_empty_extensions_are_fine(tsa: TimeStampAuthority) -> None:
    for query in (request(SHA256, req_policy=DEFAULT_POLICY_OID),
                  request(SHA256, extensions=[]),
                  with_hash_oid(SHA256_OID, SHA256, b"\x05\x00"),
                  with_hash_oid(SHA256_OID, SHA256)):
        assert fail_bits(tsa.respond(query)) == (0, set())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(chain: Chain, data: bytes) -> None:
    reply = TimeStampAuthority(chain.identity).respond(data)
    status, _bits = fail_bits(reply)
    assert status in (0, 2)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_queries_never_raise(chain: Chain, data: st.DataObject) -> None:
    query = bytearray(request(SHA256, nonce=12345, cert_req=True))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(query) - 1))
        query[i] = data.draw(st.integers(0, 255))
    reply = TimeStampAuthority(chain.identity).respond(bytes(query))
    status, _bits = fail_bits(reply)
    if status == 0:  # whatever it granted must verify over the digest it was given
        token = token_from_response(reply)
        digest = bytes(tst_info(token)["message_imprint"]["hashed_message"].native)
        verify_token(token, digest, chain.root_pem, untrusted_pem=chain.tsa_pem)


# --------------------------------------------------------------------------- the TSA's own rules


def test_serial_numbers_are_unique_and_positive(tsa: TimeStampAuthority) -> None:
    serials = [int(tst_info(tsa.timestamp_digest(SHA256))["serial_number"].native)
               for _ in range(500)]
    assert len(set(serials)) == len(serials)
    assert all(0 < s < 2**128 for s in serials)
    assert max(s.bit_length() for s in serials) > 120


def test_nonce_echoed_and_imprint_copied(tsa: TimeStampAuthority) -> None:
    query = request(SHA256, nonce=2**70 + 3, cert_req=True)
    info = tst_info(token_from_response(tsa.respond(query)))
    assert info["nonce"].native == 2**70 + 3
    assert info["message_imprint"].dump() == tsp.TimeStampReq.load(query)["message_imprint"].dump()
    assert info["version"].native == "v1" and info["ordering"].native is False


def test_signed_attributes(tsa: TimeStampAuthority, chain: Chain) -> None:
    token = cms.ContentInfo.load(tsa.timestamp_digest(SHA256))
    signed = token["content"]
    assert signed["version"].native == "v3"
    si = signed["signer_infos"][0]
    assert si["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"
    attrs = {a["type"].native: a["values"][0] for a in si["signed_attrs"]}
    assert set(attrs) == {"content_type", "signing_time", "message_digest",
                          "signing_certificate_v2"}
    cert_der = chain.identity.certificate.public_bytes(serialization.Encoding.DER)
    ess = attrs["signing_certificate_v2"]["certs"][0]
    assert ess["cert_hash"].native == hashlib.sha256(cert_der).digest()
    # SHA-256 is ESSCertIDv2's DEFAULT, so DER leaves it out.
    assert ess.dump()[2:4] == b"\x04\x20"


def test_clock_and_certificate_validity(chain: Chain) -> None:
    late = TimeStampAuthority(chain.identity, clock=lambda: datetime(2100, 1, 1, tzinfo=UTC))
    assert fail_bits(late.respond(request(SHA256))) == (2, {"system_failure"})
    with pytest.raises(Unavailable):
        late.timestamp_digest(SHA256)
    naive = TimeStampAuthority(chain.identity, clock=lambda: datetime(2030, 1, 1))
    assert fail_bits(naive.respond(request(SHA256))) == (2, {"system_failure"})


def test_constructor_and_digest_checks(chain: Chain) -> None:
    with pytest.raises(InvalidInput):
        TimeStampAuthority(chain.identity, policy_oid="not.an.oid")
    with pytest.raises(InvalidInput):
        TimeStampAuthority(chain.identity, accuracy_ms=-1)
    tsa = TimeStampAuthority(chain.identity, policy_oid="1.3.6.1.4.1.99999.1", accuracy_ms=0)
    info = verify_token(tsa.timestamp_digest(SHA256), SHA256, chain.root_pem)
    assert info.policy == "1.3.6.1.4.1.99999.1" and info.accuracy is None
    with pytest.raises(InvalidInput):
        tsa.timestamp_digest(SHA256, "sha1")
    with pytest.raises(InvalidInput):
        tsa.timestamp_digest(SHA256[:20])
    bad_serial = TimeStampAuthority(chain.identity, serial=lambda: 0)
    assert fail_bits(bad_serial.respond(request(SHA256))) == (2, {"system_failure"})


def test_ledger_does_not_import_notary() -> None:
    code = ("import sys, copyledger.ledger.timestamp; "
            "sys.exit(any(m.startswith('copyledger.notary') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0




# --------------------------------------------------------------------------- the token's DER (D81)


def _redumped(der: bytes) -> bytes:
    """What asn1crypto writes for the token it reads from `der`, every part encoded anew."""
    token = cms.ContentInfo.load(der)
    content = token["content"]["encap_content_info"]["content"]
    assert content.parsed.dump(force=True) == bytes(content)
    return bytes(token.dump(force=True))


def _der_elements(contents: bytes) -> list[bytes]:
    """The complete TLV encodings one after another in `contents` (definite lengths, as DER
    has), split by reading each length: short form, or 0x80 | n then n bytes of length."""
    out, i = [], 0
    while i < len(contents):
        first = contents[i + 1]
        n, head = (first, 2) if first < 0x80 else (
            int.from_bytes(contents[i + 2 : i + 2 + (first & 0x7F)]), 2 + (first & 0x7F))
        out.append(contents[i : i + head + n])
        i += head + n
    assert b"".join(out) == contents
    return out


def _in_der_set_order(elements: list[bytes]) -> bool:
    """X.690 11.6: a SET OF's encodings in ascending order, compared as octet strings, the
    shorter padded at its end with zero octets."""
    width = max(map(len, elements), default=0)
    padded = [e.ljust(width, b"\0") for e in elements]
    return all(a <= b for a, b in itertools.pairwise(padded))


def test_der_set_order_is_x690s() -> None:
    assert _in_der_set_order([b"\x30\x01\x00", b"\x30\x01\x01", b"\x31\x00"])
    assert not _in_der_set_order([b"\x30\x02\x00\x00", b"\x30\x01\x05"])  # not by length
    assert _der_elements(b"\x04\x81\x80" + b"x" * 128 + b"\x05\x00") == [
        b"\x04\x81\x80" + b"x" * 128, b"\x05\x00"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    when=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2060, 1, 1),
                      timezones=st.just(UTC)),
    serial=st.integers(1, 2**160 - 1),
    accuracy_ms=st.integers(0, 10**6),
    # RFC 3161's nonce is any INTEGER: timestamp_digest takes any, negative ones and ones
    # whose encoding needs a long-form length (over 127 bytes); a client's query any of up
    # to MAX_NONCE_BITS, negative ones included.
    nonce=st.none() | st.integers() | st.integers(-(2**1100), 2**1100),
    alg=st.sampled_from(["sha256", "sha384", "sha512"]),
    with_cert=st.booleans(),
    signature=st.binary(min_size=1, max_size=600),
    short=st.booleans(),
)
def test_the_token_is_the_der_asn1crypto_writes(
    chain: Chain, short_ess: TsaIdentity, when: datetime, serial: int, accuracy_ms: int,
    nonce: int | None, alg: str, with_cert: bool, signature: bytes, short: bool,
) -> None:
    """The token is written by hand around fixed pieces (the sequencer stamps every block):
    it must be the exact DER asn1crypto writes for the same fields, whatever their lengths,
    carry those fields, and list its signed attributes in DER's SET OF order."""
    identity = short_ess if short else chain.identity
    tsa = TimeStampAuthority(identity, clock=lambda: when, serial=lambda: serial,
                             accuracy_ms=accuracy_ms)
    tsa._sign = lambda _data: signature  # type: ignore[method-assign]
    digest = hashlib.new(alg, DATA).digest()
    if not (identity.certificate.not_valid_before_utc <= when
            <= identity.certificate.not_valid_after_utc):
        with pytest.raises(Unavailable):
            tsa.timestamp_digest(digest, alg, nonce, include_certificate=with_cert)
        return
    der = tsa.timestamp_digest(digest, alg, nonce, include_certificate=with_cert)
    assert _redumped(der) == der
    info = tst_info(der)
    assert info["serial_number"].native == serial
    assert info["nonce"].native == nonce
    assert info["message_imprint"]["hashed_message"].native == digest
    assert info["gen_time"].native == when.replace(microsecond=when.microsecond // 1000 * 1000)
    signer = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    assert signer["signature"].native == signature
    attrs = _der_elements(signer["signed_attrs"].contents)
    assert [a["type"].native for a in signer["signed_attrs"]] == [
        cms.CMSAttribute.load(a)["type"].native for a in attrs]
    assert len(attrs) == 4 and _in_der_set_order(attrs), [a.hex() for a in attrs]
    if nonce is not None and nonce.bit_length() > MAX_NONCE_BITS:  # a query's is refused
        assert fail_bits(tsa.respond(request(digest, alg, nonce=nonce))) == (2, {"bad_request"})
    elif nonce is not None:  # a client's query with this nonce gets it back
        answer = parse_resp(tsa.respond(request(digest, alg, nonce=nonce)))
        assert answer["status"]["status"].native == "granted"
        assert answer["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed[
            "nonce"].native == nonce
    assert ("certificates" in cms.ContentInfo.load(der)["content"].native
            and cms.ContentInfo.load(der)["content"]["certificates"].native is not None) \
        == with_cert


def test_signed_attributes_are_sorted_where_the_listing_is_not(short_ess: TsaIdentity) -> None:
    """With `short_ess` the writer's listing order is not DER's (checked here, so the case
    means something), and the token's attributes are in DER's order all the same."""
    tsa = TimeStampAuthority(short_ess, serial=lambda: 1)
    der = tsa.timestamp_digest(hashlib.sha256(DATA).digest())
    signer = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    attrs = _der_elements(signer["signed_attrs"].contents)
    types = [cms.CMSAttribute.load(a)["type"].native for a in attrs]
    listed = ["content_type", "signing_time", "message_digest", "signing_certificate_v2"]
    assert sorted(types) == sorted(listed) and types != listed
    assert _in_der_set_order(attrs) and not _in_der_set_order(
        sorted(attrs, key=lambda a: listed.index(cms.CMSAttribute.load(a)["type"].native)))
    assert _redumped(der) == der


def test_a_block_token_verifies_and_answers_as_before(tsa: TimeStampAuthority,
                                                      chain: Chain) -> None:
    """The hand-written token verifies with the offline verifier, with a real signature."""
    digest = hashlib.sha256(DATA).digest()
    der = tsa.timestamp_digest(digest)
    verify_token(der, digest, chain.root_pem)
    assert _redumped(der) == der


# --------------------------------------------------------------------------- the HTTP route


def test_the_timestamp_route_answers_off_the_event_loop(tsa: TimeStampAuthority) -> None:
    """POST /v1/timestamp calls respond() in a worker thread: with a remote notary it is a
    blocking HTTP call, which on the event loop stalls every other request meanwhile."""
    import asyncio
    import types

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from copyledger.api.routes import tsa as route

    on_the_loop: list[bool] = []

    class RemoteLike:
        def respond(self, query_der: bytes) -> bytes:
            try:
                asyncio.get_running_loop()
                on_the_loop.append(True)
            except RuntimeError:  # no loop running in this thread
                on_the_loop.append(False)
            return tsa.respond(query_der)

    app = FastAPI()
    app.include_router(route.router)
    app.state.tsa_limiter = route.limiter(100.0)
    app.state.node = types.SimpleNamespace(tsa=RemoteLike())
    with TestClient(app) as client:
        r = client.post("/v1/timestamp", content=request(SHA256),
                        headers={"content-type": route.QUERY_TYPE})
    assert r.status_code == 200 and r.headers["content-type"] == route.REPLY_TYPE
    assert fail_bits(r.content) == (0, set())
    assert on_the_loop == [False]
