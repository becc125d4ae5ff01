"""The verifier a court relies on refuses what the specification does not allow, even when the
operator (who holds every key) signed it: each forged bundle below is re-signed with the test
registry's own log key and re-stamped by its own TSA, so the failure comes from the rule, not
from a broken signature. `forge(b)` with no change verifies, which shows it."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.ledger import jcs, merkle, note
from copyledger.ledger.note import BlockHeader
from copyledger.ledger.verify import verify_bundle
from copyledger.notary.signer import sign_note
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node, tsa_roots_pem
from tests.helpers import open_registry, work_body

FILE = b"An exhibit for the strict verifier."


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make(tmp_path_factory.mktemp("strict"))


def make(tmp: Path) -> dict[str, Any]:
    """A registry of four works, the last one the exhibit's; its bundle, key and TSA roots."""
    reg = open_registry(tmp)
    key, _ = create_key(reg.store, "creator", "alice")
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app_for(reg)) as c:
        for i in range(3):
            assert c.post("/v1/works", json=work_body(i), headers=h).status_code == 201
        r = c.post("/v1/works", headers=h, json=work_body(
            "x", sha256=hashlib.sha256(FILE).hexdigest(), title="Exhibit"))
        seq = r.json()["seq"]
        bundle = c.get(f"/v1/entries/{seq}/bundle").json()
        vkey = c.get("/v1/log").json()["verifier_key"]
    return {"bundle": bundle, "vkey": vkey, "reg": reg, "roots": tsa_roots_pem(reg.settings)}


def create_app_for(reg: Node) -> Any:
    from copyledger.api.app import create_app

    return create_app(reg)


def forge(made: dict[str, Any], b: dict[str, Any], *, extension: str = "") -> dict[str, Any]:
    """What a dishonest operator can do: recompute the leaf, root and block hash from whatever
    the bundle now says (the header's hash over its nine members, as the old verifier rebuilt
    it), sign checkpoint and block note with the log key, and stamp the block hash anew."""
    reg: Node = made["reg"]
    leaf = merkle.leaf_hash(jcs.canonicalize(b["entry"]))
    proof = [bytes.fromhex(p) for p in b["inclusion"]["proof"]]
    size = b["inclusion"]["tree_size"]
    root = merkle.root_from_inclusion_proof(b["seq"], size, leaf, proof)
    b["leaf_hash"], b["inclusion"]["root"] = leaf.hex(), root.hex()
    text = note.format_checkpoint(note.Checkpoint(b["origin"], size, root))
    b["checkpoint"] = sign_note(text + extension, [reg.signer])
    header = b["block"]["header"]
    for k, v in (("tree_root", root.hex()), ("batch_root", leaf.hex())):
        if header[k].lower() != v:
            header[k] = v
    bhash = BlockHeader.from_json(header).hash()
    b["block"]["hash"] = bhash.hex()
    b["block"]["block_note"] = sign_note(
        note.block_note_text(b["origin"], b["block"]["height"], bhash), [reg.signer])
    token = reg.tsa.timestamp_digest(bhash)
    b["timestamps"] = [{"tsa": "notary", "hash_alg": "sha256",
                        "token": base64.b64encode(token).decode()}]
    b.pop("tlog_proof", None)
    return b


def run(made: dict[str, Any], b: Any, **kw: Any) -> Any:
    return verify_bundle(b, file_sha256=hashlib.sha256(FILE).hexdigest(),
                         trusted_keys=[made["vkey"]], **kw)


def failed_at(made: dict[str, Any], b: Any) -> tuple[str | None, str]:
    rep = run(made, b)
    return (rep.failed.name, rep.failed.detail) if rep.failed else (None, "")


def test_forging_without_a_change_still_verifies(made: dict[str, Any]) -> None:
    b = forge(made, copy.deepcopy(made["bundle"]))
    assert run(made, b).ok, run(made, b).to_json()


def test_duplicate_members_are_refused_at_format(made: dict[str, Any]) -> None:
    """json.loads keeps the last of two `title`s; a strict reader refuses the document."""
    good = json.dumps(made["bundle"])
    assert run(made, good.encode()).ok
    title = json.dumps(made["bundle"]["entry"]["title"])
    forged = good.replace(f'"title": {title}', f'"title": "A forged title", "title": {title}')
    assert forged != good
    rep = run(made, forged.encode())
    assert rep.failed is not None and rep.failed.name == "format"
    assert "duplicate" in rep.failed.detail


