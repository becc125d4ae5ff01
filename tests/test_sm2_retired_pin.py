"""D64: the SM2 TSA retirement list can be pinned. A bundle that leaves out a retired SM2 TSA
certificate (D57) escapes the check when the list is taken from the bundle; with the registry's
published list pinned (`--sm2-tsa-retired`, `verify_bundle(sm2_tsa_retired=...)`) it does not,
and the output says which list the check rested on."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from copyledger.cli.main import app
from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.verify import pinned_sm2_tsa_retired, verify_bundle
from copyledger.service.i18n import say
from tests.test_sm2_rotation import make_rotated

EN = {"LANG": "C", "LC_ALL": "", "LC_MESSAGES": "", "COLUMNS": "400"}
ZH = {**EN, "LANG": "zh_CN.UTF-8"}


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    r = make_rotated(tmp_path_factory.mktemp("sm2pin"))
    dropped = copy.deepcopy(r["forged"])  # the forged token, and no retirement record
    dropped["notary"].pop("sm2_tsa_retired")
    yield {**r, "dropped": dropped, "trust": [r["after"]["log"]["verifier_key"]]}


def test_a_pinned_list_refuses_the_token_a_bundle_without_its_record_would_pass(
    rotated: dict[str, Any]
) -> None:
    trust, keys = rotated["trust"], rotated["after"]["keys"]
    pinned = pinned_sm2_tsa_retired(keys)
    assert pinned == keys["sm2_tsa_retired"] and len(pinned) == 1
    unpinned = verify_bundle(rotated["dropped"], trusted_keys=trust)
    assert unpinned.ok, unpinned.to_json()
    assert unpinned.facts["sm2_tsa_retired"] == {"pinned": False, "retired": []}
    rep = verify_bundle(rotated["dropped"], trusted_keys=trust, sm2_tsa_retired=pinned)
    assert rep.failed is not None and rep.failed.name == "sm2", rep.to_json()
    assert "by an SM2 TSA certificate retired at" in rep.failed.detail
    assert rep.facts["sm2_tsa_retired"]["pinned"] is True
    # The genuine bundle verifies under the pinned list; the bundle's identical record is not
    # listed twice, and an empty pinned list still lets the bundle's own record refuse.
    good = verify_bundle(rotated["after"]["bundle"], trusted_keys=trust, sm2_tsa_retired=pinned)
    assert good.ok, good.to_json()
    assert good.facts["sm2_tsa_retired"]["retired"] == [{**pinned[0], "pinned": True}]
    forged = verify_bundle(rotated["forged"], trusted_keys=trust, sm2_tsa_retired=[])
    assert forged.failed is not None and forged.failed.name == "sm2"
    assert forged.facts["sm2_tsa_retired"]["retired"][0]["pinned"] is False


def test_copyledger_verify_pins_the_list_and_says_which_it_used(
    rotated: dict[str, Any], tmp_path: Path
) -> None:
    bundle, keys = tmp_path / "bundle.json", tmp_path / "keys.json"
    bundle.write_text(json.dumps(rotated["dropped"]))
    keys.write_text(json.dumps(rotated["after"]["keys"]))
    trust = ["--trust", rotated["trust"][0]]
    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(bundle), *trust], env=EN)
    assert r.exit_code == 0, r.stdout
    text = " ".join(r.stdout.split())
    assert ("SM2 TSA retirement list (taken from the bundle, NOT pinned): 0 retired "
            "certificate(s)") in text, text
    assert "pin the registry's list with --sm2-tsa-retired" in text
    r = runner.invoke(app, ["verify", str(bundle), *trust, "--sm2-tsa-retired", str(keys)],
                      env=EN)
    assert r.exit_code == 1 and "NOT VERIFIED: step 'sm2' failed" in r.stdout, r.stdout
    # what the refusal rested on: the pinned list, not the bundle's
    assert "SM2 TSA retirement list (pinned): 1 retired certificate(s)" in r.stdout, r.stdout
    bundle.write_text(json.dumps(rotated["after"]["bundle"]))
    r = runner.invoke(app, ["verify", str(bundle), *trust, "--sm2-tsa-retired", str(keys)],
                      env=ZH)
    assert r.exit_code == 0, r.stdout
    text = " ".join(r.stdout.split())
    assert "SM2 时间戳机构证书退役名单（已固定）：1 张已退役证书" in text, text
    assert "--sm2-tsa-retired 固定" not in text  # no warning when it is pinned
    out = json.loads(runner.invoke(app, ["verify", str(bundle), *trust, "--sm2-tsa-retired",
                                         str(keys), "--json"], env=EN).stdout)
    assert out["verified"] and out["facts"]["sm2_tsa_retired"]["pinned"] is True


@pytest.mark.parametrize("doc", [
    {"sm2_tsa_retired": "none"},
    # A bundle given by mistake: not the keys answer (no log_keys), so it pins nothing.
    {"format": "copyledger/bundle/v1", "notary": {"sm2_tsa_retired": []}},
    [{"certificate_sm3": "ab" * 32}],
    [{"certificate_sm3": "ab" * 32, "retired_at": "2026-01-01T00:00:00Z", "note": "x"}],
    [{"certificate_sm3": "zz" * 32, "retired_at": "2026-01-01T00:00:00Z"}],
    [{"certificate_sm3": "ab" * 32, "retired_at": "yesterday"}],
    [{"certificate_sm3": "ab" * 31, "retired_at": "2026-01-01T00:00:00Z"}],
    "a string",
])
def test_a_malformed_pinned_list_is_refused_in_the_readers_language(doc: object,
                                                                    tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as e:
        pinned_sm2_tsa_retired(doc)
    assert "退役名单" in say("zh-CN", e.value.detail) or "sm2_tsa_retired[0] 必须" in say(
        "zh-CN", e.value.detail)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(doc))
    bundle = tmp_path / "bundle.json"
    bundle.write_text("{}")
    r = CliRunner().invoke(app, ["verify", str(bundle), "--sm2-tsa-retired", str(path)], env=ZH)
    assert r.exit_code == 2 and say("zh-CN", e.value.detail) in " ".join(r.stderr.split())


def test_a_keys_answer_without_retirements_pins_an_empty_list() -> None:
    assert pinned_sm2_tsa_retired({"log_keys": [], "tsa_roots": []}) == []
    sm3 = "AB" * 32
    assert pinned_sm2_tsa_retired([{"certificate_sm3": sm3, "retired_at": "2026-01-01T00:00:00Z"}]
                                  ) == [{"certificate_sm3": sm3.lower(),
                                         "retired_at": "2026-01-01T00:00:00Z"}]
