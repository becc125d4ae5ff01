"""Takedown claims: complete notices per regime, timelines, and the signed claim check."""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageEnhance

from copyledger.api.app import create_app
from copyledger.ledger import claims, jcs, note
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.helpers import sha, wait_for

DMCA = {
    "notice_type": "notice", "regime": "dmca_512c3",
    "claimant": {"name": "Ada Example", "email": "ada@example.org", "phone": "+1 555 0100",
                 "address": "1 Harbour St", "authority": "owner", "account": "ada"},
    "targets": [{"url": "https://video.example/watch/1"}],
    "statements": {"good_faith": True, "accuracy": True, "perjury": True},
    "requested_action": "remove", "signature": "/Ada Example/",
}


def png(seed: int, *, bright: float = 1.0) -> bytes:
    img = Image.new("RGB", (640, 480), (seed * 40 % 255, 90, 160))
    d = ImageDraw.Draw(img)
    for i in range(12):
        x, y = (seed * 97 + i * 53) % 600, (seed * 31 + i * 71) % 440
        d.rectangle((x, y, x + 60 + i * 5, y + 40), fill=((i * 50) % 255, (seed * 13) % 255, i * 9))
    if bright != 1.0:
        img = ImageEnhance.Brightness(img).enhance(bright)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=40 if bright != 1.0 else 90)
    return buf.getvalue()


@pytest.fixture
def client(reg: Node) -> Iterator[TestClient]:
    with TestClient(create_app(reg)) as c:
        wait_for(lambda: reg.index.ready, "the index was not built")
        yield c


def hdr(reg: Node, role: str, account: str) -> dict[str, str]:
    k, _ = create_key(reg.store, role, account)
    return {"Authorization": f"Bearer {k}"}


def upload(c: TestClient, h: dict[str, str], data: bytes, title: str) -> Any:
    r = c.post("/v1/works", headers=h, files={"file": ("x.jpg", data, "image/jpeg")},
               data={"title": title, "creators": ["A"], "work_type": "image"})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("regime", claims.REGIMES)
def test_incomplete_notice_names_missing_fields_and_writes_nothing(
    client: TestClient, reg: Node, regime: str
) -> None:
    plat = hdr(reg, "platform", "tube")
    size = client.get("/v1/log").json()["tree_size"]
    r = client.post("/v1/claims", headers=plat, json={
        "notice_type": "notice", "regime": regime, "claimant": {"name": "X"},
        "works": [{"sha256": sha(1)}]})
    assert r.status_code == 422, r.text
    body = r.json()
    want = [f for f in claims.REQUIRED[(regime, "notice")] if f not in ("claimant.name", "works")]
    assert body["missing"] == want
    assert client.get("/v1/log").json()["tree_size"] == size


def test_notice_counter_notice_timeline(client: TestClient, reg: Node) -> None:
    ada, plat = hdr(reg, "creator", "ada"), hdr(reg, "platform", "tube")
    w = client.post("/v1/works", headers=ada, json={
        "sha256": sha("song"), "title": "Song", "creators": ["Ada"], "work_type": "audio"}).json()
    r = client.post("/v1/claims", headers=plat, json={**DMCA, "works": [{"seq": w["seq"]}]})
    assert r.status_code == 201, r.text
    claim = r.json()
    assert claim["entry"]["works"] == [{"seq": w["seq"], "sha256": sha("song")}]
    counter = {
        "notice_type": "counter_notice", "regime": "dmca_512c3", "refers_to": claim["seq"],
        "claimant": {"name": "Bob Uploader", "address": "2 Main St", "phone": "+1 555 0199"},
        "targets": [{"url": "https://video.example/watch/1"}],
        "statements": {"mistake": True, "perjury": True, "jurisdiction_consent": True},
        "signature": "/Bob/", "requested_action": "restore"}
    r2 = client.post("/v1/claims", headers=plat, json=counter)
    assert r2.status_code == 201, r2.text
    t = client.get(f"/v1/claims/{claim['seq']}").json()["timeline"]
    assert [(x["seq"], x["notice_type"]) for x in t] == [
        (claim["seq"], "notice"), (r2.json()["seq"], "counter_notice")]
    bad = client.post("/v1/claims", headers=plat, json={**counter, "refers_to": w["seq"]})
    assert bad.status_code == 422 and "not a claim" in bad.json()["detail"]
    forbidden = client.post("/v1/claims", headers=ada, json={**DMCA, "works": [{"seq": 0}]})
    assert forbidden.status_code == 403


