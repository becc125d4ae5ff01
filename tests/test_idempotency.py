"""Idempotent retries (issue 13 item 6, D41): a write sent again with the same Idempotency-Key
and body answers as the first did and writes nothing; the key with another body is refused;
keys are per account and kept for `idempotency_ttl_s`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.schema import (
    ENTRIES_FINGERPRINTED,
    accounts,
    handoff_secret,
    idempotency_keys,
    idempotency_written,
    sequencer_address,
)
from copyledger.ledger.store import Store
from copyledger.service.idempotency import IN_FLIGHT, Answer, Claim, InFlight, Keys
from copyledger.service.node import Node
from tests.helpers import bearer, downgrade, open_registry, sha, tree_size, wait_for, work_body
from tests.test_claims import DMCA

Api = tuple[TestClient, Node]


def _work(client: TestClient, reg: Node) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return "/v1/works", bearer(reg, "alice"), work_body("keyed")


def _again(client: TestClient, reg: Node) -> tuple[str, dict[str, Any], dict[str, Any]]:
    # `again`: without the key, every request would be a new entry
    return "/v1/works", bearer(reg, "alice"), work_body("keyed", again=True)


def _evidence(client: TestClient, reg: Node) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return "/v1/evidence", bearer(reg, "tube", "platform"), {
        "sha256": sha("capture"), "source_url": "https://example.org/x",
        "captured_at": "2026-11-01T00:00:00Z", "capture_method": "screenshot",
        "description": "a listing"}


def _transfer(client: TestClient, reg: Node) -> tuple[str, dict[str, Any], dict[str, Any]]:
    alice = bearer(reg, "alice")
    bearer(reg, "bob")
    work = client.post("/v1/works", json=work_body("licensed"), headers=alice).json()
    return "/v1/transfers", alice, {"work_seq": work["seq"], "to": "bob",
                                    "transfer_type": "non_exclusive_licence"}


def _offer(client: TestClient, reg: Node) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An offer of assignment: while it is pending, no other transfer of the work is taken."""
    path, alice, body = _transfer(client, reg)
    return path, alice, {**body, "transfer_type": "assignment"}


def _claim(client: TestClient, reg: Node) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return "/v1/claims", bearer(reg, "tube", "platform"), {**DMCA, "works": [{"sha256": sha(1)}]}


def _upload(client: TestClient, reg: Node) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A work uploaded `again` (D137): the file under `file`, the rest as form fields."""
    return "/v1/works", bearer(reg, "alice"), {
        "file": b"an uploaded work", "title": "Up", "creators": ["Ada", "Bo"],
        "work_type": "text", "metadata": '{"b": 1, "a": [2]}', "again": "true"}


WRITES: dict[str, Callable[[TestClient, Node], tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "work": _work, "work-again": _again, "evidence": _evidence, "transfer": _transfer,
    "offer": _offer, "claim": _claim, "upload": _upload}


def _post(client: TestClient, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """`body` sent as JSON, or, with a `file`, as a multipart upload."""
    if "file" not in body:
        return client.post(path, json=body, headers=headers)
    fields = {k: v for k, v in body.items() if k != "file"}
    return client.post(path, files={"file": ("work.txt", body["file"], "text/plain")},
                       data=fields, headers=headers)


def _other(body: dict[str, Any]) -> dict[str, Any]:
    """Another request of the same kind as `body`."""
    if "file" in body:
        return {**body, "file": body["file"] + b"!"}
    return {**body, "sha256": sha("other")} if "sha256" in body else {**body, "to": "alice"}


@pytest.mark.parametrize("write", WRITES)
def test_a_retry_answers_as_the_first_and_writes_nothing(api: Api, write: str) -> None:
    client, reg = api
    path, auth, body = WRITES[write](client, reg)
    h = {**auth, "Idempotency-Key": "9b2f1d7e-retry"}
    first = _post(client, path, body, h)
    assert first.status_code == 201, first.text
    n = tree_size(client)
    retry = _post(client, path, body, h)
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert retry.headers["idempotent-replayed"] == "true"
    assert tree_size(client) == n
    # The same key with another body: refused, nothing written.
    other = _post(client, path, _other(body), h)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert tree_size(client) == n
    # Without the key, or with another, the request is a request of its own.
    fresh = _post(client, path, body, {**auth, "Idempotency-Key": "another"})
    assert "idempotent-replayed" not in fresh.headers


def test_keys_are_per_account_and_expire(api: Api) -> None:
    client, reg = api
    alice, bob = bearer(reg, "alice"), bearer(reg, "bob")
    body = work_body("song", again=True)
    a = client.post("/v1/works", json=body, headers={**alice, "Idempotency-Key": "k1"}).json()
    b = client.post("/v1/works", json=body, headers={**bob, "Idempotency-Key": "k1"}).json()
    assert b["entry"]["registrant"] == "bob" and b["seq"] != a["seq"]
    # Past its lifetime a key is forgotten, with the entries recorded under it (D132, D134):
    # the request is made again.
    with reg.store.engine.begin() as conn:
        for table in (idempotency_keys, idempotency_written):
            conn.execute(update(table).values(
                created=int(time.time()) - reg.settings.idempotency_ttl_s - 1))
    again = client.post("/v1/works", json=body, headers={**alice, "Idempotency-Key": "k1"})
    assert again.status_code == 201 and again.json()["seq"] > b["seq"]
    assert "idempotent-replayed" not in again.headers


def test_a_refused_request_is_not_kept(api: Api) -> None:
    client, reg = api
    h = {**bearer(reg, "alice"), "Idempotency-Key": "k2"}
    bad = client.post("/v1/works", json={**work_body(1), "work_type": "poem"}, headers=h)
    assert bad.status_code == 422
    good = client.post("/v1/works", json=work_body(1), headers=h)
    assert good.status_code == 201  # the key answered nothing yet: free for the fixed body


@pytest.mark.parametrize("bad", [b"", b"x" * 256, b"tab\there", "é".encode()])
def test_a_malformed_key_is_refused(api: Api, bad: bytes) -> None:
    client, reg = api
    n = tree_size(client)
    r = client.post("/v1/works", json=work_body(1),
                    headers=[*bearer(reg, "alice").items(), ("Idempotency-Key", bad)])  # type: ignore[list-item]
    assert r.status_code == 422 and tree_size(client) == n


def test_an_upload_under_a_key_is_the_same_request_only_with_its_file_and_fields(
        api: Api) -> None:
    """D137: an upload is identified under its key by its file's hashes, size and media type
    and its form fields as sent (as a JSON body is by its bytes). The same work sent as JSON,
    or uploaded with one field otherwise, is another request (422), nothing written."""
    client, reg = api
    path, auth, body = _upload(client, reg)
    h = {**auth, "Idempotency-Key": "upload-fields"}
    first = _post(client, path, body, h)
    assert first.status_code == 201, first.text
    n = tree_size(client)
    same = _post(client, path, dict(body), h)
    assert (same.status_code, same.json()) == (201, first.json())
    assert same.headers["idempotent-replayed"] == "true"
    as_json = client.post(path, headers=h, json={
        "sha256": sha(body["file"]), "title": "Up", "creators": ["Ada", "Bo"],
        "work_type": "text", "size": len(body["file"]), "media_type": "text/plain",
        "metadata": {"b": 1, "a": [2]}, "again": True})
    others = [as_json] + [_post(client, p, {**body, **change}, h) for p, change in [
        (path, {"title": "Down"}), (path, {"again": "false"}), (path, {"creators": ["Ada"]}),
        (path, {"creators": ["Bo", "Ada"]}), (path, {"metadata": '{"a": [2], "b": 1}'}),
        (path, {"license": "CC0-1.0"}), (f"{path}?again=true", {})]]
    for other in others:
        assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"], \
            other.text
    assert tree_size(client) == n


@pytest.mark.parametrize("metadata", ['{"a": NaN}', '{"a": 1e999}', f'{{"a": {2**70}}}'])
def test_an_upload_whose_metadata_breaks_the_entry_rules_is_refused_with_or_without_a_key(
        api: Api, metadata: str) -> None:
    """An upload is validated as the entry it would make, key or no key: numbers JSON cannot
    carry exactly are 422 naming the metadata, never a 500, and the key is free again for the
    corrected upload. Under a key first used by the same upload with `null`, it is another
    request (422 naming the key), never that request's replay."""
    client, reg = api
    path, auth, body = _upload(client, reg)
    h = {**auth, "Idempotency-Key": "upload-numbers"}
    assert _post(client, path, {**body, "metadata": '{"a": null}'}, h).status_code == 201
    n = tree_size(client)
    fresh = {**auth, "Idempotency-Key": "upload-numbers-2"}
    for headers in (auth, fresh):
        r = _post(client, path, {**body, "metadata": metadata}, headers)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"].startswith("metadata"), r.text
    r = _post(client, path, {**body, "metadata": metadata}, h)
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"], r.text
    assert "idempotent-replayed" not in r.headers
    assert tree_size(client) == n
    fixed = _post(client, path, {**body, "metadata": '{"a": 1}'}, fresh)
    assert fixed.status_code == 201 and "idempotent-replayed" not in fixed.headers


def test_a_retried_upload_is_answered_before_it_is_fingerprinted_again(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """D140: under a key, an upload is identified by its hashes, size and media type, and a
    retry whose first send's answer is kept gets it before its file is fingerprinted again (a
    video's decode is the costly part). Bytes that are not the image they are declared to be
    are still refused (D21) before the key is claimed; another file under a used key is still
    refused for the key."""
    from copyledger.service import operations
    from tests.test_claims import png

    client, reg = api
    auth = bearer(reg, "alice")
    fingerprinted: list[str] = []
    real = operations._fingerprinted

    def counting(file: Any, facts: Any, query: bool = False) -> Any:
        fingerprinted.append(facts.sha256)
        return real(file, facts, query)

    monkeypatch.setattr(operations, "_fingerprinted", counting)
    closed: list[object] = []  # each upload's spooled file is closed once, whoever answers
    real_close = operations.Upload.close
    monkeypatch.setattr(operations.Upload, "close",
                        lambda self: (closed.append(self), real_close(self))[1])
    claimed: list[str] = []
    real_claim = reg.idempotency.claim
    monkeypatch.setattr(reg.idempotency, "claim", lambda account, key, digest: (
        claimed.append(key), real_claim(account, key, digest))[1])
    photo = png(7)  # a JPEG

    def upload(key: str, data: bytes) -> Any:
        return client.post("/v1/works", files={"file": ("p.jpg", data, "image/jpeg")},
                           data={"title": "Photo", "creators": "Ada", "work_type": "image",
                                 "again": "true"}, headers={**auth, "Idempotency-Key": key})

    first = upload("photo", photo)
    assert first.status_code == 201, first.text
    assert fingerprinted == [sha(photo)]
    # The first send's were computed and logged.
    assert set(first.json()["entry"]["content"]["fingerprints"]) == {"pdq", "phash", "orb"}
    n = tree_size(client)
    for _ in range(2):
        retry = upload("photo", photo)
        assert (retry.status_code, retry.json()) == (201, first.json())
        assert retry.headers["idempotent-replayed"] == "true"
    assert fingerprinted == [sha(photo)] and tree_size(client) == n
    bad = upload("not-a-photo", b"these bytes are no JPEG")
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"] == [{"field": "file", "message": "not a supported image "
                                     "(JPEG, PNG, GIF, WEBP, BMP, TIFF)"}]
    assert "not-a-photo" not in claimed  # refused before the key was claimed
    assert upload("not-a-photo", photo).status_code == 201
    other = upload("photo", png(8))  # another request under the key: refused by the claim
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"], other.text
    assert tree_size(client) == n + 1
    assert len(closed) == len(set(closed)) == 6


