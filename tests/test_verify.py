"""Evidence bundles verify offline, and any single changed byte fails at the right step."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.ledger.verify import verify_bundle
from copyledger.service.apikeys import create_key
from tests.helpers import open_registry

FILE = b"The exhibit: a photograph's bytes, say." * 100


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reg = open_registry(tmp_path_factory.mktemp("reg"))
    key, _ = create_key(reg.store, "creator", "alice")
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(reg)) as c:
        for i in range(6):
            c.post("/v1/works", json={"sha256": hashlib.sha256(b"%d" % i).hexdigest(),
                                      "title": f"w{i}", "creators": ["A"], "work_type": "text"},
                   headers=h)
        r = c.post("/v1/works", headers=h,
                   files={"file": ("x.bin", FILE, "application/octet-stream")},
                   data={"title": "Exhibit", "creators": ["Alice"], "work_type": "image"})
        seq = r.json()["seq"]
        for i in range(6, 9):  # the log grows after the entry: the bundle still proves it
            c.post("/v1/works", json={"sha256": hashlib.sha256(b"%d" % i).hexdigest(),
                                      "title": f"w{i}", "creators": ["A"], "work_type": "text"},
                   headers=h)
        bundle = c.get(f"/v1/entries/{seq}/bundle").json()
        vkey = c.get("/v1/log").json()["verifier_key"]
    return {"bundle": bundle, "vkey": vkey, "seq": seq}


def check(bundle: Any, vkey: str, file: bytes | None = FILE) -> Any:
    return verify_bundle(
        bundle,
        file_sha256=hashlib.sha256(file).hexdigest() if file is not None else None,
        trusted_keys=[vkey],
    )


def test_bundle_verifies_offline(made: dict[str, Any]) -> None:
    rep = check(made["bundle"], made["vkey"])
    assert rep.ok, rep.to_json()
    assert rep.trust == "pinned"
    assert {s.name: s.status for s in rep.steps}["file"] == "ok"
    assert rep.facts["registrant"] == "alice"
    assert made["bundle"]["inclusion"]["tree_size"] < 10  # proof to the sealing block


def test_wrong_file_fails_at_file_step(made: dict[str, Any]) -> None:
    rep = check(made["bundle"], made["vkey"], FILE + b"!")
    assert not rep.ok and rep.failed is not None and rep.failed.name == "file"


def test_untrusted_key_fails_at_checkpoint(made: dict[str, Any]) -> None:
    other = "other.example/log+1c1c0ff3+AcYm3BbTtlO3Hm2iexg7zDO4fSLXhYHTm1EIvw8ck3IP"
    rep = verify_bundle(made["bundle"], trusted_keys=[other])
    assert rep.failed is not None and rep.failed.name in ("checkpoint",)


def flip_char(s: str, i: int) -> str:
    c = s[i]
    alt = {"0": "1", "a": "b", "A": "B", "=": "=", "+": "/", "/": "+"}.get(c)
    if alt is None or alt == c:
        alt = "0" if c != "0" else "1"
    return s[:i] + alt + s[i + 1:]


def leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, (*path, i))
    else:
        yield path, obj


def set_at(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


# Fields a verifier does not rely on: labels and validity periods shown to people.
NOT_EVIDENCE = {("timestamps", 0, "tsa"), ("notary", "log_keys", 0, "valid_from"),
                ("notary", "log_keys", 0, "valid_until")}

EXPECTED = {
    "format": "format", "origin": "checkpoint", "seq": "inclusion", "leaf_hash": "entry",
    "entry": "entry", "inclusion": "inclusion", "checkpoint": "checkpoint", "block": "block",
    "timestamps": "timestamp", "tlog_proof": "tlog-proof", "title_chain": "title",
}


def test_every_field_mutated_fails(made: dict[str, Any]) -> None:
    """Change every value in the bundle (one at a time): verification must fail, and at the
    step that owns that field."""
    tried = 0
    for path, value in leaves(made["bundle"]):
        if path in NOT_EVIDENCE or path[:2] in (("notary", "tsa_chain"), ("notary", "log_keys")):
            continue  # log keys: pinned by the verifier here (see the unpinned test below)
        b = copy.deepcopy(made["bundle"])
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            set_at(b, path, value + 1)
        else:
            # flip a character in the middle (signatures, hashes, text alike)
            set_at(b, path, flip_char(value, len(value) // 2) if value else "x")
        rep = check(b, made["vkey"])
        assert not rep.ok, f"changing {path} went unnoticed"
        want = EXPECTED.get(path[0])
        if path[:2] == ("block", "block_note"):
            want = "block-signature"
        if path == ("entry", "content", "sha256"):
            want = "file"  # the exhibit no longer matches what the entry registers
        if path[:1] == ("notary",):
            want = None  # the key or the TSA root itself: fails wherever it is first used
        if want:
            assert rep.failed.name == want, (path, rep.to_json())
        tried += 1
    assert tried > 30


@pytest.mark.parametrize("where", ["signature", "body"])
def test_checkpoint_byte_flips(made: dict[str, Any], where: str) -> None:
    b = copy.deepcopy(made["bundle"])
    cp = b["checkpoint"]
    text, _, sig = cp.partition("\n\n")
    if where == "body":
        cp = flip_char(text, 1) + "\n\n" + sig
    else:
        name, _, b64 = sig.rstrip("\n").rpartition(" ")
        raw = bytearray(base64.b64decode(b64))
        raw[10] ^= 1
        cp = text + "\n\n" + name + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    b["checkpoint"] = cp
    rep = check(b, made["vkey"])
    assert rep.failed is not None and rep.failed.name == "checkpoint"


def test_bundle_keys_are_used_but_reported_unpinned(made: dict[str, Any]) -> None:
    rep = verify_bundle(made["bundle"], file_sha256=None)
    assert rep.ok and rep.trust == "bundle"
    assert [s.status for s in rep.steps if s.name == "file"] == ["skipped"]
    b = copy.deepcopy(made["bundle"])
    key = b["notary"]["log_keys"][0]["verifier_key"]
    b["notary"]["log_keys"][0]["verifier_key"] = flip_char(key, len(key) - 5)
    rep = verify_bundle(b)
    assert rep.failed is not None and rep.failed.name == "checkpoint"


def test_token_verifies_with_openssl(made: dict[str, Any], tmp_path: Path) -> None:
    """The block's RFC 3161 token passes `openssl ts -verify` against the published chain."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    b = made["bundle"]
    (tmp_path / "token.der").write_bytes(base64.b64decode(b["timestamps"][0]["token"]))
    (tmp_path / "root.pem").write_text("".join(b["notary"]["tsa_roots"]))
    (tmp_path / "chain.pem").write_text("".join(b["notary"]["tsa_chain"]))
    r = subprocess.run(["openssl", "ts", "-verify", "-digest", b["block"]["hash"], "-in",
                        "token.der", "-token_in", "-CAfile", "root.pem", "-untrusted",
                        "chain.pem"], cwd=tmp_path, capture_output=True, text=True)
    assert "Verification: OK" in r.stdout, r.stdout + r.stderr
    good = bytes.fromhex(b["block"]["hash"])
    wrong = bytes([good[0] ^ 0xFF]).hex() + good[1:].hex()  # always a different digest
    r = subprocess.run(["openssl", "ts", "-verify", "-digest", wrong, "-in", "token.der",
                        "-token_in", "-CAfile", "root.pem", "-untrusted", "chain.pem"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert "Verification: OK" not in r.stdout


def test_cli_verify(made: dict[str, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from copyledger.cli.main import app

    bf, ff = tmp_path / "b.json", tmp_path / "exhibit.jpg"
    bf.write_text(json.dumps(made["bundle"]))
    ff.write_bytes(FILE)
    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(bf), str(ff), "--trust", made["vkey"], "--json"])
    assert r.exit_code == 0, r.stdout
    assert json.loads(r.stdout)["verified"] is True
    ff.write_bytes(FILE[:-1])
    r = runner.invoke(app, ["verify", str(bf), str(ff), "--trust", made["vkey"]])
    assert r.exit_code == 1 and "file" in r.stdout and "NOT VERIFIED" in r.stdout


def test_steps_end_with_a_typed_status(made: dict[str, Any]) -> None:
    """A parsed Bundle verifies like its JSON; each step's status is a Status, and the JSON
    report spells it as before."""
    from copyledger.verify import Bundle, Status

    rep = verify_bundle(Bundle.from_dict(made["bundle"]), trusted_keys=[made["vkey"]])
    by_name = {s.name: s.status for s in rep.steps}
    assert rep.ok and by_name["file"] is Status.SKIPPED and by_name["entry"] is Status.PASSED
    assert rep.to_json()["steps"][1]["status"] == "skipped"
    b = copy.deepcopy(made["bundle"])
    b["inclusion"]["root"] = 5  # not a bundle/v1 document: the later steps are not checked
    rep = check(b, made["vkey"])
    assert rep.failed is not None and rep.failed.name == "format"
    assert "inclusion.root" in rep.failed.detail
    assert [s.status for s in rep.steps[1:]] == [Status.NOT_CHECKED] * (len(rep.steps) - 1)


def test_cli_verify_without_a_pinned_key_says_so_and_exits_3(
        made: dict[str, Any], tmp_path: Path) -> None:
    """Without --trust, nothing ties the bundle to a known log: another log with the same
    origin would pass the same checks. `verify` says so and exits 3 unless --allow-unpinned."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from typer.testing import CliRunner

    from copyledger.cli.main import UNPINNED_EXIT, app
    from copyledger.ledger import note

    bf = tmp_path / "b.json"
    bf.write_text(json.dumps(made["bundle"]))
    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(bf)])
    assert r.exit_code == UNPINNED_EXIT == 3, r.stdout
    assert "NOT TIED TO A KNOWN LOG" in r.stdout and "VERIFIED" not in r.stdout.replace(
        "NOT VERIFIED", "")
    r = runner.invoke(app, ["verify", str(bf), "--json"])
    assert r.exit_code == 3 and json.loads(r.stdout)["trust"] == "bundle"
    r = runner.invoke(app, ["verify", str(bf), "--allow-unpinned"])
    assert r.exit_code == 0, r.stdout
    # A trust anchor file that is not there is a usage error (2), not a failed step (1).
    for option in ("--trust-file", "--tsa-roots", "--sm2-tsa-roots", "--sm2-tsa-retired"):
        r = runner.invoke(app, ["verify", str(bf), option, str(tmp_path / "missing")])
        assert r.exit_code == 2 and r.exception is not None, (option, r.stdout)
        assert not isinstance(r.exception, FileNotFoundError), option
    # Another log's key with the same origin: the bundle does not verify under it.
    origin = note.parse_verifier_key(made["vkey"]).name
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    r = runner.invoke(app, ["verify", str(bf), "--trust", note.format_verifier_key(origin, other)])
    assert r.exit_code == 1 and "NOT VERIFIED" in r.stdout
