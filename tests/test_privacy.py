"""Claimants' contact details stay off the log (D32), and who may answer a notice (issue #10
items 5 and 6)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import jcs
from copyledger.ledger import tiles as t
from copyledger.ledger.audit import audit
from copyledger.ledger.contact import CONTACT_FIELDS, Disclosure, commitment, seal
from copyledger.ledger.documents import parse_entry
from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.links import links_of
from copyledger.ledger.sequencer import Pending
from copyledger.ledger.verify import verify_bundle
from copyledger.service.node import Node, tsa_roots_pem
from tests.helpers import bearer, downgrade, open_registry, sha

SECRETS = ("ada@example.org", "+1 555 0100", "1 Harbour St", "2 Main St", "+1 555 0199")
DMCA = {
    "notice_type": "notice", "regime": "dmca_512c3",
    "claimant": {"name": "Ada Example", "email": "ada@example.org", "phone": "+1 555 0100",
                 "address": "1 Harbour St", "authority": "owner", "account": "ada"},
    "targets": [{"url": "https://video.example/watch/1"}],
    "statements": {"good_faith": True, "accuracy": True, "perjury": True},
    "requested_action": "remove", "signature": "/Ada Example/",
    "works": [{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}],
}
COUNTER = {
    "notice_type": "counter_notice", "regime": "dmca_512c3",
    "claimant": {"name": "Bob Uploader", "address": "2 Main St", "phone": "+1 555 0199"},
    "targets": [{"url": "https://video.example/watch/1"}],
    "statements": {"mistake": True, "perjury": True, "jurisdiction_consent": True},
    "signature": "/Bob/", "requested_action": "restore"}
DSA = {
    "notice_type": "notice", "regime": "eu_dsa_art16",
    "claimant": {"name": "Ada", "email": "ada@example.org"},
    "targets": [{"url": "https://video.example/watch/9"}],
    "substantiation": "This video copies my film.", "statements": {"accuracy": True}}


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Node:
    return open_registry(tmp_path, database_url)


def file_notice(c: TestClient, h: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = c.post("/v1/claims", headers=h, json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def public_bytes(c: TestClient, reg: Node, seqs: list[int]) -> bytes:
    """Everything anyone can read about these entries without a key, and the log's bytes."""
    size = c.get("/v1/log").json()["tree_size"]
    got = [reg.store.read_entry_data(0, size)[i] for i in range(size)]
    tiles = c.get(f"/tile/entries/000.p/{size}")
    assert tiles.status_code == 200
    assert t.decode_bundle(tiles.content) == got
    parts = [*got, tiles.content]
    for s in seqs:
        for path in (f"/v1/entries/{s}", f"/v1/entries/{s}/bundle", f"/v1/claims/{s}",
                     f"/v1/entries/{s}/certificate"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text)
            parts.append(r.content)
    parts.append(c.get("/v1/search", params={"sha256": sha("song")}).content)
    return b"\n".join(parts)


def test_contacts_never_enter_the_log_or_any_public_read(client: TestClient, reg: Node) -> None:
    ada, plat = bearer(reg, "ada", "creator"), bearer(reg, "tube", "platform")
    w = client.post("/v1/works", headers=ada, json={
        "sha256": sha("song"), "title": "Song", "creators": ["Ada"], "work_type": "audio"}).json()
    notice = file_notice(client, plat, {**DMCA, "works": [{"seq": w["seq"]}]})
    counter = file_notice(client, plat, {**COUNTER, "refers_to": notice["seq"]})
    claimant = notice["entry"]["claimant"]
    assert claimant["contact_fields"] == ["address", "email", "phone"]
    assert set(claimant) == {"name", "authority", "account", "contact_fields",
                             "contact_commitment"}
    assert counter["entry"]["claimant"]["contact_fields"] == ["address", "phone"]
    seen = public_bytes(client, reg, [notice["seq"], counter["seq"]])
    for secret in SECRETS:
        assert secret.encode() not in seen and secret.encode() not in jcs.canonicalize(
            [notice, counter])