def test_a_malformed_key_on_an_upload_is_refused(api: Api) -> None:
    client, reg = api
    path, auth, body = _upload(client, reg)
    n = tree_size(client)
    r = _post(client, path, body, {**auth, "Idempotency-Key": "tab\there"})
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"]
    assert tree_size(client) == n


def test_batch_items_with_keys(api: Api) -> None:
    client, reg = api
    alice = bearer(reg, "alice")
    items = [{**work_body(i, again=True), "idempotency_key": f"item-{i}"} for i in range(3)]
    first = client.post("/v1/works/batch", json={"works": items}, headers=alice).json()
    n = tree_size(client)
    retry = client.post("/v1/works/batch", json={"works": [*items, work_body(9)]},
                        headers=alice).json()
    assert tree_size(client) == n + 1  # only the new, unkeyed item
    for a, b in zip(first["results"], retry["results"], strict=False):
        assert b["replayed"] is True and b["registration"] == a["registration"]
    assert retry["results"][3]["status"] == 201 and "replayed" not in retry["results"][3]
    # A kept item key with another item, or a key twice in one batch: that item refused.
    changed = {**items[0], "title": "Other"}
    r = client.post("/v1/works/batch", json={"works": [changed, items[1], items[1]]},
                    headers=alice).json()
    assert [x["status"] for x in r["results"]] == [422, 201, 422]
    assert r["results"][1]["replayed"] is True
    assert "repeated" in r["results"][2]["problem"]["detail"]
    assert tree_size(client) == n + 1


def test_a_resent_batch_waits_once_for_keys_in_flight_and_never_takes_them_over(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """D131: a process died after sealing a batch (`again`, so nothing dedupes it), its keys
    still claimed; the batch is resent at once. Every item waits on one deadline for the
    whole batch: before, each waited WAIT_S in turn, the later ones reached the claims after
    they aged out (D69), took them over and wrote their items a second time."""
    from copyledger.service import idempotency
    from copyledger.service.idempotency import ABANDONED_S, IN_FLIGHT, request_hash

    client, reg = api
    alice = bearer(reg, "alice")
    items = [work_body(100 + i, again=True) for i in range(6)]
    sealed = client.post("/v1/works/batch?again=true", json={"works": items}, headers=alice)
    assert sealed.status_code == 200
    n = tree_size(client)
    dies_in = 15  # the dead process's claims are taken over 14-15 s from now
    with reg.store.engine.begin() as conn:
        conn.execute(idempotency_keys.insert(), [
            {"account": "alice", "key": f"dead-{i}", "status": IN_FLIGHT, "answer": "",
             "created": int(time.time()) - ABANDONED_S + dies_in,
             "request_sha256": request_hash(b"/v1/works/batch", b"again=true",
                                            orjson.dumps(item, option=orjson.OPT_SORT_KEYS))}
            for i, item in enumerate(items)])
    monkeypatch.setattr(idempotency, "WAIT_S", 3.0)  # six items x 3 s would pass `dies_in`
    resent = client.post("/v1/works/batch?again=true", headers=alice, json={
        "works": [{**item, "idempotency_key": f"dead-{i}"} for i, item in enumerate(items)]})
    got = resent.json()["results"]
    assert [r["status"] for r in got] == [409] * len(items), got
    assert all(r["problem"]["retry_after"] == 1 for r in got)
    assert tree_size(client) == n  # nothing written a second time


def test_retries_queued_in_one_process_wait_from_their_arrival(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """D131: three retries of one write arrive together while a dead process's claim on the
    key is still fresh. They take turns on the key; each waits WAIT_S from its arrival, not
    from its turn: before, the third started its wait after the first two's and took the
    claim over once it aged out, writing the entry a second time."""
    from concurrent.futures import ThreadPoolExecutor

    from copyledger.service import idempotency
    from copyledger.service.idempotency import ABANDONED_S, IN_FLIGHT, request_hash

    client, reg = api
    raw = orjson.dumps(work_body("queued retries"))
    h = {**bearer(reg, "alice"), "Idempotency-Key": "queued", "Content-Type": "application/json"}
    with reg.store.engine.begin() as conn:
        conn.execute(idempotency_keys.insert().values(
            account="alice", key="queued", request_sha256=request_hash(b"/v1/works", b"", raw),
            status=IN_FLIGHT, answer="", created=int(time.time()) - ABANDONED_S + 10))
    n = tree_size(client)
    # Three turns of 4 s pass the 9-10 s before the claim is abandoned; one leaves 5 s to spare.
    monkeypatch.setattr(idempotency, "WAIT_S", 4.0)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/works", content=raw, headers=h),
                                range(3)))
    assert [a.status_code for a in answers] == [409] * 3, [a.text for a in answers]
    assert tree_size(client) == n


def test_migration_0007_adds_the_table_to_a_0006_log(tmp_path: Path, database_url: str) -> None:
    from copyledger.service.idempotency import Answer, Keys

    reg = open_registry(tmp_path, database_url)
    downgrade(reg.store.engine, "0011")  # revision 0012's hex keys back
    idempotency_keys.drop(reg.store.engine)
    accounts.drop(reg.store.engine)  # revision 0008's
    reg.store.execute_raw(f"DROP INDEX {ENTRIES_FINGERPRINTED}")  # revision 0009's
    sequencer_address.drop(reg.store.engine)  # revision 0010's
    handoff_secret.drop(reg.store.engine)  # revision 0011's
    reg.store.execute_raw("UPDATE alembic_version SET version_num = '0006'")
    reg.store.close()
    s = Store.open(database_url or reg.settings.database_url)
    try:
        keys = Keys(s, 60)
        claim = keys.claim("alice", "k", "ab" * 32)
        assert isinstance(claim, Claim)
        keys.keep(claim, Answer(201, b"{}"))
        keys.stop()
        assert Keys(s, 60).claim("alice", "k", "ab" * 32) == Answer(201, b"{}")
    finally:
        s.close()


def test_a_key_is_claimed_once_in_the_database(api: Api) -> None:
    """What makes a key hold across processes (D59): its row, inserted before the write, under
    the table's primary key. `other` is another process's view of the same database."""
    from copyledger.service.idempotency import ABANDONED_S, Answer, InFlight, Keys

    _, reg = api
    mine, other = Keys(reg.store, 60), Keys(reg.store, 60)
    c1 = _claimed(mine, "c1")
    with pytest.raises(InFlight):
        other.claim("alice", "c1", "ab" * 32)  # the same request, still running
    with pytest.raises(InvalidInput, match="different request"):
        other.claim("alice", "c1", "cd" * 32)
    other.release(_claimed(other, "c1", account="bob"))  # keys are per account
    mine.keep(c1, Answer(201, b'{"seq":7}'))
    assert other.claim("alice", "c1", "ab" * 32) == Answer(201, b'{"seq":7}')
    # A refused request gives its claim back, and a retry may run.
    mine.release(_claimed(mine, "c2"))
    c2 = _claimed(other, "c2")
    # A claim left by a process that died mid-request is taken over once it is abandoned.
    # (`other` stops refreshing it first, as a dead process would: a heartbeat landing between
    # the back-dating and the claim below would otherwise make it current again.)
    other.abandon(c2)
    with reg.store.engine.begin() as conn:
        conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == "c2").values(
            created=int(time.time()) - ABANDONED_S - 1))
    _claimed(mine, "c2")
    for keys in (mine, other):  # no heartbeat left refreshing claims after the test
        keys.stop()


def test_a_dead_claim_keeps_its_key_from_another_body_for_the_keys_lifetime(api: Api) -> None:
    """A claim whose process died (unrefreshed for a minute) with nothing recorded yet: its
    request may still be queued at the sequencer and be sealed, so another body under the key
    is refused (422) for the key's lifetime, by the claim and after a sweep alike, never
    claimed and written beside it (D161); the same request takes it over (the sequencer's
    check answers it with the first's entry if that is sealed, D134); past the lifetime the
    key is free."""
    _, reg = api
    dead, other = Keys(reg.store, 3600), Keys(reg.store, 3600)
    first = _claimed(dead, "dk", "ab" * 32)
    dead.abandon(first)  # (no longer refreshed, as a dead process's)
    _made_old(reg, "dk")
    for _ in range(2):
        other._swept = 0.0  # (each claim sweeps first)
        with pytest.raises(InvalidInput, match="different request"):
            other.claim("alice", "dk", "cd" * 32)
    assert _row(reg, "dk").request_sha256 == "ab" * 32
    other.abandon(_claimed(other, "dk", "ab" * 32))  # the same request: taken over (and
    with reg.store.engine.begin() as conn:  # left in flight), then past the key's lifetime
        conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == "dk")
                     .values(created=int(time.time()) - 3601))
    assert (_row(reg, "dk").status, _row(reg, "dk").request_sha256) == (IN_FLIGHT, "ab" * 32)
    other.release(_claimed(other, "dk", "cd" * 32))  # free for another body
    for keys in (dead, other):
        keys.stop()


def test_a_sweep_never_deletes_a_live_claim_whatever_the_keys_lifetime(api: Api) -> None:
    """Keys given a lifetime shorter than a claim takes to be abandoned: a sweep deletes a
    claim only once it is both, so a claim still refreshed by its process (its request
    running) is not deleted under it, letting a retry run the write beside it."""
    _, reg = api
    mine, other = Keys(reg.store, 5), Keys(reg.store, 5)
    held = _claimed(mine, "short")
    with reg.store.engine.begin() as conn:  # (older than the lifetime, refreshed a while ago)
        conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == "short")
                     .values(created=int(time.time()) - 30))
    other._swept = 0.0
    with pytest.raises(InFlight):
        other.claim("alice", "short", "ab" * 32)
    assert _row(reg, "short") is not None
    mine.release(held)
    for keys in (mine, other):
        keys.stop()


