"""SM2/SM3 RFC 3161 tokens of an SM-suite registry (issue 15 item 4, D51): one per block beside
the ECDSA one, carried in bundles, checked by `copyledger verify`'s sm2 step and by the audit,
and piece by piece by the `openssl` command line, which no one here wrote."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms  # type: ignore[import-untyped]
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from copyledger.api.app import create_app
from copyledger.cli.main import app
from copyledger.ledger import jcs, sm2
from copyledger.ledger.errors import VerificationError
from copyledger.ledger.sm2_timestamp import verify_sm2_token
from copyledger.ledger.verify import verify_bundle
from copyledger.notary.sm2_tsa import SM2_ROOT_FILE, SM2_TSA_CERT_FILE, create_sm2_tsa_chain
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests import test_sm
from tests.test_sm import FILE, sm_settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
openssl = test_sm.openssl  # the fixture: the openssl command line, or a clear skip/failure


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("sm2tsa")
    node = Node.open(sm_settings(tmp))
    key, _ = create_key(node.store, "creator", "alice")
    with TestClient(create_app(node)) as c:
        up = c.post("/v1/works", headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("x.bin", FILE, "application/octet-stream")},
                    data={"title": "画作", "creators": ["李雷"], "work_type": "image"}).json()
        bundle = c.get(f"/v1/entries/{up['seq']}/bundle").json()
        block = c.get(f"/v1/blocks/{bundle['block']['height']}").json()
        keys = c.get("/v1/notary/keys").json()
        log = c.get("/v1/log").json()
    yield {"node": node, "tmp": tmp, "bundle": bundle, "block": block, "keys": keys,
           "log": log}
    node.stop()


def _token(b: dict[str, Any]) -> bytes:
    return base64.b64decode(b["sm2_timestamps"][0]["token"])


def _header_bytes(b: dict[str, Any]) -> bytes:
    return jcs.canonicalize(b["block"]["header"])


def _pinned(reg: dict[str, Any], b: dict[str, Any], **kw: Any) -> Any:
    log = reg["log"]
    return verify_bundle(b, trusted_keys=[log["verifier_key"]],
                         sm2_keys=[log["sm2_verifier_key"]], **kw)


def test_every_block_gets_both_tokens_and_the_bundle_carries_them(reg: dict[str, Any]) -> None:
    b, blk, keys = reg["bundle"], reg["block"], reg["keys"]
    assert [t["tsa"] for t in b["timestamps"]] == ["notary"]  # the ECDSA token, as before
    assert [(t["tsa"], t["hash_alg"]) for t in b["sm2_timestamps"]] == [("notary-sm2", "sm3")]
    assert blk["sm2_timestamps"] == b["sm2_timestamps"]
    assert [t["tsa"] for t in blk["timestamps"]] == ["notary"]
    root = (reg["node"].settings.tsa_dir / SM2_ROOT_FILE).read_text()
    assert b["notary"]["sm2_tsa_roots"] == keys["sm2_tsa_roots"] == [root]
    info = verify_sm2_token(_token(b), sm2.sm3(_header_bytes(b)), root.encode())
    assert info.tsa_subject.startswith("Common Name: copyledger SM2 TSA")


def test_the_bundle_verifies_and_the_sm2_step_names_the_token(reg: dict[str, Any],
                                                             tmp_path: Path) -> None:
    b = reg["bundle"]
    root = (reg["node"].settings.tsa_dir / SM2_ROOT_FILE).read_bytes()
    rep = _pinned(reg, b, sm2_tsa_roots_pem=root)
    assert rep.ok, rep.to_json()
    sm2_step = next(s for s in rep.steps if s.name == "sm2")
    assert "1 SM2/SM3 time-stamp token(s)" in sm2_step.detail, sm2_step.detail
    fact = rep.facts["sm2_timestamps"][0]
    assert fact["root_pinned"] and fact["header_sm3"] == sm2.sm3(_header_bytes(b)).hex()
    unpinned = _pinned(reg, b)
    assert unpinned.ok and unpinned.facts["sm2_timestamps"][0]["root_pinned"] is False
    # Another SM2 root, pinned: the token does not chain to it.
    create_sm2_tsa_chain(tmp_path / "other", "other.example/log")
    rep = _pinned(reg, b, sm2_tsa_roots_pem=(tmp_path / "other" / SM2_ROOT_FILE).read_bytes())
    assert rep.failed is not None and rep.failed.name == "sm2"
    assert "does not chain to a trusted SM2 root" in rep.failed.detail
    # The CLI pins it with --sm2-tsa-roots.
    (tmp_path / "b.json").write_text(json.dumps(b))
    (tmp_path / "root.pem").write_bytes(root)
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "b.json"), "--trust",
                                 reg["log"]["verifier_key"], "--trust",
                                 reg["log"]["sm2_verifier_key"], "--sm2-tsa-roots",
                                 str(tmp_path / "root.pem")])
    assert r.exit_code == 0 and "SM2 TSA root (pinned)" in r.output, r.output


def test_flipping_any_byte_of_the_token_fails_the_sm2_step(reg: dict[str, Any]) -> None:
    b = reg["bundle"]
    token = _token(b)
    for i in range(len(token)):
        bad = bytearray(token)
        bad[i] ^= 0x01
        changed = json.loads(json.dumps(b))
        changed["sm2_timestamps"][0]["token"] = base64.b64encode(bytes(bad)).decode()
        rep = _pinned(reg, changed)
        assert rep.failed is not None and rep.failed.name == "sm2", (i, rep.to_json())
        assert all(s.status == "ok" for s in rep.steps if s.name == "timestamp")


def test_a_bundle_without_its_sm2_token_fails_only_when_sm2_roots_are_pinned(
        reg: dict[str, Any]) -> None:
    b = json.loads(json.dumps(reg["bundle"]))
    del b["sm2_timestamps"]  # a bundle from before D51
    assert _pinned(reg, b).ok
    rep = _pinned(reg, b, sm2_tsa_roots_pem=b["notary"]["sm2_tsa_roots"][0].encode())
    assert rep.failed is not None and rep.failed.name == "sm2"


# ---------------------------------------------------------------- openssl, no code of ours


def _run(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), input=data, capture_output=True, timeout=60)


def test_openssl_checks_each_part_of_the_token(reg: dict[str, Any], openssl: str,
                                               tmp_path: Path) -> None:
    """What docs/verification.md §12.5 tells a verifier to run."""
    b = reg["bundle"]
    token = _token(b)
    (tmp_path / "token.der").write_bytes(token)
    tsa_dir = reg["node"].settings.tsa_dir
    # The token parses as DER, and `ts` reads its TSTInfo: an SM3 imprint.
    r = _run(openssl, "asn1parse", "-inform", "DER", "-in", str(tmp_path / "token.der"))
    assert r.returncode == 0 and b":sm3" in r.stdout and b":SM2-with-SM3" in r.stdout, r
    r = _run(openssl, "ts", "-reply", "-in", str(tmp_path / "token.der"), "-token_in", "-text")
    assert r.returncode == 0 and b"Hash Algorithm: sm3" in r.stdout, r
    # The imprint is SM3 of the header's RFC 8785 bytes.
    imprint = r.stdout.split(b"Message data:")[1].split(b"Serial number")[0]
    hexes = b"".join(line.split(b" - ")[1][:47] for line in imprint.strip().splitlines())
    r = _run(openssl, "dgst", "-sm3", "-r", data=_header_bytes(b))
    assert hexes.replace(b" ", b"").replace(b"-", b"").decode() == r.stdout.split()[0].decode()
    # The certificate: a critical timeStamping EKU, issued by the SM2 root (default ID).
    cert = tsa_dir / SM2_TSA_CERT_FILE
    r = _run(openssl, "x509", "-in", str(cert), "-noout", "-text")
    text = r.stdout.decode()
    assert "Extended Key Usage: critical" in text and "Time Stamping" in text
    assert "SM2-with-SM3" in text
    r = _run(openssl, "verify", "-vfyopt", "distid:1234567812345678", "-purpose",
             "timestampsign", "-CAfile", str(tsa_dir / SM2_ROOT_FILE), str(cert))
    assert r.returncode == 0, r
    # messageDigest = SM3(TSTInfo), and the SM2 signature over the DER signedAttrs.
    signed = cms.ContentInfo.load(token)["content"]
    tst = bytes(signed["encap_content_info"]["content"])
    si = signed["signer_infos"][0]
    attrs = b"\x31" + si["signed_attrs"].dump()[1:]
    digest = next(a["values"][0].native for a in si["signed_attrs"]
                  if a["type"].native == "message_digest")
    r = _run(openssl, "dgst", "-sm3", "-r", data=tst)
    assert r.stdout.split()[0].decode() == digest.hex()
    (tmp_path / "attrs.der").write_bytes(attrs)
    (tmp_path / "sig").write_bytes(bytes(si["signature"].native))
    r = _run(openssl, "x509", "-in", str(cert), "-noout", "-pubkey")
    (tmp_path / "pub.pem").write_bytes(r.stdout)

    def pkeyutl_verifies(data: Path) -> bool:
        r = _run(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"),
                 "-rawin", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678",
                 "-in", str(data), "-sigfile", str(tmp_path / "sig"))
        assert b"Signature Verif" in r.stdout + r.stderr, r
        return r.returncode == 0

    assert pkeyutl_verifies(tmp_path / "attrs.der")
    (tmp_path / "other.der").write_bytes(attrs[:-1] + bytes([attrs[-1] ^ 1]))
    assert not pkeyutl_verifies(tmp_path / "other.der")


def test_what_this_openssl_cannot_do(reg: dict[str, Any], openssl: str, tmp_path: Path) -> None:
    """OpenSSL 3.0's `cms -verify` and `ts -verify` refuse the token: they check SM2 signatures
    without the distinguishing ID (D51). A newer OpenSSL that passes turns this test red, so
    the documentation can say so."""
    (tmp_path / "token.der").write_bytes(_token(reg["bundle"]))
    (tmp_path / "header").write_bytes(_header_bytes(reg["bundle"]))
    root = str(reg["node"].settings.tsa_dir / SM2_ROOT_FILE)
    version = _run(openssl, "version").stdout.decode()
    if not version.startswith("OpenSSL 3.0."):
        pytest.skip(f"documents OpenSSL 3.0 only; this is {version}")
    r = _run(openssl, "ts", "-verify", "-in", str(tmp_path / "token.der"), "-token_in",
             "-data", str(tmp_path / "header"), "-CAfile", root)
    assert r.returncode != 0 and b"certificate signature failure" in r.stderr, r
    r = _run(openssl, "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "token.der"),
             "-noverify", "-out", "/dev/null")
    assert r.returncode != 0 and b"verification failure" in r.stderr, r


def test_hostile_tokens_fail_cleanly(reg: dict[str, Any]) -> None:
    root = reg["bundle"]["notary"]["sm2_tsa_roots"][0].encode()
    digest = sm2.sm3(_header_bytes(reg["bundle"]))
    for junk in (b"", b"\x30\x00", b"\x30\x82\xff\xff", hashlib.sha256(b"x").digest(),
                 _token(reg["bundle"])[:-1]):
        with pytest.raises(VerificationError):
            verify_sm2_token(junk, digest, root)
    with pytest.raises(VerificationError, match="different digest"):
        verify_sm2_token(_token(reg["bundle"]), bytes(32), root)
    with pytest.raises(VerificationError, match="no trusted SM2 root"):
        verify_sm2_token(_token(reg["bundle"]), digest, b"")


def test_the_audit_checks_every_sm2_token_last(reg: dict[str, Any]) -> None:
    from copyledger.service.admin import audit_registry
    from tests.test_audit import blob, drop_trigger

    settings = reg["node"].settings
    rep = audit_registry(settings, workers=1)
    assert rep.ok, rep
    assert any("SM2/SM3 RFC 3161 tokens verify" in c for c in rep.checked), rep.checked
    node = reg["node"]
    height = reg["bundle"]["block"]["height"]
    token = bytearray(_token(reg["bundle"]))
    token[-5] ^= 0x01  # in the signature
    drop_trigger(node, "block_timestamps", "update")  # behind the append-only triggers' back
    node.store.execute_raw(f"UPDATE block_timestamps SET token = {blob(node, token.hex())} "
                           f"WHERE height = {height} AND tsa = 'notary-sm2'")
    rep = audit_registry(settings, workers=1)
    assert not rep.ok and rep.bad_height == height and "SM2 time-stamp token" in (
        rep.problem or ""), rep


def _audited_then_one_more(tmp_path: Path) -> tuple[Node, Any, int]:
    """An SM-suite registry with one work, audited (its state kept for an incremental audit),
    then a second work: the node (the caller stops it), the audit and the second's block."""
    from copyledger.service.admin import audit_registry

    node = Node.open(sm_settings(tmp_path))
    try:
        key, _ = create_key(node.store, "creator", "alice")
        with TestClient(create_app(node)) as c:
            def work(data: bytes) -> int:
                r = c.post("/v1/works", headers={"Authorization": f"Bearer {key}"},
                           files={"file": ("x.bin", data, "application/octet-stream")},
                           data={"title": "画作", "creators": ["李雷"], "work_type": "image"})
                assert r.status_code == 201, r.text
                return int(c.get(f"/v1/entries/{r.json()['seq']}/bundle").json()
                           ["block"]["height"])

            work(FILE + b"1")
            first = audit_registry(node.settings, workers=1, incremental=True)
            assert first.ok and first.state is not None, first  # (the next one resumes here)
            return node, first, work(FILE + b"2")
    except BaseException:
        node.stop()
        raise


