"""C2SP signed notes and checkpoints against the public vectors (C2SP, Go sumdb, sum.golang.org)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from copyledger.ledger import note
from copyledger.ledger.errors import InvalidInput, SignatureError

VECTORS = Path(__file__).parent / "vectors"
C2SP = VECTORS / "c2sp" / "examples"
GO: dict[str, Any] = json.loads((VECTORS / "golang-mod-sumdb" / "note-vectors.json").read_text())
TDF: dict[str, Any] = json.loads(
    (VECTORS / "transparency-dev-formats" / "note-vectors.json").read_text()
)

PETER = note.parse_verifier_key(GO["peter_vkey"])
ENOCH = note.parse_verifier_key(GO["enoch_vkey"])
SUMDB = note.parse_verifier_key(TDF["sum_golang_org_vkey"])
SUMDB_NOTE: str = TDF["sum_golang_org_signed_tree_head"]


def go_private_key(skey: str) -> tuple[str, Ed25519PrivateKey]:
    """Go's PRIVATE+KEY+name+hash+base64(0x01 || seed) test key format."""
    private, key_word, name, _hash, encoded = skey.split("+", 4)
    assert (private, key_word) == ("PRIVATE", "KEY")
    raw = base64.b64decode(encoded)
    assert raw[0] == note.ALG_ED25519 and len(raw) == 33
    return name, Ed25519PrivateKey.from_private_bytes(raw[1:])


def sign(text: str, name: str, key: Ed25519PrivateKey) -> note.Signature:
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return note.Signature(name, note.key_id(name, public), key.sign(note.signature_message(text)))


# ---------------------------------------------------------------- verifier keys


def test_c2sp_example_note_verifies() -> None:
    vkey = note.parse_verifier_key((C2SP / "signed-note-example.vkey").read_text().strip())
    data = (C2SP / "signed-note-example.note").read_bytes()
    opened, good = note.verify_note(data, [vkey])
    assert opened.text == "This is an example message.\n"
    assert good == [vkey]
    assert note.format_note(opened.text, opened.signatures) == data.decode()


@pytest.mark.parametrize(
    "vkey",
    [
        GO["peter_vkey"],
        GO["enoch_vkey"],
        TDF["sum_golang_org_vkey"],  # its base64 contains '+'
        *TDF["extra_verifiers_for_benchmark_note"],
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ],
)
def test_verifier_keys_round_trip(vkey: str) -> None:
    verifier = note.parse_verifier_key(vkey)
    assert note.format_verifier_key(verifier.name, verifier.public_key) == vkey
    assert verifier.key_id == note.key_id(verifier.name, verifier.public_key)
    assert verifier.key_id.hex() == vkey.split("+")[1]


def test_peter_key_fields() -> None:
    assert PETER.name == "PeterNeumann"
    assert PETER.key_id == bytes.fromhex("c74f20a3")
    assert SUMDB.name == "sum.golang.org"


_GOOD_KEY = base64.b64encode(b"\x01" + PETER.public_key).decode()


@pytest.mark.parametrize(
    "vkey",
    [
        *GO["bad_vkeys"],
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        f"PeterNeumann+c74f20a4+{_GOOD_KEY}",  # key ID does not match
        f"PeterNeumann+C74F20A3+{_GOOD_KEY}",  # hex must be lowercase
        f"PeterNeumann+c74f20a+{_GOOD_KEY}",  # 7 hex digits
        f"peterNeumann+c74f20a3+{_GOOD_KEY}",  # different name, different ID
        f"+c74f20a3+{_GOOD_KEY}",  # empty name
        f"Peter Neumann+c74f20a3+{_GOOD_KEY}",  # space in name
        f"PeterNeumann+c74f20a3+{_GOOD_KEY[:-1]}",  # truncated base64
        f"PeterNeumann+c74f20a3+{_GOOD_KEY}=",  # bad padding
        f"PeterNeumann+c74f20a3+{_GOOD_KEY} ",
        "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x04" + PETER.public_key).decode(),
        "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + PETER.public_key[:31]).decode(),
        "PeterNeumann+c74f20a3+",
    ],
)
def test_bad_verifier_keys_rejected(vkey: str) -> None:
    with pytest.raises(InvalidInput):
        note.parse_verifier_key(vkey)


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\u00a0b", "a\u2003b", "a\tb", "a\x00b"])
def test_bad_key_names(name: str) -> None:
    assert not note.is_valid_key_name(name)
    with pytest.raises(InvalidInput):
        note.format_verifier_key(name, PETER.public_key)