def test_a_heartbeat_that_could_not_start_is_started_by_the_next_claim(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat thread that fails to start (no thread to be had) does not leave the keys
    believing one runs: the next claim starts it, so claims are refreshed again."""
    from copyledger.service import idempotency

    _, reg = api
    keys = Keys(reg.store, 60, heartbeat_s=0.01)
    real = threading.Thread
    fails = [1]

    class Once(real):  # type: ignore[misc,valid-type]
        def start(self) -> None:
            if fails[0]:
                fails[0] -= 1
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(idempotency.threading, "Thread", Once)
    with pytest.raises(RuntimeError):
        keys.claim("alice", "hb1", "ab" * 32)
    held = _claimed(keys, "hb2")
    _made_old(reg, "hb2")
    wait_for(lambda: _row(reg, "hb2").created > time.time() - 30, "the heartbeat refreshes",
             10.0)
    keys.release(held)
    keys.stop()


def test_a_retry_waits_for_the_key_claimed_by_another_process(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process is still running the first request (its claim is in the database): a
    retry here writes nothing; it waits and answers what that process kept, or, past the wait,
    is told 409 to retry."""
    from copyledger.service import idempotency
    from copyledger.service.idempotency import Answer, Keys, request_hash

    client, reg = api
    raw = orjson.dumps(work_body("elsewhere"))
    h = {**bearer(reg, "alice"), "Idempotency-Key": "k4", "Content-Type": "application/json"}
    digest = request_hash(b"/v1/works", b"", raw)
    other = Keys(reg.store, 60)
    held = _claimed(other, "k4", digest)
    n = tree_size(client)
    monkeypatch.setattr(idempotency, "WAIT_S", 0.2)
    busy = client.post("/v1/works", content=raw, headers=h)
    assert busy.status_code == 409 and "in progress" in busy.json()["detail"]
    assert busy.headers["retry-after"] == "1" and busy.json()["retry_after"] == 1  # D131
    assert tree_size(client) == n
    monkeypatch.setattr(idempotency, "WAIT_S", 60.0)
    kept = Answer(201, b'{"seq":1234}')
    timer = threading.Timer(0.3, other.keep, (held, kept))
    timer.start()
    try:
        retry = client.post("/v1/works", content=raw, headers=h)
    finally:
        timer.join()
    assert (retry.status_code, retry.content) == (201, kept.body)
    assert retry.headers["idempotent-replayed"] == "true"
    assert tree_size(client) == n


def _receipts_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next block is committed but its receipts cannot be built: the writers are told
    their entry WAS recorded without a receipt (an Uncertain outcome)."""
    from copyledger.ledger import merkle

    def fail(*_: object, **__: object) -> None:
        raise MemoryError("out of memory")

    monkeypatch.setattr(merkle, "appended_proofs", fail)


def test_a_write_of_unknown_fate_keeps_its_answer(api: Api,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Freeing the key after 'the entry WAS recorded, but…' would let the retry record the
    evidence a second time; the key keeps that answer instead. Its block recorded the entry
    under the claim (D132), so the retry is answered with the entry itself (before, the 503
    again)."""
    client, reg = api
    path, headers, body = _evidence(client, reg)
    h = {**headers, "Idempotency-Key": "fate"}
    n = tree_size(client)
    _receipts_fail(monkeypatch)
    first = _post(client, path, body, h)
    monkeypatch.undo()
    assert first.status_code == 503 and "WAS recorded" in first.json()["detail"]
    assert tree_size(client) == n + 1
    assert _row(reg, "fate").status == 503
    retry = _post(client, path, body, h)
    assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["seq"] == n and retry.json()["entry"]["kind"] == "evidence"
    assert _post(client, path, body, h).json() == retry.json()  # kept now
    assert tree_size(client) == n + 1  # recorded once


@pytest.mark.parametrize("how", ["receipts failed", "commit's answer lost"])
def test_after_a_block_committed_after_all_the_log_goes_on(
        api: Api, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A block committed though its writers were told otherwise or not told (its receipts
    failed; the connection dropped after COMMIT) reaches the notary's memory when the state is
    read back, so the next block's checkpoint extends it and is signed (D107; before, the
    notary refused every next block until a restart)."""
    client, reg = api
    path, headers, body = _evidence(client, reg)
    n = tree_size(client)
    if how == "receipts failed":
        _receipts_fail(monkeypatch)
    else:
        real = reg.store.append_block

        def committed_then_lost(*a: Any, **k: Any) -> None:
            real(*a, **k)
            raise OSError("server closed the connection unexpectedly")

        monkeypatch.setattr(reg.store, "append_block", committed_then_lost)
    first = client.post(path, json=body, headers=headers)
    monkeypatch.undo()
    assert first.status_code == 503
    wait_for(lambda: tree_size(client) == n + 1, "the block read back")
    again = client.post(path, json={**body, "description": "again"}, headers=headers)
    assert again.status_code == 201, again.text
    assert again.json()["seq"] == n + 1 and tree_size(client) == n + 2


def test_a_batch_item_of_unknown_fate_keeps_its_answer(api: Api,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    client, reg = api
    alice = bearer(reg, "alice")
    items = [{**work_body(f"fate-{i}", again=True), "idempotency_key": f"fate-{i}"}
             for i in range(2)]
    n = tree_size(client)
    _receipts_fail(monkeypatch)
    first = client.post("/v1/works/batch", json={"works": items}, headers=alice).json()
    monkeypatch.undo()
    assert [r["status"] for r in first["results"]] == [503, 503]
    assert tree_size(client) == n + 2
    retry = client.post("/v1/works/batch", json={"works": items}, headers=alice).json()
    assert [(r["status"], r["replayed"]) for r in retry["results"]] == [(201, True)] * 2
    assert [r["registration"]["seq"] for r in retry["results"]] == [n, n + 1]
    again = client.post("/v1/works/batch", json={"works": items}, headers=alice).json()
    assert again["results"] == retry["results"]  # kept now
    assert tree_size(client) == n + 2  # nothing written twice


def test_the_key_database_calls_leave_the_event_loop_free(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyed write whose claim waits on a slow database does not stop the process serving
    others meanwhile: the claim runs on a worker thread, not the event loop (D69)."""
    client, reg = api
    h = {**bearer(reg, "alice"), "Idempotency-Key": "slow-db"}
    entered, released = threading.Event(), threading.Event()
    order: list[object] = []
    real = reg.idempotency.claim

    def slow_claim(*args: str) -> object:
        entered.set()
        released.wait(30)  # the database is slow (long enough to see, bounded for a bug)
        order.append("claimed")
        return real(*args)

    monkeypatch.setattr(reg.idempotency, "claim", slow_claim)
    writer = threading.Thread(target=lambda: order.append(
        client.post("/v1/works", json=work_body("slow"), headers=h).status_code))
    writer.start()
    try:
        assert entered.wait(60)
        assert client.get("/v1/log").status_code == 200  # served while the claim waits
        order.append("read")
    finally:
        released.set()
        writer.join()
    assert order == ["read", "claimed", 201]


def _keep_fails(reg: Node, times: int) -> Callable[[], None]:
    """The database refuses the next `times` keeps of an answer (after the entry is durable);
    call what this returns to make it well again."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    failed = [0]

    def refuse(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("UPDATE idempotency_keys SET status") and failed[0] < times:
            failed[0] += 1
            raise OperationalError(statement, params, Exception("disk I/O error"))

    event.listen(reg.store.engine, "before_cursor_execute", refuse)
    return lambda: event.remove(reg.store.engine, "before_cursor_execute", refuse)


def _written(reg: Node, key: str) -> list[int]:
    """The entries the log's blocks say were written under `key` (D132)."""
    from sqlalchemy import select

    from copyledger.ledger.schema import idempotency_written

    with reg.store.engine.connect() as conn:
        return list(conn.execute(select(idempotency_written.c.seq)
                                 .where(idempotency_written.c.key == key)).scalars())


def _claimed(keys: Keys, key: str, digest: str = "ab" * 32, account: str = "alice") -> Claim:
    """The claim `keys` makes of `key` for the request `digest`, which must be free to take."""
    claim = keys.claim(account, key, digest)
    assert isinstance(claim, Claim), claim
    return claim


def _row(reg: Node, key: str) -> Any:
    from sqlalchemy import select

    with reg.store.engine.connect() as conn:
        return conn.execute(select(idempotency_keys).where(idempotency_keys.c.key == key)).first()


def test_a_failed_keep_still_answers_the_receipt(api: Api) -> None:
    """The entry is recorded when keeping its answer fails: the writer gets its receipt (not a
    500), and the answer is kept on the next heartbeat, so a retry replays it (D69)."""
    client, reg = api
    reg.idempotency.heartbeat_s = 0.05
    h = {**bearer(reg, "alice"), "Idempotency-Key": "keep-fails"}
    body = work_body("keep-fails", again=True)
    heal = _keep_fails(reg, 1)
    try:
        first = client.post("/v1/works", json=body, headers=h)
    finally:
        heal()
    assert first.status_code == 201, first.text
    n = tree_size(client)
    wait_for(lambda: _row(reg, "keep-fails").status == 201, "the heartbeat keeps the answer")
    retry = client.post("/v1/works", json=body, headers=h)
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert retry.headers["idempotent-replayed"] == "true" and tree_size(client) == n


def test_a_keep_that_keeps_failing_lets_the_claim_age_out(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """Not claimed for ever: once the keep is given up, the claim is no longer refreshed, so
    it is taken over as a dead owner's would be, and the retry is answered with the entry its
    block recorded (D132; before, D36's "already registered") rather than writing it again."""
    client, reg = api
    reg.idempotency.heartbeat_s = 0.01
    h = {**bearer(reg, "alice"), "Idempotency-Key": "keep-gives-up"}
    heal = _keep_fails(reg, 10**6)
    try:
        first = client.post("/v1/works", json=work_body("gives-up"), headers=h)
        assert first.status_code == 201, first.text
        wait_for(lambda: "could not be kept" in caplog.text, "the keep is given up")
    finally:
        heal()
    _ages_out_and_is_answered_from_its_entry(client, reg, "keep-gives-up", work_body("gives-up"),
                                             first)


def _keep_breaks(reg: Node, monkeypatch: pytest.MonkeyPatch, key: str | None = None
                 ) -> list[int]:
    """Keeping an answer (under `key`, or any) fails with a fault that is not the database's
    (a bug); returns the count of such failures, in a list."""
    broke = [0]
    put = reg.idempotency._put

    def broken(request: Any, answer: Answer, over: Any, **also: int | str) -> None:
        if key is None or request[1] == key:
            broke[0] += 1
            raise RuntimeError("a fault in the code, not the database")
        put(request, answer, over, **also)

    monkeypatch.setattr(reg.idempotency, "_put", broken)
    return broke


def _made_old(reg: Node, key: str) -> int:
    """Make the claim under `key` a minute old, as if its process had died; its new time."""
    from copyledger.service import idempotency

    old = int(time.time()) - idempotency.ABANDONED_S - 1
    with reg.store.engine.begin() as conn:
        conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == key)
                     .values(created=old))
    return old


