"""A bundle for a work, or for a transfer of it, carries the work's chain of title: every link
with its inclusion proof, which the offline verifier replays; a missing, extra, reordered,
foreign or altered link is refused at the `title` step, naming the link."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from copyledger.api.app import create_app
from copyledger.cli.main import app as cli_app
from copyledger.ledger import merkle
from copyledger.ledger.verify import Status, verify_bundle
from copyledger.service.apikeys import create_key
from tests.helpers import open_registry, work_body


def make_title_log(root: Path) -> dict[str, Any]:
    """Work W assigned alice → bob → carol (each an offer its recipient accepts, D36), with a
    licence by bob in between; another work X assigned by dave, so the log holds a foreign
    transfer; and an evidence entry."""
    reg = open_registry(root)
    h = {a: {"Authorization": f"Bearer {create_key(reg.store, 'creator', a)[0]}"}
         for a in ("alice", "bob", "carol", "dave", "erin", "radio")}
    with TestClient(create_app(reg)) as c:
        def post(path: str, who: str, body: dict[str, Any]) -> int:
            r = c.post(path, json=body, headers=h[who])
            assert r.status_code == 201, r.text
            return int(r.json()["seq"])

        def assign(who: str, work: int, to: str, kind: str = "assignment") -> int:
            return post("/v1/transfers", who, {"work_seq": work, "to": to, "transfer_type": kind})

        def accept(who: str, offer: int) -> int:
            return post(f"/v1/transfers/{offer}/accept", who, {})

        w = post("/v1/works", "alice", work_body("title-w"))
        x = post("/v1/works", "dave", work_body("title-x"))
        ab = assign("alice", w, "bob")
        ab_a = accept("bob", ab)
        foreign = assign("dave", x, "erin")
        lic = assign("bob", w, "radio", "non_exclusive_licence")
        bc = assign("bob", w, "carol")
        bc_a = accept("carol", bc)
        ev = post("/v1/evidence", "alice", {"sha256": work_body("cap")["sha256"],
                                            "captured_at": "2026-01-01T00:00:00Z",
                                            "capture_method": "s", "description": "d"})
        post("/v1/works", "alice", work_body("title-later"))  # the log grows after the chain
        vkey = c.get("/v1/log").json()["verifier_key"]
        bundles = {s: c.get(f"/v1/entries/{s}/bundle").json()
                   for s in (w, ab, ab_a, lic, bc, bc_a, ev)}
    return {"reg": reg, "vkey": vkey, "w": w, "ab": ab, "ab_a": ab_a, "lic": lic, "bc": bc,
            "bc_a": bc_a, "ev": ev, "foreign": foreign, "bundles": bundles}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_title_log(tmp_path_factory.mktemp("title"))


def foreign_link(made: dict[str, Any]) -> dict[str, Any]:
    """A transfer of another work, with a valid inclusion proof in W's chain checkpoint."""
    size = made["bundles"][made["bc_a"]]["block"]["header"]["tree_size"]
    reg, f = made["reg"], made["foreign"]
    return {"seq": f, "entry": json.loads(reg.store.get_entry(f).data),
            "proof": [p.hex() for p in merkle.inclusion_proof(f, size, reg.store)]}