def test_verifier_rejects_wrong_lengths() -> None:
    with pytest.raises(InvalidInput):
        note.Verifier("x", b"\x00" * 3, PETER.public_key)
    with pytest.raises(InvalidInput):
        note.Verifier("x", b"\x00" * 4, PETER.public_key[:31])
    assert not PETER.verify(b"msg", b"\x00" * 63)


# ---------------------------------------------------------------- Go's sumdb/note vectors


def test_go_signer_produces_expected_note() -> None:
    name, key = go_private_key(GO["peter_skey_TEST_ONLY"])
    signed = note.format_note(GO["text"], [sign(GO["text"], name, key)])
    assert signed == GO["expected_signed_note_by_peter"]
    assert signed == GO["text"] + "\n" + GO["peter_sig_line"]


def test_unknown_signature_is_ignored() -> None:
    both = GO["expected_signed_note_by_peter"] + GO["enoch_sig_line"]
    opened, good = note.verify_note(both, [PETER])
    assert good == [PETER]
    assert [sig.name for sig in opened.signatures] == ["PeterNeumann", "EnochRoot"]
    assert note.verify_note(both, [ENOCH])[1] == [ENOCH]
    assert note.verify_note(both, [ENOCH, PETER])[1] == [PETER, ENOCH]


def test_untrusted_note_rejected() -> None:
    with pytest.raises(SignatureError):
        note.verify_note(GO["expected_signed_note_by_peter"], [ENOCH])
    with pytest.raises(SignatureError):
        note.verify_note(GO["expected_signed_note_by_peter"], [])


def test_bad_signature_by_known_key_rejects_whole_note() -> None:
    impostor = sign(GO["text"], "PeterNeumann", Ed25519PrivateKey.generate()).signature
    forged = note.Signature("PeterNeumann", PETER.key_id, impostor)  # claims Peter's name and ID
    genuine = note.parse_note(GO["expected_signed_note_by_peter"]).signatures
    for order in ([*genuine, forged], [forged, *genuine]):
        with pytest.raises(SignatureError):
            note.verify_note(note.format_note(GO["text"], order), [PETER])


def test_same_name_other_key_id_is_ignored() -> None:
    other = note.Signature("PeterNeumann", b"\x00\x00\x00\x00", b"\x01" * 64)
    data = note.format_note(
        GO["text"], [*note.parse_note(GO["expected_signed_note_by_peter"]).signatures, other]
    )
    assert note.verify_note(data, [PETER])[1] == [PETER]


def test_ambiguous_verifiers_rejected() -> None:
    clash = note.Verifier(PETER.name, PETER.key_id, ENOCH.public_key)
    with pytest.raises(InvalidInput):
        note.verify_note(GO["expected_signed_note_by_peter"], [PETER, clash])
    # The same verifier twice is harmless.
    assert note.verify_note(GO["expected_signed_note_by_peter"], [PETER, PETER])[1] == [PETER]


# ---------------------------------------------------------------- sum.golang.org, checkpoints


def test_sum_golang_org_tree_head() -> None:
    opened, good = note.verify_note(SUMDB_NOTE.encode(), [SUMDB])
    assert good == [SUMDB]
    checkpoint = note.parse_checkpoint(opened.text)
    assert checkpoint.origin == "go.sum database tree"
    assert checkpoint.size == 6476701
    assert checkpoint.root == base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=")
    assert checkpoint.extensions == ()
    assert note.format_checkpoint(checkpoint) == opened.text


def test_sum_golang_org_with_cosigners() -> None:
    data = SUMDB_NOTE + "".join(line + "\n" for line in TDF["extra_sig_lines_for_benchmark_note"])
    extra = [note.parse_verifier_key(v) for v in TDF["extra_verifiers_for_benchmark_note"]]
    assert note.verify_note(data, [SUMDB, *extra])[1] == [SUMDB, *extra]
    assert note.verify_note(data, extra[1:2])[1] == extra[1:2]


def test_every_flipped_byte_fails() -> None:
    data = SUMDB_NOTE.encode()
    for index in range(len(data)):
        for mask in (0x01, 0x20, 0x80):
            flipped = bytearray(data)
            flipped[index] ^= mask
            with pytest.raises(SignatureError):
                note.verify_note(bytes(flipped), [SUMDB])


