"""The SM suite (issue 15 item 4, D40): SM3 digests of works and SM2 signature lines on every
checkpoint and block note, checked by our verifier and by code no one here wrote (the `openssl`
command line for SM2/SM3, Go's sumdb/note for the Ed25519 line it must still verify)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from copyledger.api.app import create_app
from copyledger.cli.main import app
from copyledger.ledger import note, sm2
from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.verify import verify_bundle
from copyledger.notary.signer import FileSigner, sign_note
from copyledger.notary.sm2 import Sm2Signer
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.conftest import _missing
from tests.helpers import settings_for

ORIGIN = "test.example/log"
FILE = "一幅画的字节 — the exhibit's bytes.".encode() * 50
SIGNER = Sm2Signer(ORIGIN, 0x1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF)


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        _missing("the openssl command line", "COPYLEDGER_REQUIRE_OPENSSL")
    assert path is not None
    return path


def _pubkey_pem(public_key: bytes, path: Path) -> Path:
    der = sm2.public_key_der(public_key)
    path.write_text("-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der).decode()
                    + "-----END PUBLIC KEY-----\n")
    return path


def openssl_verifies(openssl: str, tmp: Path, vkey: str, message: bytes, sig: bytes) -> bool:
    """`openssl pkeyutl -verify` of an SM2 signature (SM3, the key's distinguishing ID)."""
    v = sm2.parse_verifier_key(vkey)
    pub = _pubkey_pem(v.public_key, tmp / "pub.pem")
    (tmp / "msg").write_bytes(message)
    (tmp / "sig").write_bytes(sig)
    r = subprocess.run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
                        "-digest", "sm3", "-pkeyopt", f"distid:{v.distid.decode()}",
                        "-in", str(tmp / "msg"), "-sigfile", str(tmp / "sig")],
                       capture_output=True, text=True, timeout=30)
    assert "Signature Verif" in r.stdout + r.stderr, (r.stdout, r.stderr)
    return r.returncode == 0


def sm2_line(signed: str, vkey: str) -> note.Signature:
    """The SM2 signature line of a signed note (the one with that key's name and ID)."""
    v = sm2.parse_verifier_key(vkey)
    lines = [s for s in note.parse_note(signed).signatures if (s.name, s.key_id) ==
             (v.name, v.key_id)]
    assert len(lines) == 1
    return lines[0]


def replace_sm2(signed: str, vkey: str, sig: bytes) -> str:
    """The note with its SM2 line's signature replaced by sig."""
    old = sm2_line(signed, vkey)
    n = note.parse_note(signed)
    sigs = [replace(s, signature=sig) if s == old else s for s in n.signatures]
    return note.format_note(n.text, sigs)


def sm_settings(tmp: Path, **kw: Any) -> Any:
    """An SM-suite registry's settings: its keys are files even when the suite runs with
    HSM keys (no PKCS#11 token offers SM2, D40)."""
    return settings_for(tmp, crypto_suite="sm", key_backend="file", **kw)


# ---------------------------------------------------------------- SM2 and SM3 themselves


def test_curve_parameters() -> None:
    assert sm2.on_curve((sm2.GX, sm2.GY))
    assert sm2.scalar_mult(sm2.N) is None  # G has order n
    assert sm2.scalar_mult(sm2.N - 1) == (sm2.GX, (-sm2.GY) % sm2.P)


def test_sm3_standard_vector() -> None:
    # GB/T 32905-2016 appendix A, example 1
    assert sm2.sm3_hex(b"abc") == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")


@settings(max_examples=20, deadline=None)
@given(msg=st.binary(max_size=300), flip=st.integers(min_value=0))
def test_sign_verify_and_any_flipped_byte_fails(msg: bytes, flip: int) -> None:
    sig = SIGNER.sign(msg)
    assert sm2.verify(SIGNER.public_key, msg, sig)
    bad = bytearray(sig)
    bad[flip % len(bad)] ^= 0x01 << (flip % 8)
    assert not sm2.verify(SIGNER.public_key, msg, bytes(bad))
    assert not sm2.verify(SIGNER.public_key, msg + b"x", sig)
    assert not sm2.verify(SIGNER.public_key, msg, sig, b"another ID")


