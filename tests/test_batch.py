"""Batch registration (issue 13 item 2, D41): up to 1,000 works or deposits in one request, each
answered on its own, the refused ones not written, the others sealed together."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from copyledger.ledger import jcs, note
from copyledger.ledger.sequencer import Receipt
from copyledger.ledger.verify import verify_receipt
from copyledger.service import operations
from copyledger.service.node import Node
from tests.helpers import bearer, sha, tree_size, work_body

Api = tuple[TestClient, Node]


def test_each_item_is_answered_in_order_and_refused_items_are_not_written(api: Api) -> None:
    client, reg = api
    alice = bearer(reg, "alice")
    single = client.post("/v1/works", json=work_body("old"), headers=alice).json()
    n = tree_size(client)
    works = [work_body(0), {**work_body(1), "sha256": "nothex"}, work_body("old"),
             work_body(2), "not an object", work_body(0)]
    r = client.post("/v1/works/batch", json={"works": works}, headers=alice)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [x["index"] for x in doc["results"]] == list(range(6))
    assert [x["status"] for x in doc["results"]] == [201, 422, 200, 201, 422, 200]
    assert (doc["registered"], doc["already_registered"], doc["refused"]) == (2, 2, 2)
    assert doc["results"][1]["problem"]["errors"][0]["field"].endswith("sha256")
    assert doc["results"][4]["problem"]["detail"] == "works[4]: must be an object"
    assert doc["results"][2]["registration"] == {**single, "already_registered": True}
    # The same content twice in one batch: one entry, the second answered with it.
    first, again = doc["results"][0]["registration"], doc["results"][5]["registration"]
    assert again["seq"] == first["seq"] and again["already_registered"] is True
    assert tree_size(client) == n + 2
    vkey = note.parse_verifier_key(client.get("/v1/log").json()["verifier_key"])
    for i, item in ((0, doc["results"][0]), (2, doc["results"][3])):
        verify_receipt(item["registration"], [vkey], file_sha256=sha(i))
    # Sealed together: both new entries are in one block.
    assert first["block_height"] == doc["results"][3]["registration"]["block_height"]


def test_a_batch_writes_what_single_registrations_would(api: Api) -> None:
    client, reg = api
    alice = bearer(reg, "alice")
    batch = client.post("/v1/works/batch", json={"works": [work_body(i) for i in range(5)]},
                        headers=alice).json()
    for item, i in zip(batch["results"], range(5), strict=True):
        entry = item["registration"]["entry"]
        single = client.post("/v1/works?again=true", json=work_body(i), headers=alice).json()
        assert {**entry, "received_at": None} == {**single["entry"], "received_at": None}


def test_again_for_the_whole_batch(api: Api) -> None:
    client, reg = api
    alice = bearer(reg, "alice")
    client.post("/v1/works", json=work_body(7), headers=alice)
    r = client.post("/v1/works/batch?again=true", json={"works": [work_body(7)]}, headers=alice)
    assert r.json()["results"][0]["status"] == 201


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"works": []}', b'{"works": {}}', b'{"works": [], "x": 1}',
    b'{"items": [{}]}',
])
def test_a_body_that_is_no_batch_is_refused_whole(api: Api, body: bytes) -> None:
    client, reg = api
    n = tree_size(client)
    r = client.post("/v1/works/batch", content=body, headers={
        **bearer(reg, "alice"), "content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"].startswith(
        "application/problem+json")
    assert tree_size(client) == n


def test_an_integer_past_64_bits_is_refused_not_rounded(api: Api) -> None:
    """An item's integer too large for 64 bits is refused as the single path refuses it
    (422, nothing written), keyed or not, never recorded as the float a 64-bit parser
    makes of it, which is a value the caller never sent; the batch's other items go on."""
    client, reg = api
    alice = bearer(reg, "alice")
    n = tree_size(client)
    big = b"18446744073709551616"  # 2**64
    body = (b'{"works": [' + orjson.dumps(work_body(40))[:-1] + b', "metadata": {"n": ' + big
            + b'}}, ' + orjson.dumps({**work_body(41), "idempotency_key": "k-41"})[:-1]
            + b', "metadata": {"n": ' + big + b'}}, ' + orjson.dumps(work_body(42)) + b"]}")
    r = client.post("/v1/works/batch", content=body,
                    headers={**alice, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [422, 422, 201], results
    assert all("2**53" in x["problem"]["detail"] for x in results[:2]), results
    assert tree_size(client) == n + 1
    single = client.post("/v1/works", content=orjson.dumps(work_body(40))[:-1]
                         + b', "metadata": {"n": ' + big + b"}}",
                         headers={**alice, "content-type": "application/json"})
    assert single.status_code == 422


def test_a_body_nested_too_deeply_is_refused_whole_with_no_server_error(api: Api) -> None:
    """Past 201 levels the body is refused whole, saying so (a 4xx, not the 500 a later
    step's recursion made of it, keyed or not); at 200 an item is read and judged."""
    client, reg = api
    alice = bearer(reg, "alice")
    n = tree_size(client)

    def nested(depth: int, key: bool) -> bytes:
        # (the body, the list and the item are three levels; the metadata's value the rest)
        item = orjson.dumps({**work_body(43), **({"idempotency_key": "k-43"} if key else {})})
        deep = b"[" * (depth - 4) + b"1" + b"]" * (depth - 4)
        return b'{"works": [' + item[:-1] + b', "metadata": {"n": ' + deep + b"}}]}"

    for key in (False, True):
        r = client.post("/v1/works/batch", content=nested(300, key),
                        headers={**alice, "content-type": "application/json"})
        assert r.status_code == 422 and "nested" in r.json()["detail"], r.text
        ok = client.post("/v1/works/batch", content=nested(200, key),
                         headers={**alice, "content-type": "application/json"})
        assert ok.status_code == 200, ok.text
    assert tree_size(client) <= n + 1  # (at most the one item read at 200 levels)


def test_at_most_1000_items_and_the_body_limit_fits_them(api: Api) -> None:
    client, reg = api
    alice = bearer(reg, "alice")
    works = [work_body(i, metadata={"note": "x" * 200}) for i in range(1001)]
    too_many = client.post("/v1/works/batch", json={"works": works}, headers=alice)
    assert too_many.status_code == 422 and "1000" in too_many.json()["detail"]
    n = tree_size(client)
    ok = client.post("/v1/works/batch", json={"works": works[:1000]}, headers=alice)
    assert ok.status_code == 200 and ok.json()["registered"] == 1000  # > 64 KiB of JSON
    assert tree_size(client) == n + 1000
    huge = b'{"works": ["' + b"x" * (reg.settings.max_batch_body_bytes) + b'"]}'
    r = client.post("/v1/works/batch", content=huge,
                    headers={**alice, "content-type": "application/json"})
    assert r.status_code == 413


def test_authentication_comes_before_the_body(api: Api) -> None:
    client, reg = api
    assert client.post("/v1/works/batch", content=b"not json").status_code == 401
    platform = bearer(reg, "tube", "platform")
    r = client.post("/v1/works/batch", json={"works": [work_body(1)]}, headers=platform)
    assert r.status_code == 403


def test_evidence_batch(api: Api) -> None:
    client, reg = api
    tube = bearer(reg, "tube", "platform")
    ev = {"sha256": sha("shot"), "source_url": "https://example.org/x",
          "captured_at": "2026-11-01T00:00:00Z", "capture_method": "screenshot",
          "description": "a listing"}
    r = client.post("/v1/evidence/batch", json={"evidence": [ev, {**ev, "related_work": 999}]},
                    headers=tube)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 422]
    assert results[0]["registration"]["entry"]["kind"] == "evidence"


def test_a_batch_receipts_checkpoint_is_verified_once_and_still_bound(api: Api) -> None:
    from copyledger.ledger.errors import CopyledgerError

    client, reg = api
    doc = client.post("/v1/works/batch", json={"works": [work_body(i) for i in range(3)]},
                      headers=bearer(reg, "alice")).json()
    vkey = note.parse_verifier_key(client.get("/v1/log").json()["verifier_key"])
    checked: dict[str, note.Checkpoint] = {}
    regs = [r["registration"] for r in doc["results"]]
    for i, r in enumerate(regs):
        verify_receipt(r, [vkey], file_sha256=sha(i), checked=checked)
    assert len(checked) == 1  # one block, one signature check
    # A remembered checkpoint still has to match the proof; an altered one is verified anew.
    wrong_root = {**regs[0], "receipt": {**regs[0]["receipt"], "root": "00" * 32}}
    forged = {**regs[1], "receipt": {**regs[1]["receipt"],
                                     "checkpoint": regs[1]["receipt"]["checkpoint"] + " "}}
    for bad in (wrong_root, forged):
        with pytest.raises(CopyledgerError):
            verify_receipt(bad, [vkey], checked=checked)


def test_an_unexpected_failure_leaves_no_future_unretrieved() -> None:
    """The sequencer's futures fail with something other than a CopyledgerError: record_many
    raises it, and the futures it never awaited are retrieved (asyncio would otherwise log
    "exception was never retrieved" once per entry)."""

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        logged: list[str] = []
        loop.set_exception_handler(lambda _, context: logged.append(context["message"]))

        class Sequencer:
            def submit_many_async(self, pendings: list[object]) -> list[asyncio.Future[Any]]:
                out = [loop.create_future() for _ in pendings]
                for f in out:
                    f.set_exception(RuntimeError("the disk has gone"))
                return out

        node: Any = SimpleNamespace(sequencer=Sequencer())
        built: Any = [({"n": i}, object()) for i in range(4)]
        failed = False
        try:
            await operations.record_many(node, built)
        except RuntimeError:  # not kept: its traceback would keep the futures alive
            failed = True
        assert failed
        await asyncio.sleep(0)  # the retrieving callbacks run
        gc.collect()
        return logged

    assert asyncio.run(scenario()) == []


def test_a_batch_the_sequencer_cannot_take_is_answered_by_one_bare_refusal() -> None:
    """Nothing queued (the queue full, sequencing stopped): every item is answered with the
    one error, kept without its traceback and context, whose frames would hold the list that
    holds it (D152's cycle, one a chunk of an import)."""
    from copyledger.ledger.errors import Unavailable

    class Sequencer:
        def submit_many_async(self, pendings: list[object]) -> list[asyncio.Future[Any]]:
            try:
                raise KeyError("the cause")
            except KeyError:
                raise Unavailable("the sequencer's queue is full") from None

    node: Any = SimpleNamespace(sequencer=Sequencer())
    refused = operations.InvalidInput("refused before")
    got = asyncio.run(operations.record_many(node, [({"n": 0}, object()), refused,
                                                    ({"n": 2}, object())]))
    assert got[1] is refused
    assert got[0] is got[2] and isinstance(got[0], Unavailable)
    assert got[0].__traceback__ is None and got[0].__context__ is None


@settings(max_examples=150, deadline=None)
@given(proof=st.lists(st.binary(min_size=32, max_size=32), max_size=40),
       seq=st.integers(0, 2**53 - 1), checkpoint=st.text(max_size=300),
       entry=st.fixed_dictionaries({"title": st.text(max_size=20),
                                    "creators": st.lists(st.text(max_size=5), max_size=3)}),
       existing=st.booleans())
def test_a_batch_registration_written_as_json_is_to_dict(
        proof: list[bytes], seq: int, checkpoint: str, entry: dict[str, Any],
        existing: bool) -> None:
    """D82: the batch answer writes each registration from its canonical bytes and hexes in C;
    it must be `to_dict`'s value, to the byte once decoded."""
    receipt = Receipt(seq=seq, leaf_hash=bytes(range(32)), block_height=seq // 3,
                      tree_size=seq + 1, root=bytes(32), proof=proof, checkpoint=checkpoint)
    data = jcs.canonicalize(entry)
    recorded = operations.Recorded(receipt, entry, existing=existing, data=data)
    assert orjson.loads(orjson.dumps(recorded.to_json())) == recorded.to_dict()
    without = operations.Recorded(receipt, entry, existing=existing)  # the bytes not at hand
    assert orjson.loads(orjson.dumps(without.to_json())) == recorded.to_dict()
    # D154: a plain work's dict is not made; its bytes answer both ways
    bytes_only = operations.Recorded(receipt, None, existing=existing, data=data)
    assert bytes_only.to_dict() == recorded.to_dict()
    assert orjson.loads(orjson.dumps(bytes_only.to_json())) == recorded.to_dict()


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**64) | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=2),
    max_leaves=4)


