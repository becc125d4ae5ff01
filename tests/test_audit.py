"""Append-only triggers, and the audit that finds what was changed behind their back."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import DBAPIError

from copyledger.ledger import audit as audit_mod
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import merkle
from copyledger.ledger.audit import AuditReport, AuditState, audit
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.sequencer import Pending
from copyledger.service.i18n import say
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
            f.result(timeout=120)


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Iterator[Node]:
    r = open_registry(tmp_path, database_url, linger_ms=50.0)
    r.start()
    yield r
    r.stop()


def run_audit(reg: Node, workers: int = 1, since: AuditState | None = None) -> AuditReport:
    return audit(reg.store, reg.verifier_key, tsa_roots_pem=tsa_roots_pem(reg.settings),
                 workers=workers, since=since)


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


def test_a_content_key_stored_as_its_hex_text_is_found(reg: Node) -> None:
    """A row whose content hash is the right one, but as its 64 hex characters instead of its
    32 bytes (D124), hides the entry from every lookup by hash: the audit finds it."""
    fill(reg, 20)
    drop_trigger(reg, "entries", "update")
    as_text = ("lower(hex(sha256))" if reg.store.dialect == "sqlite"
               else "convert_to(encode(sha256, 'hex'), 'UTF8')")
    reg.store.execute_raw(f"UPDATE entries SET sha256 = {as_text} WHERE seq = 13")
    assert reg.store.search_sha256(sha(13)) == []
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_seq == 13 and "indexed" in (rep.problem or ""), rep


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


def test_a_fault_reads_in_chinese_with_the_same_english(reg: Node) -> None:
    fill(reg, 8)
    drop_trigger(reg, "entries", "update")
    reg.store.execute_raw("UPDATE entries SET registrant = 'mallory' WHERE seq = 3")
    for workers in (1, 2):  # a worker's fault crosses a process boundary, template and all
        rep = run_audit(reg, workers=workers)
        assert rep.problem == ("seq 3: indexed columns (kind, sha256, registrant) differ from "
                               "the entry"), rep
        assert say("zh-CN", rep.problem) == "seq 3：索引列（kind、sha256、registrant）与条目不符"
    drop_trigger(reg, "entries", "delete")
    reg.store.execute_raw("DELETE FROM entries WHERE seq = 5")
    rep = run_audit(reg)
    assert rep.problem == "seq 3: indexed columns (kind, sha256, registrant) differ from the entry"
    reg.store.execute_raw("UPDATE entries SET registrant = 'alice' WHERE seq = 3")
    rep = run_audit(reg)
    assert (rep.problem, say("zh-CN", rep.problem or "")) == (
        "seq 5 is missing (next stored is 6)", "缺少 seq 5（下一个已存储的是 6）")


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


def test_a_token_below_height_zero_is_a_stray(reg: Node) -> None:
    """No block has a height below 0, so a token there names none, whatever audit resumed
    where (the stray check looked only from the audit's first height up)."""
    fill(reg, 8)
    reg.store.execute_raw("INSERT INTO block_timestamps (height, tsa, token) "
                          "SELECT -1, tsa, token FROM block_timestamps WHERE height = 1")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_height == -1 and "does not exist" in (rep.problem or ""), rep


@pytest.mark.parametrize("table", ["block_timestamps", "cosignatures"])
def test_a_height_or_size_of_another_type_is_a_fault_not_a_traceback(
        reg: Node, table: str) -> None:
    """SQLite keeps text in an integer column; the audit names the row instead of crashing on
    `int('x')`. PostgreSQL refuses the text itself."""
    fill(reg, 8)
    if table == "block_timestamps":
        insert = ("INSERT INTO block_timestamps (height, tsa, token) "
                  "SELECT 'x', tsa, token FROM block_timestamps WHERE height = 1")
    else:
        insert = "INSERT INTO cosignatures (tree_size, witness, line) VALUES ('x', 'w', 'l')"
    if reg.store.dialect != "sqlite":
        with pytest.raises(DBAPIError):
            reg.store.execute_raw(insert)
        return
    reg.store.execute_raw(insert)
    rep = run_audit(reg)
    assert not rep.ok and "is not an integer: 'x'" in (rep.problem or ""), rep
    assert f"{table}." in (rep.problem or "")


@pytest.mark.parametrize(("seq", "account", "says"), [
    (3, "mallory", "but the entry was recorded by alice"),
    (999, "alice", "but no such entry is stored"),
])
def test_a_key_row_naming_another_accounts_entry_or_none_is_a_fault(
        reg: Node, seq: int, account: str, says: str) -> None:
    """D183: a retry is answered with the entry `idempotency_written` names (D134); a row
    changed by hand would answer one account's retry with another's entry. The audit checks
    every row names an entry of its own account."""
    fill(reg, 8)
    assert run_audit(reg).ok
    reg.store.execute_raw('INSERT INTO idempotency_written (seq, account, "key", '
                          f"request_sha256, created) VALUES ({seq}, '{account}', 'k', "
                          f"'{'0' * 64}', 0)")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_seq == seq and says in (rep.problem or ""), rep


def test_a_state_past_64_bits_is_refused_as_malformed() -> None:
    good = {"version": 1, "tree_size": 1, "root": "00" * 32, "height": 1,
            "block_hash": "00" * 32, "frontier": [], "nodes": 1, "links": 0}
    assert AuditState.from_dict(good).height == 1
    for key in ("tree_size", "height", "nodes", "links"):
        with pytest.raises(CopyledgerError, match="malformed"):
            AuditState.from_dict({**good, key: 2**64})
    with pytest.raises(CopyledgerError, match="malformed"):
        AuditState.from_dict({**good, "version": 2, "sm2_first": 2**64})


def test_a_standard_logs_state_knows_it_has_no_sm2_token(reg: Node) -> None:
    """D195's review: a log without SM2 keys (no SM2 roots given) recorded its start as not
    known, so every standard registry wrote a version 1 state, flipping with each audit."""
    fill(reg, 3)
    rep = run_audit(reg)
    assert rep.ok and rep.state is not None
    assert (rep.state.sm2_first, rep.state.sm2_known) == (None, True)
    assert rep.state.to_dict()["version"] == 2
    fill(reg, 2)
    again = run_audit(reg, since=rep.state)
    assert again.ok and again.state is not None and again.state.to_dict()["version"] == 2


def test_a_state_says_where_the_sm2_rule_starts_and_an_old_one_still_reads() -> None:
    """D187: version 2 records the first block with an SM2 token; version 1 (without it) is
    read, marked as not saying, and written back as it was."""
    v1 = {"version": 1, "tree_size": 1, "root": "00" * 32, "height": 3,
          "block_hash": "00" * 32, "frontier": ["11" * 32], "nodes": 1, "links": 0}
    old = AuditState.from_dict(v1)
    assert not old.sm2_known and old.to_dict() == v1
    for first in (None, 0, 3):
        v2 = {**v1, "version": 2, "sm2_first": first}
        st = AuditState.from_dict(v2)
        assert st.sm2_known and st.sm2_first == first and st.to_dict() == v2
    for bad in ({**v1, "sm2_first": 1}, {**v1, "version": 2}, {**v1, "version": 3},
                {**v1, "version": True}, {**v1, "version": 2, "sm2_first": 4},
                {**v1, "version": 2, "sm2_first": "1"}, {**v1, "version": 2, "sm2_first": -1}):
        with pytest.raises(CopyledgerError):
            AuditState.from_dict(bad)


def test_tokens_after_the_first_are_checked_quickly_and_still_caught(
        reg: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """One token is verified in full, the rest alongside it (D49); a later token with a
    changed signature, or another block's token, is still found."""
    from copyledger.ledger import timestamp

    fill(reg, 12, batch=2)
    calls: list[bytes] = []
    real = timestamp.verify_token

    def counting(token: bytes, *a: object, **kw: object) -> timestamp.TokenInfo:
        calls.append(token)
        return real(token, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(timestamp, "verify_token", counting)
    monkeypatch.setattr(audit_mod, "_TEMPLATES", {})
    rep = run_audit(reg)
    assert rep.ok and rep.blocks >= 6 and len(calls) == 1, (rep, len(calls))
    drop_trigger(reg, "block_timestamps", "update")
    (tok,) = [t for tsa, t in reg.store.get_timestamps(4) if tsa == "notary"]
    forged = tok[:-1] + bytes([tok[-1] ^ 1])  # the signature's last byte
    reg.store.execute_raw(f"UPDATE block_timestamps SET token = {blob(reg, forged.hex())} "
                          "WHERE height = 4")
    rep = run_audit(reg)
    assert not rep.ok and rep.bad_height == 4 and "signature" in (rep.problem or ""), rep


# -- Several processes, and resuming where the last audit ended (D39) ------------------------


def test_workers_find_what_one_process_finds(reg: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks and entries checked in two worker processes, chunks small enough that the log
    spans several: the same report, and the same fault at the same place."""
    monkeypatch.setattr(audit_mod, "BLOCK_CHUNK", 3)
    monkeypatch.setattr(audit_mod, "ENTRY_CHUNK", 5)
    fill(reg, 23, batch=2)
    one, two = run_audit(reg), run_audit(reg, workers=2)
    assert one.ok and two.ok, (one, two)
    assert (two.entries, two.blocks, two.nodes, two.root, two.state) == (
        one.entries, one.blocks, one.nodes, one.root, one.state)
    drop_trigger(reg, "entries", "update")
    reg.store.execute_raw(f"UPDATE entries SET data = {blob(reg, '7b7d')} WHERE seq = 17")
    one, two = run_audit(reg), run_audit(reg, workers=2)
    assert not two.ok and (two.bad_seq, two.problem) == (one.bad_seq, one.problem) == (
        17, one.problem), (one, two)
    drop_trigger(reg, "blocks", "update")
    reg.store.execute_raw("UPDATE blocks SET checkpoint = (SELECT checkpoint FROM blocks "
                          "WHERE height = 3) WHERE height = 8")
    two = run_audit(reg, workers=2)
    assert not two.ok and two.bad_height == 8 and "checkpoint" in (two.problem or ""), two


def test_incremental_audit_checks_only_what_is_new(reg: Node) -> None:
    fill(reg, 10)
    first = run_audit(reg)
    assert first.ok and first.state is not None and first.resumed_from is None
    fill(reg, 9)
    rep = run_audit(reg, since=first.state)
    full = run_audit(reg)
    assert rep.ok, rep
    assert rep.resumed_from == 10 and rep.entries == full.entries == 19
    assert (rep.root, rep.nodes, rep.blocks, rep.state) == (
        full.root, full.nodes, full.blocks, full.state)
    assert "9 entries: canonical JSON, valid, leaf hashes match" in rep.checked
    # Nothing new: the head is checked and the state stays.
    again = run_audit(reg, since=rep.state)
    assert again.ok and again.state == rep.state and again.resumed_from == 19


def test_an_audit_while_the_server_writes_checks_its_tree_and_passes(reg: Node) -> None:
    """operations §7: an audit may run while the server runs. Blocks sealed after it pinned
    its tree (their entries, nodes, links and tokens) are the next audit's: before, an entry
    written meanwhile failed it ("recorded in block 3, but block 2 sealed it") and no state
    was saved, so `--incremental` never moved (D166)."""
    fill(reg, 8)
    wrote: list[int] = []

    def write_meanwhile(_n: int) -> None:
        if not wrote:
            wrote.append(1)
            fill_from(reg, 100, 5)

    rep = audit(reg.store, reg.verifier_key, write_meanwhile,
                tsa_roots_pem=tsa_roots_pem(reg.settings))
    assert rep.ok and wrote and rep.entries == 8, rep
    later = run_audit(reg, since=rep.state)
    assert later.ok and later.entries == 13 and later.resumed_from == 8, later


def test_an_incremental_audit_with_nothing_new_still_counts_the_rows(reg: Node) -> None:
    """With no block since the last audit, rows added without one (which the append-only
    triggers allow: an insert) are still found: a link, a Merkle node past the tree, an
    entry past it (D166)."""
    fill(reg, 6)
    st = run_audit(reg).state
    assert st is not None and run_audit(reg, since=st).ok
    for sql in ("INSERT INTO entry_links (target, rel, seq) VALUES (0, 'transfer', 3)",
                f"INSERT INTO merkle_nodes (level, idx, hash) VALUES (0, 50, "
                f"{blob(reg, 'ab' * 32)})",
                f"INSERT INTO entries (seq, leaf_hash, data, kind, sha256, registrant, "
                f"block_height) VALUES (9, {blob(reg, '00' * 32)}, {blob(reg, '7b7d')}, 'work', "
                f"{blob(reg, '00' * 32)}, 'alice', 99)"):
        reg.store.execute_raw(sql)
        rep = run_audit(reg, since=st)
        assert not rep.ok and rep.state is None, (sql, rep)
        assert not run_audit(reg).ok
        table = sql.split()[2]
        drop_trigger(reg, table, "delete")
        reg.store.execute_raw(f"DELETE FROM {table} WHERE "
                              + {"entry_links": "seq = 3 AND rel = 'transfer' AND target = 0",
                                 "merkle_nodes": "level = 0 AND idx = 50",
                                 "entries": "seq = 9"}[table])


def fill_from(reg: Node, first: int, n: int) -> None:
    """`fill`, of n works whose hashes start at `first` (others than `fill`'s)."""
    futs = []
    for i in range(first, first + n):
        e = entry_mod.build_work(registrant="alice", received_at=entry_mod.utc_now(),
                                 sha256=sha(i), title=f"w{i}", creators=["A"], work_type="text")
        futs.append(reg.sequencer.submit(
            Pending(entry_mod.canonical_bytes(e), "work", sha(i), "alice")))
    for f in futs:
        f.result(timeout=120)


def test_incremental_audit_finds_faults_after_and_at_the_head(reg: Node) -> None:
    fill(reg, 10)
    st = run_audit(reg).state
    assert st is not None
    fill(reg, 6)
    drop_trigger(reg, "entries", "update")
    # After the head: found, by seq.
    reg.store.execute_raw(f"UPDATE entries SET data = {blob(reg, '7b7d')} WHERE seq = 12")
    rep = run_audit(reg, since=st)
    assert not rep.ok and rep.bad_seq == 12 and rep.state is None, rep
    reg.store.execute_raw(f"UPDATE entries SET data = {blob(reg, '7b7d')} WHERE seq = 3")
    # Before the head: an incremental audit trusts what the last one checked; a full one finds it.
    reg.store.execute_raw("UPDATE entries SET data = (SELECT data FROM entries WHERE seq = 13) "
                          "WHERE seq = 12")
    full = run_audit(reg)
    assert not full.ok and full.bad_seq == 3, full
    # The head itself rewritten: the block the last audit ended on, or a frontier node.
    drop_trigger(reg, "blocks", "update")
    reg.store.execute_raw(f"UPDATE blocks SET hash = {blob(reg, '00' * 32)} "
                          f"WHERE height = {st.height}")
    rep = run_audit(reg, since=st)
    assert not rep.ok and rep.bad_height == st.height and "last audit" in (rep.problem or "")


def test_incremental_audit_finds_a_rewritten_frontier_node(reg: Node) -> None:
    fill(reg, 6)
    st = run_audit(reg).state
    assert st is not None
    lv, ix = merkle.frontier_ids(st.tree_size)[0]
    drop_trigger(reg, "merkle_nodes", "update")
    reg.store.execute_raw(f"UPDATE merkle_nodes SET hash = {blob(reg, 'ab' * 32)} "
                          f"WHERE level = {lv} AND idx = {ix}")
    rep = run_audit(reg, since=st)
    assert not rep.ok and "stored Merkle nodes" in (rep.problem or ""), rep


def test_forked_workers_find_what_one_process_finds(reg: Node) -> None:
    """D61: the CLI (one thread) forks its workers; they find the fault one process finds.
    This test process has threads, so the audit runs in a `copyledger audit` process."""
    import subprocess
    import sys

    from tests.server import cli

    probe = subprocess.run([sys.executable, "-c", "from copyledger.ledger import audit as a; "
                            "p = a._pool(2); print(p.executor._mp_context.get_start_method()); "
                            "p.__exit__()"], capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "fork", probe.stderr
    fill(reg, 23, batch=2)
    reg.stop()  # nothing is written while the audits run
    db = ["--database", reg.settings.database_url] if reg.store.dialect == "postgresql" else []
    args = ("audit", "--data-dir", str(reg.settings.data_dir), *db, "--json", "--workers", "2")
    out = cli(*args)
    assert out.returncode == 0 and json.loads(out.stdout)["entries"] == 23, out.stderr
    drop_trigger(reg, "entries", "update")
    reg.store.execute_raw(f"UPDATE entries SET data = {blob(reg, '7b7d')} WHERE seq = 17")
    out = cli(*args)
    assert out.returncode == 1 and json.loads(out.stdout)["bad_seq"] == 17, out.stdout
    assert json.loads(out.stdout)["bad_seq"] == run_audit(reg).bad_seq


# -- Ranges read and checked apart, joined by O(log n) subtrees (D85) -----------------------


@given(st.integers(0, 300), st.lists(st.integers(1, 300), max_size=6))
def test_ranges_joined_by_their_subtrees_make_the_tree(n: int, cuts: list[int]) -> None:
    """The ranges of `_ranges` grafted together give `merkle.append`'s frontier and nodes;
    a block's batch cut anywhere, its pieces grafted, gives `merkle.root` of its leaves."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n + 310)]
    start = min(cuts, default=0) % (n + 1)  # an incremental audit starts anywhere
    before = merkle.append(0, [], leaves[:start])
    frontier, made = before.frontier, list[tuple[int, int, bytes]]()
    span = 1 << (max(cuts, default=8).bit_length() - 1)
    ranges = list(audit_mod._ranges(start, n, span))
    assert [lo for lo, _ in ranges] + [n] == [start] + [hi for _, hi in ranges]
    for lo, hi in ranges:
        assert hi - lo <= span and (lo == 0 or lo % (1 << (hi - lo - 1).bit_length()) == 0)
        rows = audit_mod._levels(leaves[lo:hi])
        ids = merkle.frontier_ids(hi - lo)
        for s in range(lo + 1, hi + 1):  # every tree size in the range, from its part
            r = merkle.root_from_frontier(audit_mod._subtrees(rows, s - lo))
            for left in reversed(frontier):
                r = merkle.node_hash(left, r)
            assert r == merkle.root(leaves[:s])
        inside = [(lv, (lo >> lv) + i, h) for lv, row in enumerate(rows) for i, h in
                  enumerate(row)]
        frontier, up = audit_mod._graft(lo, frontier, zip(
            [lv for lv, _ in ids], audit_mod._subtrees(rows, hi - lo), strict=True))
        made += inside + up
    whole = merkle.append(start, before.frontier, leaves[start:n])
    assert frontier == whole.frontier
    assert sorted(made) == sorted(whole.nodes)
    points = sorted({0, n, *(c % (n + 1) for c in cuts)})
    batch: list[bytes] = []
    for a, b in itertools.pairwise(points):
        batch = audit_mod._graft(a, batch, audit_mod._pieces(leaves[a:b], a, b))[0]
    assert merkle.root_from_frontier(batch) == merkle.root(leaves[:n])


def _flip(value: bytes, at: int, bit: int) -> bytes:
    at %= len(value)
    return value[:at] + bytes([value[at] ^ bit]) + value[at + 1:]


def test_a_changed_byte_anywhere_is_caught_across_ranges(
        reg: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of 4 entries in blocks of 3 (so blocks cross ranges): one byte changed in an
    entry, a leaf hash, a stored node, a block's roots, its link or a note's signature is
    found, and the log audits clean again once it is put back."""
    monkeypatch.setattr(audit_mod, "ENTRY_CHUNK", 4)
    fill(reg, 19, batch=3)
    reg.stop()
    assert run_audit(reg).ok
    for table, verb in (("entries", "update"), ("merkle_nodes", "update"),
                        ("blocks", "update")):
        drop_trigger(reg, table, verb)
    eng = reg.store.engine
    blocks = reg.store.latest_block()
    assert blocks is not None
    top = blocks.header.height

    def read(sql: str) -> Any:
        with eng.connect() as conn:
            v = conn.exec_driver_sql(sql).scalar_one()
        return bytes(v) if isinstance(v, memoryview) else v

    @settings(max_examples=24, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["data", "leaf", "node", "batch_root", "tree_root", "prev_hash",
                            "signature"]),
           st.integers(0, 10_000), st.integers(0, 10_000), st.sampled_from([1, 0x20, 0x80]))
    def changed(what: str, row: int, at: int, bit: int) -> None:
        if what in ("data", "leaf"):
            col, where = ("data" if what == "data" else "leaf_hash"), f"seq = {row % 19}"
            table = "entries"
        elif what == "node":
            lv = row % 5
            n = len(reg.store.read_level(lv, 0, 1 << 20))
            table, col, where = "merkle_nodes", "hash", f"level = {lv} AND idx = {row % n}"
        else:
            table, where = "blocks", f"height = {1 + row % top}"
            col = "checkpoint" if what == "signature" else what
        old = read(f"SELECT {col} FROM {table} WHERE {where}")
        if what == "signature":  # one byte of the signature itself, re-encoded
            body, sig = old.rsplit(" ", 1)
            raw = base64.b64decode(sig)
            new = f"{body} {base64.b64encode(raw[:4] + _flip(raw[4:], at, bit)).decode()}\n"
            value = "'" + new.replace("'", "''") + "'"
        else:
            value = blob(reg, _flip(old, at, bit).hex())
        reg.store.execute_raw(f"UPDATE {table} SET {col} = {value} WHERE {where}")
        try:
            rep = run_audit(reg)
            assert not rep.ok, (what, where)
        finally:
            put = blob(reg, old.hex()) if isinstance(old, bytes) else \
                "'" + old.replace("'", "''") + "'"
            reg.store.execute_raw(f"UPDATE {table} SET {col} = {put} WHERE {where}")

    changed()
    assert run_audit(reg).ok


def test_tokens_are_read_in_chunks_holding_no_connection_between(reg: Node) -> None:
    """The audit's token reader holds no pooled connection while the audit works between two
    tokens (it checks out others then), and its chunks, read by height, give every token once
    in order, whatever the chunk size."""
    fill(reg, 12, batch=2)
    pool = reg.store.engine.pool
    held = pool.checkedout()  # type: ignore[attr-defined]  # PostgreSQL: the sequencer lock's
    whole = list(reg.store.iter_timestamps(chunk=10_000))
    assert [h for h, _ in whole] == sorted({h for h, _ in whole}) and len(whole) >= 7
    for chunk in (1, 2, 3, len(whole), len(whole) + 1):
        got = []
        for height, token in reg.store.iter_timestamps(start=1, chunk=chunk):
            assert pool.checkedout() == held, "held across the yield"  # type: ignore[attr-defined]
            got.append((height, token))
        assert got == [t for t in whole if t[0] >= 1]


def test_a_chunk_of_no_tokens_is_refused(reg: Node) -> None:
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        list(reg.store.iter_timestamps(chunk=0))
