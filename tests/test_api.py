"""The HTTP API end to end, on SQLite and on a real PostgreSQL server: shapes, receipts that
verify, problem+json errors that write nothing, auth, limits."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.ledger import jcs, merkle, note, runs
from copyledger.ledger.sequencer import Sequencer
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.helpers import open_registry, sha, wait_for, work_body


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Iterator[Node]:
    r = open_registry(tmp_path, database_url)
    yield r


def register(client: TestClient, headers: dict[str, str], i: int | str, **kw: Any) -> Any:
    r = client.post("/v1/works", json=work_body(i, **kw), headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def assert_problem(r: Any, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["type"].startswith("https://")
    for w in words:
        assert w in body["detail"], body
    return body


def test_register_returns_verifiable_receipt(client: TestClient, creator: dict[str, str]) -> None:
    log = client.get("/v1/log").json()
    verifier = note.parse_verifier_key(log["verifier_key"])
    for i in range(5):
        reg = register(client, creator, i)
        assert reg["seq"] == i
        entry = reg["entry"]
        assert entry["registrant"] == "alice" and entry["content"]["sha256"] == sha(i)
        # leaf hash = SHA-256(0x00 || RFC 8785 bytes of exactly the returned entry object)
        assert reg["leaf_hash"] == merkle.leaf_hash(jcs.canonicalize(entry)).hex()
        rc = reg["receipt"]
        merkle.verify_inclusion(i, rc["tree_size"], bytes.fromhex(reg["leaf_hash"]),
                                [bytes.fromhex(p) for p in rc["proof"]], bytes.fromhex(rc["root"]))
        n, _ok = note.verify_note(rc["checkpoint"], [verifier])
        cp = note.parse_checkpoint(n.text)
        assert (cp.origin, cp.size, cp.root.hex()) == (log["origin"], rc["tree_size"], rc["root"])


def test_entry_proof_and_consistency_shapes(client: TestClient, creator: dict[str, str]) -> None:
    regs = [register(client, creator, i) for i in range(7)]
    e = client.get("/v1/entries/3").json()
    assert set(e) == {"seq", "leaf_hash", "block_height", "entry"}
    assert e["entry"] == regs[3]["entry"] and e["leaf_hash"] == regs[3]["leaf_hash"]

    p = client.get("/v1/entries/3/proof", params={"tree_size": 5}).json()
    assert {"seq", "tree_size", "leaf_hash", "root", "proof"} <= set(p)
    assert p["tree_size"] == 5
    merkle.verify_inclusion(3, 5, bytes.fromhex(p["leaf_hash"]),
                            [bytes.fromhex(h) for h in p["proof"]], bytes.fromhex(p["root"]))
    assert p["root"] == regs[4]["receipt"]["root"]  # the root at size 5 is what seq 4 was shown

    latest = client.get("/v1/entries/3/proof").json()
    assert latest["tree_size"] == 7

    c = client.get("/v1/log/consistency", params={"from": 2, "to": 7}).json()
    assert set(c) == {"from", "to", "old_root", "new_root", "proof"}
    assert c["old_root"] == regs[1]["receipt"]["root"]
    merkle.verify_consistency(2, 7, bytes.fromhex(c["old_root"]), bytes.fromhex(c["new_root"]),
                              [bytes.fromhex(h) for h in c["proof"]])

    log = client.get("/v1/log").json()
    assert set(log) >= {"origin", "verifier_key", "tree_size", "root"}
    assert log["tree_size"] == 7 and log["root"] == c["new_root"]
    cp = client.get("/v1/log/checkpoint")
    assert cp.headers["content-type"].startswith("text/plain")
    assert cp.text.splitlines()[1] == "7"

    b = client.get(f"/v1/blocks/{regs[6]['block_height']}").json()
    assert b["header"]["tree_size"] == 7 and len(b["hash"]) == 64
    prev = client.get(f"/v1/blocks/{b['height'] - 1}").json()
    assert b["header"]["prev_block_hash"] == prev["hash"]


def test_search_oldest_first(client: TestClient, reg: Node, creator: dict[str, str]) -> None:
    key2, _ = create_key(reg.store, "creator", "bob")
    register(client, creator, "x")
    register(client, {"Authorization": f"Bearer {key2}"}, "x", title="Copy")
    register(client, creator, "y")
    res = client.get("/v1/search", params={"sha256": sha("x")}).json()["results"]
    assert [r["seq"] for r in res] == [0, 1]
    assert [r["entry"]["registrant"] for r in res] == ["alice", "bob"]
    assert client.get("/v1/search", params={"sha256": sha("none")}).json()["results"] == []
    assert_problem(client.get("/v1/search", params={"sha256": "ABC"}), 422, "sha256")


def test_multipart_upload_is_hashed_by_server(client: TestClient, creator: dict[str, str]) -> None:
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (640, 480), "white")
    ImageDraw.Draw(img).ellipse((100, 100, 400, 380), fill="navy")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    r = client.post("/v1/works", headers=creator,
                    files={"file": ("a.png", data, "image/png")},
                    data={"title": "Upload", "creators": ["A", "B"], "work_type": "image",
                          "metadata": json.dumps({"year": 2026})})
    assert r.status_code == 201, r.text
    content = r.json()["entry"]["content"]
    assert {k: content[k] for k in ("sha256", "size", "media_type")} == {
        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "media_type": "image/png"}
    assert set(content["fingerprints"]) == {"pdq", "phash", "orb"}  # by the server (orb: D37)
    assert r.json()["entry"]["creators"] == ["A", "B"]
    fake = client.post("/v1/works", headers=creator,
                       files={"file": ("b.png", b"\x89PNG not really", "image/png")},
                       data={"title": "Fake", "creators": ["A"], "work_type": "image"})
    assert_problem(fake, 422, "image")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sha256": "xyz"}, "sha256"),
        ({"sha256": "A" * 64}, "sha256"),
        ({"title": ""}, "title"),
        ({"creators": []}, "creators"),
        ({"work_type": "sculpture"}, "work_type"),
        ({"size": -1}, "size"),
        ({"metadata": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}, "metadata"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_bad_input_is_422_and_writes_nothing(
    client: TestClient, creator: dict[str, str], body: dict[str, Any], field: str
) -> None:
    register(client, creator, 0)
    r = client.post("/v1/works", json={**work_body(1), **body}, headers=creator)
    problem = assert_problem(r, 422)
    assert field in json.dumps(problem)
    assert client.get("/v1/log").json()["tree_size"] == 1


def test_malformed_json_and_wrong_types(client: TestClient, creator: dict[str, str]) -> None:
    h = {**creator, "content-type": "application/json"}
    assert_problem(client.post("/v1/works", content=b"{not json", headers=h), 422)
    assert_problem(client.post("/v1/works", content=b"[]", headers=h), 422)
    assert_problem(client.post("/v1/works", json={**work_body(1), "creators": "A"},
                               headers=creator), 422, "creators")
    assert client.get("/v1/log").json()["tree_size"] == 0


def test_auth(client: TestClient, reg: Node) -> None:
    assert_problem(client.post("/v1/works", json=work_body(1)), 401, "Bearer")
    assert_problem(client.post("/v1/works", json=work_body(1),
                               headers={"Authorization": "Bearer cl_nope"}), 401)
    platform, _ = create_key(reg.store, "platform", "tube")
    assert_problem(client.post("/v1/works", json=work_body(1),
                               headers={"Authorization": f"Bearer {platform}"}), 403, "platform")
    assert client.get("/v1/log").json()["tree_size"] == 0


def test_body_limit(client: TestClient, creator: dict[str, str]) -> None:
    big = work_body(1, metadata={"blob": "x" * 70_000})
    assert_problem(client.post("/v1/works", json=big, headers=creator), 413)
    assert client.get("/v1/log").json()["tree_size"] == 0


def test_not_found_and_bad_params(client: TestClient, creator: dict[str, str]) -> None:
    register(client, creator, 0)
    assert_problem(client.get("/v1/entries/5"), 404, "5")
    assert_problem(client.get("/v1/entries/-1"), 422)
    assert_problem(client.get("/v1/entries/abc"), 422)
    assert_problem(client.get("/v1/entries/0/proof", params={"tree_size": 9}), 422, "beyond")
    assert_problem(client.get("/v1/log/consistency", params={"from": 3, "to": 1}), 422)
    assert_problem(client.get("/v1/blocks/999"), 404)
    assert_problem(client.get("/v1/nowhere"), 404)


def test_evidence_deposit(client: TestClient, creator: dict[str, str]) -> None:
    work = register(client, creator, 0)
    r = client.post("/v1/evidence", headers=creator, json={
        "sha256": sha("capture"), "source_url": "https://example.org/x",
        "captured_at": "2026-11-20T10:00:00Z", "capture_method": "screenshot",
        "description": "listing", "related_work": work["seq"]})
    assert r.status_code == 201, r.text
    assert r.json()["entry"]["kind"] == "evidence"
    bad = client.post("/v1/evidence", headers=creator, json={
        "sha256": sha("capture"), "source_url": "ftp://example.org/x",
        "captured_at": "yesterday", "capture_method": "screenshot", "description": "d"})
    body = assert_problem(bad, 422)
    assert "source_url" in json.dumps(body) and "captured_at" in json.dumps(body)
    missing = client.post("/v1/evidence", headers=creator, json={
        "sha256": sha("c"), "captured_at": "2026-11-20T10:00:00Z", "capture_method": "s",
        "description": "d", "related_work": 99})
    assert_problem(missing, 422, "related_work")


def test_openapi_documents_contract(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/works", "/v1/entries/{seq}", "/v1/entries/{seq}/proof", "/v1/search",
                 "/v1/log", "/v1/log/checkpoint", "/v1/log/consistency", "/v1/blocks/{height}"):
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/works"]["post"]["requestBody"]["content"]
    assert "examples" in body["application/json"]["schema"]
    assert "multipart/form-data" in body


def test_metrics_say_a_process_is_barred_for_its_secret(client: TestClient, reg: Node) -> None:
    """D113: a process whose hand-over secret is not the hosts' shows it, for an alert."""
    reg.sequencer.barred = True  # type: ignore[union-attr]  # (as a barred Handoff has it)
    assert "copyledger_handoff_barred 1.0" in client.get("/metrics").text