@pytest.mark.parametrize("where", [(), ("inclusion",), ("block",), ("notary",),
                                   ("timestamps", 0), ("notary", "log_keys", 0)])
def test_unknown_members_are_refused_at_format(made: dict[str, Any],
                                               where: tuple[Any, ...]) -> None:
    b = copy.deepcopy(made["bundle"])
    obj = b
    for k in where:
        obj = obj[k]
    obj["court_certified"] = True
    assert failed_at(made, b)[0] == "format"


def test_an_unknown_member_in_the_entry_is_refused_at_entry(made: dict[str, Any]) -> None:
    b = copy.deepcopy(made["bundle"])
    b["entry"]["court_certified"] = True
    assert failed_at(made, forge(made, b))[0] == "entry"
    b = copy.deepcopy(made["bundle"])
    b["entry"]["content"]["court_certified"] = True
    assert failed_at(made, forge(made, b))[0] == "entry"


def test_an_unknown_member_in_the_block_header_is_refused_at_block(made: dict[str, Any]) -> None:
    b = copy.deepcopy(made["bundle"])
    b["block"]["header"]["court_certified"] = True
    step, detail = failed_at(made, forge(made, b))
    assert step == "block" and "nine members" in detail


@pytest.mark.parametrize("path", [("leaf_hash",), ("inclusion", "root"), ("block", "hash"),
                                  ("block", "header", "prev_block_hash"),
                                  ("entry", "content", "sha256")])
def test_uppercase_hex_is_refused(made: dict[str, Any], path: tuple[str, ...]) -> None:
    b = copy.deepcopy(made["bundle"])
    obj: Any = b
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = obj[path[-1]].upper()
    if path[0] in ("entry", "block"):
        forge(made, b)
        if path[0] == "block":
            obj[path[-1]] = obj[path[-1]].upper()  # forge re-encoded the hash it computed
    want = {"leaf_hash": "entry", "inclusion": "inclusion", "block": "block", "entry": "file"}
    assert failed_at(made, b)[0] == want[path[0]], path
    rep = verify_bundle(b, trusted_keys=[made["vkey"]])  # without the file: the entry says it
    if path[0] == "entry":
        assert rep.failed is not None and rep.failed.name == "entry"


@pytest.mark.parametrize(("change", "why"), [
    ({"count": 2, "tree_size": "+1"}, "differ from the checkpoint"),  # not the proof's tree
    ({"count": 0}, "first_seq + count"),  # seq < tree_size, but the block holds no entry
    ({"count": 2}, "first_seq + count"),
    ({"first_seq": "+1", "count": 0}, "not among this block's entries"),  # seq before it
])
def test_block_headers_that_break_the_rules_are_refused(
        made: dict[str, Any], change: dict[str, Any], why: str) -> None:
    b = copy.deepcopy(made["bundle"])
    h = b["block"]["header"]
    for k, v in change.items():
        h[k] = h[k] + int(v) if isinstance(v, str) else v
    step, detail = failed_at(made, forge(made, b))
    assert step == "block" and why in detail, (change, detail)


def test_a_batch_root_that_is_not_the_lone_entry_is_refused(made: dict[str, Any]) -> None:
    b = forge(made, copy.deepcopy(made["bundle"]))
    assert b["block"]["header"]["count"] == 1
    b["block"]["header"]["batch_root"] = "ab" * 32
    bhash = BlockHeader.from_json(b["block"]["header"]).hash()
    b["block"]["hash"] = bhash.hex()
    b["block"]["block_note"] = sign_note(note.block_note_text(
        b["origin"], b["block"]["height"], bhash), [made["reg"].signer])
    step, detail = failed_at(made, b)
    assert step == "block" and "batch_root" in detail


def test_a_checkpoint_with_an_extension_line_is_refused(made: dict[str, Any]) -> None:
    b = forge(made, copy.deepcopy(made["bundle"]), extension="court-certified: yes\n")
    step, detail = failed_at(made, b)
    assert step == "checkpoint" and "extension" in detail