def test_a_resumed_audit_keeps_the_rule_that_every_later_block_has_an_sm2_token(
        tmp_path: Path) -> None:
    """D184: an incremental audit started the rule "every block after the first with an SM2
    token has one" afresh, so a block sealed after the last audit whose SM2 token was deleted
    passed it."""
    from copyledger.service.admin import audit_registry
    from tests.test_audit import drop_trigger

    node, first, height = _audited_then_one_more(tmp_path)
    try:
        drop_trigger(node, "block_timestamps", "delete")
        node.store.execute_raw(f"DELETE FROM block_timestamps WHERE height = {height} "
                               "AND tsa = 'notary-sm2'")
        rep = audit_registry(node.settings, workers=1, incremental=True)
        assert not rep.ok and rep.bad_height == height and "no SM2 time-stamp token" in (
            rep.problem or ""), rep
        # D187: the rule's start is the audit state's, not the token row of the block the last
        # audit ended on, which a tamperer can delete too.
        assert first.state.sm2_first is not None
        node.store.execute_raw("DELETE FROM block_timestamps WHERE height = "
                               f"{first.state.height} AND tsa = 'notary-sm2'")
        rep = audit_registry(node.settings, workers=1, incremental=True)
        assert not rep.ok and rep.bad_height == height and "no SM2 time-stamp token" in (
            rep.problem or ""), rep
    finally:
        node.stop()


