"""Rotation of an SM-suite registry's SM2 note key and SM2 TSA certificate (D57), as the
Ed25519 key and the ECDSA TSA rotate (D16): a rotation entry names both, old bundles keep
verifying under what was published then, the overlap's notes carry both SM2 lines (checked by
`openssl pkeyutl`), the audit accepts the whole log, and a token the retired SM2 TSA
certificate signed after its retirement is refused."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.ledger import jcs, note, sm2
from copyledger.ledger.sm2_timestamp import load_certificates
from copyledger.ledger.verify import verify_bundle
from copyledger.notary.sm2_tsa import SM2_ROOT_FILE, SM2_TSA_CERT_FILE, load_sm2_tsa
from copyledger.service.admin import audit_registry
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from copyledger.service.operations import rotate_keys
from copyledger.service.settings import Settings
from tests import test_sm
from tests.test_audit import drop_trigger
from tests.test_sm import openssl_verifies, replace_sm2, sm2_line, sm_settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
openssl = test_sm.openssl


def _register(s: Settings, key: str | None, tag: str) -> dict[str, Any]:
    """One work registered on a fresh start of the registry: its bundle, the log, the keys."""
    node = Node.open(s)
    try:
        if key is None:
            key, _ = create_key(node.store, "creator", "alice")
        with TestClient(create_app(node)) as c:
            r = c.post("/v1/works", headers={"Authorization": f"Bearer {key}"},
                       json={"sha256": hashlib.sha256(tag.encode()).hexdigest(),
                             "sm3": sm2.sm3_hex(tag.encode()), "title": tag,
                             "creators": ["李雷"], "work_type": "image"})
            assert r.status_code == 201, r.text
            return {"key": key, "bundle": c.get(f"/v1/entries/{r.json()['seq']}/bundle").json(),
                    "log": c.get("/v1/log").json(), "keys": c.get("/v1/notary/keys").json(),
                    "root": (s.tsa_dir / SM2_ROOT_FILE).read_bytes(),
                    "cert": (s.tsa_dir / SM2_TSA_CERT_FILE).read_bytes()}
    finally:
        node.stop()


def make_rotated(tmp: Path) -> dict[str, Any]:
    """An SM-suite registry with a work registered before a rotation (24 h overlap) and one
    after, and a copy of the second's bundle whose SM2 token the retired SM2 TSA signed."""
    s = sm_settings(tmp)
    before = _register(s, None, "before")
    rotation = rotate_keys(s, timedelta(hours=24))
    after = _register(s, before["key"], "after")
    old_tsa = load_sm2_tsa(s.data_dir / "notary" / "retired" / "1" / "tsa", s.origin)
    forged = copy.deepcopy(after["bundle"])
    token = old_tsa.timestamp_digest(sm2.sm3(jcs.canonicalize(forged["block"]["header"])))
    forged["sm2_timestamps"][0]["token"] = base64.b64encode(token).decode()
    return {"s": s, "before": before, "after": after, "rotation": rotation, "forged": forged}


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield make_rotated(tmp_path_factory.mktemp("sm2rot"))


def _verify(bundle: dict[str, Any], log: dict[str, Any], sm2_key: str,
            roots: bytes | None = None) -> Any:
    return verify_bundle(bundle, trusted_keys=[log["verifier_key"]], sm2_keys=[sm2_key],
                         sm2_tsa_roots_pem=roots)


def test_both_sm2_keys_and_roots_rotate_in_a_logged_entry(rotated: dict[str, Any]) -> None:
    before, after, s = rotated["before"], rotated["after"], rotated["s"]
    old_key, new_key = before["log"]["sm2_verifier_key"], after["log"]["sm2_verifier_key"]
    assert old_key != new_key and before["root"] != after["root"]
    node = Node.open(s)
    try:
        entry = json.loads(node.store.get_entry(rotated["rotation"].seq).data)
    finally:
        node.stop()
    assert entry["old_sm2_verifier_key"] == old_key
    assert entry["new_sm2_verifier_key"] == new_key
    assert entry["old_sm2_tsa_root_sha256"] == hashlib.sha256(before["root"]).hexdigest()
    assert entry["new_sm2_tsa_root_sha256"] == hashlib.sha256(after["root"]).hexdigest()
    # Published: both SM2 keys and roots, and the retired certificate with its retirement.
    notary = after["bundle"]["notary"]
    assert [k["verifier_key"] for k in notary["sm2_keys"]] == [old_key, new_key]
    assert notary["sm2_tsa_roots"] == [after["root"].decode(), before["root"].decode()]
    [retired] = notary["sm2_tsa_retired"]
    assert retired["certificate_sm3"] == sm2.sm3_hex(load_certificates(before["cert"])[0])
    assert after["keys"]["sm2_tsa_retired"] == [retired]