def test_received_after_sealed_is_refused_at_block(made: dict[str, Any]) -> None:
    b = copy.deepcopy(made["bundle"])
    b["entry"]["received_at"] = "2099-01-01T00:00:00.000000Z"
    step, detail = failed_at(made, forge(made, b))
    assert step == "block" and "received" in detail


def test_sealed_after_the_token_time_is_refused_at_timestamp(made: dict[str, Any]) -> None:
    b = copy.deepcopy(made["bundle"])
    b["entry"]["received_at"] = "2099-01-01T00:00:00.000000Z"
    b["block"]["header"]["sealed_at"] = "2099-01-01T00:00:01.000000Z"
    step, detail = failed_at(made, forge(made, b))
    assert step == "timestamp" and "sealed" in detail


def test_a_token_over_the_block_hash_under_another_hash_fails_at_timestamp(
        made: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The token's imprint is (SHA-256, block.hash) (verification.md §10.1): one that names
    another hash, whatever bytes it holds, is not accounted for."""
    from copyledger.ledger import timestamp

    real = timestamp.verify_token
    monkeypatch.setattr(timestamp, "verify_token", lambda *a, **kw: dataclasses.replace(
        real(*a, **kw), hash_alg="sha512"))
    b = copy.deepcopy(made["bundle"])
    b["timestamps"][0].pop("hash_alg", None)
    step, detail = failed_at(made, b)
    assert step == "timestamp" and "sha512" in detail, detail


def test_a_token_dated_near_year_9999_is_judged_not_a_crash(
        made: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A token's time plus its accuracy may pass what a date holds (a TSA of one's own, its
    certificate valid to 9999): the verifier compares the difference, and answers."""
    from copyledger.ledger import timestamp

    real = timestamp.verify_token
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    monkeypatch.setattr(timestamp, "verify_token", lambda *a, **kw: dataclasses.replace(
        real(*a, **kw), gen_time=last, accuracy=None))
    rep = run(made, made["bundle"])  # (raised OverflowError before)
    assert rep.ok and "9999-12-31" in rep.facts["time_sources"][0]["gen_time"], rep.to_json()


def test_a_bundle_nested_past_the_readers_recursion_fails_not_crashes(
        made: dict[str, Any]) -> None:
    """Nesting that the JSON reader takes but a later step's recursion does not (some 500 to
    999 levels) fails a step, said as such, instead of raising RecursionError."""
    for depth in (500, 990):
        b = copy.deepcopy(made["bundle"])
        b["entry"]["metadata"] = {"deep": "HERE"}
        text = json.dumps(b).replace('"HERE"', "[" * depth + "1" + "]" * depth).encode()
        rep = run(made, text)  # (bytes: read by the strict reader, as `copyledger verify`)
        assert not rep.ok and rep.failed is not None, depth


def test_a_failed_report_states_only_its_trust_anchors(made: dict[str, Any]) -> None:
    """A report that failed states no evidence: a registrant read by the entry step, before
    the checkpoint's signature failed, is not verified. Only trust anchors may be named."""
    other = note.format_verifier_key("other.example/log", bytes(32))
    rep = verify_bundle(made["bundle"], file_sha256=hashlib.sha256(FILE).hexdigest(),
                        trusted_keys=[other])
    assert not rep.ok and rep.failed is not None and rep.failed.name == "checkpoint"
    assert rep.facts["registrant"] == "alice"  # (read, not verified)
    told = rep.to_json()["facts"]
    assert "registrant" not in told and "kind" not in told, told
    assert set(told) <= {"log_keys", "sm2_keys", "tsa_roots", "sm2_tsa_roots",
                         "sm2_tsa_retired"}, told
    assert run(made, made["bundle"]).to_json()["facts"]["registrant"] == "alice"  # (held)


def test_a_tlog_proof_index_in_other_digits_is_refused() -> None:
    """c2sp.org/tlog-proof's index is an ASCII decimal: `str.isdigit` also takes Arabic-Indic
    and other digits, which `int` reads, so a form no conforming reader takes passed."""
    from copyledger.ledger.errors import InvalidInput
    from copyledger.ledger.tlog_proof import HEADER, parse_tlog_proof

    for index in ("\u0663", "\u0661\u0662", "\uff11", "01", "-1", "1 "):
        with pytest.raises(InvalidInput):
            parse_tlog_proof(f"{HEADER}\nindex {index}\n\ncheckpoint\n")
    assert parse_tlog_proof(f"{HEADER}\nindex 12\n\nx\n").index == 12


def test_a_relabelled_notary_token_is_not_independent(made: dict[str, Any]) -> None:
    """`tsa` is a label nobody signed: calling the notary's token an external TSA's changes
    nothing the report says, which names the certificate that signed, not the label."""
    b = copy.deepcopy(made["bundle"])
    b["timestamps"][0]["tsa"] = "https://tsa.independent.example/"
    for roots in (None, made["roots"]):
        rep = run(made, b, tsa_roots_pem=roots)
        assert rep.ok, rep.to_json()
        assert [t["independent"] for t in rep.facts["time_sources"]] == [False]
        assert "independent.example" not in json.dumps(rep.to_json())
    pinned = rep.facts["tsa_roots"]
    assert pinned and all(r["pinned"] and len(r["sha256"]) == 64 for r in pinned)
    assert rep.facts["time_sources"][0]["root_sha256"] in [r["sha256"] for r in pinned]
    assert rep.facts["log_keys"] == [{"verifier_key": made["vkey"], "pinned": True,
                                      "sha256": hashlib.sha256(made["vkey"].encode()).hexdigest()}]


def test_cli_reads_strictly_and_names_its_trust_anchors(made: dict[str, Any],
                                                        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from copyledger.cli.main import app

    bf, ff, rf = tmp_path / "b.json", tmp_path / "f.txt", tmp_path / "roots.pem"
    bf.write_text(json.dumps(made["bundle"]))
    ff.write_bytes(FILE)
    rf.write_bytes(made["roots"])
    r = CliRunner().invoke(app, ["verify", str(bf), str(ff), "--trust", made["vkey"],
                                 "--tsa-roots", str(rf)])
    assert r.exit_code == 0, r.stdout
    assert f"log key (pinned): {made['vkey']}" in r.stdout
    assert hashlib.sha256(made["vkey"].encode()).hexdigest() in r.stdout
    assert "TSA root (pinned)" in r.stdout
    assert "time sources independent of the operator: none" in r.stdout
    bf.write_text(json.dumps(made["bundle"])[:-1] + ', "seq": 0}')  # a second seq
    r = CliRunner().invoke(app, ["verify", str(bf), "--trust", made["vkey"], "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["failed_step"] == "format"


def attack_bundles(made: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """Each attack above as (name, bundle JSON text or object, the step that must refuse it):
    what tests/test_verify_page.py gives the browser page too."""
    out: list[tuple[str, Any, str]] = []
    good = made["bundle"]
    text = json.dumps(good)
    title = json.dumps(good["entry"]["title"])
    out.append(("duplicate title", text.replace(f'"title": {title}',
                                                f'"title": "Forged", "title": {title}'), "format"))

    def variant(name: str, step: str, change: Any, *, forged: bool = True,
                extension: str = "") -> None:
        b = copy.deepcopy(good)
        change(b)
        out.append((name, forge(made, b, extension=extension) if forged else b, step))

    for where in ((), ("inclusion",), ("block",), ("notary",), ("timestamps", 0),
                  ("notary", "log_keys", 0)):
        def add(b: Any, where: tuple[Any, ...] = where) -> None:
            for k in where:
                b = b[k]
            b["court_certified"] = True
        variant(f"unknown member in {where}", "format", add, forged=False)
    variant("unknown member in entry", "entry", lambda b: b["entry"].update(court_certified=True))
    variant("unknown member in entry.content", "entry",
            lambda b: b["entry"]["content"].update(court_certified=True))
    variant("unknown member in block.header", "block",
            lambda b: b["block"]["header"].update(court_certified=True))
    variant("uppercase leaf_hash", "entry",
            lambda b: b.update(leaf_hash=b["leaf_hash"].upper()), forged=False)
    variant("uppercase inclusion.root", "inclusion",
            lambda b: b["inclusion"].update(root=b["inclusion"]["root"].upper()), forged=False)
    variant("uppercase prev_block_hash", "block", lambda b: b["block"]["header"].update(
        prev_block_hash=b["block"]["header"]["prev_block_hash"].upper()))
    variant("count 0", "block", lambda b: b["block"]["header"].update(count=0))
    variant("count 2", "block", lambda b: b["block"]["header"].update(count=2))
    variant("seq before the block", "block", lambda b: b["block"]["header"].update(
        first_seq=b["block"]["header"]["first_seq"] + 1, count=0))
    variant("checkpoint extension line", "checkpoint", lambda b: None,
            extension="court-certified: yes\n")
    variant("received after sealed", "block",
            lambda b: b["entry"].update(received_at="2099-01-01T00:00:00.000000Z"))

    def late_seal(b: Any) -> None:
        b["entry"]["received_at"] = "2099-01-01T00:00:00.000000Z"
        b["block"]["header"]["sealed_at"] = "2099-01-01T00:00:01.000000Z"
    variant("sealed after genTime", "timestamp", late_seal)
    return out


def test_every_attack_fails_at_its_step(made: dict[str, Any]) -> None:
    sha = hashlib.sha256(FILE).hexdigest()
    for name, payload, step in attack_bundles(made):
        raw = payload.encode() if isinstance(payload, str) else payload
        rep = verify_bundle(raw, file_sha256=sha)  # the keys in the bundle: the operator's own
        assert rep.failed is not None and rep.failed.name == step, (name, rep.to_json())


def test_a_checkpoint_signed_by_another_logs_pinned_key_is_refused(
        made: dict[str, Any], tmp_path: Path) -> None:
    """D191: a key named for log A (its origin) that signs this log's checkpoint and block note
    does not make the bundle A's: pinned, it is refused at the checkpoint step, where the
    report said "signed by" A's key over this log's origin."""
    from copyledger.notary.signer import FileSigner, verifier_key

    other = FileSigner.generate("other.example/log", tmp_path / "other.key")
    b = copy.deepcopy(made["bundle"])
    text = note.verify_note(b["checkpoint"], [note.parse_verifier_key(made["vkey"])])[0].text
    b["checkpoint"] = sign_note(text, [other])
    blk = b["block"]
    b["block"]["block_note"] = sign_note(
        note.block_note_text(b["origin"], blk["height"], bytes.fromhex(blk["hash"])), [other])
    b.pop("tlog_proof", None)  # (it carries the checkpoint too)
    rep = verify_bundle(b, file_sha256=hashlib.sha256(FILE).hexdigest(),
                        trusted_keys=[verifier_key(other)])
    assert rep.failed is not None and rep.failed.name == "checkpoint", rep.to_json()
    assert "not for the log of the trusted key" in rep.failed.detail


def test_a_chain_of_title_checkpoint_signed_by_another_pinned_logs_key_is_refused(
        made: dict[str, Any], tmp_path: Path) -> None:
    """D191's review: with the keys of two logs pinned, log B's key could sign a checkpoint
    with this log's origin for the chain of title (a larger tree of B's making) and the title
    step took it: only the first checkpoint step asked for the key named for the origin."""
    from copyledger.notary.signer import FileSigner, verifier_key

    other = FileSigner.generate("other.example/log", tmp_path / "other.key")
    b = copy.deepcopy(made["bundle"])
    assert b.get("title_chain"), "the exhibit's bundle carries its chain of title"
    vkeys = [made["vkey"], verifier_key(other)]
    assert verify_bundle(b, file_sha256=hashlib.sha256(FILE).hexdigest(),
                         trusted_keys=vkeys).ok  # (pinning a second log's key is allowed)
    chain = b["title_chain"]
    text = note.verify_note(chain["checkpoint"], [note.parse_verifier_key(made["vkey"])])[0].text
    chain["checkpoint"] = sign_note(text, [other])
    rep = verify_bundle(b, file_sha256=hashlib.sha256(FILE).hexdigest(), trusted_keys=vkeys)
    assert rep.failed is not None and rep.failed.name == "title", rep.to_json()
    assert "not for the log of the trusted key" in rep.failed.detail