def test_c2sp_checkpoint_and_cosignature_examples() -> None:
    opened = note.parse_note((C2SP / "tlog-checkpoint-example.note").read_text())
    checkpoint = note.parse_checkpoint(opened.text)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert base64.b64encode(checkpoint.root) == b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    cosigned = note.parse_note((C2SP / "tlog-cosignature-example.note").read_text())
    assert cosigned.text == opened.text
    assert [s.name for s in cosigned.signatures] == [
        "example.com/behind-the-sofa",
        "witness.example.com/w1",
    ]
    assert len(cosigned.signatures[1].signature) == 8 + 64  # timestamp || Ed25519 signature
    with pytest.raises(SignatureError):  # we trust neither key
        note.verify_note((C2SP / "tlog-cosignature-example.note").read_text(), [PETER])


# ---------------------------------------------------------------- malformed notes

_LINE = GO["peter_sig_line"]


@pytest.mark.parametrize(
    "data",
    [
        "",
        "text\n",
        "text\n\n",  # no signatures
        "text\n" + _LINE,  # no blank line
        "text\n\n" + _LINE[:-1],  # last line without newline
        "text\n\n" + _LINE.replace("\u2014", "-"),
        "text\n\n" + _LINE.replace("\u2014 ", "\u2014"),
        "text\n\n" + _LINE + "\n",  # trailing blank line
        "text\n\n\u2014 PeterNeumann\n",
        "text\n\n\u2014 PeterNeumann \n",
        "text\n\n\u2014 PeterNeumann AAAA\n",  # fewer than 5 bytes
        "text\n\n\u2014 Peter+Neumann AAAAAAA=\n",
        "text\n\n\u2014  AAAAAAA=\n",  # empty name
        "text\n\n" + _LINE.replace("=\n", "\n"),  # missing padding
        "text\n\n" + _LINE.replace("=\n", "==\n"),
        "tab\there\n\n" + _LINE,
        "cr\r\n\n" + _LINE,
        "text\n\n" + _LINE.replace("\n", "\r\n"),
        "lone \ud800\n\n" + _LINE,
        "text\n\n" + _LINE * (note.MAX_SIGNATURES + 1),
    ],
)
def test_malformed_notes_rejected(data: str) -> None:
    with pytest.raises(SignatureError):
        note.parse_note(data)


def test_invalid_utf8_rejected() -> None:
    with pytest.raises(SignatureError):
        note.parse_note(b"caf\xe9\n\n" + _LINE.encode())


def test_many_signatures_up_to_limit_accepted() -> None:
    opened = note.parse_note(GO["text"] + "\n" + _LINE * note.MAX_SIGNATURES)
    assert len(opened.signatures) == note.MAX_SIGNATURES
    assert note.verify_note(GO["text"] + "\n" + _LINE * 3, [PETER])[1] == [PETER]


def test_text_may_contain_blank_lines_and_dashes() -> None:
    name, key = go_private_key(GO["peter_skey_TEST_ONLY"])
    text = "a\n\n\u2014 PeterNeumann x08go/ZJ\n\nb\n\n"
    signed = note.format_note(text, [sign(text, name, key)])
    assert note.verify_note(signed, [PETER])[0].text == text


@pytest.mark.parametrize("text", ["", "no newline", "ctrl\x07\n", "cr\r\n"])
def test_format_note_rejects_bad_text(text: str) -> None:
    sig = note.Signature("n", b"\x00" * 4, b"\x00" * 64)
    with pytest.raises(InvalidInput):
        note.format_note(text, [sig])


def test_format_note_rejects_bad_signatures() -> None:
    with pytest.raises(InvalidInput):
        note.format_note("t\n", [])
    with pytest.raises(InvalidInput):
        note.format_note("t\n", [note.Signature("a b", b"\x00" * 4, b"\x00")])
    with pytest.raises(InvalidInput):
        note.format_note("t\n", [note.Signature("a", b"\x00" * 3, b"\x00")])


# ---------------------------------------------------------------- checkpoint strictness

_ROOT = "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="


