"""File key custody: private file modes, no overwrite, clear load errors, Go-compatible notes."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from copyledger.ledger import note
from copyledger.ledger.errors import Conflict, InvalidInput, SignatureError
from copyledger.notary.signer import FileSigner, Signer, sign_note, verifier_key

pytestmark = pytest.mark.filterwarnings("error")

GO: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "golang-mod-sumdb" / "note-vectors.json").read_text()
)
ORIGIN = "example.org/log"
TEXT = "example.org/log\n3\n" + base64.b64encode(bytes(32)).decode() + "\n"


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """A permissive umask must not make the key file readable by others."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_load_sign_verify(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "log.pem"
    made = FileSigner.generate(ORIGIN, path)
    assert mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = FileSigner.load(ORIGIN, path)
    assert loaded.public_key == made.public_key and len(loaded.public_key) == 32
    vkey = verifier_key(loaded)
    assert vkey.startswith(ORIGIN + "+")
    signed = sign_note(TEXT, [loaded])
    opened, good = note.verify_note(signed, [note.parse_verifier_key(vkey)])
    assert opened.text == TEXT
    assert [v.name for v in good] == [ORIGIN]
    assert note.parse_checkpoint(opened.text).size == 3


def test_signatures_by_another_key_do_not_verify(tmp_path: Path) -> None:
    one = FileSigner.generate(ORIGIN, tmp_path / "one.pem")
    two = FileSigner.generate(ORIGIN, tmp_path / "two.pem")
    with pytest.raises(SignatureError):
        note.verify_note(sign_note(TEXT, [two]), [note.parse_verifier_key(verifier_key(one))])


def test_several_signers(tmp_path: Path) -> None:
    log = FileSigner.generate(ORIGIN, tmp_path / "log.pem")
    witness = FileSigner.generate("witness.example/w1", tmp_path / "w.pem")
    signed = sign_note(TEXT, [log, witness])
    vkeys = [note.parse_verifier_key(verifier_key(s)) for s in (log, witness)]
    assert note.verify_note(signed, vkeys)[1] == vkeys


def test_encrypted_key(tmp_path: Path) -> None:
    path = tmp_path / "log.pem"
    made = FileSigner.generate(ORIGIN, path, passphrase=b"correct horse")
    assert mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert FileSigner.load(ORIGIN, path, b"correct horse").public_key == made.public_key
    with pytest.raises(InvalidInput, match="wrong passphrase"):
        FileSigner.load(ORIGIN, path, b"battery staple")
    with pytest.raises(InvalidInput, match="passphrase is needed"):
        FileSigner.load(ORIGIN, path)


def test_passphrase_for_plain_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.pem"
    FileSigner.generate(ORIGIN, path)
    with pytest.raises(InvalidInput, match="not encrypted"):
        FileSigner.load(ORIGIN, path, b"secret")


def test_overwrite_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.pem"
    FileSigner.generate(ORIGIN, path)
    before = path.read_bytes()
    with pytest.raises(Conflict):
        FileSigner.generate(ORIGIN, path)
    assert path.read_bytes() == before
    other = tmp_path / "other"
    other.write_text("not a key")
    with pytest.raises(Conflict):
        FileSigner.generate(ORIGIN, other)
    assert other.read_text() == "not a key"


def test_generate_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        FileSigner.generate(ORIGIN, tmp_path / "missing" / "log.pem")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no key file"):
        FileSigner.load(ORIGIN, tmp_path / "nope.pem")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        FileSigner.load(ORIGIN, tmp_path)


@pytest.mark.parametrize(
    "pem",
    [
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        x25519.X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    ],
    ids=["p256", "x25519"],
)
def test_wrong_key_type(tmp_path: Path, pem: bytes) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    with pytest.raises(InvalidInput, match="not an Ed25519 private key"):
        FileSigner.load(ORIGIN, path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    ],
    ids=["empty", "garbage", "bad-der", "public-key"],
)
def test_not_a_private_key(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(InvalidInput):
        FileSigner.load(ORIGIN, path)


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\there"])
def test_invalid_key_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput):
        FileSigner(name, Ed25519PrivateKey.generate())
    with pytest.raises(InvalidInput):
        FileSigner.generate(name, tmp_path / "key.pem")
    assert not (tmp_path / "key.pem").exists()


def test_go_vector_key_produces_go_signature() -> None:
    # Go's PRIVATE+KEY+name+hash+base64(0x01 || seed) test-only key; the base64 may hold '+'.
    private, key_word, name, key_hash, encoded = GO["peter_skey_TEST_ONLY"].split("+", 4)
    assert (private, key_word) == ("PRIVATE", "KEY")
    raw = base64.b64decode(encoded)
    assert raw[0] == note.ALG_ED25519
    signer = FileSigner(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
    assert verifier_key(signer) == GO["peter_vkey"]
    assert note.key_id(signer.name, signer.public_key).hex() == key_hash
    assert sign_note(GO["text"], [signer]) == GO["expected_signed_note_by_peter"]


def test_go_vector_key_survives_a_pem_file(tmp_path: Path) -> None:
    raw = base64.b64decode(GO["peter_skey_TEST_ONLY"].split("+", 4)[4])
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    path = tmp_path / "peter.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    signer = FileSigner.load("PeterNeumann", path)
    assert sign_note(GO["text"], [signer]) == GO["expected_signed_note_by_peter"]


def test_file_signer_is_a_signer(tmp_path: Path) -> None:
    signer = FileSigner.generate(ORIGIN, tmp_path / "k.pem")
    assert isinstance(signer, Signer)
    assert "PRIVATE" not in repr(signer)


class ShortSigner:
    name = "broken"

    @property
    def public_key(self) -> bytes:
        return bytes(32)

    def sign(self, message: bytes) -> bytes:
        return b"\x00" * 10


def test_sign_note_checks_inputs(tmp_path: Path) -> None:
    signer = FileSigner.generate(ORIGIN, tmp_path / "k.pem")
    with pytest.raises(InvalidInput):
        sign_note("no final newline", [signer])
    with pytest.raises(InvalidInput):
        sign_note(TEXT, [])
    with pytest.raises(InvalidInput):
        sign_note(TEXT, [ShortSigner()])