def test_only_the_filing_platform_and_admins_see_contacts(client: TestClient, reg: Node) -> None:
    tube, other = bearer(reg, "tube", "platform"), bearer(reg, "vid", "platform")
    notice = file_notice(client, tube, {**DSA})
    path = f"/v1/claims/{notice['seq']}/contact"
    for h in (tube, bearer(reg, "root", "admin")):
        r = client.get(path, headers=h)
        assert r.status_code == 200, r.text
        d = Disclosure.from_dict(r.json())  # refuses one that does not open its commitment
        assert d.contact == {"email": "ada@example.org"}
        assert d.opens(notice["entry"]["claimant"]["contact_commitment"])
    for h, status in ((other, 403), (bearer(reg, "tube", "creator"), 403),
                      (bearer(reg, "judge", "court"), 403), ({}, 401)):
        r = client.get(path, headers=h)
        assert r.status_code == status, r.text
        assert "ada@example.org" not in r.text
    w = client.post("/v1/works", headers=bearer(reg, "ada", "creator"), json={
        "sha256": sha(1), "title": "T", "creators": ["A"], "work_type": "text"}).json()
    assert client.get(f"/v1/claims/{w['seq']}/contact", headers=tube).status_code == 404


def test_commitment_recomputes_from_the_disclosed_salt_and_contact(
    client: TestClient, reg: Node
) -> None:
    tube = bearer(reg, "tube", "platform")
    notice = file_notice(client, tube, DMCA)
    d = client.get(f"/v1/claims/{notice['seq']}/contact", headers=tube).json()
    assert len(bytes.fromhex(d["salt"])) == 32
    # The commitment as docs/privacy.md specifies it, computed here without ledger.contact.
    data = jcs.canonicalize({"contact": d["contact"], "salt": d["salt"]})
    assert hashlib.sha256(data).hexdigest() == d["commitment"] == \
        notice["entry"]["claimant"]["contact_commitment"]
    assert d["contact"] == {k: DMCA["claimant"][k] for k in CONTACT_FIELDS}  # type: ignore[index]


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(CONTACT_FIELDS), st.text(min_size=1), min_size=1),
       st.sampled_from(CONTACT_FIELDS), st.text(min_size=1))
def test_a_disclosure_opens_only_its_own_commitment(
    contact: dict[str, str], field: str, other: str
) -> None:
    salt, digest = seal(contact)
    d = Disclosure(0, salt, contact, digest)
    assert Disclosure.from_dict(d.to_dict()) == d and d.opens(commitment(salt, contact))
    changed = {**contact, field: other}
    if changed != contact:
        assert not Disclosure(0, salt, changed, digest).opens(digest)
        with pytest.raises(InvalidInput):
            Disclosure.from_dict({**d.to_dict(), "contact": changed})
    assert not Disclosure(0, seal(contact)[0], contact, digest).opens(digest)  # another salt


def test_erasure_keeps_the_log_bundles_and_audit_valid(client: TestClient, reg: Node) -> None:
    tube, admin = bearer(reg, "tube", "platform"), bearer(reg, "root", "admin")
    notice = file_notice(client, tube, DMCA)
    seq = notice["seq"]
    before = client.get(f"/v1/entries/{seq}/bundle").content
    assert client.delete(f"/v1/claims/{seq}/contact", headers=tube).status_code == 403
    r = client.delete(f"/v1/claims/{seq}/contact", headers=admin)
    assert r.status_code == 200 and r.json() == {
        "seq": seq, "erased": True,
        "commitment": notice["entry"]["claimant"]["contact_commitment"]}
    assert client.delete(f"/v1/claims/{seq}/contact", headers=admin).status_code == 404
    gone = client.get(f"/v1/claims/{seq}/contact", headers=tube)
    assert gone.status_code == 404 and "erased" in gone.json()["detail"]
    with reg.store.engine.connect() as conn:
        from sqlalchemy import text
        assert conn.execute(text("SELECT count(*) FROM claim_contacts")).scalar() == 0
    bundle = client.get(f"/v1/entries/{seq}/bundle").content
    assert bundle == before
    rep = verify_bundle(bundle, trusted_keys=[reg.verifier_key],
                        tsa_roots_pem=tsa_roots_pem(reg.settings))
    assert rep.ok, rep.to_json()
    assert audit(reg.store, reg.verifier_key, tsa_roots_pem=tsa_roots_pem(reg.settings)).ok