def test_metrics_count_requests_and_seals(client: TestClient, creator: dict[str, str],
                                          reg: Node) -> None:
    register(client, creator, 0)
    client.get("/v1/entries/99")
    text = client.get("/metrics").text
    assert 'copyledger_http_requests_total{method="POST",status="2xx"}' in text
    assert 'copyledger_http_requests_total{method="GET",status="4xx"}' in text
    assert "copyledger_tree_size 1.0" in text
    # The sequencer's own counters (D86): this process seals, and sealing took time.
    assert "copyledger_sequencing 1.0" in text
    assert "copyledger_handoff_barred 0.0" in text
    seconds = dict(re.findall(r'copyledger_seal_seconds\{phase="(\w+)"\} (\S+)', text))
    assert set(seconds) == {"build", "token", "sign", "commit", "proofs", "handover", "answer"}
    assert "copyledger_entries_refused_clock 0.0" in text  # (D117)
    assert "copyledger_blocks_sealed_ahead 0.0" in text
    assert float(seconds["commit"]) > 0 and float(seconds["sign"]) > 0
    # The content filter (D103): ready once its scan at start has read the log.
    seq = reg.sequencer
    assert isinstance(seq, Sequencer)
    wait_for(lambda: seq.content_filter_ready, "the content-hash scan")
    assert "copyledger_content_filter_ready 1.0" in client.get("/metrics").text
    assert seq.seen is not None
    seq.seen._ready = None  # (as before the scan ends)
    assert "copyledger_content_filter_ready 0.0" in client.get("/metrics").text
    assert float(re.findall(r"^copyledger_answer_wakeups (\S+)", text, re.M)[0]) >= 1


