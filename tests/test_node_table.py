"""SQLite's `merkle_nodes` as a `WITHOUT ROWID` table (revision 0017, D145): the upgrade and
its downgrade keep every node, the append-only triggers, the proofs and a clean audit, and
the log grows on after either."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import merkle, note
from copyledger.ledger.audit import audit
from copyledger.ledger.sequencer import Pending, Sequencer
from copyledger.ledger.store import Store
from copyledger.notary.signer import FileSigner, sign_note
from tests.helpers import downgrade, sha


def _work(i: int) -> Pending:
    now = entry_mod.utc_now()
    e = entry_mod.build_work(registrant="alice", received_at=now, sha256=sha(i), title=f"w{i}",
                             creators=["A"], work_type="text")
    return Pending(entry_mod.canonical_bytes(e), "work", sha(i), "alice", once=False,
                   received_at=now)


def _append(path: Path, signer: FileSigner, first: int, count: int) -> None:
    """`count` works, in blocks of three, on the log at `path` (opened at its revision)."""
    store = Store(Store.open(f"sqlite:///{path}", migrate_schema=False).engine)
    seq = Sequencer(store, lambda t, _c: sign_note(t, [signer]), "test.example/log")  # type: ignore[arg-type]
    seq.start()
    for lo in range(first, first + count, 3):
        for f in seq.submit_many([_work(i) for i in range(lo, min(lo + 3, first + count))]):
            f.result(timeout=60)
    seq.stop()
    store.close()


def _table(path: Path) -> tuple[str, list[tuple[int, int, bytes]]]:
    """merkle_nodes' DDL and its rows in key order."""
    con = sqlite3.connect(path)
    try:
        ddl, = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                           "AND name = 'merkle_nodes'").fetchone()
        rows = con.execute("SELECT level, idx, hash FROM merkle_nodes "
                           "ORDER BY level, idx").fetchall()
        for verb in ("UPDATE merkle_nodes SET hash = x'00'", "DELETE FROM merkle_nodes"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                con.execute(verb)
    finally:
        con.close()
    return " ".join(ddl.upper().split()), rows


def _proofs_and_audit(path: Path, signer: FileSigner) -> list[list[bytes]]:
    """Every leaf's inclusion proof at the log's size, each checked against its root, after a
    clean audit."""
    store = Store(Store.open(f"sqlite:///{path}", migrate_schema=False).engine)
    try:
        rep = audit(store, note.format_verifier_key(signer.name, signer.public_key))
        assert rep.ok, rep
        size = store.tree_size()
        root = merkle.tree_hash(size, store)
        leaves = [t[1] for chunk in store.iter_entry_tuples() for t in chunk]
        proofs = [merkle.inclusion_proof(i, size, store) for i in range(size)]
        for i, proof in enumerate(proofs):
            assert merkle.root_from_inclusion_proof(i, size, leaves[i], proof) == root
        return proofs
    finally:
        store.close()


def test_revision_0017_rebuilds_the_nodes_without_rowid_and_back(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    signer = FileSigner.generate("test.example/log", tmp_path / "k.pem")
    Store.open(f"sqlite:///{path}").close()  # at the head: 0017
    _append(path, signer, 0, 20)
    ddl, rows = _table(path)
    assert ddl.endswith("WITHOUT ROWID")
    proofs = _proofs_and_audit(path, signer)

    engine = create_engine(f"sqlite:///{path}")
    try:
        downgrade(engine, "0016")
    finally:
        engine.dispose()
    old_ddl, old_rows = _table(path)
    assert "WITHOUT ROWID" not in old_ddl
    assert old_rows == rows
    assert _proofs_and_audit(path, signer) == proofs
    _append(path, signer, 20, 7)  # a release before 0017 grows the log on
    grown = _proofs_and_audit(path, signer)
    _, grown_rows = _table(path)
    assert len(grown_rows) > len(rows)

    Store.open(f"sqlite:///{path}").close()  # upgrades to 0017
    new_ddl, new_rows = _table(path)
    assert new_ddl.endswith("WITHOUT ROWID")
    assert new_rows == grown_rows
    assert _proofs_and_audit(path, signer) == grown
    _append(path, signer, 27, 5)
    assert len(_proofs_and_audit(path, signer)) == 32