@settings(max_examples=50, deadline=None)
@given(r=st.integers(1, sm2.N - 1), s=st.integers(1, sm2.N - 1))
def test_signature_der_round_trips_and_is_strict(r: int, s: int) -> None:
    der = sm2.encode_signature(r, s)
    assert sm2.decode_signature(der) == (r, s)
    for bad in (der + b"\x00", der[:-1], b"\x30" + bytes([der[1] + 1]) + der[2:] + b"\x00",
                der[:2] + b"\x02" + bytes([der[3] + 1]) + b"\x00" + der[4:]):
        with pytest.raises(InvalidInput):
            sm2.decode_signature(bad)
    with pytest.raises(InvalidInput):
        sm2.decode_signature(sm2.encode_signature(r, sm2.N))


def test_verifier_key_round_trip_and_tampering() -> None:
    vkey = SIGNER.verifier_key
    assert sm2.parse_verifier_key(vkey) == SIGNER.verifier
    assert sm2.is_verifier_key(vkey)
    assert not sm2.is_verifier_key(note.format_verifier_key(ORIGIN, bytes(32)))
    other_id = sm2.format_verifier_key(ORIGIN, SIGNER.public_key, b"ALICE123@YAHOO.COM")
    assert other_id.split("+")[1] != vkey.split("+")[1]  # the ID is part of the key
    name, kid, key = vkey.split("+", 2)
    raw = bytearray(base64.b64decode(key))
    raw[-1] ^= 1  # a different distinguishing ID: the key ID no longer matches
    ed25519 = note.b64(bytes([note.ALG_ED25519]) + bytes(32))
    for bad in (f"{name}+{kid}+{note.b64(bytes(raw))}", f"other.example+{kid}+{key}",
                f"{name}+{kid}+{ed25519}", f"{name}+{kid}"):
        with pytest.raises(InvalidInput):
            sm2.parse_verifier_key(bad)
    with pytest.raises(InvalidInput):  # a point off the curve
        sm2.Verifier.of(ORIGIN, b"\x04" + bytes(64))


