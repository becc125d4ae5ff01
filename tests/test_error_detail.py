"""Errors to clients never name internal URLs, file paths or errno values: the log gets the
detail, the client a stable problem (issue 10 item 8)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy.exc
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.notary.remote import RemoteIdentity, RemoteNotary, RemoteTSA
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.helpers import open_registry, work_body
from tests.server import free_port

SECRET_BITS = ("127.0.0.1", "Errno", "refused", "/srv/", "ledger.sqlite3", "OperationalError",
               "INSERT", "http://")


def _unreachable_notary(reg: Node) -> RemoteNotary:
    """A notary client whose notary is down (connection refused on a loopback port); its TSA
    identity is the registry's own, which `RemoteTSA` checks tokens against (D123)."""
    n = RemoteNotary.__new__(RemoteNotary)
    n.url = f"http://127.0.0.1:{free_port()}"
    n._client = httpx.Client(base_url=n.url, timeout=2)
    n.identity = RemoteIdentity(reg.tsa.identity.certificate, list(reg.tsa.identity.chain))
    return n


@pytest.fixture
def made(tmp_path: Path) -> Iterator[dict[str, Any]]:
    reg = open_registry(tmp_path)
    key = create_key(reg.store, "creator", "a")[0]
    with TestClient(create_app(reg)) as c:
        yield {"client": c, "reg": reg, "h": {"Authorization": f"Bearer {key}"}}
    reg.stop()


def _clean(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    for bit in SECRET_BITS:
        assert bit not in r.text, (bit, r.text)


def test_notary_down_while_sealing(made: dict[str, Any],
                                   caplog: pytest.LogCaptureFixture) -> None:
    c, reg = made["client"], made["reg"]
    notary = _unreachable_notary(reg)
    reg.sequencer.stamp = RemoteTSA(notary).timestamp_digest
    with caplog.at_level(logging.ERROR):
        r = c.post("/v1/works", json=work_body(1), headers=made["h"])
    _clean(r, 503)
    assert r.json()["detail"].startswith("sealing failed before anything was written")
    assert notary.url in caplog.text  # the operator still learns where and why


def test_notary_down_for_a_time_stamp(made: dict[str, Any],
                                      caplog: pytest.LogCaptureFixture) -> None:
    c, reg = made["client"], made["reg"]
    notary = _unreachable_notary(reg)
    reg.tsa = RemoteTSA(notary)
    with caplog.at_level(logging.ERROR):
        r = c.post("/v1/timestamp", content=b"0\x00",
                   headers={"Content-Type": "application/timestamp-query"})
    _clean(r, 503)
    assert r.json()["detail"] == "the notary cannot be reached"
    assert notary.url in caplog.text


def test_database_error_while_sealing(made: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    c, reg = made["client"], made["reg"]

    def broken(*_a: object, **_k: object) -> None:
        raise sqlalchemy.exc.OperationalError(
            "INSERT INTO entries ...", {}, sqlite3.OperationalError(
                "[Errno 28] No space left on device: '/srv/copyledger/ledger.sqlite3'"))

    monkeypatch.setattr(reg.store, "append_block", broken)
    with caplog.at_level(logging.ERROR):
        r = c.post("/v1/works", json=work_body(2), headers=made["h"])
    _clean(r, 503)
    assert "the database write failed" in r.json()["detail"]
    assert "No space left on device" in caplog.text