def test_a_counter_notice_is_filed_where_the_notice_was(client: TestClient, reg: Node) -> None:
    tube, other = bearer(reg, "tube", "platform"), bearer(reg, "vid", "platform")
    notice = file_notice(client, tube, DMCA)
    size = client.get("/v1/log").json()["tree_size"]
    r = client.post("/v1/claims", headers=other, json={**COUNTER, "refers_to": notice["seq"]})
    assert r.status_code == 403, r.text
    assert "another platform account" in r.json()["detail"]
    with reg.store.engine.connect() as conn:
        from sqlalchemy import text
        kept = conn.execute(text("SELECT count(*) FROM claim_contacts")).scalar()
    assert kept == 1  # the notice's only: nothing kept for the refused counter-notice
    assert client.get("/v1/log").json()["tree_size"] == size
    # An admin may answer any notice; the filing platform may answer its own.
    by_admin = file_notice(client, bearer(reg, "root", "admin"),
                           {**COUNTER, "refers_to": notice["seq"]})
    by_tube = file_notice(client, tube, {**COUNTER, "refers_to": notice["seq"]})
    t = client.get(f"/v1/claims/{by_tube['seq']}").json()["timeline"]
    assert [x["seq"] for x in t] == [notice["seq"], by_admin["seq"], by_tube["seq"]]


def test_a_counter_notice_to_a_dsa_notice_without_works(client: TestClient, reg: Node) -> None:
    tube = bearer(reg, "tube", "platform")
    notice = file_notice(client, tube, DSA)
    assert "works" not in notice["entry"]
    counter = file_notice(client, tube, {
        "notice_type": "counter_notice", "regime": "eu_dsa_art16", "refers_to": notice["seq"],
        "claimant": {"name": "Bo", "email": "bo@example.org"},
        "substantiation": "My own recording."})
    assert "works" not in counter["entry"]
    assert counter["entry"]["targets"] == DSA["targets"]  # copied: what it is found by
    t = client.get(f"/v1/claims/{notice['seq']}").json()["timeline"]
    assert [x["seq"] for x in t] == [notice["seq"], counter["seq"]]


def test_the_client_cannot_set_the_commitment(client: TestClient, reg: Node) -> None:
    tube = bearer(reg, "tube", "platform")
    for extra in ({"contact_commitment": sha(1)},
                  {"contact_fields": ["email"], "contact_commitment": sha(1)}):
        body = copy.deepcopy(DSA)
        body["claimant"] = {"name": "Ada", **extra}
        r = client.post("/v1/claims", headers=tube, json=body)
        assert r.status_code == 422 and "set by the registry" in r.text, r.text


def _legacy(**claimant: str) -> dict[str, object]:
    return entry_mod.build_claim(registrant="tube", received_at="2026-01-01T00:00:00Z",
                                 check=False, body={**DSA, "claimant": {"name": "Ada",
                                                                       **claimant}})


def test_entry_rules_refuse_contacts_in_new_claims_but_read_old_ones() -> None:
    old = _legacy(email="ada@example.org")
    assert entry_mod.validate(old) == old  # logged before D32: still valid when read
    with pytest.raises(InvalidInput) as e:
        entry_mod.encode(old, new=True)
    assert e.value.extra["errors"][0]["field"] == "claimant.email"
    new = _legacy(contact_fields=["email"], contact_commitment=sha(1))  # type: ignore[arg-type]
    assert entry_mod.encode(new, new=True)[0] == new
    for bad, field in (
        (_legacy(email="a@b", contact_fields=["email"],  # type: ignore[arg-type]
                 contact_commitment=sha(1)), "claimant.email"),
        (_legacy(contact_commitment=sha(1)), "claimant.contact_fields"),
        (_legacy(contact_fields=["phone", "email"],  # type: ignore[arg-type]
                 contact_commitment=sha(1)), "claimant.contact_fields"),
    ):
        with pytest.raises(InvalidInput) as e:
            entry_mod.validate(bad)
        assert field in [x["field"] for x in e.value.extra["errors"]]
    # The regime's requirements hold on the logged form: an e-mail committed to counts.
    lacking = _legacy(contact_fields=["phone"], contact_commitment=sha(1))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as e:
        entry_mod.validate(lacking)
    assert e.value.extra["missing"] == ["claimant.email"]


