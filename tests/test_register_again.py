"""Registering content this account already registered answers with the earlier registration
(200) unless the request asks for a new entry (`again`); nobody else's registrations count."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.ledger import note
from copyledger.ledger.verify import verify_receipt
from copyledger.service import operations
from copyledger.service.apikeys import Principal, create_key
from copyledger.service.node import Node
from copyledger.service.operations import WorkIn
from tests.helpers import open_registry, sha, work_body

Api = tuple[TestClient, Node]


def key(reg: Node, account: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(reg.store, 'creator', account)[0]}"}



def size(client: TestClient) -> int:
    return int(client.get("/v1/log").json()["tree_size"])


def test_the_same_content_twice_is_the_earlier_registration(api: Api) -> None:
    client, reg = api
    alice, bob = key(reg, "alice"), key(reg, "bob")
    first = client.post("/v1/works", json=work_body("song"), headers=alice)
    assert first.status_code == 201 and "already_registered" not in first.json()
    n = size(client)
    # Other metadata, same content: still the earlier entry, nothing written.
    dup = client.post("/v1/works", json=work_body("song", title="Song (final)"), headers=alice)
    assert dup.status_code == 200, dup.text
    assert dup.json() == {**first.json(), "already_registered": True}
    assert dup.headers["content-location"] == f"/v1/entries/{first.json()['seq']}"
    assert size(client) == n
    vkey = client.get("/v1/log").json()["verifier_key"]
    verify_receipt(dup.json(), [note.parse_verifier_key(vkey)], file_sha256=sha("song"))
    # Asked for: a new entry, by body or by query.
    by_body = client.post("/v1/works", json=work_body("song", again=True), headers=alice)
    by_query = client.post("/v1/works?again=true", json=work_body("song"), headers=alice)
    assert by_body.status_code == by_query.status_code == 201, by_query.text
    seqs = {first.json()["seq"], by_body.json()["seq"], by_query.json()["seq"]}
    assert len(seqs) == 3 and "again" not in by_body.json()["entry"]
    # The answer stays the EARLIEST registration; another account's is its own.
    assert client.post("/v1/works", json=work_body("song"), headers=alice).json()["seq"] == min(
        seqs)
    other = client.post("/v1/works", json=work_body("song"), headers=bob)
    assert other.status_code == 201 and other.json()["seq"] not in seqs
    # Evidence is not a work: depositing it twice is not guarded (each capture is its own).
    assert client.get(f"/v1/search?sha256={sha('song')}").json()["results"][-1]["entry"][
        "registrant"] == "bob"


def test_an_upload_of_registered_content(api: Api) -> None:
    client, reg = api
    alice = key(reg, "alice")
    form = {"title": "Notes", "creators": "Ada", "work_type": "text"}
    files = {"file": ("notes.txt", b"field notes", "text/plain")}
    first = client.post("/v1/works", data=form, files=files, headers=alice)
    assert first.status_code == 201, first.text
    dup = client.post("/v1/works", data=form, files=files, headers=alice)
    assert dup.status_code == 200 and dup.json()["seq"] == first.json()["seq"]
    anew = client.post("/v1/works", data={**form, "again": "true"}, files=files, headers=alice)
    assert anew.status_code == 201 and anew.json()["seq"] != first.json()["seq"]
    also = client.post("/v1/works?again=1", data=form, files=files, headers=alice)
    assert also.status_code == 201, also.text


@pytest.mark.parametrize("ask", [
    {"query": "?again=maybe"}, {"query": "?again=yes&again=true"}, {"body": {"again": "yes"}},
    {"body": {"again": 1}}])
def test_a_malformed_again_is_a_clear_422(api: Api, ask: Any) -> None:
    client, reg = api
    alice = key(reg, "alice")
    client.post("/v1/works", json=work_body("w"), headers=alice)
    n = size(client)
    r = client.post("/v1/works" + ask.get("query", ""), headers=alice,
                    json={**work_body("w"), **ask.get("body", {})})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "again"
    assert size(client) == n


def test_simultaneous_registrations_of_the_same_content_are_one(
    tmp_path: Path, database_url: str
) -> None:
    reg = open_registry(tmp_path, database_url)
    key(reg, "alice")
    who = Principal("alice", "creator", 1)
    w = WorkIn(**work_body("race"))

    async def race() -> list[operations.Recorded]:
        return list(await asyncio.gather(*(operations.register_work(reg, who, w)
                                           for _ in range(8))))

    reg.start()
    try:
        done = asyncio.run(race())
    finally:
        reg.stop()
    assert len({r.receipt.seq for r in done}) == 1
    assert sum(not r.existing for r in done) == 1


def test_the_sequencers_check_reads_only_the_hashes_asked(
        tmp_path: Path, database_url: str) -> None:
    """D94: `Store.registered` (asked once a block) probes the registrant's index for each
    hash asked, on a young log with no planner statistics as on any other: the rows it
    reads are the matches, not all of the registrant's rows. PostgreSQL had planned
    `sha256 IN (...)` as a scan of the registrant's rows filtered by the list."""
    from sqlalchemy import event

    from copyledger.ledger import entry as entry_mod
    from tests.test_title_links import submit

    reg = open_registry(tmp_path, database_url)
    now = entry_mod.utc_now()
    reg.start()
    try:
        submit(reg, [entry_mod.build_work(
            registrant="alice", received_at=now, sha256=sha(f"a{i}"), title=f"w{i}",
            creators=["A"], work_type="text", check=False) for i in range(2000)])
    finally:
        reg.stop()
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, sql: str, args: Any, _ctx: Any, _many: bool) -> None:
        seen.append((sql, args))

    event.listen(reg.store.engine, "before_cursor_execute", capture)
    asked = [sha(f"a{i}") for i in (5, 1999)] + [sha(f"new{i}") for i in range(300)]
    found = reg.store.registered("alice", asked)
    event.remove(reg.store.engine, "before_cursor_execute", capture)
    assert set(found) == {sha("a5"), sha("a1999")}
    assert found[sha("a5")] < found[sha("a1999")]
    [(sql, args)] = seen
    raw = reg.store.engine.raw_connection()
    try:
        cur = raw.cursor()
        if reg.store.dialect == "postgresql":
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, args)
            plan = cur.fetchone()[0][0]["Plan"]

            def rows_read(node: dict[str, Any]) -> int:
                own = (node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
                       + node.get("Rows Removed by Filter", 0))
                scans = own if "Scan" in node["Node Type"] and "Function" not in node[
                    "Node Type"] else 0
                return scans + sum(rows_read(n) for n in node.get("Plans", []))

            assert rows_read(plan) <= 2 * len(asked), plan  # matches only, not 2,000 rows
        else:
            cur.execute("EXPLAIN QUERY PLAN " + sql, args)
            detail = " ".join(str(r[-1]) for r in cur.fetchall())
            # The runs of D142: a seek of each listed run by registrant and hash, no scan.
            assert "runs_by_registrant" in sql and "SCAN" not in detail, detail
            assert "PRIMARY KEY (run=? AND registrant=? AND sha256=?)" in detail, detail
    finally:
        raw.close()


