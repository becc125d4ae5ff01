"""API keys: list and revoke from the CLI; a revoked key stops working on a running server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from copyledger.api.app import create_app
from copyledger.cli.main import app as cli_app
from copyledger.service import apikeys
from copyledger.service.node import Node
from tests.helpers import open_registry, work_body

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    r = runner.invoke(cli_app, list(args))
    return r.exit_code, r.stdout


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Node]:
    n = open_registry(tmp_path)
    yield n
    n.stop()


def test_list_and_revoke_from_the_cli(reg: Node) -> None:
    d = str(reg.settings.data_dir)
    code, out = cli("keys", "create", "--role", "creator", "--account", "alice",
                    "--data-dir", d, "--json")
    assert code == 0, out
    alice = json.loads(out)
    code, out = cli("keys", "create", "--role", "platform", "--account", "tube",
                    "--data-dir", d, "--json")
    assert code == 0, out
    code, out = cli("keys", "list", "--data-dir", d, "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [(r["account"], r["role"], r["revoked_at"]) for r in rows] == [
        ("alice", "creator", None), ("tube", "platform", None)]
    assert all(alice["key"] not in json.dumps(r) for r in rows)  # never the secret
    assert alice["key"].startswith(rows[0]["prefix"])
    code, out = cli("keys", "list", "--account", "tube", "--data-dir", d, "--json")
    assert [r["account"] for r in json.loads(out)] == ["tube"]

    code, out = cli("keys", "revoke", str(alice["id"]), "--data-dir", d, "--json")
    assert code == 0, out
    revoked_at = json.loads(out)["revoked_at"]
    assert revoked_at
    # idempotent: the first revocation time stays
    code, out = cli("keys", "revoke", str(alice["id"]), "--data-dir", d, "--json")
    assert json.loads(out)["revoked_at"] == revoked_at
    r = runner.invoke(cli_app, ["keys", "revoke", "999", "--data-dir", d])
    assert r.exit_code == 2 and "no API key with id 999" in r.stderr


def test_revoked_key_stops_working_on_a_running_server(reg: Node) -> None:
    secret, row = apikeys.create_key(reg.store, "creator", "alice")
    hdr = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(reg)) as c:
        assert c.post("/v1/works", json=work_body(1), headers=hdr).status_code == 201
        apikeys.revoke_key(reg.store, row.id)
        # Within the re-check interval the cached key may still work; after it, never.
        c.app.state.keys.recheck = 0.0  # type: ignore[attr-defined]
        r = c.post("/v1/works", json=work_body(2), headers=hdr)
        assert r.status_code == 401, r.text
        assert r.json()["type"].endswith("/unauthorized")
        size = c.get("/v1/log").json()["tree_size"]
        assert c.post("/v1/works", json=work_body(3), headers=hdr).status_code == 401
        assert c.get("/v1/log").json()["tree_size"] == size  # nothing recorded


def test_cache_rechecks_only_after_the_interval(reg: Node) -> None:
    secret, row = apikeys.create_key(reg.store, "creator", "bob")
    cache = apikeys.KeyCache(reg.store, recheck=3600.0)
    assert cache.lookup(secret).account == "bob"
    apikeys.revoke_key(reg.store, row.id)
    assert cache.lookup(secret).account == "bob"  # cached: no query per request
    cache.recheck = 0.0
    with pytest.raises(apikeys.Unauthorized):
        cache.lookup(secret)