def test_old_and_new_bundles_verify_under_what_was_published(rotated: dict[str, Any]) -> None:
    before, after = rotated["before"], rotated["after"]
    old_key, new_key = before["log"]["sm2_verifier_key"], after["log"]["sm2_verifier_key"]
    rep = _verify(before["bundle"], before["log"], old_key, before["root"])
    assert rep.ok, rep.to_json()
    # In the overlap the new notes carry both SM2 lines: either pinned key accepts them.
    for pin in (old_key, new_key):
        rep = _verify(after["bundle"], after["log"], pin, after["root"])
        assert rep.ok, rep.to_json()
    # The old bundle's token chains to the retired root, the new one's to the new root only.
    rep = _verify(before["bundle"], before["log"], old_key, after["root"])
    assert rep.failed is not None and rep.failed.name == "sm2"
    assert "does not chain to a trusted SM2 root" in rep.failed.detail
    # Unpinned, the new bundle carries both roots: the old bundle's token verifies under them.
    old_in_new = copy.deepcopy(before["bundle"])
    old_in_new["notary"] = after["bundle"]["notary"]
    rep = verify_bundle(old_in_new, trusted_keys=[before["log"]["verifier_key"]])
    assert rep.ok, rep.to_json()


def test_openssl_checks_both_sm2_lines_of_the_overlap(rotated: dict[str, Any], openssl: str,
                                                     tmp_path: Path) -> None:
    after = rotated["after"]
    signed = after["bundle"]["checkpoint"]
    text = note.parse_note(signed).text.encode()
    for key in (rotated["before"]["log"]["sm2_verifier_key"], after["log"]["sm2_verifier_key"]):
        assert openssl_verifies(openssl, tmp_path, key, text, sm2_line(signed, key).signature)
        assert not openssl_verifies(openssl, tmp_path, key, text + b"x",
                                    sm2_line(signed, key).signature)


def test_a_flipped_byte_of_the_new_sm2_line_fails_the_sm2_step(rotated: dict[str, Any]) -> None:
    after = rotated["after"]
    key = after["log"]["sm2_verifier_key"]
    bad = copy.deepcopy(after["bundle"])
    signed = bad["block"]["block_note"]  # (the checkpoint is also in the tlog-proof form)
    sig = bytearray(sm2_line(signed, key).signature)
    sig[-1] ^= 1  # the last byte of s: still DER, no longer the signature
    bad["block"]["block_note"] = replace_sm2(signed, key, bytes(sig))
    rep = _verify(bad, after["log"], key)
    assert rep.failed is not None and rep.failed.name == "sm2", rep.to_json()
    assert "block note's SM2 signature" in rep.failed.detail


def test_a_token_by_the_retired_certificate_after_its_retirement_is_refused(
        rotated: dict[str, Any]) -> None:
    after, forged = rotated["after"], copy.deepcopy(rotated["forged"])
    rep = verify_bundle(forged, trusted_keys=[after["log"]["verifier_key"]])
    assert rep.failed is not None and rep.failed.name == "sm2", rep.to_json()
    assert "SM2 TSA certificate retired at" in rep.failed.detail
    # Without the retirement record the same token would pass: the check is what refuses it.
    forged["notary"].pop("sm2_tsa_retired")
    assert verify_bundle(forged, trusted_keys=[after["log"]["verifier_key"]]).ok


def test_the_audit_accepts_the_rotated_log(rotated: dict[str, Any]) -> None:
    rep = audit_registry(rotated["s"], workers=1)
    assert rep.ok, rep.problem


def test_the_audit_refuses_a_kept_token_by_the_retired_certificate(tmp_path: Path) -> None:
    """The same forged token as above, written into the store in place of the last block's own:
    the audit names the block and the retirement."""
    import shutil

    from sqlalchemy import update

    from copyledger.ledger.schema import block_timestamps
    from copyledger.ledger.sm2_timestamp import TSA_LABEL

    r = make_rotated(tmp_path / "a")
    s = r["s"]
    height = r["forged"]["block"]["height"]
    node = Node.open(s)
    try:
        drop_trigger(node, "block_timestamps", "update")  # the ledger is append-only
        with node.store.engine.begin() as conn:
            conn.execute(update(block_timestamps)
                         .where(block_timestamps.c.height == height,
                                block_timestamps.c.tsa == TSA_LABEL)
                         .values(token=base64.b64decode(r["forged"]["sm2_timestamps"][0]["token"])))
    finally:
        node.stop()
    rep = audit_registry(s, workers=1)
    assert not rep.ok and rep.bad_height == height, rep.problem
    assert "SM2 TSA certificate retired at" in (rep.problem or ""), rep.problem
    # Without the retirement record (rotations.json as before the rotation) it would pass.
    shutil.copy(s.data_dir / "notary" / "rotations.json", tmp_path / "kept.json")
    records = json.loads((tmp_path / "kept.json").read_text())
    for rec in records:
        del rec["sm2_tsa_certificate_sm3"]
    (s.data_dir / "notary" / "rotations.json").write_text(json.dumps(records))
    assert audit_registry(s, workers=1).ok


def test_after_the_overlap_only_the_new_sm2_key_signs(tmp_path: Path) -> None:
    s = sm_settings(tmp_path)
    before = _register(s, None, "a")
    rotate_keys(s, timedelta(0))
    after = _register(s, before["key"], "b")
    old_key, new_key = before["log"]["sm2_verifier_key"], after["log"]["sm2_verifier_key"]
    assert _verify(after["bundle"], after["log"], new_key).ok
    rep = _verify(after["bundle"], after["log"], old_key)
    assert rep.failed is not None and rep.failed.name == "sm2"