def test_metrics_show_the_runs_upkeep(client: TestClient, creator: dict[str, str],
                                      reg: Node) -> None:
    """The content-hash runs' upkeep (D142) in /metrics: the seconds it took after blocks and
    in idle time, the rows it copied into merged runs and deleted as garbage, and the runs
    listed, which each lookup seeks (D156). PostgreSQL has no runs: zeros there."""
    reg.store.runs = runs.Runs(fanout=2)  # (merges after two blocks; read from the database)
    for i in range(5):  # a block each
        register(client, creator, i)

    def stored() -> int:
        with reg.store.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM content_runs").scalar_one())

    def metrics() -> tuple[dict[str, float], dict[str, float], float]:
        text = client.get("/metrics").text
        return ({k: float(v) for k, v in re.findall(
                    r'^copyledger_content_runs_upkeep_rows\{kind="(\w+)"\} (\S+)', text, re.M)},
                {k: float(v) for k, v in re.findall(
                    r'^copyledger_content_runs_upkeep_seconds\{when="(\w+)"\} (\S+)', text,
                    re.M)},
                float(re.findall(r"^copyledger_content_runs_listed (\S+)", text, re.M)[0]))

    if not reg.store.has_runs:
        rows, seconds, listed = metrics()
        assert rows == {"copied": 0.0, "deleted": 0.0} and listed == 0.0
        assert set(seconds) == {"after_block", "idle"}
        return
    # Done once nothing is left to step and what this process knows is what is stored (the
    # last step's switch is known before its commit).
    wait_for(lambda: reg.store.upkeep_wait() is None and metrics()[2] == stored(),
             "the idle upkeep")
    rows, seconds, listed = metrics()
    # The first four blocks' keys (two tables) copied by at least one merge each, and
    # deleted once merged away; the fifth's may be alone in its run.
    assert rows["copied"] >= 2 * 4 and rows["deleted"] >= 2 * 4, rows
    assert set(seconds) == {"after_block", "idle"} and seconds["after_block"] > 0, seconds
    assert 0 < listed < 5, listed  # merged: fewer runs than blocks


def test_multipart_to_json_only_endpoint_gets_json_limit(
    client: TestClient, creator: dict[str, str]
) -> None:
    r = client.post("/v1/evidence", headers=creator,
                    files={"file": ("x.bin", b"x" * 200_000, "application/octet-stream")})
    assert_problem(r, 413)
