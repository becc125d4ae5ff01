"""The data directory is 0700 and the database 0600 whatever the umask; the log's verifier key
is refused when others could have written it (issue 10 item 8)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.ledger.errors import InvalidInput
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.helpers import open_registry, settings_for, work_body


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_modes_are_private_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    reg = open_registry(tmp_path)
    key = create_key(reg.store, "creator", "a")[0]
    with TestClient(create_app(reg)) as c:  # a write: SQLite makes its -wal and -shm files
        assert c.post("/v1/works", json=work_body(1),
                      headers={"Authorization": f"Bearer {key}"}).status_code == 201
        data = tmp_path / "data"
        assert _mode(data) == 0o700
        assert _mode(data / "notary") == 0o700
        db = data / "ledger.sqlite3"
        sides = [Path(f"{db}{s}") for s in ("-wal", "-shm", ".sequencer-lock")]
        assert all(p.exists() for p in sides)
        for p in (db, *sides):
            assert _mode(p) == 0o600, (p, oct(_mode(p)))
        assert _mode(data / "notary" / "log.vkey") == 0o644  # public, but only we may write it
    reg.stop()


def test_cli_init_under_umask_000(tmp_path: Path) -> None:
    data = tmp_path / "d"
    r = subprocess.run(["sh", "-c", f'umask 000 && exec "{sys.executable}" -m copyledger.cli '
                        f'init --data-dir "{data}"'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _mode(data) == 0o700 and _mode(data / "ledger.sqlite3") == 0o600
    assert _mode(data / "config.toml") == 0o600
    writable = [p for p in data.rglob("*") if _mode(p) & (stat.S_IWGRP | stat.S_IWOTH)]
    assert writable == []


def test_an_existing_wide_data_directory_is_narrowed(tmp_path: Path) -> None:
    open_registry(tmp_path).store.close()
    data = tmp_path / "data"
    os.chmod(data, 0o755)
    os.chmod(data / "ledger.sqlite3", 0o644)
    open_registry(tmp_path).store.close()
    assert _mode(data) == 0o700 and _mode(data / "ledger.sqlite3") == 0o600


@pytest.mark.parametrize("target", ["notary/log.vkey", "notary"])
def test_a_verifier_key_others_can_write_is_refused(tmp_path: Path, target: str) -> None:
    open_registry(tmp_path).store.close()
    path = tmp_path / "data" / target
    os.chmod(path, _mode(path) | stat.S_IWOTH)
    with pytest.raises(InvalidInput, match=r"can be written by other users.*chmod go-w"):
        Node.open(settings_for(tmp_path))
    r = subprocess.run([sys.executable, "-m", "copyledger.cli", "audit", "--data-dir",
                        str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "chmod go-w" in r.stderr
    os.chmod(path, _mode(path) & ~stat.S_IWOTH)  # the fix the message names
    Node.open(settings_for(tmp_path)).store.close()