def test_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "sm2.pem"
    made = Sm2Signer.generate(ORIGIN, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Sm2Signer.load(ORIGIN, path).verifier_key == made.verifier_key
    with pytest.raises(Exception, match="already exists"):
        Sm2Signer.generate(ORIGIN, path)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(InvalidInput):
        Sm2Signer.load(ORIGIN, tmp_path / "bad.pem")


def test_encrypted_key_files_interoperate_with_openssl(openssl: str, tmp_path: Path) -> None:
    ours = tmp_path / "ours.pem"
    made = Sm2Signer.generate(ORIGIN, ours, passphrase=b"s3cret")
    r = subprocess.run([openssl, "pkey", "-in", str(ours), "-passin", "pass:s3cret", "-pubout",
                        "-outform", "DER"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == sm2.public_key_der(made.public_key)  # openssl decrypts our file
    theirs = tmp_path / "theirs.pem"
    subprocess.run([openssl, "genpkey", "-algorithm", "SM2", "-aes-256-cbc", "-pass",
                    "pass:s3cret", "-out", str(theirs)], check=True, capture_output=True,
                   timeout=30)
    loaded = Sm2Signer.load(ORIGIN, theirs, passphrase=b"s3cret")  # we decrypt openssl's
    r = subprocess.run([openssl, "pkey", "-in", str(theirs), "-passin", "pass:s3cret",
                        "-pubout", "-outform", "DER"], capture_output=True, timeout=30)
    assert r.stdout == sm2.public_key_der(loaded.public_key)
    assert Sm2Signer.load(ORIGIN, ours, passphrase=b"s3cret").public_key == made.public_key
    for path, passphrase, message in ((ours, b"wrong", "wrong passphrase"),
                                      (ours, None, "a passphrase is needed"),
                                      (tmp_path / "plain.pem", b"x", "not encrypted")):
        if not path.exists():
            Sm2Signer.generate(ORIGIN, path)
        with pytest.raises(InvalidInput, match=message):
            Sm2Signer.load(ORIGIN, path, passphrase=passphrase)


def test_c2sp_verifiers_ignore_the_sm2_line() -> None:
    ed = FileSigner(ORIGIN, Ed25519PrivateKey.generate())
    signed = sign_note("hello\n", [ed, SIGNER])
    ed_v = note.parse_verifier_key(note.format_verifier_key(ORIGIN, ed.public_key))
    assert note.verify_note(signed, [ed_v])[1] == [ed_v]
    assert note.verify_note(signed, [SIGNER.verifier])[1] == [SIGNER.verifier]
    broken = replace_sm2(signed, SIGNER.verifier_key, SIGNER.sign(b"other\n"))
    assert note.verify_note(broken, [ed_v])[1] == [ed_v]  # the SM2 line is not theirs
    with pytest.raises(Exception, match="invalid signature"):
        note.verify_note(broken, [SIGNER.verifier])


# ---------------------------------------------------------------- openssl, both ways


@settings(max_examples=5, deadline=None)
@given(data=st.binary(max_size=5000))
def test_openssl_dgst_sm3_agrees(openssl: str, data: bytes) -> None:
    r = subprocess.run([openssl, "dgst", "-sm3", "-r"], input=data, capture_output=True,
                       timeout=30, check=True)
    assert r.stdout.split()[0].decode() == sm2.sm3_hex(data)


def test_openssl_verifies_ours_and_we_verify_openssl(openssl: str, tmp_path: Path) -> None:
    msg = "中文 and text\n".encode()
    assert openssl_verifies(openssl, tmp_path, SIGNER.verifier_key, msg, SIGNER.sign(msg))
    bad = bytearray(SIGNER.sign(msg))
    bad[-1] ^= 1
    assert not openssl_verifies(openssl, tmp_path, SIGNER.verifier_key, msg, bytes(bad))
    for distid in ("1234567812345678", "ALICE123@YAHOO.COM"):
        key = tmp_path / f"k-{distid}.pem"  # a key made by openssl, loaded by us
        subprocess.run([openssl, "genpkey", "-algorithm", "SM2", "-out", str(key)], check=True,
                       capture_output=True, timeout=30)
        ours = Sm2Signer.load(ORIGIN, key, distid.encode())
        (tmp_path / "msg").write_bytes(msg)
        subprocess.run([openssl, "pkeyutl", "-sign", "-inkey", str(key), "-rawin", "-digest",
                        "sm3", "-pkeyopt", f"distid:{distid}", "-in", str(tmp_path / "msg"),
                        "-out", str(tmp_path / "sig")], check=True, capture_output=True,
                       timeout=30)
        theirs = (tmp_path / "sig").read_bytes()
        assert ours.verifier.verify(msg, theirs)
        assert not sm2.verify(ours.public_key, msg, theirs, b"another ID")
        assert openssl_verifies(openssl, tmp_path, ours.verifier_key, msg, ours.sign(msg))


# ---------------------------------------------------------------- an SM-suite registry


@pytest.fixture(scope="module")
def sm_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("sm")
    reg = Node.open(sm_settings(tmp))
    key, _ = create_key(reg.store, "creator", "alice")
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(reg)) as c:
        log = c.get("/v1/log").json()
        missing = c.post("/v1/works", headers=h, json={
            "sha256": "0" * 64, "title": "t", "creators": ["A"], "work_type": "text"})
        bad = c.post("/v1/works", headers=h, json={
            "sha256": "0" * 64, "sm3": "ABC", "title": "t", "creators": ["A"],
            "work_type": "text"})
        body = {"sha256": hashlib.sha256(b"w").hexdigest(), "sm3": sm2.sm3_hex(b"w"),
                "title": "t", "creators": ["A"], "work_type": "text"}
        json_work = c.post("/v1/works", headers=h, json=body).json()
        up = c.post("/v1/works", headers=h,
                    files={"file": ("x.bin", FILE, "application/octet-stream")},
                    data={"title": "画作", "creators": ["李雷"], "work_type": "image"}).json()
        bundle = c.get(f"/v1/entries/{up['seq']}/bundle").json()
        block = c.get(f"/v1/blocks/{bundle['block']['height']}").json()
        page = c.get(f"/blocks/{bundle['block']['height']}").text
    yield {"reg": reg, "tmp": tmp, "log": log, "missing": missing, "bad": bad,
           "json_work": json_work, "upload": up, "bundle": bundle, "block": block,
           "page": page}
    reg.stop()


def test_the_log_says_its_suite_and_works_record_sm3(sm_reg: dict[str, Any]) -> None:
    log = sm_reg["log"]
    assert log["crypto_suite"] == "sm" and sm2.parse_verifier_key(log["sm2_verifier_key"])
    assert sm_reg["missing"].status_code == 422, sm_reg["missing"].json()
    assert sm_reg["missing"].json()["errors"][0]["field"] == "sm3"
    assert sm_reg["bad"].status_code == 422
    assert sm_reg["json_work"]["entry"]["content"]["sm3"] == sm2.sm3_hex(b"w")
    assert sm_reg["upload"]["entry"]["content"]["sm3"] == sm2.sm3_hex(FILE)  # by the server


def test_the_block_page_names_both_of_the_notarys_time_stamps(sm_reg: dict[str, Any]) -> None:
    """The SM2/SM3 token (kept apart, in `sm2_timestamps`) is named on the block page too, by
    name rather than its label in the database (D214)."""
    assert [t["tsa"] for t in sm_reg["block"]["sm2_timestamps"]] == ["notary-sm2"]
    assert ("this registry&#x27;s notary, this registry&#x27;s notary (SM2/SM3)"
            in sm_reg["page"])


def test_every_note_carries_both_lines(sm_reg: dict[str, Any], openssl: str,
                                       tmp_path: Path) -> None:
    vkey = sm_reg["log"]["sm2_verifier_key"]
    for signed in (sm_reg["bundle"]["checkpoint"], sm_reg["bundle"]["block"]["block_note"],
                   sm_reg["block"]["checkpoint"]):
        lines = note.parse_note(signed).signatures
        assert [s.name for s in lines] == [ORIGIN, ORIGIN]
        text = note.parse_note(signed).text.encode()
        assert openssl_verifies(openssl, tmp_path, vkey, text, sm2_line(signed, vkey).signature)


@pytest.mark.interop
def test_go_note_verifies_the_ed25519_line_and_ignores_sm2(
        sm_reg: dict[str, Any], tlogcheck: str, tmp_path: Path) -> None:
    vkey, sm2_vkey = sm_reg["log"]["verifier_key"], sm_reg["log"]["sm2_verifier_key"]
    cp = sm_reg["bundle"]["checkpoint"]
    broken = replace_sm2(cp, sm2_vkey, SIGNER.sign(b"not this\n"))
    for name, text in (("cp", cp), ("broken", broken)):
        (tmp_path / name).write_text(text)
        r = subprocess.run([tlogcheck, "checkpoint", vkey, str(tmp_path / name)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    (tmp_path / "bn").write_text(sm_reg["bundle"]["block"]["block_note"])
    r = subprocess.run([tlogcheck, "note", vkey, str(tmp_path / "bn")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def _save(tmp: Path, bundle: dict[str, Any]) -> Path:
    path = tmp / "bundle.json"
    path.write_text(json.dumps(bundle))
    return path


def test_bundle_verifies_offline_with_both_suites(sm_reg: dict[str, Any],
                                                 tmp_path: Path) -> None:
    b, log = sm_reg["bundle"], sm_reg["log"]
    assert b["notary"]["sm2_keys"] == [{"verifier_key": log["sm2_verifier_key"]}]
    rep = verify_bundle(b, file_sha256=hashlib.sha256(FILE).hexdigest(),
                        file_sm3=sm2.sm3_hex(FILE), trusted_keys=[log["verifier_key"]],
                        sm2_keys=[log["sm2_verifier_key"]])
    assert rep.ok, rep.to_json()
    steps = {s.name: s for s in rep.steps}
    assert steps["sm2"].status == "ok" and "1234567812345678" in steps["sm2"].detail
    assert rep.facts["sm2_keys"][0]["pinned"] is True
    assert rep.facts["sm3"] == sm2.sm3_hex(FILE)
    unpinned = verify_bundle(b, trusted_keys=[log["verifier_key"]])
    assert unpinned.ok and unpinned.facts["sm2_keys"][0]["pinned"] is False
    wrong = verify_bundle(b, file_sha256=hashlib.sha256(FILE).hexdigest(),
                          file_sm3=sm2.sm3_hex(b"other"), trusted_keys=[log["verifier_key"]])
    assert wrong.failed is not None and wrong.failed.name == "file"
    other = Sm2Signer(ORIGIN, 7).verifier_key  # a pinned SM2 key that did not sign
    rep = verify_bundle(b, trusted_keys=[log["verifier_key"]], sm2_keys=[other])
    assert rep.failed is not None and rep.failed.name == "sm2"

    # the CLI: both keys pinned with --trust, and the exhibit hashed with SHA-256 and SM3
    exhibit = tmp_path / "exhibit.bin"
    exhibit.write_bytes(FILE)
    r = CliRunner().invoke(app, ["verify", str(_save(tmp_path, b)), str(exhibit), "--trust",
                                 log["verifier_key"], "--trust", log["sm2_verifier_key"],
                                 "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["verified"] and out["facts"]["sm2_keys"][0]["pinned"] is True
    exhibit.write_bytes(FILE + b"!")
    r = CliRunner().invoke(app, ["verify", str(_save(tmp_path, b)), str(exhibit), "--trust",
                                 log["verifier_key"], "--trust", log["sm2_verifier_key"]])
    assert r.exit_code == 1 and "'file'" in r.output


@pytest.mark.parametrize("which", ["checkpoint", "block_note"])
def test_any_flipped_byte_of_an_sm2_signature_fails_the_sm2_step(
        sm_reg: dict[str, Any], which: str) -> None:
    b, log = sm_reg["bundle"], sm_reg["log"]
    signed = b["checkpoint"] if which == "checkpoint" else b["block"]["block_note"]
    sig = sm2_line(signed, log["sm2_verifier_key"]).signature
    for i in range(len(sig)):
        bad = bytearray(sig)
        bad[i] ^= 0x10
        broken = replace_sm2(signed, log["sm2_verifier_key"], bytes(bad))
        changed = json.loads(json.dumps(b))
        if which == "checkpoint":
            changed["checkpoint"] = broken
            changed.pop("tlog_proof")  # which repeats the checkpoint
        else:
            changed["block"]["block_note"] = broken
        for pinned in ([], [log["sm2_verifier_key"]]):
            rep = verify_bundle(changed, trusted_keys=[log["verifier_key"]], sm2_keys=pinned)
            assert rep.failed is not None and rep.failed.name == "sm2", (i, rep.to_json())
            assert all(s.status == "ok" for s in rep.steps
                       if s.name in ("checkpoint", "block-signature"))


def test_openssl_verifies_the_bundle_signatures(sm_reg: dict[str, Any], openssl: str,
                                                tmp_path: Path) -> None:
    """What docs/verification.md §13 tells a verifier to run, with nothing of ours."""
    b = sm_reg["bundle"]
    vkey = b["notary"]["sm2_keys"][0]["verifier_key"]
    for signed in (b["checkpoint"], b["block"]["block_note"]):
        text = signed[: signed.rindex("\n\n") + 1].encode()
        assert openssl_verifies(openssl, tmp_path, vkey, text, sm2_line(signed, vkey).signature)
    r = subprocess.run([openssl, "dgst", "-sm3", "-r"], input=FILE, capture_output=True,
                       timeout=30, check=True)
    assert r.stdout.split()[0].decode() == b["entry"]["content"]["sm3"]


def test_the_suite_is_fixed_at_init(sm_reg: dict[str, Any], tmp_path: Path) -> None:
    sm = sm_settings(sm_reg["tmp"])
    with pytest.raises(InvalidInput, match="crypto suite is 'sm'"):
        Node.open(replace(sm, crypto_suite="standard"))
    std = settings_for(tmp_path)
    Node.open(std).stop()
    with pytest.raises(InvalidInput, match="crypto suite is 'standard'"):
        Node.open(replace(std, crypto_suite="sm"))
    with pytest.raises(InvalidInput, match="not one of"):
        Node.open(settings_for(tmp_path / "x", crypto_suite="gm"))
    with pytest.MonkeyPatch.context() as mp:  # with a passphrase, the SM2 key is encrypted
        mp.setenv("COPYLEDGER_KEY_PASSPHRASE", "secret")
        Node.open(sm_settings(tmp_path / "z")).stop()
        pem = settings_for(tmp_path / "z").sm2_key_path.read_text()
        assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(InvalidInput, match="is encrypted: a passphrase is needed"):
        Node.open(sm_settings(tmp_path / "z"))
    with pytest.raises(InvalidInput, match="PKCS#11"):
        Node.open(settings_for(tmp_path / "y", crypto_suite="sm", key_backend="pkcs11",
                               pkcs11_module="/x.so", pkcs11_token_label="t"))


def test_a_standard_bundle_skips_the_sm2_step(tmp_path: Path) -> None:
    reg = Node.open(settings_for(tmp_path))
    key, _ = create_key(reg.store, "creator", "alice")
    try:
        with TestClient(create_app(reg)) as c:
            log = c.get("/v1/log").json()
            assert log["crypto_suite"] == "standard" and "sm2_verifier_key" not in log
            r = c.post("/v1/works", headers={"Authorization": f"Bearer {key}"}, json={
                "sha256": "1" * 64, "title": "t", "creators": ["A"], "work_type": "text"})
            b = c.get(f"/v1/entries/{r.json()['seq']}/bundle").json()
    finally:
        reg.stop()
    assert "sm2_keys" not in b["notary"] and "sm3" not in b["entry"]["content"]
    rep = verify_bundle(b, trusted_keys=[log["verifier_key"]])
    steps = {s.name: s.status for s in rep.steps}
    assert rep.ok and steps["sm2"] == "skipped"
    rep = verify_bundle(b, trusted_keys=[log["verifier_key"]], sm2_keys=[SIGNER.verifier_key])
    assert rep.failed is not None and rep.failed.name == "sm2"  # a pinned SM2 key must sign


@pytest.mark.slow
def test_cli_init_register_bundle_verify_audit(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`init --suite sm`, then the CLI hashes SM3 on the creator's side, and the bundle it
    fetches verifies offline under both pinned keys; the audit reads the SM-suite log."""
    from tests.server import ServerProcess

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COPYLEDGER_KEY_BACKEND", raising=False)  # SM2 keys are files (D40)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        r = runner.invoke(app, list(args))
        return r.exit_code, r.stdout + (r.stderr if r.stderr_bytes else "")

    d = tmp_path / "reg"
    code, out = run("init", "--data-dir", str(d), "--suite", "sm", "--json")
    assert code == 0, out
    made = json.loads(out)
    assert made["crypto_suite"] == "sm" and sm2.is_verifier_key(made["sm2_verifier_key"])
    assert (d / "notary" / "log-sm2-key.pem").stat().st_mode & 0o777 == 0o600
    assert 'crypto_suite = "sm"' in (d / "config.toml").read_text()
    key = json.loads(run("keys", "create", "--role", "creator", "--data-dir", str(d),
                         "--json")[1])["key"]
    work = tmp_path / "poem.txt"
    work.write_bytes(FILE)
    srv = ServerProcess(d).start()
    try:
        code, out = run("register", str(work), "--server", srv.url, "--api-key", key,
                        "--work-type", "text", "--creator", "李白", "--json")
        assert code == 0, out
        seq = json.loads(out)[0]["seq"]
        code, out = run("bundle", str(seq), "-o", str(tmp_path / "b.json"), "--server", srv.url)
        assert code == 0, out
    finally:
        srv.stop()
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["entry"]["content"]["sm3"] == sm2.sm3_hex(FILE)  # computed by the CLI
    code, out = run("verify", str(tmp_path / "b.json"), str(work), "--trust",
                    made["verifier_key"], "--trust", made["sm2_verifier_key"])
    assert code == 0 and "VERIFIED" in out and "SM2 key (pinned)" in out, out
    code, out = run("audit", "--data-dir", str(d), "--json")
    assert code == 0, out


def sm_bundle(tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A bundle of an uploaded file from a fresh SM-suite registry, and its /v1/log."""
    reg = Node.open(sm_settings(tmp))
    key, _ = create_key(reg.store, "creator", "alice")
    try:
        with TestClient(create_app(reg)) as c:
            up = c.post("/v1/works", headers={"Authorization": f"Bearer {key}"},
                        files={"file": ("x.bin", FILE, "application/octet-stream")},
                        data={"title": "画作", "creators": ["李雷"], "work_type": "image"})
            return c.get(f"/v1/entries/{up.json()['seq']}/bundle").json(), c.get("/v1/log").json()
    finally:
        reg.stop()


def test_audit_checks_the_sm2_lines(tmp_path: Path) -> None:
    from copyledger.ledger.audit import audit
    from copyledger.service.node import all_verifier_keys

    reg = Node.open(sm_settings(tmp_path))
    key, _ = create_key(reg.store, "creator", "alice")
    try:
        with TestClient(create_app(reg)) as c:
            for i in range(3):
                c.post("/v1/works", headers={"Authorization": f"Bearer {key}"}, json={
                    "sha256": hashlib.sha256(b"%d" % i).hexdigest(),
                    "sm3": sm2.sm3_hex(b"%d" % i), "title": "t", "creators": ["A"],
                    "work_type": "text"}).raise_for_status()
        keys = all_verifier_keys(reg.settings)
        sm2_vkey = reg.settings.sm2_verifier_key_path.read_text().strip()
        assert audit(reg.store, [*keys, sm2_vkey]).ok
        rep = audit(reg.store, [*keys, Sm2Signer(ORIGIN, 7).verifier_key])  # not the signer
        assert not rep.ok and rep.bad_height == 0 and "SM2 signature" in (rep.problem or ""), rep
    finally:
        reg.stop()