def test_a_claim_logged_before_keeps_verifying(client: TestClient, reg: Node) -> None:
    """A claim with contact details in clear, written as before D32, still verifies."""
    e, data = entry_mod.encode(_legacy(email="ada@example.org"))
    seq = reg.sequencer.submit(Pending(data, "claim", entry_mod.content_sha256(e), "tube",
                                       links_of(parse_entry(e)))).result(60).seq
    rep = verify_bundle(client.get(f"/v1/entries/{seq}/bundle").content,
                        trusted_keys=[reg.verifier_key], tsa_roots_pem=tsa_roots_pem(reg.settings))
    assert rep.ok, rep.to_json()
    r = client.get(f"/v1/claims/{seq}/contact", headers=bearer(reg, "root", "admin"))
    assert r.status_code == 404 and "logged before" in r.json()["detail"]
    assert audit(reg.store, reg.verifier_key, tsa_roots_pem=tsa_roots_pem(reg.settings)).ok


def test_migration_0005_adds_the_table_to_a_0004_log(reg: Node, database_url: str) -> None:
    from copyledger.ledger import store
    from copyledger.ledger.schema import (
        ENTRIES_BY_REGISTRANT,
        ENTRIES_FINGERPRINTED,
        accounts,
        claim_contacts,
        handoff_secret,
        idempotency_keys,
        sequencer_address,
    )

    downgrade(reg.store.engine, "0011")  # revision 0012's hex keys back
    claim_contacts.drop(reg.store.engine)
    reg.store.execute_raw(f"DROP INDEX {ENTRIES_BY_REGISTRANT[0]}")  # revision 0006's
    idempotency_keys.drop(reg.store.engine)  # revision 0007's
    accounts.drop(reg.store.engine)  # revision 0008's
    reg.store.execute_raw(f"DROP INDEX {ENTRIES_FINGERPRINTED}")  # revision 0009's
    sequencer_address.drop(reg.store.engine)  # revision 0010's
    handoff_secret.drop(reg.store.engine)  # revision 0011's
    reg.store.execute_raw("UPDATE alembic_version SET version_num = '0004'")
    reg.store.close()
    s = store.Store.open(database_url)
    try:
        salt, digest = seal({"email": "a@b"})
        s.put_contact(digest, salt, '{"email":"a@b"}', "2026-01-01T00:00:00Z")
        assert s.get_contact(digest) == (salt, '{"email":"a@b"}')
        assert s.delete_contact(digest) and s.get_contact(digest) is None
        assert not s.delete_contact(digest)
    finally:
        s.close()


