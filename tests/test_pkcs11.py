"""Keys in an HSM (SoftHSM2): generated inside the token, never readable or exportable, and
signing what file keys sign — checkpoints that verify under the published verifier key, and
RFC 3161 tokens that our verifier and `openssl ts -verify` accept."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import pytest
from asn1crypto import tsp  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from copyledger.ledger import note
from copyledger.ledger.errors import Conflict, InvalidInput, Unavailable, VerificationError
from copyledger.ledger.timestamp import token_from_response, verify_token
from copyledger.notary.keys import (
    KeyConfig,
    init_log_signer,
    init_tsa_chain,
    load_log_signer,
    load_tsa_identity,
    load_tsa_key,
)
from copyledger.notary.pkcs11 import (
    Pkcs11EcdsaKey,
    Pkcs11Ed25519Signer,
    Pkcs11Token,
    close_all,
    open_token,
)
from copyledger.notary.signer import FileSigner, sign_note, verifier_key
from copyledger.notary.tsa import (
    TSA_KEY_FILE,
    TimeStampAuthority,
    TsaChainPaths,
    create_tsa_chain,
    load_tsa,
)

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
ORIGIN = "example.org/log"
DATA = b"The Raven, by Edgar Allan Poe, first edition scan\n"


@dataclass(frozen=True)
class Hsm:
    module: str
    label: str
    pin: str
    idle_label: str  # a second token, for tests that log in and out on their own
    idle_pin: str


def _missing(what: str, env: str) -> NoReturn:
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} is required in this run ({env}=1) but is not installed")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hsm]:
    """Two fresh SoftHSM2 tokens in a private token directory, for this module only."""
    module = next((m for m in MODULES if Path(m).is_file()), None)
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        _missing("SoftHSM2 (Debian package softhsm2)", "COPYLEDGER_REQUIRE_SOFTHSM")
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\n"
    )
    hsm = Hsm(module, "copyledger-test", "1234-user", "copyledger-idle", "5678-user")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for label, pin in ((hsm.label, hsm.pin), (hsm.idle_label, hsm.idle_pin)):
        subprocess.run(
            [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "so-pin"],
            env=env, check=True, capture_output=True, timeout=60,
        )
    previous = os.environ.get("SOFTHSM2_CONF")
    close_all()  # SoftHSM2 reads SOFTHSM2_CONF when initialised: start it afresh on ours
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        yield hsm
    finally:
        close_all()
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture
def token(hsm: Hsm) -> Pkcs11Token:
    return open_token(hsm.module, hsm.label, hsm.pin)


@pytest.fixture
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        _missing("the openssl CLI", "COPYLEDGER_REQUIRE_OPENSSL")
    return path


def fresh(prefix: str) -> str:
    """A label no other test used: the token lives for the whole module."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def private_object(token: Pkcs11Token, label: str) -> Any:
    return token.run("test", lambda s: s.get_key(ObjectClass.PRIVATE_KEY, label=label))


# --------------------------------------------------------------------------- the log key


def test_ed25519_key_in_token_signs_checkpoints(token: Pkcs11Token) -> None:
    label = fresh("log")
    signer = Pkcs11Ed25519Signer.generate(ORIGIN, token, label)
    checkpoint = note.format_checkpoint(note.Checkpoint(ORIGIN, 7, hashlib.sha256(b"r").digest()))
    signed = sign_note(checkpoint, [signer])

    vkey = verifier_key(signer)
    opened, good = note.verify_note(signed, [note.parse_verifier_key(vkey)])
    assert opened.text == checkpoint
    assert [v.public_key for v in good] == [signer.public_key]
    # Found again by label, by a new object: the same key, and its signatures verify.
    again = Pkcs11Ed25519Signer(ORIGIN, token, label)
    assert again.public_key == signer.public_key and verifier_key(again) == vkey
    message = note.signature_message(checkpoint)
    Ed25519PublicKey.from_public_bytes(again.public_key).verify(again.sign(message), message)
    # A checkpoint signed by some other key does not pass under this one.
    other = FileSigner(ORIGIN, Ed25519PrivateKey.generate())
    with pytest.raises(VerificationError):
        note.verify_note(sign_note(checkpoint, [other]), [note.parse_verifier_key(vkey)])


