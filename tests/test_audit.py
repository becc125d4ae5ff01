"""Append-only triggers, and the audit that finds what was changed behind their back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import merkle
from copyledger.ledger.audit import AuditReport, audit
from copyledger.ledger.sequencer import Pending
from copyledger.service.node import Node, tsa_roots_pem
from tests.helpers import open_registry, sha


def fill(reg: Node, n: int, batch: int = 4) -> None:
    """n entries, sealed in blocks of `batch` (plus the genesis block)."""
    for start in range(0, n, batch):
        futs = []
        for i in range(start, min(n, start + batch)):
            e = entry_mod.build_work(registrant="alice", received_at=entry_mod.utc_now(),
                                     sha256=sha(i), title=f"w{i}", creators=["A"],
                                     work_type="text")
            futs.append(reg.sequencer.submit(
                Pending(entry_mod.canonical_bytes(e), "work", sha(i), "alice")))
        for f in futs:
            f.result(timeout=10)


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Iterator[Node]:
    r = open_registry(tmp_path, database_url, linger_ms=50.0)
    r.start()
    yield r
    r.stop()


def run_audit(reg: Node) -> AuditReport:
    return audit(reg.store, reg.verifier_key, tsa_roots_pem=tsa_roots_pem(reg.settings))


def blob(reg: Node, hexdata: str) -> str:
    """A bytes literal in this engine's SQL dialect."""
    return f"X'{hexdata}'" if reg.store.dialect == "sqlite" else f"'\\x{hexdata}'::bytea"


def drop_trigger(reg: Node, table: str, verb: str) -> None:
    if reg.store.dialect == "postgresql":
        reg.store.execute_raw(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    else:
        reg.store.execute_raw(f"DROP TRIGGER {table}_no_{verb}")


@pytest.mark.parametrize("table", ["entries", "merkle_nodes", "blocks", "block_timestamps"])
def test_triggers_refuse_update_and_delete(reg: Node, table: str) -> None:
    fill(reg, 3)
    col = {"entries": "kind", "merkle_nodes": "level", "blocks": "sealed_at",
           "block_timestamps": "tsa"}[table]
    val = {"entries": "'x'", "merkle_nodes": "9", "blocks": "'x'", "block_timestamps": "'x'"}[table]
    with pytest.raises(DBAPIError, match="append-only"):
        reg.store.execute_raw(f"UPDATE {table} SET {col} = {val}")
    with pytest.raises(DBAPIError, match="append-only"):
        reg.store.execute_raw(f"DELETE FROM {table}")
    assert run_audit(reg).ok


def test_clean_log_audits_ok(reg: Node) -> None:
    fill(reg, 37, batch=5)
    rep = run_audit(reg)
    assert rep.ok, rep.problem
    assert rep.entries == 37 == rep.tree_size
    assert rep.blocks == 1 + 8  # genesis + ceil(37/5)
    assert rep.root == reg.sequencer.state.last.header.tree_root.hex()  # type: ignore[union-attr]


def test_edited_entry_is_found_by_seq(reg: Node) -> None:
    fill(reg, 20)
    drop_trigger(reg, "entries", "update")
    reg.store.execute_raw("UPDATE entries SET registrant = 'mallory' WHERE seq = 13")
    rep = run_audit(reg)  # search answers from this column: it must agree
    assert not rep.ok and rep.bad_seq == 13 and "indexed" in (rep.problem or ""), rep
    forged = entry_mod.build_work(registrant="mallory", received_at="2020-01-01T00:00:00Z",
                                  sha256=sha(13), title="w13", creators=["M"], work_type="text")
    data = entry_mod.canonical_bytes(forged)
    reg.store.execute_raw(f"UPDATE entries SET data = {blob(reg, data.hex())} WHERE seq = 13")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_seq == 13, rep
    assert "leaf hash" in (rep.problem or "")
    # A careful forger also rewrites the leaf hash: the stored Merkle node then gives it away.
    leaf = merkle.leaf_hash(data).hex()
    reg.store.execute_raw(f"UPDATE entries SET leaf_hash = {blob(reg, leaf)} WHERE seq = 13")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_seq == 13, rep


def test_edited_node_and_block_are_found(reg: Node) -> None:
    fill(reg, 16)
    drop_trigger(reg, "merkle_nodes", "update")
    fake = hashlib.sha256(b"fake").hexdigest()
    reg.store.execute_raw(
        f"UPDATE merkle_nodes SET hash = {blob(reg, fake)} WHERE level = 2 AND idx = 2"
    )
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_seq == 8, rep


def test_edited_block_time_is_found_by_height(reg: Node) -> None:
    fill(reg, 8)
    drop_trigger(reg, "blocks", "update")
    reg.store.execute_raw("UPDATE blocks SET sealed_at = '2001-01-01T00:00:00Z' WHERE height = 2")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_height == 2, rep


def test_deleted_entry_is_found(reg: Node) -> None:
    fill(reg, 8)
    drop_trigger(reg, "entries", "delete")
    reg.store.execute_raw("DELETE FROM entries WHERE seq = 5")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_seq == 5, rep


def test_swapped_or_deleted_token_is_found(reg: Node) -> None:
    fill(reg, 8)
    drop_trigger(reg, "block_timestamps", "update")
    reg.store.execute_raw("UPDATE block_timestamps SET height = 99 WHERE height = 1")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_height == 99, rep
    reg.store.execute_raw("UPDATE block_timestamps SET height = 1 WHERE height = 2")
    reg.store.execute_raw("UPDATE block_timestamps SET height = 2 WHERE height = 99")
    rep = run_audit(reg)  # blocks 1 and 2 swapped tokens: each stamps the other's hash
    assert not rep.ok and rep.bad_height == 1 and "token" in (rep.problem or ""), rep
    drop_trigger(reg, "block_timestamps", "delete")
    reg.store.execute_raw("DELETE FROM block_timestamps WHERE height IN (1, 2)")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_height == 1 and "no time-stamp" in (rep.problem or ""), rep