def test_claim_check_priority_and_near_duplicates(client: TestClient, reg: Node) -> None:
    ada, bob = hdr(reg, "creator", "ada"), hdr(reg, "creator", "bob")
    plat = hdr(reg, "platform", "tube")
    original = png(3)
    first = upload(client, ada, original, "Harbour")  # ada registers first
    upload(client, bob, original, "Harbour (copy)")  # bob registers the same bytes later
    other = upload(client, bob, png(11), "Unrelated")
    vkey = client.get("/v1/log").json()["verifier_key"]

    # The disputed upload is a re-encoded, brightened copy: not byte-identical.
    disputed = png(3, bright=1.2)
    r = client.post("/v1/claims/check", headers=plat,
                    files={"file": ("d.jpg", disputed, "image/jpeg")},
                    data={"claimant": "bob", "work_seq": str(first["seq"])})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["work_registered"] is True and a["verdict"] == "match"
    assert a["earliest_registration"]["registrant"] == "ada"
    assert a["claimant_is_registrant"] is False and a["claimant_is_holder"] is False
    assert [x["seq"] for x in a["registrations"]][:2] == [first["seq"], first["seq"] + 1]
    assert other["seq"] not in {m["seq"] for m in a["matches"] if m["verdict"] == "match"}
    assert {m["algorithm"] for m in a["matches"]} >= {"pdq"}
    assert a["caveats"]

    # The answer is signed: the note names the SHA-256 of the answer without its signature.
    n, _ = note.verify_note(a["signature"], [note.parse_verifier_key(vkey)])
    _, size, digest = claims.parse_check_note_text(n.text)
    unsigned = {k: v for k, v in a.items() if k != "signature"}
    assert digest == hashlib.sha256(jcs.canonicalize(unsigned)).digest()
    assert size == a["tree_size"]

    # JSON form, exact hash, claimant is the registrant.
    r = client.post("/v1/claims/check", headers=plat, json={
        "claimant": "ada", "work_sha256": hashlib.sha256(original).hexdigest(),
        "content": {"sha256": hashlib.sha256(original).hexdigest()}})
    a = r.json()
    assert a["verdict"] == "match" and a["claimant_is_registrant"] and a["claimant_is_holder"]
    assert a["matches"][0] == {"seq": first["seq"], "algorithm": "sha256", "distance": 0,
                               "threshold": 0, "verdict": "match"}

    # Unregistered work, unrelated content.
    r = client.post("/v1/claims/check", headers=plat, json={
        "claimant": "ada", "work_sha256": sha("nothing"), "content": {"sha256": sha("x")}})
    a = r.json()
    assert (a["work_registered"], a["verdict"], a["registrations"]) == (False, "none", [])
    _ = base64


def test_a_claimed_work_whose_content_others_registered_over_a_thousand_times_matches(
        client: TestClient, reg: Node) -> None:
    """The search by content hash returns its oldest 1,000 entries: a claimed work registered
    after a thousand others of the same content was missing from them, and the signed answer
    said "none" for the very content it registered. Its own match now decides."""
    bob, ada = hdr(reg, "creator", "bob"), hdr(reg, "creator", "ada")
    plat = hdr(reg, "platform", "tube")
    h = sha("popular")
    body = {"sha256": h, "title": "Popular", "creators": ["Bob"], "work_type": "image"}
    r = client.post("/v1/works/batch?again=true", headers=bob, json={"works": [body] * 1000})
    assert r.status_code == 200 and r.json()["registered"] == 1000, r.text
    mine = client.post("/v1/works", headers=ada, json={**body, "title": "Mine"}).json()
    r = client.post("/v1/claims/check", headers=plat, json={
        "claimant": "ada", "work_seq": mine["seq"], "content": {"sha256": h}})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["verdict"] == "match" and a["earliest_registration"]["registrant"] == "bob", a
    assert mine["seq"] in [x["seq"] for x in a["registrations"]]