def test_private_keys_are_sensitive_and_never_extractable(token: Pkcs11Token) -> None:
    log_label, tsa_label = fresh("log"), fresh("tsa")
    signer = Pkcs11Ed25519Signer.generate(ORIGIN, token, log_label)
    tsa_key = Pkcs11EcdsaKey.generate(token, tsa_label)
    wanted = [Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.ALWAYS_SENSITIVE,
              Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL, Attribute.TOKEN, Attribute.DERIVE]
    for label in (log_label, tsa_label):
        key = private_object(token, label)
        attrs = token.run("test", lambda _s: key.get_attributes(wanted))  # noqa: B023
        assert attrs[Attribute.SENSITIVE] is True
        assert attrs[Attribute.EXTRACTABLE] is False
        assert attrs[Attribute.ALWAYS_SENSITIVE] is True  # never was readable
        assert attrs[Attribute.NEVER_EXTRACTABLE] is True  # never was exportable
        assert attrs[Attribute.LOCAL] is True  # generated inside the token
        assert attrs[Attribute.TOKEN] is True  # persists in the token, not in the session
        assert attrs[Attribute.DERIVE] is False  # a signing key, nothing else
        with pytest.raises(Unavailable) as refused:  # the token will not show the key
            token.run("test", lambda _s: key[Attribute.VALUE])  # noqa: B023
        assert isinstance(refused.value.__cause__, p11.AttributeSensitive)
    expected = {"sensitive": True, "extractable": False, "always_sensitive": True,
                "never_extractable": True, "local": True}
    assert signer.custody() == expected and tsa_key.custody() == expected


def test_generate_refuses_to_overwrite_a_label(token: Pkcs11Token) -> None:
    label = fresh("log")
    first = Pkcs11Ed25519Signer.generate(ORIGIN, token, label)
    with pytest.raises(Conflict, match="refusing to overwrite"):
        Pkcs11Ed25519Signer.generate(ORIGIN, token, label)
    with pytest.raises(Conflict, match="refusing to overwrite"):
        Pkcs11EcdsaKey.generate(token, label)
    assert Pkcs11Ed25519Signer(ORIGIN, token, label).public_key == first.public_key
    assert len(token.run("test", lambda s: list(s.get_objects({Attribute.LABEL: label})))) == 2


def test_missing_or_wrong_keys_are_named(token: Pkcs11Token) -> None:
    with pytest.raises(InvalidInput, match="no private key 'absent' in token"):
        Pkcs11Ed25519Signer(ORIGIN, token, "absent")
    with pytest.raises(InvalidInput, match="no private key 'absent'"):
        Pkcs11EcdsaKey(token, "absent")
    ed_label, ec_label = fresh("log"), fresh("tsa")
    Pkcs11Ed25519Signer.generate(ORIGIN, token, ed_label)
    Pkcs11EcdsaKey.generate(token, ec_label)
    with pytest.raises(InvalidInput, match="not EC_EDWARDS"):
        Pkcs11Ed25519Signer(ORIGIN, token, ec_label)
    with pytest.raises(InvalidInput, match="not EC"):
        Pkcs11EcdsaKey(token, ed_label)
    with pytest.raises(InvalidInput, match="invalid key name"):
        Pkcs11Ed25519Signer("bad name", token, ed_label)


