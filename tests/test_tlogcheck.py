"""tools/tlogcheck accepts what is right and refuses what is not.

The interop tests trust its exit status 0; these show the same inputs, changed in one place (a
root, a proof byte, the signing key, the signed text), give exit status 1 and a reason, so a
checker that accepted anything would fail here.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from copyledger.ledger import merkle, note
from copyledger.notary.signer import FileSigner, sign_note, verifier_key

pytestmark = pytest.mark.interop

ORIGIN = "test.example/log"
LEAVES = merkle.leaf_hashes([f"entry {i}".encode() for i in range(13)])
READER = merkle.MemoryReader()
READER.update(merkle.append(0, [], LEAVES).nodes)


def _root(size: int) -> str:
    return merkle.tree_hash(size, READER).hex()


def _hexes(proof: list[bytes]) -> str:
    return ",".join(h.hex() for h in proof)


def _flip(hexhash: str) -> str:
    """The hash with the low bit of its first byte flipped."""
    raw = bytearray(bytes.fromhex(hexhash))
    raw[0] ^= 1
    return raw.hex()


def _run(tlogcheck: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tlogcheck, *map(str, args)], capture_output=True, text=True,
                          timeout=30)


def _refused(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr.startswith("tlogcheck ")


def _signer(name: str = ORIGIN) -> FileSigner:
    return FileSigner(name, Ed25519PrivateKey.generate())


INCLUSION = (13, _root(13), 5, LEAVES[5].hex(), _hexes(merkle.inclusion_proof(5, 13, READER)))
CONSISTENCY = (6, _root(6), 13, _root(13), _hexes(merkle.consistency_proof(6, 13, READER)))


def _proof_edit(edit: Callable[[list[str]], list[str]]) -> Callable[[str], str]:
    return lambda proof: ",".join(edit(proof.split(",")))


def test_accepts_our_proofs(tlogcheck: str) -> None:
    r = _run(tlogcheck, "inclusion", *INCLUSION)
    assert (r.returncode, r.stdout) == (0, "inclusion OK\n"), r.stderr
    r = _run(tlogcheck, "consistency", *CONSISTENCY)
    assert (r.returncode, r.stdout) == (0, "consistency OK\n"), r.stderr
    # A one-leaf tree's inclusion proof and an equal-size consistency proof are empty.
    assert _run(tlogcheck, "inclusion", 1, LEAVES[0].hex(), 0, LEAVES[0].hex(), "").returncode == 0
    assert _run(tlogcheck, "consistency", 13, _root(13), 13, _root(13), "").returncode == 0


# Each case changes one argument of a valid proof: (argument position, how it changes).
INCLUSION_TAMPERING = {
    "wrong root": (1, _flip),
    "root of another size": (1, lambda _: _root(12)),
    "wrong index": (2, lambda _: "4"),
    "wrong leaf": (3, _flip),
    "flipped proof byte": (4, _proof_edit(lambda p: [_flip(p[0]), *p[1:]])),
    "flipped last proof byte": (4, _proof_edit(lambda p: [*p[:-1], _flip(p[-1])])),
    "proof hash missing": (4, _proof_edit(lambda p: p[:-1])),
    "extra proof hash": (4, _proof_edit(lambda p: [*p, p[0]])),
    "proof out of order": (4, _proof_edit(lambda p: p[::-1])),
    "index past the tree": (2, lambda _: "13"),
    "malformed root": (1, lambda h: h[:-2]),
}
CONSISTENCY_TAMPERING = {
    "wrong old root": (1, _flip),
    "wrong new root": (3, _flip),
    "wrong old size": (0, lambda _: "5"),
    "flipped proof byte": (4, _proof_edit(lambda p: [_flip(p[0]), *p[1:]])),
    "proof hash missing": (4, _proof_edit(lambda p: p[1:])),
    "old larger than new": (0, lambda _: "14"),
}


@pytest.mark.parametrize("case", sorted(INCLUSION_TAMPERING))
def test_refuses_a_changed_inclusion_proof(tlogcheck: str, case: str) -> None:
    at, change = INCLUSION_TAMPERING[case]
    args = [str(a) for a in INCLUSION]
    args[at] = change(args[at])
    _refused(_run(tlogcheck, "inclusion", *args))


@pytest.mark.parametrize("case", sorted(CONSISTENCY_TAMPERING))
def test_refuses_a_changed_consistency_proof(tlogcheck: str, case: str) -> None:
    at, change = CONSISTENCY_TAMPERING[case]
    args = [str(a) for a in CONSISTENCY]
    args[at] = change(args[at])
    _refused(_run(tlogcheck, "consistency", *args))


def test_checkpoint_and_note_need_the_pinned_key(tlogcheck: str, tmp_path: Path) -> None:
    ours, theirs = _signer(), _signer()  # same name, different keys
    text = note.format_checkpoint(note.Checkpoint(ORIGIN, 13, bytes.fromhex(_root(13))))
    f = tmp_path / "cp"
    f.write_text(sign_note(text, [ours]))
    r = _run(tlogcheck, "checkpoint", verifier_key(ours), f)
    assert (r.returncode, r.stdout) == (0, f"{ORIGIN} 13 {_root(13)}\n"), r.stderr
    r = _run(tlogcheck, "note", verifier_key(ours), f)
    assert (r.returncode, r.stdout) == (0, text), r.stderr

    # Signed by another key only: refused as checkpoint and as note.
    f.write_text(sign_note(text, [theirs]))
    _refused(_run(tlogcheck, "checkpoint", verifier_key(ours), f))
    _refused(_run(tlogcheck, "note", verifier_key(ours), f))
    # Signed by both (a rotation's overlap): either pinned key opens it.
    f.write_text(sign_note(text, [ours, theirs]))
    for signer in (ours, theirs):
        assert _run(tlogcheck, "checkpoint", verifier_key(signer), f).returncode == 0


def test_refuses_a_changed_signed_text(tlogcheck: str, tmp_path: Path) -> None:
    signer = _signer()
    vkey = verifier_key(signer)
    text = note.format_checkpoint(note.Checkpoint(ORIGIN, 13, bytes.fromhex(_root(13))))
    signed = sign_note(text, [signer])
    f = tmp_path / "cp"
    for changed in (signed.replace("\n13\n", "\n14\n", 1),  # the size
                    signed.replace(ORIGIN, ORIGIN + "x", 1)):  # the origin
        f.write_text(changed)
        _refused(_run(tlogcheck, "checkpoint", vkey, f))
        _refused(_run(tlogcheck, "note", vkey, f))
    # The signature line itself: one flipped bit of the Ed25519 signature.
    head, _, line = signed.rstrip("\n").rpartition(" ")
    sig = bytearray(base64.b64decode(line))
    sig[-1] ^= 1
    f.write_text(f"{head} {base64.b64encode(sig).decode()}\n")
    _refused(_run(tlogcheck, "note", vkey, f))


def test_a_signed_note_that_is_not_a_checkpoint_is_refused(tlogcheck: str, tmp_path: Path) -> None:
    signer = _signer()
    f = tmp_path / "n"
    for text in ("just a note\n", f"{ORIGIN}\n013\n{base64.b64encode(bytes(32)).decode()}\n",
                 f"{ORIGIN}\n13\n{base64.b64encode(bytes(31)).decode()}\n"):
        f.write_text(sign_note(text, [signer]))
        assert _run(tlogcheck, "note", verifier_key(signer), f).returncode == 0
        _refused(_run(tlogcheck, "checkpoint", verifier_key(signer), f))


def test_leafhash_is_rfc6962(tlogcheck: str) -> None:
    for data in (b"", b"\x00", b"copyledger"):
        r = _run(tlogcheck, "leafhash", data.hex())
        assert r.returncode == 0, r.stderr
        assert base64.b64decode(r.stdout) == merkle.leaf_hash(data)
    _refused(_run(tlogcheck, "leafhash", "0g"))
