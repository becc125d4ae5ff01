"""Content hashes stored as their 32 bytes (D124, revision 0012): a log written with hex keys
reads the same, and audits clean, before its upgrade (as `audit` reads an older schema) and
after it, on both engines; the key's two forms are each other's inverse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
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
from tests.helpers import downgrade, open_registry, sha
from tests.test_audit import blob, drop_trigger
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


def scanned(s: store.Store, page: int) -> list[str]:
    """Every content hash, by the sequencer's scan for its filter (keyset pages of `page`)."""
    out: list[str] = []
    hashes, mark = s.content_hashes(None, page)
    while hashes:
        out += hashes
        assert len(out) <= 1000, "the scan does not end"  # (these logs hold fewer)
        hashes, mark = s.content_hashes(mark, page)
    return out


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
    scan = scanned(s0, 1000)
    assert sorted(scan) == scan and len(scan) == len(keys := stored_keys(database_url))
    assert scanned(s0, 5) == scan
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
        assert scanned(new, 7) == scan
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
        assert key_bytes(value) is None


def test_the_scan_ends_past_a_key_that_is_not_a_hash(reg: Node) -> None:
    """A tampered key (here 3 bytes) sorts amid the others; the scan's pages go on from the
    stored key itself, so it passes that row and ends, every other hash read once. A mark
    made from the key's text lost its place: the scan started over (the filter never
    ready), or ended early (hashes missed)."""
    fill(reg, 30)
    if reg.store.has_runs:  # SQLite's scan reads the runs (D142): the key is tampered there
        reg.store.execute_raw(f"UPDATE runs_by_hash SET sha256 = {blob(reg, '804100')} "
                              "WHERE seq = 4")
    else:
        drop_trigger(reg, "entries", "update")
        reg.store.execute_raw(f"UPDATE entries SET sha256 = {blob(reg, '804100')} WHERE seq = 4")
    got = scanned(reg.store, 2)
    hashes = [h for h in got if valid_sha256(h)]
    assert sorted(hashes) == sorted(sha(i) for i in range(30) if i != 4) and len(got) == 30


def older_sqlite_log(tmp_path: Path) -> Node:
    """A stopped SQLite registry of 12 works, its schema taken back to revision 0011."""
    r = open_registry(tmp_path)
    r.start()
    try:
        fill(r, 12)
    finally:
        r.stop()
    engine = create_engine(r.settings.database_url)
    try:
        downgrade(engine, "0011")
    finally:
        engine.dispose()
    return r


def test_an_older_schema_s_tampered_keys_are_reported_and_its_upgrade_completes(
        tmp_path: Path) -> None:
    """SQLite, revision 0011: a key stored as bytes in the text column (here the right hash's
    hex, as a BLOB) hides its entry from every lookup (they compare text), so the audit
    reports it, and 0012 keeps it as it is (converted, it would look right, and the audit
    would no longer see it); a key of text that is not UTF-8 does not stop the upgrade (0012
    converts text keys as their bytes)."""
    r = older_sqlite_log(tmp_path)
    url, settings, vkey = r.settings.database_url, r.settings, r.verifier_key
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER entries_no_update")
            conn.exec_driver_sql(f"UPDATE entries SET sha256 = CAST('{sha(3)}' AS BLOB) "
                                 "WHERE seq = 3")
        old = store.Store.open(url, migrate_schema=False)
        try:
            assert old.search_sha256(sha(3)) == []
            rep = audit(old, vkey, tsa_roots_pem=tsa_roots_pem(settings))
            assert not rep.ok and rep.bad_seq == 3 and "indexed" in (rep.problem or ""), rep
        finally:
            old.close()
        with engine.begin() as conn:  # (the driver cannot read this one back as text)
            conn.exec_driver_sql("UPDATE entries SET sha256 = CAST(X'ff41' AS TEXT) "
                                 "WHERE seq = 5")
    finally:
        engine.dispose()
    new = store.Store.open(url)
    try:
        assert stored_keys(url)[3] == sha(3).encode() and stored_keys(url)[5] == b"\xffA"
        assert new.search_sha256(sha(3)) == []
        rep = audit(new, vkey, tsa_roots_pem=tsa_roots_pem(settings))
        assert not rep.ok and rep.bad_seq == 3 and "indexed" in (rep.problem or ""), rep
    finally:
        new.close()


def test_an_audit_during_the_upgrade_reports_nothing_it_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit` reads an older schema as it is; if revision 0012 runs meanwhile (a server
    starting, `db upgrade`), what it read after may be misread, so it says to run it again
    instead of reporting a fault the log does not have."""
    from copyledger.ledger.errors import Conflict
    from copyledger.service import admin

    r = older_sqlite_log(tmp_path)
    url = r.settings.database_url
    assert admin.audit_registry(r.settings, workers=2).ok  # read as it is, not upgraded
    real = admin.audit

    def upgraded_meanwhile(s: store.Store, *a: Any, **kw: Any) -> Any:
        other = store.make_engine(url)
        try:
            store.migrate(other)
        finally:
            other.dispose()
        return real(s, *a, **kw)

    monkeypatch.setattr(admin, "audit", upgraded_meanwhile)
    with pytest.raises(Conflict, match="upgraded while the audit ran"):
        admin.audit_registry(r.settings, workers=2)  # (each worker reads in a store of its own)
    monkeypatch.setattr(admin, "audit", real)
    assert admin.audit_registry(r.settings, workers=2).ok
