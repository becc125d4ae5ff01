"""An SM-suite log signed by a stand-alone notary (D57): the notary process holds the SM2 note
key and the SM2 TSA as well as the Ed25519 and ECDSA keys; the API process holds none and gets
its SM2 lines and SM2/SM3 tokens from it, just as in-process. Checked by `copyledger verify`'s
steps with the notary's keys pinned, by the audit, and by `openssl pkeyutl`."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from copyledger.ledger import note, sm2
from copyledger.ledger.verify import verify_bundle
from copyledger.notary.sm2_tsa import SM2_ROOT_FILE
from tests import test_sm
from tests.helpers import work_body
from tests.server import ServerProcess, cli
from tests.test_sm import openssl_verifies, sm2_line

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
openssl = test_sm.openssl
TOKEN = "test-notary-token-0123456789"
ORIGIN = "sm.example/log"
# SM2 keys are files (D57); the ECDSA/Ed25519 keys of the SoftHSM pass stay out of this test.
ENV = {"COPYLEDGER_NOTARY_TOKEN": TOKEN, "COPYLEDGER_KEY_BACKEND": "file"}


def _json(r: Any) -> dict[str, Any]:
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("sm2notary")
    ndir, adir = tmp / "notary", tmp / "api"
    made = _json(cli("notary", "init", "--data-dir", str(ndir), "--origin", ORIGIN,
                     "--suite", "sm", "--json", env=ENV))
    notary = ServerProcess(ndir, command=("notary", "serve"), **ENV).start(timeout=120)
    try:
        init = _json(cli("init", "--data-dir", str(adir), "--origin", ORIGIN, "--suite", "sm",
                         "--notary-url", notary.url, "--json", env=ENV))
        key = _json(cli("keys", "create", "--role", "creator", "--data-dir", str(adir),
                        "--json", env=ENV))["key"]
        api = ServerProcess(adir, **ENV).start(timeout=120)
        try:
            with httpx.Client(base_url=api.url, timeout=60,
                              headers={"Authorization": f"Bearer {key}"}) as c:
                for i in range(2):
                    r = c.post("/v1/works", json=work_body(i, sm3=sm2.sm3_hex(b"%d" % i)))
                    assert r.status_code == 201, r.text
                bundle = c.get(f"/v1/entries/{r.json()['seq']}/bundle").json()
        finally:
            api.stop()
        audit = cli("audit", "--data-dir", str(adir), "--json", env=ENV)
        yield {"made": made, "init": init, "bundle": bundle, "adir": adir, "ndir": ndir,
               "audit": audit}
    finally:
        notary.stop()


def test_the_api_holds_no_key_and_publishes_the_notarys_sm2_key(remote: dict[str, Any]) -> None:
    assert remote["init"]["sm2_verifier_key"] == remote["made"]["sm2_verifier_key"]
    for f in remote["adir"].rglob("*"):
        if f.is_file() and f.suffix != ".sqlite3":
            assert b"PRIVATE KEY" not in f.read_bytes(), f
    root = (remote["ndir"] / "notary" / "tsa" / SM2_ROOT_FILE).read_text()
    assert (remote["adir"] / "notary" / "tsa" / SM2_ROOT_FILE).read_text() == root
    assert remote["bundle"]["notary"]["sm2_tsa_roots"] == [root]


def test_the_bundle_verifies_under_the_notarys_pinned_sm2_key_and_root(
        remote: dict[str, Any]) -> None:
    b, made = remote["bundle"], remote["made"]
    root = (remote["ndir"] / "notary" / "tsa" / SM2_ROOT_FILE).read_bytes()
    rep = verify_bundle(b, trusted_keys=[made["verifier_key"]],
                        sm2_keys=[made["sm2_verifier_key"]], sm2_tsa_roots_pem=root)
    assert rep.ok, rep.to_json()
    sm2_step = next(s for s in rep.steps if s.name == "sm2")
    assert "1 SM2/SM3 time-stamp token(s)" in sm2_step.detail, sm2_step.detail
    assert [t["tsa"] for t in b["sm2_timestamps"]] == ["notary-sm2"]


def test_openssl_checks_the_sm2_lines_the_notary_signed(remote: dict[str, Any], openssl: str,
                                                        tmp_path: Path) -> None:
    vkey = remote["made"]["sm2_verifier_key"]
    for signed in (remote["bundle"]["checkpoint"], remote["bundle"]["block"]["block_note"]):
        text = note.parse_note(signed).text.encode()
        sig = sm2_line(signed, vkey).signature
        assert openssl_verifies(openssl, tmp_path, vkey, text, sig)
        assert not openssl_verifies(openssl, tmp_path, vkey, text[:-1] + b"!", sig)


def test_a_flipped_byte_of_the_sm2_token_fails_the_sm2_step(remote: dict[str, Any]) -> None:
    b = copy.deepcopy(remote["bundle"])
    token = bytearray(base64.b64decode(b["sm2_timestamps"][0]["token"]))
    token[-3] ^= 1  # inside the SM2 signature at the end of the SignerInfo
    b["sm2_timestamps"][0]["token"] = base64.b64encode(bytes(token)).decode()
    made = remote["made"]
    rep = verify_bundle(b, trusted_keys=[made["verifier_key"]],
                        sm2_keys=[made["sm2_verifier_key"]])
    assert rep.failed is not None and rep.failed.name == "sm2", rep.to_json()
    assert "sm2_timestamps[0]" in rep.failed.detail


def test_the_audit_of_the_api_data_dir_accepts_the_notarys_sm2_lines(
        remote: dict[str, Any]) -> None:
    r = remote["audit"]
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr


def test_an_sm_suite_registry_refuses_a_notary_without_sm2(tmp_path: Path) -> None:
    ndir = tmp_path / "n"
    _json(cli("notary", "init", "--data-dir", str(ndir), "--origin", ORIGIN, "--json",
              env=ENV))
    notary = ServerProcess(ndir, command=("notary", "serve"), **ENV).start(timeout=120)
    try:
        r = cli("init", "--data-dir", str(tmp_path / "a"), "--origin", ORIGIN, "--suite", "sm",
                "--notary-url", notary.url, env=ENV)
        assert r.returncode == 2 and "notary holds no SM2 key" in r.stderr, r.stderr
    finally:
        notary.stop()


def test_the_notary_signs_sm2_lines_only_under_the_checkpoint_rule(tmp_path: Path) -> None:
    from copyledger.api.notary_app import create_notary_app
    from copyledger.notary.signer import CheckpointGuard
    from copyledger.notary.tsa import TimeStampAuthority
    from copyledger.service.node import (
        init_notary_keys,
        load_signer,
        load_sm2_signer,
        load_sm2_tsa_authority,
        load_tsa_identity,
    )
    from copyledger.service.settings import load

    def app_for(suite: str) -> TestClient:
        s = load(tmp_path / suite, origin=ORIGIN, crypto_suite=suite, key_backend="file")
        init_notary_keys(s)
        return TestClient(create_notary_app(
            load_signer(s), TimeStampAuthority(load_tsa_identity(s)), TOKEN,
            checkpoints=CheckpointGuard(s.origin, s.last_checkpoint_path),
            sm2_signer=load_sm2_signer(s), sm2_tsa=load_sm2_tsa_authority(s)))

    h = {"Authorization": f"Bearer {TOKEN}"}
    root = base64.b64encode(b"\x01" * 32).decode()

    def cp(size: int) -> dict[str, str]:
        text = f"{ORIGIN}\n{size}\n{root}\n".encode()
        return {"message": base64.b64encode(text).decode()}

    c = app_for("sm")
    assert c.get("/notary/v1/identity", headers=h).json()["sm2_verifier_key"]
    assert c.post("/notary/v1/sm2/sign", json=cp(5), headers=h).status_code == 200
    # The same rule as the log key's: a bigger tree needs a consistency proof.
    r = c.post("/notary/v1/sm2/sign", json=cp(9), headers=h)
    assert r.status_code == 422 and "consistency proof" in r.json()["detail"], r.text
    r = c.post("/notary/v1/sm2/sign", json={"message": base64.b64encode(b"hi\n").decode()},
               headers=h)
    assert r.status_code == 422, r.text
    digest = base64.b64encode(bytes(32)).decode()
    assert c.post("/notary/v1/sm2/timestamp-digest", json={"digest": digest},
                  headers=h).status_code == 200
    assert c.post("/notary/v1/sm2/timestamp-digest", json={"digest": digest}).status_code == 401
    # A standard-suite notary has no SM2 key: a clear 404, not a 5xx.
    std = app_for("standard")
    assert "sm2_verifier_key" not in std.get("/notary/v1/identity", headers=h).json()
    assert std.post("/notary/v1/sm2/sign", json=cp(5), headers=h).status_code == 404