def tampered_chains(made: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """W's bundle with its chain reordered, a foreign link slipped in, a link altered, or the
    chain's checkpoint not signed by the log: each caught without replaying the holders."""
    good = made["bundles"][made["w"]]
    w, ab, ab_a, lic, bc, bc_a = _links(good)
    forged = copy.deepcopy(bc)
    forged["entry"]["to"] = "mallory"
    out = []
    for name, links in [("duplicate", [w, ab, ab, ab_a, lic, bc, bc_a]),
                        ("reordered", [w, ab, ab_a, bc, bc_a, lic]),
                        ("foreign", [w, ab, ab_a, foreign_link(made), lic, bc, bc_a]),
                        ("altered", [w, ab, ab_a, lic, forged, bc_a]),
                        ("registration dropped", [ab, ab_a, lic, bc, bc_a])]:
        b = copy.deepcopy(good)
        b["title_chain"]["links"] = links
        out.append((name, b))
    b = copy.deepcopy(good)
    b["title_chain"]["checkpoint"] = made["bundles"][made["ev"]]["checkpoint"]
    out.append(("another checkpoint", b))
    return out


def check(made: dict[str, Any], b: Any) -> Any:
    return verify_bundle(b, trusted_keys=[made["vkey"]])


def title_step(rep: Any) -> Any:
    return next(s for s in rep.steps if s.name == "title")


@pytest.mark.parametrize("which", ["w", "ab", "ab_a", "lic", "bc", "bc_a"])
def test_work_and_transfer_bundles_verify_the_whole_chain(made: dict[str, Any],
                                                         which: str) -> None:
    b = made["bundles"][made[which]]
    assert [li["seq"] for li in b["title_chain"]["links"]] == [
        made["w"], made["ab"], made["ab_a"], made["lic"], made["bc"], made["bc_a"]]
    rep = check(made, b)
    assert rep.ok, rep.to_json()
    step = title_step(rep)
    assert step.status is Status.PASSED
    assert f"alice → bob (seq {made['ab_a']}) → carol (seq {made['bc_a']})" in step.detail
    chain = rep.facts["title_chain"]
    assert (chain["work_seq"], chain["registrant"], chain["holder"]) == (made["w"], "alice",
                                                                         "carol")
    assert [li["seq"] for li in chain["licences"]] == [made["lic"]]


def test_an_entry_outside_any_chain_carries_none(made: dict[str, Any]) -> None:
    b = made["bundles"][made["ev"]]
    assert "title_chain" not in b
    rep = check(made, b)
    assert rep.ok and title_step(rep).status is Status.SKIPPED
    assert "title_chain" not in rep.facts


def test_an_older_bundle_without_the_member_verifies_and_says_so(made: dict[str, Any]) -> None:
    b = copy.deepcopy(made["bundles"][made["ab"]])
    del b["title_chain"]
    rep = check(made, b)
    assert rep.ok
    step = title_step(rep)
    assert step.status is Status.SKIPPED and "carries no chain of title" in step.detail
    assert "title_chain" not in rep.facts  # nothing about a holder is reported as checked


def _links(b: dict[str, Any]) -> list[dict[str, Any]]:
    return list(b["title_chain"]["links"])


def _with_links(made: dict[str, Any], which: str, links: list[dict[str, Any]]) -> Any:
    b = copy.deepcopy(made["bundles"][made[which]])
    b["title_chain"]["links"] = links
    return check(made, b)


def _refused(rep: Any, *words: str) -> None:
    assert rep.failed is not None and rep.failed.name == "title", rep.to_json()
    for w in words:
        assert w in rep.failed.detail, rep.failed.detail
    assert "title_chain" not in rep.facts


def test_a_missing_link_is_refused(made: dict[str, Any]) -> None:
    w, ab, ab_a, lic, bc, bc_a = _links(made["bundles"][made["w"]])
    _refused(_with_links(made, "w", [w, lic, bc, bc_a]), f"link 1 (seq {made['lic']})",
             "held the work")
    # the acceptance dropped: bob never held the work, so his licence is refused
    _refused(_with_links(made, "w", [w, ab, lic, bc, bc_a]), f"link 2 (seq {made['lic']})",
             "held the work")
    _refused(_with_links(made, "bc", [ab, ab_a, lic, bc, bc_a]), f"link 0 (seq {made['ab']})",
             "not a work")
    _refused(_with_links(made, "w", []), "no links")
    # the licence dropped: the holders still replay, but the bundled licence is not in the chain
    _refused(_with_links(made, "lic", [w, ab, ab_a, bc, bc_a]), f"seq {made['lic']}",
             "not a link")


def test_an_extra_or_reordered_link_is_refused(made: dict[str, Any]) -> None:
    w, ab, ab_a, lic, bc, bc_a = _links(made["bundles"][made["w"]])
    _refused(_with_links(made, "w", [w, ab, ab, ab_a, lic, bc, bc_a]),
             f"link 2 (seq {made['ab']})", "log order")
    _refused(_with_links(made, "w", [w, lic, ab, ab_a, bc, bc_a]), f"link 1 (seq {made['lic']})",
             "held the work")  # bob's licence, before bob held the work
    _refused(_with_links(made, "w", [w, ab, ab_a, bc, bc_a, lic]), f"link 5 (seq {made['lic']})",
             "log order")


def test_a_foreign_link_is_refused_though_it_is_in_the_log(made: dict[str, Any]) -> None:
    """A transfer of another work, with a valid inclusion proof in the chain's checkpoint."""
    w, ab, ab_a, lic, bc, bc_a = _links(made["bundles"][made["w"]])
    _refused(_with_links(made, "w", [w, ab, ab_a, foreign_link(made), lic, bc, bc_a]),
             f"link 3 (seq {made['foreign']})", f"not a transfer of work {made['w']}")


def test_an_altered_link_or_proof_is_refused(made: dict[str, Any]) -> None:
    w, ab, ab_a, lic, bc, bc_a = _links(made["bundles"][made["w"]])
    forged = copy.deepcopy(bc)
    forged["entry"]["to"] = "mallory"  # the last assignment, to someone else
    _refused(_with_links(made, "w", [w, ab, ab_a, lic, forged, bc_a]),
             f"link 4 (seq {made['bc']})", "inclusion proof")
    moved = {**bc, "seq": bc["seq"] + 1}
    _refused(_with_links(made, "w", [w, ab, ab_a, lic, moved, bc_a]), "link 4")
    short = {**ab, "proof": ab["proof"][:-1]}
    _refused(_with_links(made, "w", [w, short, ab_a, lic, bc, bc_a]), "link 1")


def test_the_chain_checkpoint_must_be_signed_and_extend_the_entry(made: dict[str, Any]) -> None:
    b = copy.deepcopy(made["bundles"][made["w"]])
    cp = b["title_chain"]["checkpoint"]
    b["title_chain"]["checkpoint"] = cp.replace("\n", "\n\n", 1)  # body changed: bad signature
    _refused(check(made, b))
    b = copy.deepcopy(made["bundles"][made["w"]])
    b["title_chain"]["consistency"] = b["title_chain"]["consistency"][1:]
    _refused(check(made, b))
    b = copy.deepcopy(made["bundles"][made["w"]])
    b["title_chain"]["checkpoint"] = made["bundles"][made["ev"]]["checkpoint"]  # other size
    _refused(check(made, b))


def test_the_member_is_read_strictly(made: dict[str, Any]) -> None:
    b = copy.deepcopy(made["bundles"][made["w"]])
    b["title_chain"]["holder"] = "mallory"  # an unverified claim: refused, not ignored
    rep = check(made, b)
    assert rep.failed is not None and rep.failed.name == "format"
    assert "title_chain.holder" in rep.failed.detail
    b = copy.deepcopy(made["bundles"][made["w"]])
    b["title_chain"]["links"][1]["holder_after"] = "bob"
    rep = check(made, b)
    assert rep.failed is not None and rep.failed.name == "format"


def test_cli_prints_the_chain_only_once_verified(made: dict[str, Any], tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(made["bundles"][made["ab"]]))
    b = copy.deepcopy(made["bundles"][made["ab"]])
    del b["title_chain"]["links"][1]
    bad.write_text(json.dumps(b))
    runner = CliRunner()
    r = runner.invoke(cli_app, ["verify", str(good), "--trust", made["vkey"]])
    assert r.exit_code == 0, r.stdout
    assert "holder (verified chain of title" in r.stdout and "carol" in r.stdout
    r = runner.invoke(cli_app, ["verify", str(bad), "--trust", made["vkey"]])
    assert r.exit_code == 1 and "holder (verified" not in r.stdout
    assert "step 'title' failed" in r.stdout