def test_cli_shows_contacts_to_the_filer_and_an_admin_erases_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from copyledger.cli.main import app
    from tests.server import ServerProcess

    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        r = runner.invoke(app, list(args))
        return r.exit_code, r.stdout + (r.stderr if r.stderr_bytes else "")

    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    keys = {a: json.loads(run("keys", "create", "--role", role, "--account", a,
                              "--data-dir", str(d), "--json")[1])["key"]
            for a, role in (("tube", "platform"), ("vid", "platform"))}
    srv = ServerProcess(d).start()
    try:
        code, out = run("claim", "notice", "--regime", "eu_dsa_art16", "--claimant-name", "Ada",
                        "--claimant-email", "ada@example.org", "--target",
                        "https://video.example/watch/9", "--substantiation", "copied",
                        "--statement", "accuracy", "--server", srv.url, "--api-key",
                        keys["tube"], "--json")
        assert code == 0, out
        filed = json.loads(out)
        seq = filed["seq"]
        assert filed["contact"]["contact"] == {"email": "ada@example.org"}
        assert "ada@example.org" not in json.dumps(filed["receipt"])
        code, out = run("claim", "show", str(seq), "--server", srv.url)
        assert code == 0 and "ada@example.org" not in out, out
        code, out = run("claim", "show", str(seq), "--server", srv.url, "--api-key", keys["vid"])
        assert code == 0 and "ada@example.org" not in out, out
        code, out = run("claim", "show", str(seq), "--server", srv.url, "--api-key",
                        keys["tube"])
        assert code == 0 and "email: ada@example.org" in out and "salt:" in out, out
        code, out = run("claim", "erase-contact", str(seq), "--data-dir", str(d), "--json")
        assert code == 0 and json.loads(out)["erased"] is True, out
        code, out = run("claim", "erase-contact", str(seq), "--data-dir", str(d))
        assert code == 2 and "already erased" in out, out
        code, out = run("claim", "show", str(seq), "--server", srv.url, "--api-key",
                        keys["tube"], "--json")
        assert code == 0 and "contact" not in json.loads(out), out
        code, out = run("audit", "--data-dir", str(d), "--json")
        assert code == 0 and json.loads(out)["ok"] is True, out

        # D181: the claim is recorded though its contact details cannot be read back: its
        # verified receipt is still printed (it was lost), and the command says what failed.
        from copyledger.client import Client, ProblemError

        def down(self: Client, seq: int) -> None:
            raise ProblemError(503, "the registry is busy")

        monkeypatch.setattr(Client, "claim_contact", down)
        code, out = run("claim", "notice", "--regime", "eu_dsa_art16", "--claimant-name", "Ada",
                        "--claimant-email", "ada@example.org", "--target",
                        "https://video.example/watch/10", "--substantiation", "copied",
                        "--statement", "accuracy", "--server", srv.url, "--api-key",
                        keys["tube"], "--json")
        assert code == 2 and "the registry is busy" in out, out
        row = json.loads(out[out.index("{"):out.rindex("}") + 1])
        assert row["seq"] > seq and row["contact_checked"] is False and "receipt" in row, row
    finally:
        srv.stop()


def _kept(reg: Node) -> int:
    from sqlalchemy import func, select

    from copyledger.ledger.schema import claim_contacts

    with reg.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(claim_contacts)).scalar_one())


def test_a_failed_write_keeps_no_contact_details_unless_logged(
    client: TestClient, reg: Node
) -> None:
    import asyncio

    from copyledger.ledger.errors import Unavailable
    from copyledger.service import contacts, operations
    from copyledger.service.apikeys import Principal
    from copyledger.service.operations import ClaimIn

    tube = Principal(account="tube", role="platform", key_id=1)
    done = asyncio.run(operations.record_claim(reg, tube, ClaimIn(**DSA)))
    assert _kept(reg) == 1
    contacts.forget_unless_logged(reg.store, done.entry)  # it is logged: kept
    assert _kept(reg) == 1
    reg.stop()  # the sequencer is not running: the write fails, nothing is logged
    with pytest.raises(Unavailable):
        asyncio.run(operations.record_claim(reg, tube, ClaimIn(**DSA)))
    assert _kept(reg) == 1


def test_the_verify_page_accepts_the_committed_claimant() -> None:
    """The browser verifier checks an entry's members by name: it must know the new ones, or
    it would refuse every claim logged from D32 on."""
    import re

    from copyledger import api

    js = (Path(api.__file__).parent / "static" / "verify.js").read_text()
    found = re.search(r"claimant: \[([^\]]*)\]", js)
    assert found is not None
    assert set(re.findall(r"'(\w+)'", found.group(1))) == set(entry_mod._CLAIMANT)
    hex_members = re.search(r"const ENTRY_HEX = \[([^\]]*)\]", js)
    assert hex_members is not None and "'contact_commitment'" in hex_members.group(1)


def test_timelines_follow_refers_to_not_the_content_hash(client: TestClient, reg: Node) -> None:
    tube = bearer(reg, "tube", "platform")
    a = file_notice(client, tube, DMCA)["seq"]
    b = file_notice(client, tube, DMCA)["seq"]  # the same work hash, another dispute
    c = file_notice(client, tube, {**COUNTER, "refers_to": a})["seq"]
    d = file_notice(client, tube, {**COUNTER, "refers_to": c})["seq"]  # answers the answer
    for s in (a, c, d):
        t = client.get(f"/v1/claims/{s}").json()["timeline"]
        assert [x["seq"] for x in t] == [a, c, d], s
    assert [x["seq"] for x in client.get(f"/v1/claims/{b}").json()["timeline"]] == [b]
