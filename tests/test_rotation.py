"""Key rotation: old signatures keep verifying, overlap checkpoints carry both keys (Go's note
package accepts them under either), and the rotation is itself a ledger entry."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from copyledger.api.app import create_app
from copyledger.cli.main import app as cli_app
from copyledger.ledger import note
from copyledger.ledger.audit import audit
from copyledger.ledger.verify import verify_bundle
from copyledger.service.apikeys import create_key
from copyledger.service.node import all_verifier_keys, tsa_roots_pem
from tests.helpers import HSM, open_registry, work_body

pytestmark = pytest.mark.skipif(HSM, reason="rotation of file keys; HSM keys rotate by label")


def register_some(
    tmp: Path, key: str | None, n: int, tag: str
) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
    """Register n works; the last one's bundle, the log key, the API key, the published keys."""
    reg = open_registry(tmp)
    if key is None:
        key, _ = create_key(reg.store, "creator", "alice")
    with TestClient(create_app(reg)) as c:
        for i in range(n):
            r = c.post("/v1/works", json=work_body(f"{tag}{i}"),
                       headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 201, r.text
        seq = r.json()["seq"]
        bundle = c.get(f"/v1/entries/{seq}/bundle").json()
        vkey = c.get("/v1/log").json()["verifier_key"]
        keys = c.get("/v1/notary/keys").json()
    return bundle, vkey, key, keys


def rotate(tmp: Path, hours: float) -> dict[str, Any]:
    r = CliRunner().invoke(cli_app, ["notary", "rotate", "--data-dir", str(tmp / "data"),
                                     "--overlap-hours", str(hours), "--json"])
    assert r.exit_code == 0, r.stdout
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_rotation_with_overlap(tmp_path: Path, tlogcheck: str) -> None:
    old_bundle, old_vkey, key, _ = register_some(tmp_path, None, 3, "before")
    rot = rotate(tmp_path, 24)
    assert rot["old_verifier_key"] == old_vkey and rot["new_verifier_key"] != old_vkey
    new_bundle, new_vkey, _, keys = register_some(tmp_path, key, 2, "after")
    assert new_vkey == rot["new_verifier_key"]

    # Published: both keys with their validity; both TSA roots.
    assert [k["verifier_key"] for k in keys["log_keys"]] == [old_vkey, new_vkey]
    assert keys["log_keys"][0]["valid_until"] and keys["log_keys"][1]["valid_until"] is None
    assert len(keys["tsa_roots"][0].split("BEGIN CERTIFICATE")) == 3  # new root + retired root

    # Old bundles still verify under the old key; new ones under either key (overlap).
    assert verify_bundle(old_bundle, trusted_keys=[old_vkey]).ok
    for pin in (old_vkey, new_vkey):
        rep = verify_bundle(new_bundle, trusted_keys=[pin])
        assert rep.ok, rep.to_json()
    n = note.parse_note(new_bundle["checkpoint"])
    assert len(n.signatures) == 2

    # Go's note package accepts the overlap checkpoint under either key.
    f = tmp_path / "cp"
    f.write_text(new_bundle["checkpoint"])
    for pin in (old_vkey, new_vkey):
        r = subprocess.run([tlogcheck, "checkpoint", pin, str(f)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    # The rotation is in the ledger, and the whole log audits under all known keys.
    reg = open_registry(tmp_path)
    rows = reg.store.search_sha256(hashlib.sha256(new_vkey.encode()).hexdigest())
    assert [r.kind for r in rows] == ["rotation"]
    rep = audit(reg.store, all_verifier_keys(reg.settings),
                tsa_roots_pem=tsa_roots_pem(reg.settings))
    assert rep.ok, rep.problem


def test_after_the_overlap_only_the_new_key_signs(tmp_path: Path) -> None:
    _, old_vkey, key, _ = register_some(tmp_path, None, 1, "a")
    rotate(tmp_path, 0)
    bundle, new_vkey, _, _ = register_some(tmp_path, key, 1, "b")
    assert verify_bundle(bundle, trusted_keys=[new_vkey]).ok
    rep = verify_bundle(bundle, trusted_keys=[old_vkey])
    assert rep.failed is not None and rep.failed.name == "checkpoint"


def test_rotate_refuses_while_served(tmp_path: Path) -> None:
    reg = open_registry(tmp_path)
    reg.start()
    try:
        r = CliRunner().invoke(cli_app, ["notary", "rotate", "--data-dir", str(tmp_path / "data")])
        assert r.exit_code == 2 and "stop the server" in r.stdout + r.stderr
    finally:
        reg.stop()


def test_a_rotation_stopped_after_retiring_the_keys_is_finished_by_the_next_start(
        tmp_path: Path) -> None:
    """D186: a rotation retires the keys (moved to notary/retired/N, recorded in
    rotations.json) and then makes the new ones; stopped in between, the data directory has a
    published key and no key files. D176 refuses that as lost keys, but here the record says
    where they went: the next start makes the new keys, as the rotation would have."""
    from datetime import timedelta

    from copyledger.service import rotation
    from copyledger.service.settings import load

    register_some(tmp_path, None, 2, "r")
    s = load(tmp_path / "data")
    old = rotation.rotate(s, overlap=timedelta(hours=1), valid_from=None)  # then "killed"
    assert not s.log_key_path.exists() and not (s.tsa_dir / "tsa.pem").exists()
    r = CliRunner().invoke(cli_app, ["init", "--data-dir", str(tmp_path / "data"), "--json"])
    assert r.exit_code == 0, r.stdout
    out = json.loads(r.stdout)
    assert out["created_key"] is True and out["verifier_key"] != old.verifier_key
    assert s.log_key_path.exists() and (s.tsa_dir / "tsa.pem").exists()