def _unrefreshed(reg: Node, key: str) -> None:
    """The claim under `key`, made a minute old (as if its process had died), stays so over
    twenty heartbeats: no process holds it any more. A beat that took its list of claims just
    before this one was let go may still refresh it once, late (seen under load in CI's two
    passes at once); a claim still held is refreshed at every try, so three are given."""
    for _ in range(3):
        old = _made_old(reg, key)
        time.sleep(0.2)
        if _row(reg, key).created == old:
            return
    pytest.fail(f"the claim {key!r} is still refreshed: some process holds it")


def _ages_out_and_is_answered_from_its_entry(client: TestClient, reg: Node, key: str,
                                             body: dict[str, Any], first: Any) -> None:
    """The claim under `key` is no longer refreshed: made a minute old, it stays so, and a
    retry takes it over and is answered with the entry its block recorded (D132)."""
    n = tree_size(client)
    _unrefreshed(reg, key)
    retry = client.post("/v1/works", json=body, headers={**bearer(reg, "alice"),
                                                           "Idempotency-Key": key})
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert tree_size(client) == n


def test_a_keep_broken_by_a_fault_not_the_databases_answers_and_lets_the_claim_go(
        api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A keep that fails for a reason other than the database (a bug) is not retried (it
    would fail again) and does not keep its claim: the writer still gets its receipt, not a
    500, and the claim ages out instead of being refreshed for as long as the process lives,
    every retry told 409."""
    client, reg = api
    reg.idempotency.heartbeat_s = 0.01
    broke = _keep_breaks(reg, monkeypatch)
    body = work_body("keep-breaks")
    first = client.post("/v1/works", json=body,
                        headers={**bearer(reg, "alice"), "Idempotency-Key": "keep-breaks"})
    assert first.status_code == 201, first.text
    assert broke == [1] and "could not be kept" in caplog.text
    assert _row(reg, "keep-breaks").status == 0  # still in flight, not kept
    monkeypatch.undo()
    _ages_out_and_is_answered_from_its_entry(client, reg, "keep-breaks", body, first)


def test_a_keep_the_heartbeat_retries_broken_by_a_fault_lets_the_claim_go(
        api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The database refuses each of two writes' first keep; the heartbeat's retry of the first
    then fails with a fault of another kind: that claim is let go at once (not tried each beat
    for `_KEEP_TRIES` beats), and the heartbeat goes on to keep the second's answer."""
    from sqlalchemy.exc import OperationalError

    client, reg = api
    reg.idempotency.heartbeat_s = 0.05
    alice = bearer(reg, "alice")
    bodies = {"breaks-first": work_body("breaks-first"), "kept-second": work_body("kept-second")}
    calls = {k: 0 for k in bodies}
    put = reg.idempotency._put

    def failing(request: Any, answer: Answer, over: Any, **also: int | str) -> None:
        calls[request[1]] += 1
        if calls[request[1]] == 1:
            raise OperationalError("UPDATE idempotency_keys", {}, Exception("disk I/O error"))
        if request[1] == "breaks-first":
            raise RuntimeError("a fault in the code, not the database")
        put(request, answer, over, **also)

    monkeypatch.setattr(reg.idempotency, "_put", failing)
    firsts = {k: client.post("/v1/works", json=b, headers={**alice, "Idempotency-Key": k})
              for k, b in bodies.items()}
    assert [r.status_code for r in firsts.values()] == [201, 201]
    wait_for(lambda: _row(reg, "kept-second").status == 201, "the heartbeat keeps the second")
    wait_for(lambda: "could not be kept" in caplog.text, "the first is given up")
    time.sleep(0.3)  # six more beats
    assert calls == {"breaks-first": 2, "kept-second": 2}, calls
    assert _row(reg, "breaks-first").status == 0
    monkeypatch.undo()
    _ages_out_and_is_answered_from_its_entry(client, reg, "breaks-first",
                                             bodies["breaks-first"], firsts["breaks-first"])


def test_a_release_broken_by_a_fault_still_answers_the_refusal(
        api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A refused request's claim is deleted; if that fails for a reason other than the
    database, the writer is still told why it was refused (not a 500), and the claim, no
    longer refreshed, ages out."""
    from copyledger.service import idempotency

    client, reg = api
    reg.idempotency.heartbeat_s = 0.01
    alice = bearer(reg, "alice")
    # (keyed: its claim runs the once-a-minute sweep of old keys, not due again below)
    assert client.post("/v1/works", json=work_body("mine"),
                       headers={**alice, "Idempotency-Key": "first"}).status_code == 201
    bearer(reg, "bob")

    def broken(*_: Any) -> Any:
        raise RuntimeError("a fault in the code, not the database")

    monkeypatch.setattr(idempotency, "delete", broken)
    refused = client.post("/v1/transfers", json={"work_seq": 999, "to": "bob",
                                                 "transfer_type": "non_exclusive_licence"},
                          headers={**alice, "Idempotency-Key": "refused"})
    monkeypatch.undo()
    assert refused.status_code == 422 and "no entry with seq 999" in refused.text, refused.text
    assert "releasing an idempotency key failed" in caplog.text
    _unrefreshed(reg, "refused")


def _deposit_kept_as_503(api: Api, key: str, monkeypatch: pytest.MonkeyPatch
                         ) -> tuple[str, dict[str, Any], dict[str, str], Any]:
    """An evidence deposit under `key` whose block failed unrecorded, its 503 kept: the
    request's path, body and headers, and the kept row."""
    client, reg = api
    path, headers, body = _evidence(client, reg)
    h = {**headers, "Idempotency-Key": key}
    with monkeypatch.context() as m:
        _block_fails(m, reg)
        assert _post(client, path, body, h).status_code == 503
    kept = _row(reg, key)
    assert kept.status == 503
    return path, body, h, kept


def _answer_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making a write's answer ready to keep fails with a fault of the code's."""
    from copyledger.api import deps

    class Broken(Answer):  # still a type, for the checks `once` makes with it
        def __new__(cls, *_: Any) -> Broken:
            raise RuntimeError("a fault in the code, not the database")

    monkeypatch.setattr(deps, "Answer", Broken)


def _problem_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making any refusal's problem document fails with a fault of the code's."""
    from copyledger.api import batch, problems

    def broken(*_: Any) -> dict[str, Any]:
        raise RuntimeError("a fault in the code, not the database")

    monkeypatch.setattr(problems, "body_of", broken)
    monkeypatch.setattr(batch, "_refused", broken)


def _answered_from_its_entry_once_aged(client: TestClient, reg: Node, key: str, path: str,
                                       body: dict[str, Any], headers: dict[str, str]) -> None:
    """The claim under `key`, whose request's entry was recorded but never answered, is
    still in flight and no longer refreshed; once aged out, the retry is answered with that
    entry (D132) and writes nothing."""
    [seq] = _written(reg, key)
    assert _row(reg, key).status == 0
    n = tree_size(client)
    _unrefreshed(reg, key)
    retry = _post(client, path, body, {**headers, "Idempotency-Key": key})
    assert retry.status_code == 201 and retry.json()["seq"] == seq, retry.text
    assert retry.headers["idempotent-replayed"] == "true" and tree_size(client) == n


def test_a_write_whose_answer_breaks_before_its_keep_lets_its_claim_go(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault while a recorded write's answer is made ready to keep: the request fails
    (500), but its claim is released (its row stays, since its entry was recorded), not held
    and refreshed for the process's life; once aged out, the retry gets the entry (D147)."""
    client, reg = api
    reg.idempotency.heartbeat_s = 0.01
    path, headers, body = _work(client, reg)
    with monkeypatch.context() as m:
        _answer_breaks(m)
        first = _post(client, path, body, {**headers, "Idempotency-Key": "success-breaks"})
    assert first.status_code == 500, first.text
    _answered_from_its_entry_once_aged(client, reg, "success-breaks", path, body, headers)


def test_an_earlier_registration_whose_answer_breaks_frees_its_key(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200 (`already_registered`) recorded nothing: when its answer breaks (500), its claim
    is released and its row deleted, so the retry runs at once and is answered 200 again,
    writing nothing (D147)."""
    client, reg = api
    path, headers, body = _work(client, reg)
    assert _post(client, path, body, headers).status_code == 201
    n = tree_size(client)
    with monkeypatch.context() as m:
        _answer_breaks(m)
        first = _post(client, path, body, {**headers, "Idempotency-Key": "200-breaks"})
    assert first.status_code == 500, first.text
    assert _row(reg, "200-breaks") is None and not reg.idempotency._held
    retry = _post(client, path, body, {**headers, "Idempotency-Key": "200-breaks"})
    assert retry.status_code == 200 and retry.json()["already_registered"], retry.text
    assert tree_size(client) == n
    # Replayed, the 200 names the earlier entry as its first send did (D189).
    again = _post(client, path, body, {**headers, "Idempotency-Key": "200-breaks"})
    assert again.headers["Idempotent-Replayed"] == "true", again.headers
    assert again.status_code == 200 and again.content == retry.content
    assert again.headers["Content-Location"] == retry.headers["Content-Location"] == \
        f"/v1/entries/{retry.json()['seq']}"


def test_a_kept_503_taken_over_by_a_write_whose_answer_breaks_is_put_back(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry that took over a kept 503 records its entry, then its answer breaks (500): the
    503 is put back as it was (D135), and the next retry is answered with the recorded entry
    at once, writing nothing (D132, D147)."""
    client, reg = api
    path, body, h, kept = _deposit_kept_as_503(api, "503-then-breaks", monkeypatch)
    n = tree_size(client)
    with monkeypatch.context() as m:
        _answer_breaks(m)
        with pytest.raises(RuntimeError, match="not the database"):  # (the test client
            _post(client, path, body, h)  # re-raises the 500's fault)
    assert tree_size(client) == n + 1 and _written(reg, "503-then-breaks") == [n]
    again = _row(reg, "503-then-breaks")
    assert (again.status, again.answer, again.created) == (503, kept.answer, kept.created)
    retry = _post(client, path, body, h)
    assert retry.status_code == 201 and retry.json()["seq"] == n, retry.text
    assert retry.headers["idempotent-replayed"] == "true" and tree_size(client) == n + 1


def test_a_write_of_unknown_fate_whose_problem_breaks_lets_its_claim_go(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault while the problem of a write of unknown fate is made ready to keep: the claim
    is let go (not released: the write may still be sealed), so it ages out and the retry is
    answered with the entry its block recorded (D147)."""
    client, reg = api
    reg.idempotency.heartbeat_s = 0.01
    path, headers, body = _evidence(client, reg)
    _receipts_fail(monkeypatch)
    _problem_breaks(monkeypatch)
    with pytest.raises(RuntimeError, match="not the database"):  # (the test client re-raises
        _post(client, path, body, {**headers, "Idempotency-Key": "problem-breaks"})  # the 500's)
    monkeypatch.undo()
    _answered_from_its_entry_once_aged(client, reg, "problem-breaks", path, body, headers)


def test_an_unrecorded_write_of_unknown_fate_whose_problem_breaks_is_not_released(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its block failed (nothing recorded), but the write's fate is unknown to the writer:
    had it been released, its row would be deleted and a retry could run while the first
    might still be sealed. Its row stays in flight, unrefreshed; once aged out, the retry
    runs it again (D135, D147)."""
    client, reg = api
    reg.idempotency.heartbeat_s = 0.01
    path, headers, body = _evidence(client, reg)
    h = {**headers, "Idempotency-Key": "unsure-breaks"}
    n = tree_size(client)
    _block_fails(monkeypatch, reg)
    _problem_breaks(monkeypatch)
    with pytest.raises(RuntimeError, match="not the database"):
        _post(client, path, body, h)
    monkeypatch.undo()
    assert _row(reg, "unsure-breaks").status == 0 and _written(reg, "unsure-breaks") == []
    _unrefreshed(reg, "unsure-breaks")
    retry = _post(client, path, body, h)
    assert retry.status_code == 201 and retry.json()["seq"] == n, retry.text
    assert tree_size(client) == n + 1


def test_a_kept_503_taken_over_whose_problem_breaks_is_put_back(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry that took over a kept 503 meets an unknown fate again and its problem breaks:
    the 503 is put back as it was (D135), not left to age out in a minute, after which a
    request with another body could take the key (D147)."""
    client, reg = api
    path, body, h, kept = _deposit_kept_as_503(api, "503-breaks", monkeypatch)
    _block_fails(monkeypatch, reg)
    _problem_breaks(monkeypatch)
    with pytest.raises(RuntimeError, match="not the database"):
        _post(client, path, body, h)
    monkeypatch.undo()
    again = _row(reg, "503-breaks")
    assert (again.status, again.answer, again.created) == (503, kept.answer, kept.created)


def _cancelled_midway(write: Callable[[Callable[..., Awaitable[Any]]], Awaitable[Any]]
                      ) -> None:
    """`write(run)` started, cancelled once `run` (what it writes with) is under way and
    never ends, as the server's stop cancels it; its task ends cancelled."""
    import asyncio

    async def main() -> None:
        started = asyncio.Event()

        async def run(*_: Any) -> Any:
            started.set()
            await asyncio.Event().wait()  # a write that never ends

        task = asyncio.ensure_future(write(run))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_kept_503_taken_over_by_a_write_the_stop_cancels_is_put_back(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry that took over a kept 503 is cancelled midway by the server's stop: the 503 is
    put back as it was (D135), so the next retry runs at once; before D150 the claim was left
    in flight, and every retry was told 409 until it aged out a minute later."""
    from copyledger.api import deps

    client, reg = api
    path, body, h, kept = _deposit_kept_as_503(api, "503-cancelled", monkeypatch)
    taken = reg.idempotency.claim(kept.account, kept.key, kept.request_sha256)
    assert isinstance(taken, Claim) and _row(reg, "503-cancelled").status == 0
    _cancelled_midway(lambda run: deps._settled(reg, taken, path.encode(), run))
    again = _row(reg, "503-cancelled")
    assert (again.status, again.answer, again.created) == (503, kept.answer, kept.created)
    assert not reg.idempotency._held
    n = tree_size(client)
    retry = _post(client, path, body, h)
    assert retry.status_code == 201 and retry.json()["seq"] == n, retry.text


def test_a_write_the_stop_cancels_leaves_its_claim_in_flight(api: Api) -> None:
    """A write on a free key cancelled midway by the server's stop may still be sealed: its
    claim is neither released (its row deleted, so a retry could run beside it) nor kept
    refreshed; it stays in flight to age out as a dead owner's (D69, D150)."""
    from copyledger.api import deps

    _, reg = api
    taken = reg.idempotency.claim("alice", "free-cancelled", "ab" * 32)
    assert isinstance(taken, Claim)
    _cancelled_midway(lambda run: deps._settled(reg, taken, b"/v1/works", run))
    assert _row(reg, "free-cancelled").status == 0 and not reg.idempotency._held


def test_a_cancelled_batchs_items_that_took_over_kept_503s_put_them_back(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch cancelled after its items were handed over (by the server's stop): an item
    whose claim took over a kept 503 puts it back (D150); one that claimed a free key stays
    in flight, unrefreshed, to age out as a dead owner's (its write may still be sealed)."""
    from copyledger.api import batch
    from copyledger.service.apikeys import Principal
    from copyledger.service.operations import WorkIn

    client, reg = api
    alice = bearer(reg, "alice")
    earlier = [{**work_body("was-503", again=True), "idempotency_key": "was-503"}]
    with monkeypatch.context() as m:
        _block_fails(m, reg)
        first = client.post("/v1/works/batch", json={"works": earlier}, headers=alice).json()
    assert [r["status"] for r in first["results"]] == [503]
    kept = _row(reg, "was-503")
    items = [*earlier, {**work_body("new-key", again=True), "idempotency_key": "new-key"}]
    _cancelled_midway(lambda run: batch.answer(
        reg, Principal("alice", "creator", 0), orjson.dumps({"works": items}), b"",
        "/v1/works/batch", "works", WorkIn, run))
    again = _row(reg, "was-503")
    assert (again.status, again.answer, again.created) == (503, kept.answer, kept.created)
    assert _row(reg, "new-key").status == 0 and not reg.idempotency._held


def test_a_batch_item_of_unknown_fate_whose_answer_breaks_is_not_released(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for a single write: the batch fails, and the item whose block failed keeps its
    claim's row, in flight and unrefreshed, instead of having it deleted (D147); so does it
    when the fault is an earlier item's (here a refusal's, which ends the batch first)."""
    client, reg = api
    reg.idempotency.heartbeat_s = 0.01
    items = [{**work_body("refused"), "sha256": "not a hash"},
             {**work_body("unsure-item", again=True), "idempotency_key": "unsure-item"}]
    _block_fails(monkeypatch, reg)
    _problem_breaks(monkeypatch)
    with pytest.raises(RuntimeError, match="not the database"):
        client.post("/v1/works/batch", json={"works": items}, headers=bearer(reg, "alice"))
    monkeypatch.undo()
    assert _row(reg, "unsure-item").status == 0 and _written(reg, "unsure-item") == []
    _unrefreshed(reg, "unsure-item")


def test_a_refresh_broken_by_a_fault_not_the_databases_does_not_stop_the_heartbeat(
        api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A fault of the code's in one beat's refresh is logged, and the next beat refreshes the
    claims again: before D147 it ended the heartbeat, so the claims this process still held
    aged out while their writes ran, and another process could take them over."""
    _, reg = api
    keys = reg.idempotency
    keys.heartbeat_s = 0.01
    refresh = keys._refresh
    broke = [0]

    def once_broken(claims: list[Claim]) -> None:
        if not broke[0]:
            broke[0] += 1
            raise RuntimeError("a fault in the code, not the database")
        refresh(claims)

    monkeypatch.setattr(keys, "_refresh", once_broken)
    claim = _claimed(keys, "held")
    try:
        wait_for(lambda: broke[0] == 1, "a beat's refresh breaks")
        old = _made_old(reg, "held")
        wait_for(lambda: _row(reg, "held").created > old, "a later beat refreshes the claim")
    finally:
        keys.release(claim)
    assert "refreshing idempotency claims failed" in caplog.text
    assert "a fault in the code, not the database" in caplog.text


def _dies_after_the_commit(reg: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each write's process "dies" once its block is committed: the answer is never kept and
    the claim no longer refreshed, what a SIGKILL between the commit and the keep leaves."""
    monkeypatch.setattr(reg.idempotency, "keep", lambda claim, _: reg.idempotency._let_go(claim))


def _abandoned(reg: Node) -> None:
    """Every claim made to look as a dead process leaves it a minute on (D69)."""
    from copyledger.service.idempotency import ABANDONED_S

    with reg.store.engine.begin() as conn:
        conn.execute(update(idempotency_keys).values(created=int(time.time()) - ABANDONED_S - 1))


def _first_dies(api: Api, write: str, key: str, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[str, dict[str, Any], dict[str, str], Any]:
    """One of WRITES sent under `key` by a process that "dies" once its block is committed:
    (path, body, headers, its answer)."""
    path, body, h, _, first = _sent_first(
        api, write, key, lambda m, reg: _dies_after_the_commit(reg, m), monkeypatch)
    assert first.status_code == 201, first.text
    return path, body, h, first


@pytest.mark.parametrize("write", WRITES)
def test_a_dead_owners_recorded_write_is_answered_with_its_entry(
        api: Api, write: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """D132: the process died between its block's commit and keeping the answer, and the
    retry came after its claim was abandoned. The block recorded the entry under the claim
    in its own transaction, so the retry is answered with that entry as the first request
    was (marked replayed) and nothing is written again. Before, the claim was taken over and
    the write run a second time: a second entry, or D36's 200 for a plain work."""
    from copyledger.service.idempotency import IN_FLIGHT

    client, reg = api
    path, body, h, first = _first_dies(api, write, f"dies-{write}", monkeypatch)
    n = tree_size(client)
    assert _row(reg, f"dies-{write}").status == IN_FLIGHT
    assert _written(reg, f"dies-{write}") == [first.json()["seq"]]
    _abandoned(reg)
    retry = _post(client, path, body, h)
    assert (retry.status_code, retry.json()) == (201, first.json()), retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert _row(reg, f"dies-{write}").status == 201  # kept: answered from the row from now on
    assert _post(client, path, body, h).json() == first.json()
    other = _post(client, path, _other(body), h)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert tree_size(client) == n


def _first_batch_dies(api: Api, name: str, again: list[bool], monkeypatch: pytest.MonkeyPatch
                      ) -> tuple[dict[str, str], list[dict[str, Any]], Any]:
    """Keyed batch items (`again` each), the first two sent by a process that "dies" once
    their block is committed: (alice's headers, every item, the first answer)."""
    client, reg = api
    alice = bearer(reg, "alice")
    items = [{**work_body(f"{name}-{i}", again=a), "idempotency_key": f"{name}-item-{i}"}
             for i, a in enumerate(again)]
    with monkeypatch.context() as m:
        _dies_after_the_commit(reg, m)
        first = client.post("/v1/works/batch", json={"works": items[:2]}, headers=alice).json()
    assert [r["status"] for r in first["results"]] == [201, 201]
    return alice, items, first


def test_a_dead_owners_recorded_batch_items_are_answered_with_their_entries(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    client, reg = api
    alice, items, first = _first_batch_dies(api, "dies", [True] * 3, monkeypatch)
    n = tree_size(client)
    _abandoned(reg)
    retry = client.post("/v1/works/batch", json={"works": items}, headers=alice).json()
    assert [(r["status"], r.get("replayed")) for r in retry["results"]] == [
        (201, True), (201, True), (201, None)]
    assert [r["registration"] for r in retry["results"][:2]] == [
        r["registration"] for r in first["results"]]
    assert retry["results"][2]["registration"]["seq"] == n and tree_size(client) == n + 1


@pytest.mark.parametrize("write", WRITES)
def test_a_retry_run_while_the_first_entry_was_still_queued_is_answered_with_it(
        api: Api, write: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """D134: the retry took over a dead process's claim while that process's entry was still
    queued, unsealed (so the claim's check found nothing recorded), and ran the write again.
    The sequencer finds the claim recorded when it seals the retry, answers it with the first
    entry and writes nothing; the retry gets the first answer. (The check finding nothing is
    made here by hiding the recorded row from it.) Before, a second entry, or D36's 200."""
    client, reg = api
    path, body, h, first = _first_dies(api, write, f"queued-{write}", monkeypatch)
    n = tree_size(client)
    contacts = _contacts(reg)
    _abandoned(reg)
    monkeypatch.setattr(reg.idempotency, "_written", lambda *_: None)
    retry = _post(client, path, body, h)
    assert (retry.status_code, retry.json()) == (201, first.json()), retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert tree_size(client) == n
    assert _written(reg, f"queued-{write}") == [first.json()["seq"]]
    assert _contacts(reg) == contacts  # a claim's retry keeps no contact details of its own
    again = _post(client, path, body, h)  # kept: answered from the row now
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"


def _block_fails(monkeypatch: pytest.MonkeyPatch, reg: Node) -> None:
    """The next block's database write fails before anything is committed: its writers are
    told the entry is most likely not recorded (an Uncertain outcome; nothing was)."""
    def fail(*_: object, **__: object) -> None:
        raise OSError("server closed the connection unexpectedly")

    monkeypatch.setattr(reg.store, "append_block", fail)


def _sent_first(api: Api, write: str, key: str,
                   fail: Callable[[pytest.MonkeyPatch, Node], None],
                   monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[str, dict[str, Any], dict[str, str], int, Any]:
    """One of WRITES sent under `key` while `fail` is in force: (path, body, headers, the
    tree's size before, its answer)."""
    client, reg = api
    path, auth, body = WRITES[write](client, reg)
    h = {**auth, "Idempotency-Key": key}
    n = tree_size(client)
    with monkeypatch.context() as m:
        fail(m, reg)
        first = _post(client, path, body, h)
    return path, body, h, n, first


@pytest.mark.parametrize("write", WRITES)
def test_a_kept_503_whose_request_was_not_recorded_is_run_again(
        api: Api, write: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """D135: a write of unknown fate keeps its 503; when nothing was recorded, its retry runs
    the write (201, not a replay), and the retry after that is answered from the kept success.
    Before, the 503 again for the key's whole lifetime (a day by default)."""
    client, reg = api
    key = f"unrecorded-{write}"
    path, body, h, n, first = _sent_first(api, write, key, _block_fails, monkeypatch)
    assert first.status_code == 503 and "most likely not" in first.json()["detail"], first.text
    assert _row(reg, key).status == 503 and _written(reg, key) == [] and tree_size(client) == n
    retry = _post(client, path, body, h)
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert retry.json()["seq"] == n and tree_size(client) == n + 1
    assert _written(reg, key) == [n]
    again = _post(client, path, body, h)
    assert (again.status_code, again.json()) == (201, retry.json())
    assert again.headers["idempotent-replayed"] == "true"
    other = _post(client, path, _other(body), h)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert tree_size(client) == n + 1


@pytest.mark.parametrize("write", WRITES)
def test_a_kept_503_retried_while_its_entry_was_queued_is_answered_with_it(
        api: Api, write: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """D135's race: the claim's check found no entry for the kept 503 because the first send
    was still queued (made here by hiding the recorded row from that check), so the retry ran
    the write again; the sequencer finds the claim recorded and answers the retry with the
    first entry (D134). Nothing is written twice."""
    client, reg = api
    key = f"fate-queued-{write}"
    path, body, h, n, first = _sent_first(
        api, write, key, lambda m, _: _receipts_fail(m), monkeypatch)
    assert first.status_code == 503 and "WAS recorded" in first.json()["detail"], first.text
    assert tree_size(client) == n + 1 and _written(reg, key) == [n]
    contacts = _contacts(reg)
    monkeypatch.setattr(reg.idempotency, "_written", lambda *_: None)
    retry = _post(client, path, body, h)
    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["seq"] == n and tree_size(client) == n + 1
    assert _written(reg, key) == [n] and _contacts(reg) == contacts
    again = _post(client, path, body, h)  # kept: answered from the row now
    assert (again.status_code, again.json()) == (201, retry.json())


def test_a_kept_503_taken_over_and_refused_is_kept_again(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """D135: a retry that took over a kept 503 and was itself refused (here the sequencer
    took nothing, as while it changes hands) wrote nothing, but says nothing of the first
    send either: the key keeps the 503, so the first send, if it is sealed after all, is the
    key's answer, and another body under the key is still refused. The retry after that runs."""
    from copyledger.ledger.errors import Unavailable

    client, reg = api
    key = "refused-again"
    path, body, h, n, first = _sent_first(api, "offer", key, _block_fails, monkeypatch)
    assert first.status_code == 503 and _row(reg, key).status == 503

    def busy(*_: object, **__: object) -> None:
        raise Unavailable("no sequencer is taking entries right now; retry shortly")

    with monkeypatch.context() as m:
        m.setattr(reg.sequencer, "submit_async", busy)
        refused = _post(client, path, body, h)
    assert refused.status_code == 503 and "no sequencer" in refused.json()["detail"]
    assert _row(reg, key).status == 503 and _row(reg, key).answer == first.text
    other = client.post(path, json={**body, "to": "alice"}, headers=h)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    retry = _post(client, path, body, h)
    assert retry.status_code == 201 and retry.json()["seq"] == n, retry.text
    assert tree_size(client) == n + 1
    # Only the request's own offer answers it: the same offer under another key, or a
    # licence under a key of its own, meets the pending offer as a conflict.
    for other_body, other_key in ((body, "another-key"),
                                  ({**body, "transfer_type": "non_exclusive_licence"}, "lic")):
        clash = client.post(path, json=other_body, headers={**h, "Idempotency-Key": other_key})
        assert clash.status_code == 409 and "is pending" in clash.json()["detail"], clash.text
    assert tree_size(client) == n + 1


def _checks_later(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    """The later checks of contact details (`contacts.forget_later`), held here to be run when
    the test says, not on a timer."""
    from copyledger.service import contacts as contacts_mod

    held: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(contacts_mod, "forget_later", lambda *a: held.append(a))
    return held


def test_a_claim_of_unknown_fate_keeps_its_contact_details(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A takedown claim answered 503 "may or may not be recorded" while its entry is still
    queued (a lost hand-over) keeps the contact details its entry commits to: the entry is
    sealed after the answer, and the later check finds it logged (D135). Before, they were
    erased at once because the claim was not in the log yet, and the logged claim then
    committed to details no longer there."""
    import asyncio

    from copyledger.ledger.errors import Uncertain
    from copyledger.service.contacts import forget_unless_logged

    client, reg = api
    later = _checks_later(monkeypatch)
    path, auth, body = _claim(client, reg)
    n, contacts = tree_size(client), _contacts(reg)
    hold = threading.Event()
    real_append, real_submit = reg.store.append_block, reg.sequencer.submit_async

    def held(*a: Any, **k: Any) -> Any:
        hold.wait(30)
        return real_append(*a, **k)

    def lost(pending: Any) -> Any:
        real_submit(pending)  # queued: sealed once the block is let go
        told: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        told.set_exception(Uncertain("the sequencer stopped before answering"))
        return told

    monkeypatch.setattr(reg.store, "append_block", held)
    try:
        with monkeypatch.context() as m:
            m.setattr(reg.sequencer, "submit_async", lost)
            first = client.post(path, json=body, headers={**auth, "Idempotency-Key": "c-fate"})
        assert first.status_code == 503 and _contacts(reg) == contacts + 1
        assert len(later) == 1  # checked later, not now
    finally:
        hold.set()
    wait_for(lambda: tree_size(client) == n + 1, "the queued claim sealed")
    forget_unless_logged(*later[0])  # the later check finds the claim logged
    assert _contacts(reg) == contacts + 1
    opened = client.get(f"/v1/claims/{n}/contact", headers=auth)
    assert opened.status_code == 200 and opened.json()["contact"]["email"] == "ada@example.org"
    retry = client.post(path, json=body, headers={**auth, "Idempotency-Key": "c-fate"})
    assert retry.status_code == 201 and retry.json()["seq"] == n, retry.text
    assert _contacts(reg) == contacts + 1 and tree_size(client) == n + 1


def test_a_claim_of_unknown_fate_never_logged_has_its_details_forgotten(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other way round: the claim's block failed, nothing was sealed. Its details are
    kept while the entry might still be sealed, then forgotten by the later check, so none are
    left that no logged claim commits to (no erasure by seq could reach them); the retry's are
    kept."""
    from copyledger.service.contacts import forget_unless_logged

    client, reg = api
    later = _checks_later(monkeypatch)
    contacts = _contacts(reg)
    path, body, h, n, first = _sent_first(api, "claim", "c-never", _block_fails, monkeypatch)
    assert first.status_code == 503 and _contacts(reg) == contacts + 1 and len(later) == 1
    forget_unless_logged(*later[0])
    assert _contacts(reg) == contacts
    retry = _post(client, path, body, h)
    assert retry.status_code == 201 and retry.json()["seq"] == n, retry.text
    assert _contacts(reg) == contacts + 1 and len(later) == 1
    opened = client.get(f"/v1/claims/{n}/contact", headers={"Authorization": h["Authorization"]})
    assert opened.status_code == 200, opened.text


def test_the_later_checks_wait_on_the_event_loop_and_run_when_due(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`forget_later` itself: details of claims never logged are forgotten once due, and the
    checks waiting for it hold no thread, however many there are."""
    import asyncio

    from copyledger.ledger import entry as entry_mod
    from copyledger.service import contacts as contacts_mod

    reg = open_registry(tmp_path)
    try:
        def sealed(i: int) -> dict[str, Any]:
            return contacts_mod.seal_claim(reg.store, entry_mod.build_claim(
                registrant="tube", received_at=entry_mod.utc_now(),
                body={**DMCA, "works": [{"sha256": sha(1)}],
                      "targets": [{"url": f"https://video.example/watch/{i}"}]},
                check=False))

        before = _contacts(reg)
        monkeypatch.setattr(contacts_mod, "FORGET_AFTER_S", 0.3)

        async def run() -> None:
            threads = set(threading.enumerate())  # another test's may end meanwhile: no count
            for i in range(5):
                contacts_mod.forget_later(reg.store, sealed(i))
            assert _contacts(reg) == before + 5  # not yet due
            assert not set(threading.enumerate()) - threads  # waiting holds no thread
            deadline = time.monotonic() + 60  # bounds a hang; ends when the checks ran
            while _contacts(reg) != before:
                assert time.monotonic() < deadline, "the due checks did not run"
                await asyncio.sleep(0.05)

        asyncio.run(run())
    finally:
        reg.store.close()


def test_batch_items_kept_as_503_unrecorded_are_run_again(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """D135 for batch items: both items' block failed unrecorded (503 each, kept); the retry
    writes them, once, and the one after is answered from the kept items."""
    client, reg = api
    alice = bearer(reg, "alice")
    items = [{**work_body(f"unrecorded-{i}", again=True), "idempotency_key": f"unrec-{i}"}
             for i in range(2)]
    n = tree_size(client)
    with monkeypatch.context() as m:
        _block_fails(m, reg)
        first = client.post("/v1/works/batch", json={"works": items}, headers=alice).json()
    assert [r["status"] for r in first["results"]] == [503, 503]
    assert tree_size(client) == n
    retry = client.post("/v1/works/batch", json={"works": items}, headers=alice).json()
    assert [(r["status"], r.get("replayed")) for r in retry["results"]] == [(201, None)] * 2
    assert sorted(r["registration"]["seq"] for r in retry["results"]) == [n, n + 1]
    again = client.post("/v1/works/batch", json={"works": items}, headers=alice).json()
    assert [(r["status"], r.get("replayed")) for r in again["results"]] == [(201, True)] * 2
    assert [r["registration"] for r in again["results"]] == [
        r["registration"] for r in retry["results"]]
    assert tree_size(client) == n + 2


def _contacts(reg: Node) -> int:
    from sqlalchemy import func, select

    from copyledger.ledger.schema import claim_contacts

    with reg.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(claim_contacts)).scalar_one())


def test_batch_items_run_while_their_first_entries_were_queued_are_answered_with_them(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    client, reg = api
    alice, items, first = _first_batch_dies(api, "queued", [False, True, True], monkeypatch)
    n = tree_size(client)
    _abandoned(reg)
    monkeypatch.setattr(reg.idempotency, "_written", lambda *_: None)
    retry = client.post("/v1/works/batch", json={"works": [*items, work_body("queued-0")]},
                        headers=alice).json()
    assert [(r["status"], r.get("replayed")) for r in retry["results"]] == [
        (201, True), (201, True), (201, None), (200, None)]
    assert [r["registration"] for r in retry["results"][:2]] == [
        r["registration"] for r in first["results"]]
    assert retry["results"][2]["registration"]["seq"] == n and tree_size(client) == n + 1
    # the unkeyed item of the first's content is D36's earlier registration, as before
    assert retry["results"][3]["registration"]["seq"] == first["results"][0]["registration"][
        "seq"]


def test_the_claims_recorded_are_found_through_the_index(tmp_path: Path) -> None:
    """D134's read of a block's claims costs those claims, not the table: on SQLite its plan
    searches the (account, key) index (a row-value IN would scan all of it)."""
    from sqlalchemy import event

    reg = open_registry(tmp_path)
    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if "idempotency_written" in sql:
            seen.append((sql, params))

    event.listen(reg.store.engine, "before_cursor_execute", keep)
    try:
        claims = [("alice", f"k{i}", "a" * 64) for i in range(3)] + [("bob", "k0", "b" * 64)]
        assert reg.store.recorded_claims(claims, 0) == {}
        [(sql, params)] = seen
        with reg.store.engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + sql, params))
        assert "SEARCH idempotency_written USING INDEX ix_idempotency_written_key" in plan, plan
    finally:
        event.remove(reg.store.engine, "before_cursor_execute", keep)
        reg.store.close()


def test_a_claim_crosses_the_hand_over(tmp_path: Path, database_url: str) -> None:
    """Under `serve --workers 2` the claim of a write that reached another process goes to the
    sequencer with its entry (hand-over version 3), and its block records the entry under it."""
    from copyledger.api.app import create_app
    from tests.helpers import settings_for

    s = settings_for(tmp_path, database_url, workers=2)
    a, b = Node.open(s), Node.open(s)
    with TestClient(create_app(a)), TestClient(create_app(b)) as cb:
        assert a.sequencer.leading and not b.sequencer.leading  # type: ignore[union-attr]
        auth = bearer(b, "ada")
        one = cb.post("/v1/works", json=work_body("crosses", again=True),
                      headers={**auth, "Idempotency-Key": "crosses"})
        many = cb.post("/v1/works/batch", headers=auth, json={"works": [
            work_body("plain"), {**work_body("crosses 2", again=True), "idempotency_key": "c2"}]})
        assert one.status_code == 201 and many.status_code == 200, (one.text, many.text)
        assert _written(b, "crosses") == [one.json()["seq"]]
        assert _written(b, "c2") == [many.json()["results"][1]["registration"]["seq"]]


_HOLDER = """
import sys, time
from copyledger.ledger.store import Store
from copyledger.service.idempotency import Claim, Keys
keys = Keys(Store.open(sys.argv[1], migrate_schema=False), 60, heartbeat_s=0.05)
assert isinstance(keys.claim("alice", "owned", "ab" * 32), Claim)
print("claimed", flush=True)
time.sleep(600)  # a slow request, still running
"""


def test_only_a_dead_owners_claim_is_taken_over(api: Api) -> None:
    """A claim is its process's: a live one (however slow its request) refreshes it, so it is
    never taken over and the request never runs twice; once that process is killed (SIGKILL,
    mid-request) its claim ages out and is taken over (D69)."""
    from copyledger.service.idempotency import InFlight, Keys

    _, reg = api
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, reg.settings.database_url],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        # As if its request had run for far longer than ABANDONED_S: the live owner's next
        # heartbeat says it is still running.
        with reg.store.engine.begin() as conn:
            conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == "owned")
                         .values(created=int(time.time()) - 100_000))
        wait_for(lambda: _row(reg, "owned").created > time.time() - 30,
                 "the live owner refreshes its claim")
        with pytest.raises(InFlight):
            Keys(reg.store, 60).claim("alice", "owned", "ab" * 32)
        holder.send_signal(signal.SIGKILL)
        holder.wait(60)
        taker = Keys(reg.store, 60, abandoned_s=1)
        taken: list[object] = []

        def take() -> bool:
            try:
                taken.append(taker.claim("alice", "owned", "ab" * 32))
            except InFlight:
                return False
            return True

        wait_for(take, "the dead owner's claim is taken over")
        [claim] = taken
        assert isinstance(claim, Claim)
        taker.release(claim)
    finally:
        holder.kill()
        holder.wait(60)


def test_a_batch_cancelled_while_it_releases_its_keys_releases_them_all(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose write refused every item (nothing was written) releases every key it
    claimed, even if its task is cancelled while it does (a cancel scope cancels each await in
    it again): a key left unreleased would be held "in flight", refreshed by the heartbeat, for
    the life of the process, and every retry told 409."""
    import asyncio

    from copyledger.api import batch
    from copyledger.ledger.schema import idempotency_keys as table
    from copyledger.service.apikeys import Principal
    from copyledger.service.operations import WorkIn

    _, reg = api
    keys = reg.idempotency
    entered, go_on = threading.Event(), threading.Event()
    real_release = keys.release

    def slow_release(claim: Claim) -> None:
        entered.set()
        go_on.wait(60)
        real_release(claim)

    monkeypatch.setattr(keys, "release", slow_release)
    items = [{**work_body(f"cancelled {i}", again=True), "idempotency_key": f"cut-{i}"}
             for i in range(3)]

    async def refused(_: Any) -> Any:
        raise InvalidInput("every item refused, nothing written")

    async def main() -> None:
        task = asyncio.ensure_future(batch.answer(
            reg, Principal("alice", "creator", 0), orjson.dumps({"works": items}), b"",
            "/v1/works/batch", "works", WorkIn, refused))
        await asyncio.to_thread(entered.wait, 60)  # the first release is under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        go_on.set()

    asyncio.run(main())
    wait_for(lambda: not keys._held, "every claim released")
    with reg.store.engine.connect() as conn:
        assert conn.execute(select(table.c.key).where(table.c.key.like("cut-%"))).all() == []


def test_a_batch_item_whose_keep_fails_still_gets_its_receipt(api: Api) -> None:
    client, reg = api
    reg.idempotency.heartbeat_s = 0.05
    items = [{**work_body("item-keep-fails", again=True), "idempotency_key": "item-keep"}]
    heal = _keep_fails(reg, 1)
    try:
        first = client.post("/v1/works/batch", json={"works": items},
                            headers=bearer(reg, "alice"))
    finally:
        heal()
    assert first.status_code == 200, first.text
    assert first.json()["results"][0]["status"] == 201
    wait_for(lambda: _row(reg, "item-keep").status == 201, "the heartbeat keeps the answer")


def test_a_batch_item_whose_answer_breaks_before_its_keep_lets_its_claim_go(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault while an item's answer is made ready to keep (after its entry is recorded):
    the batch fails (500), but the item's claim is released, not held and refreshed for the
    process's life; once aged out, the retried batch is answered with the recorded entry."""
    from types import SimpleNamespace

    from copyledger.api import batch

    client, reg = api
    reg.idempotency.heartbeat_s = 0.01

    def dumps(value: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(value, orjson.Fragment):  # a registration, as the batch answers it
            raise RuntimeError("a fault in the code, not the database")
        return orjson.dumps(value, *args, **kwargs)

    stub = {k: getattr(orjson, k) for k in dir(orjson) if not k.startswith("_")}
    monkeypatch.setattr(batch, "orjson", SimpleNamespace(**{**stub, "dumps": dumps}))
    items = [{**work_body("answer-breaks", again=True), "idempotency_key": "answer-breaks"}]
    alice = bearer(reg, "alice")
    with pytest.raises(RuntimeError, match="not the database"):  # (the test client re-raises
        client.post("/v1/works/batch", json={"works": items}, headers=alice)  # the 500's fault)
    monkeypatch.undo()
    n = tree_size(client)
    assert _row(reg, "answer-breaks").status == 0  # released, but kept: its entry was recorded
    _unrefreshed(reg, "answer-breaks")
    retry = client.post("/v1/works/batch", json={"works": items}, headers=alice)
    assert retry.status_code == 200, retry.text
    assert [r["status"] for r in retry.json()["results"]] == [201]
    assert tree_size(client) == n


def test_a_claim_cancelled_midway_frees_its_key(tmp_path: Path) -> None:
    """A request cancelled while its claim runs on a thread: the thread still takes the key,
    and nothing will ever be written under it, so it is freed; otherwise the heartbeat would
    keep it "in flight" (409 to every retry) for the life of the process."""
    import asyncio

    from copyledger.service import idempotency
    from copyledger.service.idempotency import InFlight, Keys

    s = Store.open(f"sqlite:///{tmp_path}/x.db")
    keys, other = Keys(s, 3600, heartbeat_s=0.05), Keys(s, 3600)
    started, go_on = threading.Event(), threading.Event()
    real = keys.claim

    def slow(*a: Any) -> Any:
        started.set()
        go_on.wait(60)  # the database answers only after the request was cancelled
        return real(*a)

    keys.claim = slow  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.ensure_future(idempotency.claim(keys, "alice", "k1", "ab" * 32))
        await asyncio.to_thread(started.wait, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        go_on.set()
        # The loop runs on meanwhile, as a server's does.
        await asyncio.to_thread(wait_for, free, "the cancelled request's key to be freed")

    def free() -> bool:
        try:
            return isinstance(other.claim("alice", "k1", "ab" * 32), Claim)
        except InFlight:
            return False

    try:
        asyncio.run(main())
    finally:
        keys.stop()
        other.stop()
        s.close()


def test_what_a_key_says_once_its_request_was_recorded(api: Api) -> None:
    """D132 at the claim itself, with the block's row made by hand: a live owner's claim is
    still in flight whatever was recorded; a kept 503 is answered with the entry whichever
    came first, the keep or the block (a sequencer that stops answers its writers before it
    seals what is queued), and taken over to run again without one (D135); a claim whose
    request was recorded is neither released nor swept, so no retry can write it again."""
    from copyledger.ledger.schema import idempotency_written
    from copyledger.service.idempotency import (
        ABANDONED_S,
        IN_FLIGHT,
        Answer,
        InFlight,
        Keys,
        Written,
    )

    _, reg = api
    keys, other = Keys(reg.store, 3600), Keys(reg.store, 3600)
    h = "ab" * 32

    def recorded(key: str, seq: int) -> None:
        with reg.store.engine.begin() as conn:
            conn.execute(idempotency_written.insert().values(
                seq=seq, account="alice", key=key, request_sha256=h, created=int(time.time())))

    def age(key: str) -> None:
        with reg.store.engine.begin() as conn:
            conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == key)
                         .values(created=int(time.time()) - ABANDONED_S - 1))

    live = _claimed(keys, "live", h)
    recorded("live", 7)
    with pytest.raises(InFlight):  # its owner lives: it answers, not this
        other.claim("alice", "live", h)
    keys.release(live)  # e.g. an error after the commit: not freed
    with pytest.raises(InFlight):
        other.claim("alice", "live", h)
    age("live")
    other._swept = 0.0  # the sweep runs on the next claim: it keeps this row
    assert other.claim("alice", "live", h) == Written(7)
    with pytest.raises(InvalidInput):
        other.claim("alice", "live", "cd" * 32)
    other.settle_written("alice", "live", h, Answer(201, b'{"seq":7}'))
    assert other.claim("alice", "live", h) == Answer(201, b'{"seq":7}')

    keys.keep(_claimed(keys, "fate", h), Answer(503, b'{"status":503}'))  # before its block
    recorded("fate", 8)
    assert other.claim("alice", "fate", h) == Written(8)

    # Without an entry, a kept 503 is taken over and run again (D135): a claim of this
    # process now, which another request cannot take; another body is refused as before.
    keys.keep(_claimed(keys, "unknown", h), Answer(503, b'{"status":503}'))
    with pytest.raises(InvalidInput):
        other.claim("alice", "unknown", "cd" * 32)
    unknown = _claimed(other, "unknown", h)
    assert _row(reg, "unknown").status == IN_FLIGHT
    with pytest.raises(InFlight):
        keys.claim("alice", "unknown", h)
    other.keep(unknown, Answer(201, b'{"seq":9}'))
    assert keys.claim("alice", "unknown", h) == Answer(201, b'{"seq":9}')
    # Taken over and then refused (it wrote nothing, but the first send may still be sealed):
    # the 503 is put back, not the key freed, so another request under it is still refused.
    keys.keep(_claimed(keys, "refused", h), Answer(503, b'{"status":503}'))
    age("refused")  # kept a minute ago: it comes back with that time, as long-lived as it was
    first_kept = _row(reg, "refused").created
    refused = _claimed(other, "refused", h)
    assert _row(reg, "refused").created > first_kept
    other.release(refused)
    assert (_row(reg, "refused").status, _row(reg, "refused").answer) == (503, '{"status":503}')
    assert _row(reg, "refused").created == first_kept
    with pytest.raises(InvalidInput):
        keys.claim("alice", "refused", "cd" * 32)
    keys.release(_claimed(keys, "refused", h))  # and the next retry runs again

    keys.abandon(_claimed(keys, "never", h))
    age("never")
    other.release(_claimed(other, "never", h))  # nothing recorded: taken over, run
    assert _row(reg, "never") is None
    # The sweep frees a dead claim that recorded nothing only once the key's lifetime is
    # over: until then its request may still be sealed (D161). The other claims stay.
    keys.abandon(_claimed(keys, "swept", h))
    age("swept")
    other._swept = 0.0
    other._sweep(time.time())
    assert _row(reg, "swept") is not None
    with reg.store.engine.begin() as conn:
        conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == "swept")
                     .values(created=int(time.time()) - 3601))
    other._swept = 0.0
    other._sweep(time.time())
    assert _row(reg, "swept") is None and _row(reg, "live") is not None
    keys.stop()
    other.stop()


def _kept_503(reg: Node, keys: Keys, key: str) -> int:
    """A 503 of unknown fate kept under `key` (its request not recorded); its `created`."""
    keys.keep(_claimed(keys, key), Answer(503, b'{"status":503}'))
    return int(_row(reg, key).created)


def test_a_claim_acts_on_its_own_row_only(api: Api) -> None:
    """D139: what a claim does after it ended, late (a heartbeat's retried keep, a cancelled
    claim's release, a heartbeat that stalled a minute), never touches a later claim of the
    same request, in this process or another: that claim's row stays in flight, its own, and
    its release still puts its 503 back."""
    from copyledger.service.idempotency import ABANDONED_S, IN_FLIGHT

    _, reg = api
    # No beat of `keys` may refresh the stalled claim below while the test ages it.
    keys, other = Keys(reg.store, 3600, heartbeat_s=3600), Keys(reg.store, 3600, heartbeat_s=3600)

    def still(key: str, holder: Claim) -> None:
        row = _row(reg, key)
        assert (row.status, row.holder) == (IN_FLIGHT, holder.holder), row
        assert holder in keys._held or holder in other._held

    # The same process: a claim takes the kept 503 over and is refused (503 back), the next
    # retry takes it over again; the first one's late calls leave the second's claim alone.
    first_kept = _kept_503(reg, keys, "here")
    older = _claimed(keys, "here")
    keys.release(older)
    newer = _claimed(keys, "here")
    for late in (lambda: keys.keep(older, Answer(201, b'{"seq":1}')),
                 lambda: keys.release(older), lambda: keys.abandon(older)):
        late()
        still("here", newer)
    keys.release(newer)  # refused: the 503 is back, with its first time, the key not freed
    row = _row(reg, "here")
    assert (row.status, row.answer, row.created) == (503, '{"status":503}', first_kept)

    # Another process: this one's heartbeat stalled a minute, so its claim was taken over.
    _kept_503(reg, keys, "there")
    stalled = _claimed(keys, "there")
    with reg.store.engine.begin() as conn:
        conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == "there")
                     .values(created=int(time.time()) - ABANDONED_S - 1))
    other._swept = time.time()  # taken over by the claim itself, not first swept
    taker = _claimed(other, "there")
    aged = int(time.time()) - ABANDONED_S - 1
    with reg.store.engine.begin() as conn:  # to see that the stalled heartbeat leaves it
        conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == "there")
                     .values(created=aged))
    keys._refresh([stalled])
    assert _row(reg, "there").created == aged
    for late in (lambda: keys.release(stalled),
                 lambda: keys.keep(stalled, Answer(201, b'{"seq":2}'))):
        late()
        still("there", taker)
    other.keep(taker, Answer(201, b'{"seq":3}'))
    assert other.claim("alice", "there", "ab" * 32) == Answer(201, b'{"seq":3}')
    keys.stop()
    other.stop()


def test_kept_reads_a_live_success_of_the_same_request_only(api: Api) -> None:
    """`Keys.kept`, the check an upload's retry makes before it is fingerprinted (D140): the
    success kept for this very request, nothing for one in flight, a kept 503, another
    request, another account or an answer past its lifetime; and it claims nothing."""
    _, reg = api
    keys = Keys(reg.store, 3600, heartbeat_s=3600)
    h = "ab" * 32
    claim = _claimed(keys, "k")
    assert keys.kept("alice", "k", h) is None  # in flight
    keys.keep(claim, Answer(201, b'{"seq":1}'))
    assert keys.kept("alice", "k", h) == Answer(201, b'{"seq":1}')
    assert keys.kept("alice", "k", "cd" * 32) is None and keys.kept("bob", "k", h) is None
    _kept_503(reg, keys, "unknown")
    assert keys.kept("alice", "unknown", h) is None
    assert keys.kept("alice", "free", h) is None and _row(reg, "free") is None
    with reg.store.engine.begin() as conn:
        conn.execute(update(idempotency_keys).where(idempotency_keys.c.key == "k")
                     .values(created=int(time.time()) - 3600))
    assert keys.kept("alice", "k", h) is None
    keys.stop()


def test_a_503_the_database_refused_to_put_back_is_put_back_by_the_heartbeat(
        api: Api) -> None:
    """D139: a claim that took over a kept 503 and was refused puts the 503 back (D135); if
    the database refuses that, the heartbeat tries again, as it does a keep (for
    `_KEEP_TRIES` beats), and meanwhile keeps the claim in flight, so the key goes on saying
    that the first send's fate is unknown. (It aged out at once before, and the 503 with it.)"""
    from copyledger.service.idempotency import IN_FLIGHT

    _, reg = api
    keys = Keys(reg.store, 3600, heartbeat_s=3600)  # no beat before the test asks for one
    first_kept = _kept_503(reg, keys, "back")
    claim = _claimed(keys, "back")
    heal = _keep_fails(reg, 1)
    try:
        keys.release(claim)
    finally:
        heal()
    assert claim in keys._held  # still held: refreshed, its put-back to be tried again
    with keys._beat:  # now beat often
        keys.heartbeat_s = 0.05
        keys._beat.notify_all()
    wait_for(lambda: _row(reg, "back").status != IN_FLIGHT, "the heartbeat puts the 503 back")
    row = _row(reg, "back")
    assert (row.status, row.answer, row.created) == (503, '{"status":503}', first_kept)
    with pytest.raises(InvalidInput):  # the key still refuses another request
        keys.claim("alice", "back", "cd" * 32)
    keys.stop()

