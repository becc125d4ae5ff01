"""A receipt's checkpoint is of the pinned key's own log (D163's "Left"): a key that signs for
several logs cannot lend log B's checkpoint to a receipt checked against log A's key, whose
name is A's origin (c2sp.org/tlog-checkpoint; a copyledger log's key is always named so).
Extension lines are allowed as the spec allows them: non-empty, opaque, never part of a result.

The receipts are made by hand with a key of our own, so the only thing wrong with each is the
thing named: its signatures and proofs are genuine."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from copyledger.client import (
    UnverifiedAnswer,
    check_checkpoint,
    check_claim_check,
    check_proof,
    check_receipt,
)
from copyledger.client.verify import check_receipts
from copyledger.ledger import claims, jcs, merkle, note
from copyledger.ledger import entry as entry_mod
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.verify import verify_receipt
from copyledger.notary.signer import FileSigner, sign_note, verifier_key

LOG_A = "a.example/log"
LOG_B = "b.example/log"


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> FileSigner:
    """Log A's key: its name is A's origin. The same key signs B's checkpoints below."""
    return FileSigner.generate(LOG_A, Path(tmp_path_factory.mktemp("origin")) / "log.key")


def registration(signer: FileSigner, origin: str = LOG_A, extensions: tuple[str, ...] = (),
                 text: str | None = None) -> dict[str, Any]:
    """A registration answer for a tree of one work, its checkpoint signed by `signer` with
    `origin` and `extensions` (or the checkpoint text given)."""
    entry = entry_mod.build_work(
        registrant="alice", received_at="2026-01-01T00:00:00Z",
        sha256=hashlib.sha256(b"a work").hexdigest(), title="A work", creators=["Ada"],
        work_type="text")
    leaf = merkle.leaf_hash(jcs.canonicalize(entry))
    if text is None:
        text = note.format_checkpoint(note.Checkpoint(origin, 1, leaf, extensions))
    return {"seq": 0, "leaf_hash": leaf.hex(), "block_height": 0, "entry": entry,
            "receipt": {"tree_size": 1, "root": leaf.hex(), "proof": [],
                        "checkpoint": sign_note(text, [signer])}}


def refused(reg: dict[str, Any], vkey: str, why: str) -> None:
    """Every way a receipt is checked refuses it, saying `why`."""
    with pytest.raises(UnverifiedAnswer, match=why):
        check_receipt(reg, [vkey])
    [got] = check_receipts([reg], [vkey])  # the batch path, which opens checkpoints itself
    assert isinstance(got, UnverifiedAnswer) and re.search(why, got.detail), got
    with pytest.raises(CopyledgerError, match=why):
        verify_receipt(reg, [note.parse_verifier_key(vkey)])
    with pytest.raises(UnverifiedAnswer, match=why):
        check_checkpoint(reg["receipt"]["checkpoint"], [vkey])


def test_a_checkpoint_of_another_log_signed_by_the_pinned_key_is_refused(
        signer: FileSigner) -> None:
    vkey = verifier_key(signer)
    assert check_receipt(registration(signer), [vkey]).seq == 0  # A's own: verifies
    assert not isinstance(check_receipts([registration(signer)], [vkey])[0], UnverifiedAnswer)
    # the same key, the same entry and tree, but B's checkpoint: genuine, and not A's
    other = registration(signer, LOG_B)
    refused(other, vkey, "the checkpoint is for log 'b.example/log', not for the log of the "
                         "trusted key that signed it \\(a.example/log\\)")
    # and an inclusion proof under it
    rc = other["receipt"]
    with pytest.raises(UnverifiedAnswer, match="not for the log of the trusted key"):
        check_proof({"seq": 0, "tree_size": 1, "leaf_hash": other["leaf_hash"],
                     "root": rc["root"], "proof": [], "checkpoint": rc["checkpoint"]}, [vkey])


def test_a_key_pinned_for_each_log_verifies_each_logs_own_checkpoints(
        signer: FileSigner) -> None:
    """Both logs' keys pinned (the same key material under each log's name, as a key signing
    for two logs is named in each): each log's checkpoint is checked under its own name."""
    keys = [verifier_key(signer), note.format_verifier_key(LOG_B, signer.public_key)]
    assert check_receipt(registration(signer), keys).seq == 0
    # B's checkpoint signed under A's name only: still not a checkpoint of B's key
    refused(registration(signer, LOG_B), keys[0], "not for the log of the trusted key")


def test_extension_lines_are_allowed_opaque_and_never_reported(signer: FileSigner) -> None:
    vkey = verifier_key(signer)
    reg = registration(signer, extensions=("ext one", "  opaque  \u00e9"))
    r = check_receipt(reg, [vkey])
    assert r.seq == 0 and r.receipt.checkpoint == reg["receipt"]["checkpoint"]
    assert not isinstance(check_receipts([reg], [vkey])[0], UnverifiedAnswer)
    verify_receipt(reg, [note.parse_verifier_key(vkey)])
    cp = check_checkpoint(reg["receipt"]["checkpoint"], [vkey])
    assert (cp.origin, cp.size) == (LOG_A, 1) and not hasattr(cp, "extensions")
    assert "ext one" not in repr(r.entry)
    # an empty extension line is malformed (the spec: extension lines MUST be non-empty)
    leaf = bytes.fromhex(reg["leaf_hash"])
    text = f"{LOG_A}\n1\n{note.b64(leaf)}\n\next\n"
    refused(registration(signer, text=text), vkey, "checkpoint lines must not be empty")


def claim_check(signer: FileSigner, origin: str) -> dict[str, Any]:
    """A claim-check answer of log `origin` at size 1, signed by `signer` as the log signs."""
    answer: dict[str, Any] = {
        "verdict": "none", "work_registered": False, "work_seq": None, "claimant": "ada",
        "claimant_is_registrant": False, "claimant_is_holder": False, "holder": None,
        "earliest_registration": None, "registrations": [], "matches": [], "claims": [],
        "caveats": [], "caveat_codes": [], "index_ready": True, "fingerprinted": [],
        "checked_at": "2026-01-01T00:00:00Z", "tree_size": 1, "origin": origin}
    digest = hashlib.sha256(jcs.canonicalize(answer)).digest()
    return {**answer, "signature": sign_note(claims.check_note_text(origin, 1, digest), [signer])}


def test_a_claim_check_is_of_the_signing_keys_own_log(signer: FileSigner) -> None:
    """As a checkpoint: with log A's key pinned, a claim check that names log B and is signed
    by A's key is refused; signed and named for A, it verifies."""
    keys = [verifier_key(signer)]
    assert check_claim_check(claim_check(signer, LOG_A), keys).origin == LOG_A
    with pytest.raises(UnverifiedAnswer, match="not for the log of the trusted key"):
        check_claim_check(claim_check(signer, LOG_B), keys)
    # B's key pinned too (the same key material under B's name): signed under A's name only,
    # the answer is still not B's key's
    both = [*keys, note.format_verifier_key(LOG_B, signer.public_key)]
    with pytest.raises(UnverifiedAnswer, match="not for the log of the trusted key"):
        check_claim_check(claim_check(signer, LOG_B), both)