def test_a_claimed_work_whose_fingerprint_fifty_older_works_share_matches(
        client: TestClient, reg: Node) -> None:
    """D179: the near-duplicate search keeps the 50 oldest works that match; a claimed work
    whose PDQ 60 older works share (flat images all hash alike) was cut from them, and the
    signed answer said "none" for the very picture it registered. Its own fingerprint, compared
    one to one, now decides."""
    bob, ada = hdr(reg, "creator", "bob"), hdr(reg, "creator", "ada")
    plat = hdr(reg, "platform", "tube")
    pdq = {"algorithm": "pdq", "version": "1", "hash": "ab" * 32, "quality": 90}
    works = [{"sha256": sha(f"flat {i}"), "title": f"Flat {i}", "creators": ["Bob"],
              "work_type": "image", "fingerprints": {"pdq": pdq}} for i in range(60)]
    r = client.post("/v1/works/batch", headers=bob, json={"works": works})
    assert r.status_code == 200 and r.json()["registered"] == 60, r.text
    mine = client.post("/v1/works", headers=ada, json={
        **works[0], "sha256": sha("mine"), "title": "Mine", "creators": ["Ada"]}).json()
    r = client.post("/v1/claims/check", headers=plat, json={
        "claimant": "ada", "work_seq": mine["seq"], "content": {"pdq": "ab" * 32}})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["verdict"] == "match", a["verdict"]
    own = [m for m in a["matches"] if m["seq"] == mine["seq"]]
    assert [(m["algorithm"], m["distance"], m["verdict"]) for m in own] == [("pdq", 0, "match")]
    assert a["earliest_registration"]["registrant"] == "bob"


def test_claim_check_input_errors(client: TestClient, reg: Node) -> None:
    plat = hdr(reg, "platform", "tube")
    for body in ({"claimant": "ada", "content": {"sha256": sha(1)}},
                 {"claimant": "ada", "work_seq": 0, "work_sha256": sha(1),
                  "content": {"sha256": sha(1)}},
                 {"claimant": "ada", "work_seq": 0, "content": {}},
                 {"claimant": "ada", "work_seq": 0, "content": {"pdq": "zz"}},
                 {"claimant": "a d a", "work_seq": 0, "content": {"sha256": sha(1)}}):
        r = client.post("/v1/claims/check", headers=plat, json=body)
        assert r.status_code == 422, (body, r.text)
    creator = hdr(reg, "creator", "ada")
    assert client.post("/v1/claims/check", headers=creator, json={}).status_code == 403


