"""What we publish verifies with Go's sumdb/tlog and note (tlogcheck), code no one here wrote."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.service.apikeys import create_key
from tests.helpers import open_registry, work_body

pytestmark = pytest.mark.interop


def check(tool: str, *args: str) -> str:
    r = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"tlogcheck {' '.join(args)}: {r.stderr}"
    return r.stdout


def test_proofs_and_checkpoints_verify_with_go(tmp_path: Path, tlogcheck: str) -> None:
    rnd = random.Random(6962)
    reg = open_registry(tmp_path, linger_ms=0.5)
    key, _ = create_key(reg.store, "creator", "alice")
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(reg)) as c:
        vkey = c.get("/v1/log").json()["verifier_key"]
        receipts = [c.post("/v1/works", json=work_body(i), headers=h).json() for i in range(70)]
        size = c.get("/v1/log").json()["tree_size"]
        assert size == 70

        # Receipts: inclusion proof + the signed checkpoint they came with.
        for r in rnd.sample(receipts, 12):
            rc = r["receipt"]
            check(tlogcheck, "inclusion", str(rc["tree_size"]), rc["root"], str(r["seq"]),
                  r["leaf_hash"], ",".join(rc["proof"]))
            f = tmp_path / f"cp-{r['seq']}"
            f.write_text(rc["checkpoint"])
            got = check(tlogcheck, "checkpoint", vkey, str(f)).split()
            assert got == ["test.example/log", str(rc["tree_size"]), rc["root"]]

        # Proofs for random entries and random tree sizes.
        for _ in range(40):
            n = rnd.randint(1, size)
            i = rnd.randrange(n)
            p = c.get(f"/v1/entries/{i}/proof", params={"tree_size": n}).json()
            check(tlogcheck, "inclusion", str(n), p["root"], str(i), p["leaf_hash"],
                  ",".join(p["proof"]))
        for _ in range(40):
            new = rnd.randint(1, size)
            old = rnd.randint(1, new)
            p = c.get("/v1/log/consistency", params={"from": old, "to": new}).json()
            check(tlogcheck, "consistency", str(old), p["old_root"], str(new), p["new_root"],
                  ",".join(p["proof"]))

        # The latest checkpoint, and a block note, open with Go's note package.
        f = tmp_path / "latest"
        f.write_text(c.get("/v1/log/checkpoint").text)
        assert check(tlogcheck, "checkpoint", vkey, str(f)).split()[1] == "70"
        b = c.get("/v1/blocks/1").json()
        f.write_text(b["block_note"])
        assert check(tlogcheck, "note", vkey, str(f)).splitlines()[0] == "copyledger/block/v1"

        # Go's leaf hash of our entry bytes equals ours.
        e = c.get("/v1/entries/5").json()
        from copyledger.ledger import jcs

        leaf_b64 = check(tlogcheck, "leafhash", jcs.canonicalize(e["entry"]).hex()).strip()
        import base64

        assert base64.b64decode(leaf_b64).hex() == e["leaf_hash"]


def test_tampered_proof_is_rejected_by_go(tmp_path: Path, tlogcheck: str) -> None:
    reg = open_registry(tmp_path)
    key, _ = create_key(reg.store, "creator", "alice")
    with TestClient(create_app(reg)) as c:
        for i in range(9):
            c.post("/v1/works", json=work_body(i), headers={"Authorization": f"Bearer {key}"})
        p = c.get("/v1/entries/4/proof").json()
    bad = list(p["proof"])
    bad[0] = ("0" if bad[0][0] != "0" else "1") + bad[0][1:]
    r = subprocess.run([tlogcheck, "inclusion", "9", p["root"], "4", p["leaf_hash"],
                        ",".join(bad)], capture_output=True, text=True)
    assert r.returncode == 1


def test_bundle_proof_and_checkpoint_verify_with_go(tmp_path: Path, tlogcheck: str) -> None:
    import base64

    reg = open_registry(tmp_path)
    key, _ = create_key(reg.store, "creator", "alice")
    with TestClient(create_app(reg)) as c:
        for i in range(11):
            c.post("/v1/works", json=work_body(i), headers={"Authorization": f"Bearer {key}"})
        vkey = c.get("/v1/log").json()["verifier_key"]
        b = c.get("/v1/entries/7/bundle").json()
    inc = b["inclusion"]
    check(tlogcheck, "inclusion", str(inc["tree_size"]), inc["root"], "7", b["leaf_hash"],
          ",".join(inc["proof"]))
    f = tmp_path / "cp"
    f.write_text(b["checkpoint"])
    assert check(tlogcheck, "checkpoint", vkey, str(f)).split()[1:] == [
        str(inc["tree_size"]), inc["root"]]
    # The C2SP tlog-proof form inside the bundle carries the same proof and checkpoint.
    head, _, cp = b["tlog_proof"].partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "c2sp.org/tlog-proof@v1" and lines[2] == "index 7"
    assert [base64.b64decode(x).hex() for x in lines[3:]] == inc["proof"]
    f.write_text(cp)
    check(tlogcheck, "checkpoint", vkey, str(f))
