"""POST /v1/timestamp end to end with OpenSSL's own client and verifier."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from tests.helpers import open_registry

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    reg = open_registry(tmp_path, timestamp_rate_per_s=5.0)
    with TestClient(create_app(reg)) as c:
        yield c


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)


def test_openssl_query_reply_verify(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "exhibit.bin").write_bytes(b"evidence " * 1000)
    assert openssl("ts", "-query", "-data", "exhibit.bin", "-sha256", "-cert", "-out", "q.tsq",
                   cwd=tmp_path).returncode == 0
    r = client.post("/v1/timestamp", content=(tmp_path / "q.tsq").read_bytes(),
                    headers={"content-type": "application/timestamp-query"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/timestamp-reply"
    (tmp_path / "reply.tsr").write_bytes(r.content)
    keys = client.get("/v1/notary/keys").json()
    (tmp_path / "root.pem").write_text("".join(keys["tsa_roots"]))
    (tmp_path / "tsa.pem").write_text("".join(keys["tsa_chain"]))
    v = openssl("ts", "-verify", "-data", "exhibit.bin", "-in", "reply.tsr", "-CAfile",
                "root.pem", "-untrusted", "tsa.pem", cwd=tmp_path)
    assert "Verification: OK" in v.stdout, v.stdout + v.stderr
    (tmp_path / "exhibit.bin").write_bytes(b"tampered")
    v = openssl("ts", "-verify", "-data", "exhibit.bin", "-in", "reply.tsr", "-CAfile",
                "root.pem", "-untrusted", "tsa.pem", cwd=tmp_path)
    assert "Verification: OK" not in v.stdout


def test_bad_queries_get_rfc3161_rejections_not_500(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/timestamp", content=b"\x30\x03garbage",
                    headers={"content-type": "application/timestamp-query"})
    assert r.status_code == 200
    (tmp_path / "bad.tsr").write_bytes(r.content)
    text = openssl("ts", "-reply", "-in", "bad.tsr", "-text", cwd=tmp_path).stdout
    assert "Rejected" in text or "rejection" in text.lower(), text
    wrong_type = client.post("/v1/timestamp", content=b"x",
                             headers={"content-type": "application/json"})
    assert wrong_type.status_code == 422
    assert wrong_type.headers["content-type"].startswith("application/problem+json")


def test_rate_limit(client: TestClient) -> None:
    statuses = [client.post("/v1/timestamp", content=b"x",
                            headers={"content-type": "application/timestamp-query"}).status_code
                for _ in range(30)]
    assert 429 in statuses and statuses[0] == 200
