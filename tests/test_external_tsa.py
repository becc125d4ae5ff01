"""External TSAs: their tokens are fetched off the sealing path, kept beside ours, and an
outage neither blocks sealing nor loses the stamp (it is fetched when the TSA returns)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.ledger.verify import verify_bundle
from copyledger.service.apikeys import create_key
from copyledger.service.node import tsa_roots_pem
from tests.helpers import open_registry, wait_for, work_body
from tests.server import ServerProcess, cli

pytestmark = pytest.mark.slow


def test_external_tsa_outage_then_recovery(tmp_path: Path) -> None:
    ext_dir = tmp_path / "external"
    assert cli("init", "--data-dir", str(ext_dir), "--origin", "tsa.example/log").returncode == 0
    external = ServerProcess(ext_dir)  # not started yet: the TSA is "down"
    url = external.url + "/v1/timestamp"
    ext_root = ext_dir / "notary" / "tsa" / "root.pem"
    reg = open_registry(tmp_path, external_tsas=url, external_tsa_roots=str(ext_root))
    key, _ = create_key(reg.store, "creator", "alice")
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(reg)) as c:
        for i in range(5):  # sealed and answered while the TSA is down
            assert c.post("/v1/works", json=work_body(i), headers=h).status_code == 201
        wait_for(lambda: reg.external.missing.get(url, 0) > 0, "the outage was not counted")
        assert c.get("/healthz").json()["external_tsa_missing"][url] > 0
        assert len(c.get("/v1/entries/2/bundle").json()["timestamps"]) == 1  # ours only

        external.start()  # the TSA comes back: the missing stamps are fetched
        try:
            wait_for(lambda: reg.store.count_missing_timestamps(url) == 0,
                     "the missing stamps were not fetched")
            b = c.get("/v1/entries/2/bundle").json()
            vkey = c.get("/v1/log").json()["verifier_key"]
        finally:
            external.stop()
    assert [t["tsa"] for t in b["timestamps"]] == ["notary", url]
    rep = verify_bundle(b, trusted_keys=[vkey])
    assert rep.ok, rep.to_json()
    assert len(rep.facts["timestamps"]) == 2
    # Roots taken from the bundle are the operator's word: no time source is independent.
    assert [t["independent"] for t in rep.facts["time_sources"]] == [False, False]
    # A court that trusts only our notary's root still verifies, and is told what it skipped.
    rep = verify_bundle(b, trusted_keys=[vkey], tsa_roots_pem=tsa_roots_pem(reg.settings))
    assert rep.ok and "not trusted" in next(s for s in rep.steps if s.name == "timestamp").detail
    assert [t["independent"] for t in rep.facts["time_sources"]] == [False]  # the operator's
    # ... and one that trusts only the external TSA verifies on that token alone, which is
    # independent of the operator: its root is pinned and is not the notary's.
    rep = verify_bundle(b, trusted_keys=[vkey], tsa_roots_pem=ext_root.read_bytes())
    assert rep.ok
    assert [t["independent"] for t in rep.facts["time_sources"]] == [True]
    assert "independent of the operator: 1" in rep.steps[7].detail
