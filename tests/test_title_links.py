"""Chains of title and claims found by the work's links, not by its content hash: a flood of
same-hash entries by someone else changes neither the answers nor their cost (issue #10)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import event

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import links, store
from copyledger.ledger.audit import audit
from copyledger.ledger.documents import parse_entry
from copyledger.ledger.schema import (
    ENTRIES_BY_REGISTRANT,
    ENTRIES_FINGERPRINTED,
    accounts,
    claim_contacts,
    cosignatures,
    entry_links,
    handoff_secret,
    idempotency_keys,
    sequencer_address,
)
from copyledger.ledger.sequencer import Pending
from copyledger.service import claims, title
from copyledger.service.node import Node, tsa_roots_pem
from copyledger.service.operations import CheckIn
from tests.helpers import bearer, downgrade, open_registry, sha
from tests.test_audit import drop_trigger
from tests.test_claims import DMCA


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Node:
    return open_registry(tmp_path, database_url, linger_ms=20.0)


def submit(reg: Node, entries: list[dict[str, Any]]) -> list[int]:
    """Entries straight to the sequencer (behind the service's back), links as `record` makes
    them; their seqs."""
    futs = []
    for e in entries:
        e, data = entry_mod.encode(e)
        doc = parse_entry(e)
        futs.append(reg.sequencer.submit(Pending(
            data, str(e["kind"]), entry_mod.content_sha256(e), str(e["registrant"]),
            links.links_of(doc))))
    return [f.result(timeout=60).seq for f in futs]


def flood(reg: Node, sha256: str, n: int, start: int = 0) -> None:
    """n registrations of someone else's hash by one account."""
    now = entry_mod.utc_now()
    submit(reg, [entry_mod.build_work(registrant="mallory", received_at=now, sha256=sha256,
                                      title=f"copy {start + i}", creators=["M"],
                                      work_type="text", check=False) for i in range(n)])


class Reads:
    """Entry rows materialised and SQL statements run by this thread (not the sequencer's or
    the index rebuild's)."""

    def __init__(self, reg: Node, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = self.statements = 0
        me = threading.get_ident()
        real = store._entry

        def counting(r: Any, key: Any) -> store.EntryRow:
            self.rows += threading.get_ident() == me
            return real(r, key)

        def on_execute(*_: Any) -> None:
            self.statements += threading.get_ident() == me

        monkeypatch.setattr(store, "_entry", counting)
        event.listen(reg.store.engine, "before_cursor_execute", on_execute)

    def measure(self, fn: Any) -> tuple[int, int]:
        self.rows = self.statements = 0
        fn()
        return self.rows, self.statements


def test_flood_of_same_hash_breaks_neither_title_nor_claims(
    client: TestClient, reg: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = bearer(reg, "alice", "creator"), bearer(reg, "bob", "creator")
    carol = bearer(reg, "carol", "creator")
    plat = bearer(reg, "tube", "platform")
    song = sha("song")
    w = client.post("/v1/works", headers=alice, json={
        "sha256": song, "title": "Song", "creators": ["Alice"], "work_type": "audio"}
    ).json()["seq"]
    flood(reg, song, 1500)

    r = client.post("/v1/transfers", headers=alice,
                    json={"work_seq": w, "to": "bob", "transfer_type": "assignment"})
    assert r.status_code == 201, r.text
    ok = client.post(f"/v1/transfers/{r.json()['seq']}/accept", headers=bob)
    assert ok.status_code == 201, ok.text
    hist = client.get(f"/v1/works/{w}/history").json()
    assert hist["holder"] == "bob" and [x["seq"] for x in hist["links"]] == [
        w, r.json()["seq"], ok.json()["seq"]]
    again = client.post("/v1/transfers", headers=alice,
                        json={"work_seq": w, "to": "mallory", "transfer_type": "assignment"})
    assert again.status_code == 403, again.text
    onward = client.post("/v1/transfers", headers=bob,
                         json={"work_seq": w, "to": "carol", "transfer_type": "assignment"})
    assert onward.status_code == 201, onward.text
    ok = client.post(f"/v1/transfers/{onward.json()['seq']}/accept", headers=carol)
    assert ok.status_code == 201, ok.text

    # One notice names the work by seq, one only by hash (linked to the EARLIEST work with it).
    by_seq = client.post("/v1/claims", headers=plat, json={**DMCA, "works": [{"seq": w}]})
    by_hash = client.post("/v1/claims", headers=plat, json={**DMCA, "works": [{"sha256": song}]})
    assert by_seq.status_code == by_hash.status_code == 201, by_hash.text
    claim_seqs = [by_seq.json()["seq"], by_hash.json()["seq"]]
    check = client.post("/v1/claims/check", headers=plat, json={
        "claimant": "carol", "work_seq": w, "content": {"sha256": sha("disputed")}}).json()
    assert [c["seq"] for c in check["claims"]] == claim_seqs
    assert check["holder"] == "carol" and check["claimant_is_holder"] is True
    by_work_hash = client.post("/v1/claims/check", headers=plat, json={
        "claimant": "x", "work_sha256": song, "content": {"sha256": sha("disputed")}}).json()
    assert by_work_hash["work_seq"] == w and by_work_hash["holder"] == "carol"
    assert client.get(f"/v1/claims/{claim_seqs[0]}").json()["timeline"][0]["seq"] == claim_seqs[0]

    # The cost of a history and a claim check is the work's own: twice the flood, same reads.
    reads = Reads(reg, monkeypatch)

    def history() -> None:  # the service calls, without HTTP (or its API-key cache)
        assert title.history(reg, w)["holder"] == "carol"

    def claim_check() -> None:
        a = claims.check_claim(reg, CheckIn(claimant="carol", work_seq=w,
                                            content={"sha256": sha("disputed")}))
        assert [c["seq"] for c in a["claims"]] == claim_seqs

    def lookup() -> None:  # is this content already registered by this account? (D36, D94)
        assert reg.store.registered("alice", [song]) == {song: w}

    before = reads.measure(history), reads.measure(claim_check), reads.measure(lookup)
    flood(reg, song, 1500, start=1500)
    after = reads.measure(history), reads.measure(claim_check), reads.measure(lookup)
    assert before == after
    # One statement (its rows are (hash, seq) pairs, not entries, so none is counted as an
    # entry read), however many copies others made: it reads by (registrant, sha256) first.
    assert before[2] == (0, 1)
    assert before[1][1] <= 4  # the work, its links (one statement), its claims and transfers
    # The work's six links read two at a time give the same claims and holder (D76).
    monkeypatch.setattr(claims, "_LINK_PAGE", 2)
    paged = claims.check_claim(reg, CheckIn(claimant="carol", work_seq=w,
                                            content={"sha256": sha("disputed")}))
    assert [c["seq"] for c in paged["claims"]] == claim_seqs
    assert paged["holder"] == "carol" and paged["claimant_is_holder"] is True
    # the work, its two offers and their acceptances (each read at most twice)
    assert before[0][0] <= 2 * 5
    rep = audit(reg.store, reg.verifier_key, tsa_roots_pem=tsa_roots_pem(reg.settings))
    assert rep.ok, rep.problem


@pytest.fixture
def started(reg: Node) -> Iterator[Node]:
    reg.start()
    yield reg
    reg.stop()


def transfer(work: int, who: str, to: str) -> dict[str, Any]:
    return entry_mod.build_transfer(
        registrant=who, received_at=entry_mod.utc_now(), work_seq=work, work_sha256=sha("w"),
        from_account=who, to_account=to, transfer_type="assignment", territory="world",
        term_start=None, term_end=None, terms_sha256=None, note=None, check=False)


def work(who: str = "alice") -> dict[str, Any]:
    return entry_mod.build_work(registrant=who, received_at=entry_mod.utc_now(),
                                sha256=sha("w"), title="W", creators=["A"], work_type="text",
                                check=False)


def run_audit(reg: Node) -> Any:
    return audit(reg.store, reg.verifier_key, tsa_roots_pem=tsa_roots_pem(reg.settings))


def test_audit_fails_on_a_double_assignment(started: Node) -> None:
    [w] = submit(started, [work()])
    [t1] = submit(started, [transfer(w, "alice", "bob")])
    assert run_audit(started).ok
    # alice assigns again, though bob holds it: a valid entry, hashed and signed like any other.
    [t2] = submit(started, [transfer(w, "alice", "mallory")])
    rep = run_audit(started)
    assert not rep.ok and rep.bad_seq == t2 > t1, rep
    assert "'bob' held the work" in (rep.problem or "")


def offer(work: int, who: str, to: str) -> dict[str, Any]:
    return entry_mod.build_transfer(
        registrant=who, received_at=entry_mod.utc_now(), work_seq=work, work_sha256=sha("w"),
        from_account=who, to_account=to, transfer_type="assignment", needs_acceptance=True)


def answer(kind: str, work: int, who: str, offer_seq: int) -> dict[str, Any]:
    return entry_mod.build_answer(kind=kind, registrant=who, received_at=entry_mod.utc_now(),
                                  work_seq=work, work_sha256=sha("w"), offer=offer_seq)


@pytest.mark.parametrize("case", ["accept without offer", "accept by the wrong account",
                                  "second offer while one is pending"])
def test_audit_fails_on_an_answer_out_of_turn(started: Node, case: str) -> None:
    [w] = submit(started, [work()])
    [o] = submit(started, [offer(w, "alice", "bob")])
    [wd] = submit(started, [answer("withdrawal", w, "alice", o)])
    [o2] = submit(started, [offer(w, "alice", "bob")])
    assert started.store.linked(w, links.TRANSFER) == [o, wd, o2]
    assert run_audit(started).ok
    bad = {"accept without offer": answer("acceptance", w, "bob", o),  # withdrawn already
           "accept by the wrong account": answer("acceptance", w, "mallory", o2),
           "second offer while one is pending": offer(w, "alice", "carol")}[case]
    [b] = submit(started, [bad])
    rep = run_audit(started)
    assert not rep.ok and rep.bad_seq == b, rep


def test_audit_passes_an_accepted_offer_after_a_legacy_assignment(started: Node) -> None:
    [w] = submit(started, [work()])
    [t] = submit(started, [transfer(w, "alice", "bob")])  # one step, as logged before offers
    [o] = submit(started, [offer(w, "bob", "carol")])
    [a] = submit(started, [answer("acceptance", w, "carol", o)])
    assert started.store.linked(w, links.TRANSFER) == [t, o, a]
    assert run_audit(started).ok
    assert title.history(started, w)["holder"] == "carol"


def test_audit_fails_on_a_tampered_link(started: Node) -> None:
    [w] = submit(started, [work()])
    [t] = submit(started, [transfer(w, "alice", "bob")])
    claim = entry_mod.build_claim(registrant="tube", received_at=entry_mod.utc_now(),
                                  body={**DMCA, "works": [{"sha256": sha("w")}]}, check=False)
    [c] = submit(started, [claim])
    assert started.store.links_between(0, c + 1) == [(w, t, links.TRANSFER),
                                                     (w, c, links.CLAIM)]
    assert run_audit(started).ok
    # A forged link (appending is allowed): the claim "is" also a transfer of the work.
    started.store.execute_raw(f"INSERT INTO entry_links (target, rel, seq) VALUES ({w}, "
                              f"'transfer', {c})")
    rep = run_audit(started)
    assert not rep.ok and rep.bad_seq == c and "links" in (rep.problem or ""), rep
    drop_trigger(started, "entry_links", "delete")
    started.store.execute_raw(f"DELETE FROM entry_links WHERE seq = {c} AND rel = 'transfer'")
    assert run_audit(started).ok
    # A deleted link: the transfer disappears from the history.
    started.store.execute_raw(f"DELETE FROM entry_links WHERE seq = {t}")
    rep = run_audit(started)
    assert not rep.ok and rep.bad_seq == t, rep
    # A link past the end of the log is counted.
    started.store.execute_raw(f"INSERT INTO entry_links (target, rel, seq) VALUES ({w}, "
                              f"'transfer', {t})")
    started.store.execute_raw(f"INSERT INTO entry_links (target, rel, seq) VALUES ({w}, "
                              f"'transfer', {c + 100})")
    rep = run_audit(started)
    assert not rep.ok and "links are stored" in (rep.problem or ""), rep


def test_audit_fails_on_a_link_of_another_type(started: Node, database_url: str) -> None:
    """SQLite keeps whatever type a row is given: a transfer's target rewritten to 0.5 (or
    to the bytes '0') read as 0 through `int`, so the audit passed it, while the lookups by
    target, which compare exactly, lost the transfer from the chain of title (and let the
    work be assigned a second time). The audit reads the rows as stored."""
    [w] = submit(started, [work()])
    [t] = submit(started, [transfer(w, "alice", "bob")])
    assert run_audit(started).ok and started.store.linked(w, links.TRANSFER) == [t]
    drop_trigger(started, "entry_links", "update")
    if not database_url.startswith("sqlite"):  # PostgreSQL keeps a column's type
        with pytest.raises(sqlalchemy.exc.ProgrammingError):
            started.store.execute_raw(f"UPDATE entry_links SET target = CAST('{w}' AS BYTEA) "
                                      f"WHERE seq = {t}")
        return
    for odd in (f"{w} + 0.5", f"CAST('{w}' AS BLOB)"):
        started.store.execute_raw(f"UPDATE entry_links SET target = {odd} WHERE seq = {t}")
        assert started.store.linked(w, links.TRANSFER) == []  # (what the chain of title sees)
        rep = run_audit(started)
        assert not rep.ok and "entry_links" in (rep.problem or ""), rep
    started.store.execute_raw(f"UPDATE entry_links SET target = {w} WHERE seq = {t}")
    assert run_audit(started).ok


def test_links_table_is_append_only(started: Node) -> None:
    [w] = submit(started, [work()])
    submit(started, [transfer(w, "alice", "bob")])
    from sqlalchemy.exc import DBAPIError

    for sql in ("UPDATE entry_links SET rel = 'x'", "DELETE FROM entry_links"):
        with pytest.raises(DBAPIError, match="append-only"):
            started.store.execute_raw(sql)


def test_migration_0003_backfills_links_of_a_0002_log(reg: Node, database_url: str) -> None:
    reg.start()
    try:
        [w, other] = submit(reg, [work(), work("mallory")])
        [t] = submit(reg, [transfer(w, "alice", "bob")])
        notice = entry_mod.build_claim(registrant="tube", received_at=entry_mod.utc_now(),
                                       body={**DMCA, "works": [{"sha256": sha("w")}]},
                                       check=False)
        [c] = submit(reg, [notice])
        counter = entry_mod.build_claim(
            registrant="tube", received_at=entry_mod.utc_now(), check=False, body={
                "notice_type": "counter_notice", "regime": "dmca_512c3", "refers_to": c,
                "works": [{"seq": other, "sha256": sha("w")}],
                "claimant": {"name": "B", "address": "2 Main St", "phone": "+1 555 0199"},
                "statements": {"mistake": True, "perjury": True, "jurisdiction_consent": True},
                "targets": [{"url": "https://video.example/watch/1"}],
                "signature": "/B/", "requested_action": "restore"})
        [cn] = submit(reg, [counter])
    finally:
        reg.stop()
    written = reg.store.links_between(0, cn + 1)
    assert written == sorted([(w, t, links.TRANSFER), (w, c, links.CLAIM),
                              (other, cn, links.CLAIM), (c, cn, links.REPLY)])
    # Take the log back to revision 0002: the same entries, no links (nor cosignatures, nor
    # claim contacts) table, content hashes as hex text (revision 0012's downgrade).
    downgrade(reg.store.engine, "0011")
    entry_links.drop(reg.store.engine)
    cosignatures.drop(reg.store.engine)
    claim_contacts.drop(reg.store.engine)
    reg.store.execute_raw(f"DROP INDEX {ENTRIES_BY_REGISTRANT[0]}")  # revision 0006's
    idempotency_keys.drop(reg.store.engine)  # revision 0007's
    accounts.drop(reg.store.engine)  # revision 0008's
    reg.store.execute_raw(f"DROP INDEX {ENTRIES_FINGERPRINTED}")  # revision 0009's
    sequencer_address.drop(reg.store.engine)  # revision 0010's
    handoff_secret.drop(reg.store.engine)  # revision 0011's
    reg.store.execute_raw("UPDATE alembic_version SET version_num = '0002'")
    reg.store.close()

    s = store.Store.open(database_url)
    try:
        assert s.links_between(0, cn + 1) == written
        assert s.linked(w, links.TRANSFER) == [t]
        rep = audit(s, reg.verifier_key, tsa_roots_pem=tsa_roots_pem(reg.settings))
        assert rep.ok, rep.problem
        cfg = Config()
        cfg.set_main_option("script_location", str(store.MIGRATIONS))
        with s.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")  # at head already: a no-op, nothing doubled
        assert s.count_links() == len(written)
    finally:
        s.close()


def test_incremental_audit_replays_titles_across_the_head(started: Node) -> None:
    """A work transferred before the head of the last audit and again after it: the replay
    after the head starts from the work's earlier transfers, so a double assignment after it
    is found (D39)."""
    [w] = submit(started, [work()])
    submit(started, [transfer(w, "alice", "bob")])
    first = run_audit(started)
    assert first.ok and first.state is not None, first
    submit(started, [transfer(w, "bob", "carol")])
    rep = audit(started.store, started.verifier_key, since=first.state)
    assert rep.ok and rep.resumed_from == first.state.tree_size, rep
    [bad] = submit(started, [transfer(w, "alice", "mallory")])  # alice no longer holds it
    rep = audit(started.store, started.verifier_key, since=rep.state)
    assert not rep.ok and rep.bad_seq == bad and "'carol' held the work" in (rep.problem or "")