@pytest.mark.slow
def test_cli_register_fingerprints_locally_and_check_claim(tmp_path: Path) -> None:
    import json

    import httpx
    from typer.testing import CliRunner

    from copyledger.cli.main import app
    from tests.server import ServerProcess

    runner = CliRunner()
    d = tmp_path / "reg"
    assert runner.invoke(app, ["init", "--data-dir", str(d)]).exit_code == 0

    def key(role: str, account: str) -> str:
        out = runner.invoke(app, ["keys", "create", "--role", role, "--account", account,
                                  "--data-dir", str(d), "--json"]).stdout
        return str(json.loads(out)["key"])

    ada, plat = key("creator", "ada"), key("platform", "tube")
    (tmp_path / "harbour.jpg").write_bytes(png(5))
    (tmp_path / "disputed.jpg").write_bytes(png(5, bright=1.2))
    srv = ServerProcess(d).start()
    try:
        r = runner.invoke(app, ["register", str(tmp_path / "harbour.jpg"), "--work-type", "image",
                                "--server", srv.url, "--api-key", ada, "--json",
                                "--receipts", str(tmp_path / "receipts")])
        assert r.exit_code == 0, r.stdout
        seq = json.loads(r.stdout)[0]["seq"]
        deadline = time.monotonic() + 120  # the index is rebuilt in the background (D55)
        while not httpx.get(f"{srv.url}/healthz").json()["fingerprint_index"]["ready"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        got = httpx.get(f"{srv.url}/v1/entries/{seq}").json()
        assert "fingerprints" in got["entry"]["content"], (r.stdout, r.stderr)
        e = json.loads(runner.invoke(app, ["lookup", str(tmp_path / "harbour.jpg"), "--server",
                                           srv.url, "--json"]).stdout)
        assert e["results"][0]["seq"] == seq
        r = runner.invoke(app, ["check-claim", "--claimant", "ada", "--work-seq", str(seq),
                                "--file", str(tmp_path / "disputed.jpg"), "--server", srv.url,
                                "--api-key", plat, "--json"])
        assert r.exit_code == 0, r.stdout
        a = json.loads(r.stdout)
        assert a["verdict"] == "match" and a["claimant_is_registrant"], (a["matches"], r.stderr)
        assert a["signature_verified"] is True
    finally:
        srv.stop()


def test_live_index_reads_works_logged_during_its_rebuild(tmp_path: Path) -> None:
    """The rebuild reads the log up to its size when it starts; a work logged after that is
    read by the next catch-up, once."""
    from copyledger.matching import LiveIndex, image_fingerprints
    from tests.helpers import open_registry
    from tests.test_index_start import submit_work

    reg = open_registry(tmp_path / "reg", linger_ms=5.0)
    reg.start()
    try:
        fps = [image_fingerprints(png(i)) for i in (1, 2)]
        before = submit_work(reg, "before", fps[0])
        li = LiveIndex()
        li.catch_up(reg.store, reg.sequencer.state.size)  # not built yet: nothing read
        assert not li.ready and li.search(fps[0]) == []
        li.build(reg.store)
        during = submit_work(reg, "after the build's read", fps[1])
        assert [c.seq for c in li.search(fps[0])] == [before, before]  # pdq and phash
        assert li.search(fps[1]) == []
        li.catch_up(reg.store, reg.sequencer.state.size)
        li.catch_up(reg.store, reg.sequencer.state.size)
        assert [c.seq for c in li.search(fps[1])] == [during, during] and li.size() == 2
    finally:
        reg.stop()


def test_a_work_whose_writer_was_never_answered_is_found_by_a_claim_check(
        client: TestClient, reg: Node) -> None:
    """In one process too, the index is the log's: a work the sequencer committed whose
    request never came back to record it (timed out, cancelled) is found by near-duplicate
    (before D130 only a request that was answered put its work in the index)."""
    from copyledger.matching import image_fingerprints
    from tests.test_index_start import submit_work

    plat = hdr(reg, "platform", "tube")
    seq = submit_work(reg, "logged, never answered", image_fingerprints(png(5)))
    disputed = png(5, bright=1.2)  # not the same bytes: only the fingerprints can find it
    r = client.post("/v1/claims/check", headers=plat,
                    files={"file": ("d.png", disputed, "image/png")},
                    data={"claimant": "alice", "work_seq": str(seq)})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["verdict"] == "match" and a["claimant_is_registrant"], a["matches"]
    assert {m["seq"] for m in a["matches"] if m["verdict"] == "match"} == {seq}
    assert a["tree_size"] > seq and a["index_ready"] is True
    health = client.get("/healthz").json()["fingerprint_index"]
    assert health["following"] is True and health["read_through"] >= a["tree_size"]
    assert health["entries"] >= 1


def test_a_claim_check_says_when_the_index_had_not_read_the_whole_tree(
        client: TestClient, reg: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim check waits a bounded time for the index's thread (D130); an index still behind
    the tree then is searched for what it has, and the signed answer says so."""
    from copyledger.matching import LiveIndex, image_fingerprints, live
    from tests.test_index_start import submit_work

    monkeypatch.setattr(live, "WAIT_S", 0.05)
    reg.index = LiveIndex()  # followed by no thread: it stays where its build left it
    reg.index.build(reg.store)
    plat = hdr(reg, "platform", "tube")
    seq = submit_work(reg, "not yet read", image_fingerprints(png(9)))

    def check() -> Any:
        r = client.post("/v1/claims/check", headers=plat,
                        files={"file": ("d.png", png(9, bright=1.2), "image/png")},
                        data={"claimant": "alice", "work_seq": str(seq)})
        assert r.status_code == 200, r.text
        return r.json()

    a = check()
    assert a["caveat_codes"][0] == "index-behind" and a["index_ready"] is False
    assert a["tree_size"] > seq
    # (D179: the claimed work's own fingerprints are compared with the upload one to one,
    # whatever the index has read; no other work was found, the index being behind)
    assert a["verdict"] == "match" and {m["seq"] for m in a["matches"]} == {seq}, a["matches"]
    reg.index.catch_up(reg.store, reg.sequencer.state.size)
    a = check()
    assert "index-behind" not in a["caveat_codes"] and a["index_ready"] is True
    assert a["verdict"] == "match"


def test_dsa_notice_may_name_no_work(client: TestClient, reg: Node) -> None:
    plat = hdr(reg, "platform", "tube")
    r = client.post("/v1/claims", headers=plat, json={
        "notice_type": "notice", "regime": "eu_dsa_art16",
        "claimant": {"name": "Ada", "email": "ada@example.org"},
        "targets": [{"url": "https://video.example/watch/9"}],
        "substantiation": "This video copies my film.", "statements": {"accuracy": True}})
    assert r.status_code == 201, r.text
    seq = r.json()["seq"]
    t = client.get(f"/v1/claims/{seq}").json()["timeline"]
    assert [x["seq"] for x in t] == [seq]


def test_large_upload_to_claim_check(client: TestClient, reg: Node) -> None:
    ada, plat = hdr(reg, "creator", "ada"), hdr(reg, "platform", "tube")
    img = Image.effect_noise((1600, 1200), 60).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    assert len(data) > 1_000_000
    first = upload(client, ada, data, "Noise")
    r = client.post("/v1/claims/check", headers=plat,
                    files={"file": ("n.png", data, "image/png")},
                    data={"claimant": "ada", "work_seq": str(first["seq"]),
                          "pdq": "0" * 64})  # a form value never overrides the file's own
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "match" and r.json()["claimant_is_registrant"]


def test_shared_live_index_reads_what_other_processes_registered(client: TestClient,
                                                                 reg: Node) -> None:
    """With `serve --workers N` (D48) a process's index catches up from the log before a
    search, so a work registered through another process is found, and none twice."""
    from copyledger.matching import LiveIndex, image_fingerprints

    ada = hdr(reg, "creator", "ada")
    one = client.post("/v1/works", headers=ada, files={"file": ("1.png", png(1), "image/png")},
                      data={"title": "One", "creators": ["A"], "work_type": "image"}).json()
    li = LiveIndex()
    li.build(reg.store)
    two = client.post("/v1/works", headers=ada, files={"file": ("2.png", png(2), "image/png")},
                      data={"title": "Two", "creators": ["A"], "work_type": "image"}).json()
    fps = image_fingerprints(png(2))
    assert two["seq"] not in {c.seq for c in li.search(fps)}
    li.catch_up(reg.store, reg.sequencer.state.size)
    assert [c.seq for c in li.search(fps)] == [two["seq"], two["seq"]]  # pdq and phash
    assert one["seq"] in {c.seq for c in li.search(image_fingerprints(png(1)))}
    li.catch_up(reg.store, reg.sequencer.state.size)  # nothing new: nothing added twice
    assert [c.seq for c in li.search(fps)] == [two["seq"], two["seq"]]