def test_the_hashes_asked_reach_the_database_as_they_are(
        tmp_path: Path, database_url: str) -> None:
    """D100: PostgreSQL is sent lowercase hex hashes as one array literal; anything else
    (a comma, a brace, a quote, a backslash, NULL, capitals, nothing) goes as a list, so a
    string is never split, merged or read as NULL, and is simply not found."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from copyledger.ledger import entry as entry_mod
    from copyledger.ledger.store import _text_array
    from tests.test_title_links import submit

    reg = open_registry(tmp_path, database_url)
    reg.start()
    try:
        [seq] = submit(reg, [entry_mod.build_work(
            registrant="alice", received_at=entry_mod.utc_now(), sha256=sha("a1"), title="w",
            creators=["A"], work_type="text", check=False)])
    finally:
        reg.stop()
    odd = ["a,b", "NULL", "null", '"', "{}", "", "\\", "a b", sha("a1").upper(),
           f"{sha('a1')},{sha('a1')}"]
    assert reg.store.registered("alice", [sha("a1"), *odd]) == {sha("a1"): seq}
    if reg.store.dialect != "postgresql":
        return
    raw = reg.store.engine.raw_connection()
    try:
        cur = raw.cursor()

        @settings(max_examples=300, deadline=None)
        @given(st.lists(st.text(alphabet='0123456789abcdefNUL,{}" \\', max_size=8),
                        max_size=6))
        def round_trip(values: list[str]) -> None:
            cur.execute("SELECT array_length(%s::text[], 1), %s::text[]",
                        (_text_array(values), _text_array(values)))
            n, back = cur.fetchone()
            assert (n or 0, back) == (len(values), values)

        round_trip()
    finally:
        raw.close()


def test_a_failed_read_of_earlier_registrations_keeps_the_new_entries_answers(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """D94: the earlier registrations are read after the batch's block is committed; if
    that read fails, the new entries (written) keep their receipts and only the earlier
    ones are answered 503, nothing written for them; nothing is raised."""
    from copyledger.ledger.errors import Unavailable

    reg = open_registry(tmp_path, database_url)
    key(reg, "alice")
    who = Principal("alice", "creator", 1)
    old = WorkIn(**work_body("old"))
    reg.start()
    try:
        first = asyncio.run(operations.register_works(reg, who, [old]))[0]
        assert isinstance(first, operations.Recorded)

        def broken(_seqs: Any) -> Any:
            raise OSError("disk unplugged")

        monkeypatch.setattr(reg.store, "get_entries", broken)
        got = asyncio.run(operations.register_works(reg, who, [WorkIn(**work_body("new")), old]))
    finally:
        reg.stop()
    assert isinstance(got[0], operations.Recorded) and not got[0].existing
    assert isinstance(got[1], Unavailable) and "nothing was written" in str(got[1].detail)
