"""Proofs read from the database equal proofs read from memory (D70): the stored-node reader
sends raw primary-key statements and keeps the upper levels in memory, which must change no
hash, and the audit's uncached read must still see a rewritten row."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from copyledger.ledger import merkle
from copyledger.ledger import store as store_mod
from copyledger.ledger.errors import NotFound
from copyledger.ledger.schema import merkle_nodes
from copyledger.ledger.store import Store
from tests.test_merkle import build, make_leaves

# Past 2 ** UPPER_LEVEL leaves, so some nodes are kept in memory and some are read each time.
N = 2 * (1 << store_mod.UPPER_LEVEL) + 77
LEAVES = make_leaves(N, seed=70)
MEMORY = build(LEAVES)


def stored(url: str) -> Store:
    s = Store.open(url)
    rows = [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in merkle.append(0, [], LEAVES).nodes]
    with s.engine.begin() as conn:
        conn.execute(insert(merkle_nodes), rows)
    return s


sizes = st.integers(1, N)


@pytest.mark.parametrize("max_nodes", [store_mod.UPPER_MAX_NODES, 3])
def test_stored_proofs_equal_those_from_memory(
    database_url: str, max_nodes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cold and warm, and with a cache so small it starts again on most reads."""
    monkeypatch.setattr(store_mod, "UPPER_MAX_NODES", max_nodes)
    s = stored(database_url)
    try:
        @settings(max_examples=60, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(size=sizes, data=st.data())
        def check(size: int, data: st.DataObject) -> None:
            index = data.draw(st.integers(0, size - 1))
            old = data.draw(st.integers(0, size))
            for _ in range(2):  # the second time, the upper nodes come from memory
                assert (merkle.inclusion_proof(index, size, s)
                        == merkle.inclusion_proof(index, size, MEMORY))
                assert (merkle.consistency_proof(old, size, s)
                        == merkle.consistency_proof(old, size, MEMORY))
                assert merkle.tree_hash(size, s) == merkle.tree_hash(size, MEMORY)
            assert len(s._upper) <= max(max_nodes, 64)

        check()
        ids = [(0, 5), (store_mod.UPPER_LEVEL, 1), (0, 5), (3, 7)]
        assert s.read_hashes(ids) == MEMORY.read_hashes(ids)  # repeats and order kept
    finally:
        s.close()


def test_many_nodes_are_read_in_several_statements(database_url: str) -> None:
    s = stored(database_url)
    try:
        ids = [(0, i) for i in range(0, N, 7)] + [(1, 3), (11, 0)]
        assert len(ids) > 2 * 64
        assert s.read_hashes(ids) == MEMORY.read_hashes(ids)
        with pytest.raises(NotFound, match="missing"):
            s.read_hashes([(0, 1), (0, N)])
    finally:
        s.close()


def test_uncached_read_sees_a_rewritten_upper_node(database_url: str) -> None:
    """What the audit relies on: a row rewritten after it was read is seen by `cached=False`
    (the proofs' cache keeps what it read: stored nodes are append-only)."""
    s = stored(database_url)
    try:
        node = (store_mod.UPPER_LEVEL, 1)
        assert s.read_hashes([node]) == MEMORY.read_hashes([node])
        if s.dialect == "sqlite":
            s.execute_raw("DROP TRIGGER merkle_nodes_no_update")
            new = "X'" + "ab" * 32 + "'"
        else:
            s.execute_raw("DROP TRIGGER IF EXISTS merkle_nodes_append_only ON merkle_nodes")
            new = "'\\x" + "ab" * 32 + "'::bytea"
        s.execute_raw(f"UPDATE merkle_nodes SET hash = {new} WHERE level = {node[0]} "
                      f"AND idx = {node[1]}")
        assert s.read_hashes([node], cached=False) == [b"\xab" * 32]
        assert s.read_hashes([node]) == MEMORY.read_hashes([node])
    finally:
        s.close()