def _or_any(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(s, s, _ANY_JSON)  # (mostly the member's own type)


_PLAIN_MEMBERS: dict[str, st.SearchStrategy[Any]] = {
    "sha256": st.sampled_from(["ab" * 32, "AB" * 32, "x", ""]),
    "title": st.text(max_size=8),
    "creators": st.lists(st.text(max_size=4), max_size=3),
    "work_type": st.sampled_from(["image", "music", "poem"]),
}
_WORK_MEMBERS: dict[str, st.SearchStrategy[Any]] = {
    **{k: _or_any(v) for k, v in _PLAIN_MEMBERS.items()},
    "size": _or_any(st.sampled_from([0, 7, operations.MAX_INT, operations.MAX_INT + 1, -1,
                                     True, False, 5.0, "5", None])),
    "license": _or_any(st.none() | st.text(max_size=4)),
    "sm3": _or_any(st.none() | st.sampled_from(["cd" * 32, "x"])),
    "again": _or_any(st.sampled_from([None, True, False, 1, 0, "true"])),
    "media_type": _or_any(st.none() | st.just("image/png")),
    "metadata": _or_any(st.none() | st.just({"year": 2026})),
    "fingerprints": _or_any(st.none()),
    "idempotency_key": _ANY_JSON,
}
_REQUIRED = ("sha256", "title", "creators", "work_type")


@settings(max_examples=1500, deadline=None)
@given(raw=st.one_of(
    st.fixed_dictionaries({k: v for k, v in _WORK_MEMBERS.items() if k in _REQUIRED},
                          optional={k: v for k, v in _WORK_MEMBERS.items()
                                    if k not in _REQUIRED}),
    st.fixed_dictionaries({k: _PLAIN_MEMBERS[k] for k in _REQUIRED},  # mostly plain
                          optional={k: _WORK_MEMBERS[k]
                                    for k in ("size", "license", "sm3", "again")}),
    st.fixed_dictionaries({}, optional=_WORK_MEMBERS),  # required members missing too
    _ANY_JSON))
def test_a_plain_work_read_without_pydantic_is_what_pydantic_reads(raw: Any) -> None:
    """D155: a batch item (or catalogue row) that is a plain work of JSON's own types is read
    without pydantic. Whatever it accepts, `WorkIn.model_validate` must accept too, with the
    same value and type for every field; whatever it passes on, pydantic decides."""
    plain = operations._plain_work_in(raw)
    event("read without pydantic" if plain is not None else "passed on")
    try:
        model: operations.WorkIn | None = operations.WorkIn.model_validate(raw)
    except ValidationError:
        model = None
    got = operations.parse_item(operations.WorkIn, raw) if model is not None else None
    if plain is None:
        assert got is None or isinstance(got, operations.WorkIn)
        return
    assert model is not None, raw
    assert got == plain
    for name in operations.PlainWorkIn._fields:
        mine, theirs = getattr(plain, name), getattr(model, name)
        assert mine == theirs and type(mine) is type(theirs), (name, raw)
    assert all(type(c) is str for c in plain.creators)


def test_the_plain_read_takes_plain_works_and_only_them() -> None:
    """The quick read is used where it should be (else the test above proves nothing)."""
    work = {"sha256": "ab" * 32, "title": "T", "creators": ["A"], "work_type": "image"}
    assert isinstance(operations.parse_item(operations.WorkIn, work), operations.PlainWorkIn)
    for more in ({"size": 5, "license": "CC0", "sm3": "cd" * 32, "again": True},
                 {"size": None, "license": None, "sm3": None, "again": None}):
        assert isinstance(operations.parse_item(operations.WorkIn, {**work, **more}),
                          operations.PlainWorkIn)
    for other in ({"media_type": "image/png"}, {"size": True}, {"size": 5.0},
                  {"size": operations.MAX_INT + 1}, {"again": 1}, {"creators": ("A",)}):
        assert operations._plain_work_in({**work, **other}) is None
    assert isinstance(operations.parse_item(operations.WorkIn, {**work, "size": 5.0}),
                      operations.WorkIn)

    # Subclasses (which no JSON or CSV reader here makes) are left to pydantic too.
    class Text(str):
        pass

    class Number(int):
        pass

    class Members(dict[str, Any]):
        pass

    for odd in ({**work, "title": Text("T")}, {**work, "size": Number(5)},
                {**work, "creators": [Text("A")]}, Members(work)):
        assert operations._plain_work_in(odd) is None


def test_a_batch_of_plain_works_reaches_neither_pydantic_nor_a_dict_read_back(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """D154 and D155 on the endpoint itself: a batch of plain works is parsed without
    `WorkIn.model_validate` and answered without reading any entry's bytes back into a
    dict, and the answer is the registrations all the same."""
    client, reg = api

    def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError("a plain batch item went through pydantic")

    monkeypatch.setattr(operations.WorkIn, "model_validate", refused)
    made: list[Any] = []
    built = operations._plain_built
    monkeypatch.setattr(operations, "_plain_built",
                        lambda *a, **k: made.append(out := built(*a, **k)) or out)
    r = client.post("/v1/works/batch", json={"works": [work_body(f"wired-{i}")
                                                       for i in range(3)]},
                    headers=bearer(reg, "alice"))
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == [201, 201, 201]
    assert [x["registration"]["entry"]["title"] for x in r.json()["results"]] == [
        "Work wired-0", "Work wired-1", "Work wired-2"]
    assert len(made) == 3 and all(m is not None and m[0] is None for m in made)


def test_sqlite_connections_keep_full_durability_with_a_larger_cache_and_wal(reg: Node) -> None:
    """D87: the page cache a block's random index inserts need and a checkpoint every few
    blocks, without giving up a commit that is on disk before any receipt goes out."""
    from copyledger.ledger.store import SQLITE_CACHE_KIB, SQLITE_WAL_PAGES

    with reg.store.engine.connect() as conn:
        pragma = conn.connection.driver_connection
        assert pragma is not None
        assert pragma.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert pragma.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert pragma.execute("PRAGMA cache_size").fetchone()[0] == -SQLITE_CACHE_KIB
        assert pragma.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == SQLITE_WAL_PAGES


def test_binary_copy_sends_each_column_as_its_schema_type() -> None:
    """D100: a block's rows go to PostgreSQL by binary COPY with a type a column, in the order
    the rows hold them; some mistakes there would not fail the COPY (varchar for text, two
    columns of one type swapped), so the types are read from the schema, column by column."""
    from sqlalchemy.dialects import postgresql

    from copyledger.ledger import schema
    from copyledger.ledger.store import _COPY_BINARY, _ENTRY_COLS, _NODE_COLS, EntryRow

    wire = {"BIGINT": "int8", "SMALLINT": "int2", "BYTEA": "bytea", "VARCHAR": "varchar"}
    for table, cols in (("entries", _ENTRY_COLS), ("merkle_nodes", _NODE_COLS)):
        columns = schema.metadata.tables[table].c
        declared = [columns[c].type.compile(dialect=postgresql.dialect()).split("(")[0]
                    for c in cols]
        assert list(_COPY_BINARY[table]) == [wire[t] for t in declared], table
        assert set(cols) == set(columns.keys())  # every column is sent
    assert EntryRow._fields == _ENTRY_COLS  # a block's entry rows, as they are sent