def test_an_exportable_key_is_refused(token: Pkcs11Token) -> None:
    """A key that could have been copied out is no better than a file: refuse it."""
    label = fresh("exportable")
    token.run("test", lambda s: s.generate_keypair(
        KeyType.EC, store=True, label=label,
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        public_template={Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")},
        private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
    ))
    with pytest.raises(InvalidInput, match="can be exported"):
        Pkcs11EcdsaKey(token, label)


def test_a_mismatched_pair_is_refused(token: Pkcs11Token) -> None:
    """A private key and someone else's public key under one label fail at load, not later."""
    a, b = fresh("a"), fresh("b")
    Pkcs11EcdsaKey.generate(token, a)
    Pkcs11EcdsaKey.generate(token, b)
    def relabel(session: Any) -> None:
        public = session.get_key(ObjectClass.PUBLIC_KEY, label=b)
        public[Attribute.LABEL] = a + "-x"
        session.get_key(ObjectClass.PUBLIC_KEY, label=a)[Attribute.LABEL] = b
        private = session.get_key(ObjectClass.PRIVATE_KEY, label=a)
        private[Attribute.LABEL] = a + "-x"
    token.run("test", relabel)
    with pytest.raises(InvalidInput, match="not one pair"):
        Pkcs11EcdsaKey(token, a + "-x")


# --------------------------------------------------------------------------- logging in


def test_wrong_pin_is_refused(hsm: Hsm, token: Pkcs11Token) -> None:
    with pytest.raises(InvalidInput, match="wrong PIN for token 'copyledger-idle'"):
        open_token(hsm.module, hsm.idle_label, "not-the-pin")  # refused by C_Login itself
    # The token is logged in already: PKCS#11 would accept any PIN now, so we compare.
    with pytest.raises(InvalidInput, match="wrong PIN for token 'copyledger-test'"):
        open_token(hsm.module, hsm.label, "not-the-pin")
    assert open_token(hsm.module, hsm.label, hsm.pin) is token
    with pytest.raises(InvalidInput, match="no PIN"):
        open_token(hsm.module, hsm.label, "")


def test_unknown_token_and_module_are_named(hsm: Hsm, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"no token labelled 'nope'.*copyledger-test"):
        open_token(hsm.module, "nope", hsm.pin)
    with pytest.raises(InvalidInput, match="no PKCS#11 module at"):
        open_token(str(tmp_path / "missing.so"), hsm.label, hsm.pin)
    not_a_module = tmp_path / "libfake.so"
    not_a_module.write_bytes(b"not a shared library")
    with pytest.raises(InvalidInput, match="not a usable PKCS#11 module"):
        open_token(str(not_a_module), hsm.label, hsm.pin)


def test_a_closed_token_is_unavailable_and_reopens(hsm: Hsm) -> None:
    token = open_token(hsm.module, hsm.idle_label, hsm.idle_pin)
    signer = Pkcs11Ed25519Signer.generate(ORIGIN, token, fresh("log"))
    token.close()
    with pytest.raises(Unavailable, match="closed"):
        signer.sign(b"x")
    again = open_token(hsm.module, hsm.idle_label, hsm.idle_pin)
    assert again is not token
    assert Pkcs11Ed25519Signer(ORIGIN, again, signer.key_label).public_key == signer.public_key


def _lose_session(token: Pkcs11Token) -> None:
    """What a network HSM's restart or a token reset does to a running process: the session
    it logged in with is gone (closed here behind the token object's back, logged out)."""
    token._session.close()


def _close_keeping_login(token: Pkcs11Token) -> Any:
    """The session is gone but the process is still logged in: another session (opened here,
    without the PIN, and returned to close later) holds the login, which is the application's,
    and the token's own session is closed at the C level without a logout."""
    import ctypes

    import pkcs11

    keeper = pkcs11.lib(token.module).get_token(token_label=token.label).open(rw=True)
    lib = ctypes.CDLL(token.module)  # (the module already loaded: the same state)
    assert lib.C_CloseSession(ctypes.c_ulong(token._session.handle)) == 0
    return keeper


@pytest.mark.parametrize("loss", ["logged-out", "still-logged-in"])
def test_a_lost_session_is_logged_in_again_and_the_keys_sign_on(
        token: Pkcs11Token, loss: str) -> None:
    """Before (D207): every later signature failed with SessionHandleInvalid (503) until the
    process was restarted. One login again serves both keys; each finds its object again.
    Still logged in (a session the token kept holds the login), a login with the PIN is
    answered 'already logged in': a session without the PIN shares the login (D207's review;
    before, every call failed until a restart)."""
    signer = Pkcs11Ed25519Signer.generate(ORIGIN, token, fresh("log"))
    tsa_key = Pkcs11EcdsaKey.generate(token, fresh("tsa"))
    before = token.generation
    keeper = _close_keeping_login(token) if loss == "still-logged-in" else _lose_session(token)
    try:
        Ed25519PublicKey.from_public_bytes(signer.public_key).verify(signer.sign(DATA), DATA)
        tsa_key.public_key().verify(tsa_key.sign(DATA), DATA, ec.ECDSA(hashes.SHA256()))
        assert token.generation == before + 1
        assert signer.custody()["sensitive"] is True  # (read through the new session too)
        _lose_session(token)  # lost again: logged in again again
        Ed25519PublicKey.from_public_bytes(signer.public_key).verify(signer.sign(DATA), DATA)
        assert token.generation == before + 2
    finally:
        if keeper is not None:  # (and no session of this process left to hold a login for
            keeper.close()  # the next tests: they begin logged out, as at a start)
            close_all()


@pytest.mark.parametrize("change", ["removed", "replaced"])
def test_a_key_changed_while_the_session_was_lost_does_not_sign(
        token: Pkcs11Token, change: str) -> None:
    """A token reset and filled again: a key gone, or another under its label, is refused
    with 503 (Unavailable) rather than sign what verifiers would not accept, and looked for
    again at every try, so it signs again once the token holds it; the token's other keys
    sign on."""
    label = fresh("log")
    signer = Pkcs11Ed25519Signer.generate(ORIGIN, token, label)
    other = Pkcs11Ed25519Signer.generate(ORIGIN, token, fresh("log"))
    _lose_session(token)
    Ed25519PublicKey.from_public_bytes(other.public_key).verify(other.sign(DATA), DATA)
    handles: list[Any] = []

    def take(session: Any) -> None:  # (the key's objects, kept aside under another label)
        for obj in list(session.get_objects({Attribute.LABEL: label})):
            obj[Attribute.LABEL] = label + "-aside"
            handles.append(obj)

    token.run("test", take)
    assert len(handles) == 2
    if change == "replaced":
        Pkcs11Ed25519Signer.generate(ORIGIN, token, label)
    for _ in range(2):
        with pytest.raises(Unavailable, match="not the key this process loaded"):
            signer.sign(DATA)
    Ed25519PublicKey.from_public_bytes(other.public_key).verify(other.sign(DATA), DATA)

    def restore(session: Any) -> None:  # the operator puts the right key back
        for obj in list(session.get_objects({Attribute.LABEL: label})):
            obj.destroy()
        for obj in list(session.get_objects({Attribute.LABEL: label + "-aside"})):
            obj[Attribute.LABEL] = label

    token.run("test", restore)
    Ed25519PublicKey.from_public_bytes(signer.public_key).verify(signer.sign(DATA), DATA)


def test_a_pin_refused_when_logging_in_again_is_not_tried_again(
        hsm: Hsm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PIN was changed on the token: the login again is refused, and no later call tries
    the PIN again (a token locks it after a few failures): each is 503 naming the cause and
    the way out, a restart (D207's review; before, every block tried it)."""
    import copyledger.notary.pkcs11 as p11mod

    token = open_token(hsm.module, hsm.idle_label, hsm.idle_pin)
    signer = Pkcs11Ed25519Signer.generate(ORIGIN, token, fresh("log"))
    logins = []
    real = p11mod._login
    monkeypatch.setattr(p11mod, "_login", lambda *a, **kw: logins.append(1) or real(*a, **kw))
    _lose_session(token)
    monkeypatch.setattr(token, "_pin", "not-the-pin")
    try:
        for _ in range(3):
            with pytest.raises(Unavailable, match=r"refused this process's PIN.*wrong PIN"):
                signer.sign(DATA)
        assert len(logins) == 1
        monkeypatch.setattr(token, "_pin", hsm.idle_pin)  # (even the right one: a restart)
        with pytest.raises(Unavailable, match="restart the process"):
            signer.sign(DATA)
        assert len(logins) == 1
    finally:
        token.close()


def test_a_token_still_away_is_tried_again_after_a_wait(
        token: Pkcs11Token, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging in again fails for another cause (the token still away): 503 naming it, no
    login tried again until the wait (1 s, doubling to 30 s) is over, then signing resumes."""
    import copyledger.notary.pkcs11 as p11mod

    signer = Pkcs11Ed25519Signer.generate(ORIGIN, token, fresh("log"))
    logins = []
    real = p11mod._login

    def away(*a: Any, **kw: Any) -> Any:
        logins.append(1)
        if len(logins) <= 2:
            raise Unavailable("cannot open token: DeviceRemoved")
        return real(*a, **kw)

    monkeypatch.setattr(p11mod, "_login", away)
    _lose_session(token)
    try:
        with pytest.raises(Unavailable, match="logging in again failed: cannot open token"):
            signer.sign(DATA)
        with pytest.raises(Unavailable, match="logging in again failed"):
            signer.sign(DATA)  # (within the wait: not tried)
        assert len(logins) == 1 and token._login_wait == 1.0
        token._login_at = 0.0  # the wait is over
        with pytest.raises(Unavailable):
            signer.sign(DATA)
        assert len(logins) == 2 and token._login_wait == 2.0  # (doubled)
        token._login_at = 0.0
        Ed25519PublicKey.from_public_bytes(signer.public_key).verify(signer.sign(DATA), DATA)
        assert len(logins) == 3 and token._login_wait == 0.0
    finally:
        token._login_at, token._login_wait = 0.0, 0.0  # (the token is the module's)


# --------------------------------------------------------------------------- the TSA key


@pytest.fixture
def hsm_chain(token: Pkcs11Token, tmp_path: Path) -> tuple[TsaChainPaths, TimeStampAuthority]:
    key = Pkcs11EcdsaKey.generate(token, fresh("tsa"))
    paths = create_tsa_chain(tmp_path / "tsa", "example.org/log", tsa_key=key)
    assert not (tmp_path / "tsa" / TSA_KEY_FILE).exists()  # no key file: the key is in the HSM
    identity = load_tsa(paths.root.parent, tsa_key=key)
    assert identity.certificate.public_key() == key.public_key()
    return paths, TimeStampAuthority(identity)


def test_hsm_ecdsa_signatures_are_der_over_sha256(token: Pkcs11Token) -> None:
    key = Pkcs11EcdsaKey.generate(token, fresh("tsa"))
    signature = key.sign(DATA)
    assert signature[0] == 0x30  # a DER SEQUENCE { r, s }
    key.public_key().verify(signature, DATA, ec.ECDSA(hashes.SHA256()))
    assert key.digest_algorithm == "sha256"


def test_tsa_with_hsm_key_issues_tokens_our_verifier_accepts(
    hsm_chain: tuple[TsaChainPaths, TimeStampAuthority],
) -> None:
    paths, tsa = hsm_chain
    digest = hashlib.sha256(DATA).digest()
    query = tsp.TimeStampReq({
        "version": 1,
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "nonce": 12345,
        "cert_req": True,
    }).dump()
    reply = tsa.respond(query)
    info = verify_token(token_from_response(reply), digest, paths.root.read_bytes(), nonce=12345)
    assert info.nonce == 12345
    block_token = tsa.timestamp_digest(digest, include_certificate=False)
    verify_token(block_token, digest, paths.root.read_bytes(),
                 untrusted_pem=paths.certificate.read_bytes())


def test_openssl_verifies_hsm_tsa_replies(
    hsm_chain: tuple[TsaChainPaths, TimeStampAuthority], tmp_path: Path, openssl: str
) -> None:
    paths, tsa = hsm_chain
    data = tmp_path / "work.txt"
    data.write_bytes(DATA)
    query = subprocess.run([openssl, "ts", "-query", "-data", str(data), "-sha256", "-cert"],
                           capture_output=True, check=True, timeout=30).stdout
    (tmp_path / "reply.tsr").write_bytes(tsa.respond(query))
    chain = ["-CAfile", str(paths.root), "-untrusted", str(paths.certificate)]
    r = subprocess.run([openssl, "ts", "-verify", "-data", str(data), "-in",
                        str(tmp_path / "reply.tsr"), *chain],
                       capture_output=True, text=True, timeout=30)
    assert "Verification: OK" in r.stdout, r.stdout + r.stderr
    # A block's token, stamped over a digest, verifies with -digest.
    digest = hashlib.sha256(b"block hash").digest()
    (tmp_path / "block.tst").write_bytes(tsa.timestamp_digest(digest))
    r = subprocess.run([openssl, "ts", "-verify", "-digest", digest.hex(), "-token_in",
                        "-in", str(tmp_path / "block.tst"), *chain],
                       capture_output=True, text=True, timeout=30)
    assert "Verification: OK" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------- threads


def test_concurrent_signing_from_threads(
    token: Pkcs11Token, hsm_chain: tuple[TsaChainPaths, TimeStampAuthority]
) -> None:
    """The sequencer signs checkpoints while API threads answer /v1/timestamp: one token."""
    paths, tsa = hsm_chain
    signer = Pkcs11Ed25519Signer.generate(ORIGIN, token, fresh("log"))
    verify_ed = Ed25519PublicKey.from_public_bytes(signer.public_key).verify
    roots = paths.root.read_bytes()
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(40):
                message = f"worker {worker} message {i}".encode()
                if worker % 2:
                    verify_ed(signer.sign(message), message)
                else:
                    digest = hashlib.sha256(message).digest()
                    verify_token(tsa.timestamp_digest(digest), digest, roots)
        except BaseException as exc:  # reported below, with the worker's traceback
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)


# --------------------------------------------------------------------------- notary.keys


def test_key_config_picks_the_backend(
    hsm: Hsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = KeyConfig(backend="pkcs11", pkcs11_module=hsm.module, token_label=hsm.label,
                       pin_env="TEST_HSM_PIN", log_key_label=fresh("log"),
                       tsa_key_label=fresh("tsa"))
    monkeypatch.delenv("TEST_HSM_PIN", raising=False)
    with pytest.raises(InvalidInput, match="set TEST_HSM_PIN"):
        load_log_signer(config, ORIGIN, tmp_path / "unused.pem")
    monkeypatch.setenv("TEST_HSM_PIN", hsm.pin)

    signer, created = init_log_signer(config, ORIGIN, tmp_path / "unused.pem")
    assert created and isinstance(signer, Pkcs11Ed25519Signer)
    again, created = init_log_signer(config, ORIGIN, tmp_path / "unused.pem")
    assert not created and again.public_key == signer.public_key
    assert load_log_signer(config, ORIGIN, tmp_path / "unused.pem").public_key == signer.public_key
    assert not (tmp_path / "unused.pem").exists()

    tsa_dir = tmp_path / "tsa"
    assert init_tsa_chain(config, tsa_dir, ORIGIN) is True
    assert init_tsa_chain(config, tsa_dir, ORIGIN) is False
    assert not (tsa_dir / TSA_KEY_FILE).exists()
    assert isinstance(load_tsa_key(config), Pkcs11EcdsaKey)
    identity = load_tsa_identity(config, tsa_dir)
    digest = hashlib.sha256(DATA).digest()
    verify_token(TimeStampAuthority(identity).timestamp_digest(digest), digest,
                 (tsa_dir / "root.pem").read_bytes())

    files = KeyConfig()
    file_signer, created = init_log_signer(files, ORIGIN, tmp_path / "keys" / "log-key.pem")
    assert created and isinstance(file_signer, FileSigner)
    assert load_tsa_key(files) is None
    assert init_tsa_chain(files, tmp_path / "file-tsa", ORIGIN) is True
    assert (tmp_path / "file-tsa" / TSA_KEY_FILE).exists()
    load_tsa_identity(files, tmp_path / "file-tsa")

    with pytest.raises(InvalidInput, match="needs a PKCS#11 module"):
        KeyConfig(backend="pkcs11")
    with pytest.raises(InvalidInput, match="not one of"):
        KeyConfig(backend="vault")


def test_a_signed_log_whose_token_lost_its_log_key_is_refused(
        tmp_path: Path, hsm: Hsm, monkeypatch: pytest.MonkeyPatch) -> None:
    """D202's review: with keys in a PKCS#11 token the lost-key check never looked in it, so a
    signed log whose token no longer held its log key (a token initialised again, a mistyped
    `pkcs11_log_key_label`) had a new key made there at the next start and `log.vkey`
    rewritten with it, before D116's check refused to serve. Now the start is refused first,
    naming the label, and neither the token nor `log.vkey` changes."""
    from copyledger.service.node import init_data_dir
    from tests.helpers import settings_for
    from tests.test_rotation_crash import audit_ok, registry

    monkeypatch.setenv("COPYLEDGER_TEST_KEY_FILES_PIN", hsm.pin)
    s = settings_for(tmp_path, key_backend="pkcs11", pkcs11_module=hsm.module,
                     pkcs11_token_label=hsm.label, pkcs11_pin_env="COPYLEDGER_TEST_KEY_FILES_PIN",
                     pkcs11_log_key_label="log-key-files", pkcs11_tsa_key_label="tsa-key-files")
    registry(s, works=1)
    vkey = s.verifier_key_path.read_text()
    moved = replace(s, pkcs11_log_key_label="log-key-files-mistyped")
    with pytest.raises(Conflict, match="'log-key-files-mistyped' in PKCS#11 token"):
        init_data_dir(moved)
    assert not open_token(hsm.module, hsm.label, hsm.pin).has_object("log-key-files-mistyped")
    assert s.verifier_key_path.read_text() == vkey
    # A label that names another registry's key in the same token: refused as well (D202's
    # review), before log.vkey is rewritten with that key.
    Pkcs11Ed25519Signer.generate("other.example/log", open_token(hsm.module, hsm.label, hsm.pin),
                                 "log-key-files-other")
    with pytest.raises(Conflict, match="publishes the verifier key"):
        init_data_dir(replace(s, pkcs11_log_key_label="log-key-files-other"))
    assert s.verifier_key_path.read_text() == vkey
    init_data_dir(s)  # with the right label it starts, as before
    audit_ok(s.data_dir)


def test_a_registry_whose_token_lost_its_session_registers_on(
        tmp_path: Path, hsm: Hsm, monkeypatch: pytest.MonkeyPatch) -> None:
    """D207 end to end: the session the serving registry's log and TSA keys share is lost
    between two registrations; the second is sealed (signed checkpoint, RFC 3161 token) and
    answered 201, not 503, and the audit is clean."""
    from fastapi.testclient import TestClient

    from copyledger.api.app import create_app
    from copyledger.service.apikeys import create_key
    from copyledger.service.node import Node
    from tests.helpers import settings_for, work_body
    from tests.test_rotation_crash import audit_ok

    monkeypatch.setenv("COPYLEDGER_TEST_LOST_PIN", hsm.pin)
    s = settings_for(tmp_path, key_backend="pkcs11", pkcs11_module=hsm.module,
                     pkcs11_token_label=hsm.label, pkcs11_pin_env="COPYLEDGER_TEST_LOST_PIN",
                     pkcs11_log_key_label="log-lost", pkcs11_tsa_key_label="tsa-lost")
    node = Node.open(s)
    try:
        key, _ = create_key(node.store, "creator", "alice")
        with TestClient(create_app(node)) as c:
            auth = {"Authorization": f"Bearer {key}"}
            assert c.post("/v1/works", json=work_body("lost0"), headers=auth).status_code == 201
            token = open_token(hsm.module, hsm.label, hsm.pin)
            before = token.generation
            _lose_session(token)
            r = c.post("/v1/works", json=work_body("lost1"), headers=auth)
            assert r.status_code == 201, r.text
            assert token.generation == before + 1
    finally:
        node.stop()
    audit_ok(s.data_dir)
