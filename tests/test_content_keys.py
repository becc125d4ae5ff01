"""Content hashes stored as their 32 bytes (D124, revision 0012): a log written with hex keys
reads the same, and audits clean, before its upgrade (as `audit` reads an older schema) and
after it, on both engines; the key's two forms are each other's inverse."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import store
from copyledger.ledger.audit import audit
from copyledger.ledger.entry import valid_sha256
from copyledger.ledger.schema import key_bytes, key_text
from copyledger.ledger.sequencer import Pending
from copyledger.service.node import Node, tsa_roots_pem
from tests import test_tiles
from tests.helpers import downgrade, sha
from tests.test_tiles import fill

reg = test_tiles.reg  # a started registry, on each engine


def reads(s: store.Store, hashes: list[str]) -> dict[str, Any]:
    """What the store answers by content hash, for comparison across the schemas."""
    return {
        "search": {h: [tuple(r) for r in s.search_sha256(h)] for h in hashes},
        "first_work": {h: s.first_work(h) for h in hashes},
        "holds_leaf": {h: s.holds_leaf(h, r.leaf_hash) for h in hashes
                       for r in s.search_sha256(h)[:1]},
        "of_range": s.content_hashes_of(0, 50),
        "entries": [tuple(r) for rs in s.iter_entries() for r in rs],
        "tuples": [t for ts in s.iter_entry_tuples() for t in ts],
    }


def stored_keys(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT sha256 FROM entries ORDER BY seq"))]
    finally:
        engine.dispose()


def test_a_log_with_hex_keys_reads_the_same_before_and_after_revision_0012(
        reg: Node, database_url: str) -> None:
    fill(reg, 40)
    again = sha(7)  # the same content registered by another account: two rows for one hash
    data = entry_mod.canonical_bytes(entry_mod.build_work(
        registrant="bob", received_at=entry_mod.utc_now(), sha256=again, title="again",
        creators=["B"], work_type="text"))
    reg.sequencer.submit(Pending(data, "work", again, "bob")).result(timeout=120)
    hashes = [sha(i) for i in (0, 7, 39)] + [sha("never registered"), "not a hash"]
    s0 = reg.store
    at_head = reads(s0, hashes)
    assert len(at_head["search"][again]) == 2 and at_head["first_work"][sha(39)] is not None
    assert s0.registered("alice", hashes) == {sha(i): i for i in (0, 7, 39)}
    scan = s0.content_hashes(None, 1000)
    assert sorted(scan) == scan and len(scan) == len(keys := stored_keys(database_url))
    assert s0.content_hashes(scan[10], 5) == scan[11:16]
    settings, vkey = reg.settings, reg.verifier_key
    assert all(type(k) is bytes and len(k) == 32 for k in keys)
    reg.stop()

    def audited(s: store.Store) -> None:
        rep = audit(s, vkey, tsa_roots_pem=tsa_roots_pem(settings))
        assert rep.ok and rep.entries == len(keys), rep

    engine = create_engine(database_url)
    try:
        downgrade(engine, "0011")
    finally:
        engine.dispose()
    assert stored_keys(database_url) == [k.hex() for k in keys]  # as 0001-0011 kept them
    old = store.Store.open(database_url, migrate_schema=False)  # as `audit` opens it
    try:
        assert reads(old, hashes) == at_head
        audited(old)
    finally:
        old.close()
    new = store.Store.open(database_url)  # as a starting server: upgraded to 0012
    try:
        assert stored_keys(database_url) == keys
        assert reads(new, hashes) == at_head
        assert new.registered("alice", hashes) == {sha(i): i for i in (0, 7, 39)}
        assert new.content_hashes(None, 1000) == scan
        audited(new)
    finally:
        new.close()


@given(st.binary(min_size=32, max_size=32))
def test_a_key_is_its_hash_s_bytes(raw: bytes) -> None:
    assert valid_sha256(key_text(raw)) and key_bytes(key_text(raw)) == raw


@given(st.one_of(st.binary(), st.text(), st.integers(), st.none()))
def test_anything_else_stored_reads_as_no_hash(value: object) -> None:
    """A tampered row's value never reads as a valid hash unless it is 32 bytes, and a
    malformed hash asked for never matches a stored key."""
    if isinstance(value, bytes) and len(value) == 32:
        return
    assert not valid_sha256(key_text(value))
    if isinstance(value, str) and not valid_sha256(value):
        assert key_bytes(value) == b""
