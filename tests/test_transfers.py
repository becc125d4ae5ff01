"""Transfers of rights and the chain of title, link by link."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.ledger import entry, merkle, note
from copyledger.ledger.errors import IntegrityError
from copyledger.ledger.title import chain_of_title
from copyledger.ledger.verify import verify_bundle
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.helpers import open_registry, sha, work_body


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Node:
    return open_registry(tmp_path, database_url)


@pytest.fixture
def client(reg: Node) -> Iterator[TestClient]:
    with TestClient(create_app(reg)) as c:
        yield c


def key(reg: Node, account: str) -> dict[str, str]:
    k, _ = create_key(reg.store, "creator", account)
    return {"Authorization": f"Bearer {k}"}


def transfer(client: TestClient, h: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/transfers", json=body, headers=h)


def test_chain_of_title_with_two_transfers(client: TestClient, reg: Node) -> None:
    alice, bob, carol = key(reg, "alice"), key(reg, "bob"), key(reg, "carol")
    w = client.post("/v1/works", json=work_body("song"), headers=alice).json()["seq"]
    r1 = transfer(client, alice, work_seq=w, to="bob", transfer_type="assignment",
                  terms_sha256=sha("contract-1"))
    assert r1.status_code == 201, r1.text
    lic = transfer(client, bob, work_seq=w, to="radio", transfer_type="non_exclusive_licence",
                   territory="EU", term_start="2027-01-01T00:00:00Z",
                   term_end="2028-01-01T00:00:00Z")
    assert lic.status_code == 201, lic.text
    r2 = transfer(client, bob, work_seq=w, to="carol", transfer_type="assignment")
    assert r2.status_code == 201, r2.text

    # alice no longer holds it: refused with a clear error, nothing written
    size = client.get("/v1/log").json()["tree_size"]
    bad = transfer(client, alice, work_seq=w, to="mallory", transfer_type="assignment")
    assert bad.status_code == 403 and "'carol'" in bad.json()["detail"]
    assert client.get("/v1/log").json()["tree_size"] == size

    h = client.get(f"/v1/works/{w}/history").json()
    assert h["holder"] == "carol" and h["registrant"] == "alice"
    assert [link["holder_after"] for link in h["links"]] == ["alice", "bob", "bob", "carol"]
    assert [li["to"] for li in h["licences"]] == ["radio"]
    vkey = client.get("/v1/log").json()["verifier_key"]
    verifier = note.parse_verifier_key(vkey)
    n, _ = note.verify_note(h["checkpoint"], [verifier])
    cp = note.parse_checkpoint(n.text)
    assert (cp.size, cp.root.hex()) == (h["tree_size"], h["root"])
    for link in h["links"]:  # each link is in the signed tree ...
        merkle.verify_inclusion(link["seq"], cp.size, bytes.fromhex(link["leaf_hash"]),
                                [bytes.fromhex(p) for p in link["proof"]], cp.root)
        b = client.get(link["bundle"]).json()  # ... and has its own verifiable bundle
        assert verify_bundle(b, trusted_keys=[vkey]).ok
    # ... and the chain replays from the entries alone
    entries = [(link["seq"], link["entry"]) for link in h["links"]]
    title = chain_of_title(entries[0][0], entries[0][1], entries[1:])
    assert title.holder == "carol"
    _ = carol


def test_transfer_validation(client: TestClient, reg: Node) -> None:
    alice = key(reg, "alice")
    w = client.post("/v1/works", json=work_body("w"), headers=alice).json()["seq"]
    ev = client.post("/v1/evidence", headers=alice, json={
        "sha256": sha("cap"), "captured_at": "2026-01-01T00:00:00Z", "capture_method": "s",
        "description": "d"}).json()["seq"]
    size = client.get("/v1/log").json()["tree_size"]
    for body, field in [
        ({"work_seq": 99, "to": "bob", "transfer_type": "assignment"}, "work_seq"),
        ({"work_seq": ev, "to": "bob", "transfer_type": "assignment"}, "work_seq"),
        ({"work_seq": w, "to": "bob", "transfer_type": "sale"}, "transfer_type"),
        ({"work_seq": w, "to": "b o b", "transfer_type": "assignment"}, "to"),
        ({"work_seq": w, "to": "bob", "transfer_type": "assignment",
          "term_start": "2030-01-01T00:00:00Z", "term_end": "2029-01-01T00:00:00Z"}, "term.end"),
    ]:
        r = transfer(client, alice, **body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.text
    assert client.get("/v1/log").json()["tree_size"] == size


def test_replay_rejects_a_link_by_a_non_holder() -> None:
    at = "2026-01-01T00:00:00Z"
    work = entry.build_work(registrant="alice", received_at=at, sha256=sha(1), title="w",
                            creators=["A"], work_type="text")
    forged = entry.build_transfer(registrant="mallory", received_at=at, work_seq=0,
                                  work_sha256=sha(1), from_account="mallory",
                                  to_account="mallory", transfer_type="assignment")
    with pytest.raises(IntegrityError, match="held the work"):
        chain_of_title(0, work, [(1, forged)])
