"""Transfers of rights and the chain of title, link by link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.ledger import entry, merkle, note
from copyledger.ledger.errors import IntegrityError
from copyledger.ledger.title import chain_of_title
from copyledger.ledger.verify import verify_bundle
from copyledger.service.node import Node
from tests.helpers import bearer, open_registry, sha, work_body


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Node:
    return open_registry(tmp_path, database_url)


def transfer(client: TestClient, h: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/transfers", json=body, headers=h)


def accept(client: TestClient, h: dict[str, str], offer: int, what: str = "accept") -> Any:
    return client.post(f"/v1/transfers/{offer}/{what}", headers=h)


def test_chain_of_title_with_two_transfers(client: TestClient, reg: Node) -> None:
    alice, bob, carol = bearer(reg, "alice"), bearer(reg, "bob"), bearer(reg, "carol")
    bearer(reg, "radio")
    w = client.post("/v1/works", json=work_body("song"), headers=alice).json()["seq"]
    r1 = transfer(client, alice, work_seq=w, to="bob", transfer_type="assignment",
                  terms_sha256=sha("contract-1"))
    assert r1.status_code == 201, r1.text
    a1 = accept(client, bob, r1.json()["seq"])
    assert a1.status_code == 201, a1.text
    lic = transfer(client, bob, work_seq=w, to="radio", transfer_type="non_exclusive_licence",
                   territory="EU", term_start="2027-01-01T00:00:00Z",
                   term_end="2028-01-01T00:00:00Z")
    assert lic.status_code == 201, lic.text
    r2 = transfer(client, bob, work_seq=w, to="carol", transfer_type="assignment")
    assert r2.status_code == 201, r2.text
    a2 = accept(client, carol, r2.json()["seq"])
    assert a2.status_code == 201, a2.text

    # alice no longer holds it: refused with a clear error, nothing written
    size = client.get("/v1/log").json()["tree_size"]
    bad = transfer(client, alice, work_seq=w, to="mallory", transfer_type="assignment")
    assert bad.status_code == 403 and "'carol'" in bad.json()["detail"]
    assert client.get("/v1/log").json()["tree_size"] == size

    h = client.get(f"/v1/works/{w}/history").json()
    assert h["holder"] == "carol" and h["registrant"] == "alice"
    # work, offer, acceptance, licence, offer, acceptance
    assert [link["holder_after"] for link in h["links"]] == [
        "alice", "alice", "bob", "bob", "bob", "carol"]
    assert h["pending_offer"] is None
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
    assert len(reg.transfer_locks) == 0  # no lock kept per work once its transfers are done


def test_transfer_validation(client: TestClient, reg: Node) -> None:
    alice = bearer(reg, "alice")
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


def size_of(client: TestClient) -> int:
    return int(client.get("/v1/log").json()["tree_size"])


def holder(client: TestClient, w: int) -> Any:
    return client.get(f"/v1/works/{w}/history").json()


def test_a_transfer_to_a_mistyped_account_cannot_lock_a_work(
    client: TestClient, reg: Node
) -> None:
    alice, bob, bobby = bearer(reg, "alice"), bearer(reg, "bob"), bearer(reg, "bobby")
    w = client.post("/v1/works", json=work_body("novel"), headers=alice).json()["seq"]
    # An account that does not exist: refused, nothing logged.
    size = size_of(client)
    for kind in ("assignment", "exclusive_licence"):
        r = transfer(client, alice, work_seq=w, to="bbo", transfer_type=kind)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "to", r.text
        assert "'bbo'" in r.json()["detail"]
    assert size_of(client) == size
    # An existing but wrong account: only an offer, which alice withdraws; she never lost it.
    offer = transfer(client, alice, work_seq=w, to="bobby", transfer_type="assignment")
    assert offer.status_code == 201 and offer.json()["entry"]["needs_acceptance"] is True
    o = offer.json()["seq"]
    h = holder(client, w)
    assert h["holder"] == "alice"
    assert h["pending_offer"] == {"seq": o, "from": "alice", "to": "bobby",
                                  "transfer_type": "assignment"}
    busy = transfer(client, alice, work_seq=w, to="bob", transfer_type="assignment")
    assert busy.status_code == 409 and f"offer {o}" in busy.json()["detail"]
    wd = accept(client, alice, o, "withdraw")
    assert wd.status_code == 201, wd.text
    assert wd.json()["entry"]["kind"] == "withdrawal" and wd.json()["entry"]["offer"] == o
    late = accept(client, bobby, o)  # too late: nothing to accept
    assert late.status_code == 409
    h = holder(client, w)
    assert h["holder"] == "alice" and h["pending_offer"] is None
    # ... and she can now assign it to the right account.
    right = transfer(client, alice, work_seq=w, to="bob", transfer_type="assignment").json()
    done = accept(client, bob, right["seq"])
    assert done.status_code == 201
    cert = client.get(f"/v1/entries/{done.json()['seq']}/certificate")
    assert cert.status_code == 200 and "Certificate of an accepted assignment" in cert.text
    assert "Accepted by" in cert.text
    h = holder(client, w)
    assert h["holder"] == "bob"
    assert [li["kind"] for li in h["links"]] == [
        "work", "transfer", "withdrawal", "transfer", "acceptance"]
    assert [li["holder_after"] for li in h["links"]] == ["alice"] * 4 + ["bob"]


def test_only_the_recipient_accepts_and_only_the_offerer_withdraws(
    client: TestClient, reg: Node
) -> None:
    alice, bob, mallory = bearer(reg, "alice"), bearer(reg, "bob"), bearer(reg, "mallory")
    w = client.post("/v1/works", json=work_body("film"), headers=alice).json()["seq"]
    lic = transfer(client, alice, work_seq=w, to="bob", transfer_type="exclusive_licence")
    assert lic.status_code == 201 and "needs_acceptance" not in lic.json()["entry"]
    assert holder(client, w)["pending_offer"] is None  # a licence is one step
    o = transfer(client, alice, work_seq=w, to="bob", transfer_type="assignment").json()["seq"]
    size = size_of(client)
    assert accept(client, mallory, o).status_code == 403
    assert accept(client, alice, o).status_code == 403  # the offerer cannot accept for bob
    assert accept(client, bob, o, "withdraw").status_code == 403
    assert accept(client, bob, lic.json()["seq"]).status_code == 404  # not an offer
    assert accept(client, bob, w).status_code == 404
    assert accept(client, bob, 10**6).status_code == 404
    again = transfer(client, alice, work_seq=w, to="mallory", transfer_type="non_exclusive_licence")
    assert again.status_code == 409  # nothing changes under a pending offer
    bad = client.post(f"/v1/transfers/{o}/accept", headers=bob, json={"nte": "x"})
    assert bad.status_code == 422
    assert size_of(client) == size
    ok = client.post(f"/v1/transfers/{o}/accept", headers=bob, json={"note": "thanks"})
    assert ok.status_code == 201 and ok.json()["entry"]["note"] == "thanks"
    assert accept(client, bob, o).status_code == 409  # answered once
    assert accept(client, alice, o, "withdraw").status_code == 409
    assert holder(client, w)["holder"] == "bob"


def test_a_transfer_to_an_account_whose_keys_are_all_revoked_is_refused(
    client: TestClient, reg: Node
) -> None:
    from copyledger.service.apikeys import list_keys, revoke_key

    alice = bearer(reg, "alice")
    bearer(reg, "gone")
    revoke_key(reg.store, list_keys(reg.store, "gone")[0].id)
    w = client.post("/v1/works", json=work_body("poem"), headers=alice).json()["seq"]
    r = transfer(client, alice, work_seq=w, to="gone", transfer_type="assignment")
    assert r.status_code == 422 and "'gone'" in r.json()["detail"]


AT = "2026-01-01T00:00:00Z"
WORK = entry.build_work(registrant="alice", received_at=AT, sha256=sha(1), title="w",
                        creators=["A"], work_type="text")


def offer(frm: str, to: str) -> dict[str, object]:
    return entry.build_transfer(registrant=frm, received_at=AT, work_seq=0, work_sha256=sha(1),
                                from_account=frm, to_account=to, transfer_type="assignment",
                                needs_acceptance=True)


def answer(kind: str, who: str, offer_seq: int) -> dict[str, object]:
    return entry.build_answer(kind=kind, registrant=who, received_at=AT, work_seq=0,
                              work_sha256=sha(1), offer=offer_seq)


def test_replay_of_offers_and_answers() -> None:
    t = chain_of_title(0, WORK, [(1, offer("alice", "bob"))])
    assert t.holder == "alice" and t.pending is not None and t.pending.to_account == "bob"
    t = chain_of_title(0, WORK, [(1, offer("alice", "bob")), (2, answer("acceptance", "bob", 1))])
    assert t.holder == "bob" and t.pending is None
    assert [(li.seq, li.to_account, li.offer) for li in t.links] == [(2, "bob", 1)]
    t = chain_of_title(0, WORK, [(1, offer("alice", "bob")), (2, answer("withdrawal", "alice", 1)),
                                 (3, offer("alice", "carol"))])
    assert t.holder == "alice" and t.pending is not None and t.pending.seq == 3
    # A one-step assignment (every assignment logged before offers existed) still moves at once.
    legacy = entry.build_transfer(registrant="alice", received_at=AT, work_seq=0,
                                  work_sha256=sha(1), from_account="alice", to_account="bob",
                                  transfer_type="assignment")
    t = chain_of_title(0, WORK, [(1, legacy), (2, offer("bob", "carol")),
                                 (3, answer("acceptance", "carol", 2))])
    assert t.holder == "carol" and [li.holder_after for li in t.links] == ["bob", "carol"]


@pytest.mark.parametrize(("links", "message"), [
    ([(1, answer("acceptance", "bob", 1))], "not pending"),  # accept without an offer
    ([(1, offer("alice", "bob")), (2, answer("acceptance", "mallory", 1))], "only 'bob'"),
    ([(1, offer("alice", "bob")), (2, answer("withdrawal", "bob", 1))], "only 'alice'"),
    ([(1, offer("alice", "bob")), (2, offer("alice", "carol"))], "was pending"),
    ([(1, offer("alice", "bob")), (2, answer("acceptance", "bob", 1)),
      (3, answer("acceptance", "bob", 1))], "not pending"),  # accepted twice
    ([(1, offer("alice", "bob")), (2, answer("acceptance", "bob", 3))], "not pending"),
])
def test_replay_rejects_answers_out_of_turn(links: list[Any], message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        chain_of_title(0, WORK, links)


def test_only_an_assignment_waits_for_acceptance() -> None:
    from copyledger.ledger.errors import InvalidInput

    with pytest.raises(InvalidInput, match="only an assignment"):
        entry.build_transfer(registrant="alice", received_at=AT, work_seq=0, work_sha256=sha(1),
                             from_account="alice", to_account="bob",
                             transfer_type="exclusive_licence", needs_acceptance=True)
    bad = {**offer("alice", "bob"), "needs_acceptance": False}
    with pytest.raises(InvalidInput, match="must be true"):
        entry.validate(bad)
    with pytest.raises(InvalidInput, match="offer"):
        entry.validate({k: v for k, v in answer("acceptance", "bob", 1).items() if k != "offer"})