@pytest.mark.parametrize(
    "text",
    [
        f"origin\n01\n{_ROOT}\n",  # leading zero
        f"origin\n00\n{_ROOT}\n",
        f"origin\n-1\n{_ROOT}\n",
        f"origin\n+1\n{_ROOT}\n",
        f"origin\n 1\n{_ROOT}\n",
        f"origin\n1.0\n{_ROOT}\n",
        f"origin\n\u0661\n{_ROOT}\n",  # Arabic-Indic digit one
        f"origin\n{2**64}\n{_ROOT}\n",
        f"origin\n{'1' * 30}\n{_ROOT}\n",
        f"\n1\n{_ROOT}\n",  # empty origin
        f"origin\n1\n{_ROOT}",  # no final newline
        "origin\n1\n",
        "origin\n1\n\n",
        f"origin\n1\n{_ROOT[:-1]}\n",
        f"origin\n1\n{_ROOT[:-2]}9=\n",  # non-canonical trailing bits
        "origin\n1\n" + base64.b64encode(b"\x00" * 31).decode() + "\n",
        "origin\n1\n" + base64.b64encode(b"\x00" * 33).decode() + "\n",
        f"origin\n1\n{_ROOT}\n\n",  # empty extension line
        f"origin\n1\n{_ROOT}\next\n\n",
        f"ori\tgin\n1\n{_ROOT}\n",
    ],
)
def test_bad_checkpoints_rejected(text: str) -> None:
    with pytest.raises(InvalidInput):
        note.parse_checkpoint(text)


def test_checkpoint_edges() -> None:
    root = bytes(32)
    for size in (0, 1, 2**64 - 1):
        cp = note.Checkpoint("example.com/log", size, root, ("ext one", "ext2"))
        assert note.parse_checkpoint(note.format_checkpoint(cp)) == cp
    for bad in (
        note.Checkpoint("", 1, root),
        note.Checkpoint("a\nb", 1, root),
        note.Checkpoint("o", -1, root),
        note.Checkpoint("o", 2**64, root),
        note.Checkpoint("o", 1, root[:31]),
        note.Checkpoint("o", 1, root, ("",)),
        note.Checkpoint("o", 1, root, ("a\nb",)),
    ):
        with pytest.raises(InvalidInput):
            note.format_checkpoint(bad)


def test_block_note_text() -> None:
    block_hash = bytes(range(32))
    text = note.block_note_text("example.com/log", 7, block_hash)
    assert text == (
        "copyledger/block/v1\nexample.com/log\n7\n" + base64.b64encode(block_hash).decode() + "\n"
    )
    assert note.parse_block_note_text(text) == ("example.com/log", 7, block_hash)
    with pytest.raises(InvalidInput):  # a block note is never a checkpoint
        note.parse_checkpoint(text)
    for bad in (
        text.replace("v1", "v2"),
        text.replace("\n7\n", "\n07\n"),
        text + "extra\n",
        text[:-1],
        "copyledger/block/v1\n\n7\n" + base64.b64encode(block_hash).decode() + "\n",
    ):
        with pytest.raises(InvalidInput):
            note.parse_block_note_text(bad)
    with pytest.raises(InvalidInput):
        note.block_note_text("o", 1, block_hash[:31])
    with pytest.raises(InvalidInput):
        note.block_note_text("o", -1, block_hash)


# ---------------------------------------------------------------- properties

_line = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n").filter(lambda c: c >= " "),
    max_size=40,
)
_texts = st.lists(_line, min_size=1, max_size=6).map(lambda lines: "\n".join(lines) + "\n")
_names = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")).filter(
        lambda c: c not in "+\x85\u180e"
    ),
    min_size=1,
    max_size=20,
)
_signatures = st.builds(
    note.Signature,
    name=_names,
    key_id=st.binary(min_size=4, max_size=4),
    signature=st.binary(min_size=1, max_size=100),
)


@given(_texts, st.lists(_signatures, min_size=1, max_size=5))
def test_note_round_trip(text: str, signatures: list[note.Signature]) -> None:
    formatted = note.format_note(text, signatures)
    assert note.parse_note(formatted) == note.Note(text, tuple(signatures))
    assert note.parse_note(formatted.encode()) == note.Note(text, tuple(signatures))


@given(
    _line.filter(bool),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(_line.filter(bool), max_size=3),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    cp = note.Checkpoint(origin, size, root, tuple(extensions))
    assert note.parse_checkpoint(note.format_checkpoint(cp)) == cp


@given(_names, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32))
def test_block_note_round_trip(origin: str, height: int, block_hash: bytes) -> None:
    text = note.block_note_text(origin, height, block_hash)
    assert note.parse_block_note_text(text) == (origin, height, block_hash)


@given(_texts)
def test_signed_notes_verify(text: str) -> None:
    name, key = go_private_key(GO["peter_skey_TEST_ONLY"])
    signed = note.format_note(text, [sign(text, name, key)])
    opened, good = note.verify_note(signed, [PETER])
    assert (opened.text, good) == (text, [PETER])