def test_an_audit_without_the_sm2_roots_neither_uses_nor_forgets_where_the_rule_starts(
        tmp_path: Path) -> None:
    """D187's review: an audit given no SM2 TSA roots reads no SM2 token, so it must not hold
    new blocks to a recorded `sm2_first` (every one failed "no SM2 time-stamp token", though
    each had one), nor record "none seen"; it passes on what the last audit knew."""
    from copyledger.ledger.audit import audit
    from copyledger.service.node import all_sm2_keys, all_verifier_keys, tsa_roots_pem

    node, first, _ = _audited_then_one_more(tmp_path)
    try:
        assert first.state is not None and first.state.sm2_first is not None
        s = node.settings
        keys = all_verifier_keys(s) + all_sm2_keys(s)[0]
        rep = audit(node.store, keys, tsa_roots_pem=tsa_roots_pem(s), since=first.state)
        assert rep.ok and rep.state is not None, rep.problem
        assert (rep.state.sm2_first, rep.state.sm2_known) == (first.state.sm2_first, True)
        whole = audit(node.store, keys, tsa_roots_pem=tsa_roots_pem(s))
        assert whole.ok and whole.state is not None and not whole.state.sm2_known
        assert whole.state.to_dict()["version"] == 1
    finally:
        node.stop()
