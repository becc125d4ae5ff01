"""`copyledger verify` in the reader's language (issue 15, D64): every step's detail, failed or
held, is a catalogue message (`ledger.verify`'s `_Fail`/`_Held` take a `said(...)`; the static
check in test_i18n_errors.py covers them), so a zh-CN reader learns in Chinese why a tampered
bundle fails, while the step ids, the JSON report and the exit codes stay as they are."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from copyledger.cli.main import app
from copyledger.ledger.verify import verify_bundle
from copyledger.service.i18n import say
from tests.server import cli
from tests.test_sm import replace_sm2, sm2_line, sm_bundle

HAN = re.compile(r"[\u4e00-\u9fff]")
THREE_WORDS = re.compile(r"\b[A-Za-z]{2,}(?:\s+[A-Za-z]{2,}){2}\b")
ZH = {"LANG": "zh_CN.UTF-8", "LC_ALL": "", "LC_MESSAGES": "", "COLUMNS": "400"}
EN = {**ZH, "LANG": "C"}


@pytest.fixture(scope="module")
def sm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    bundle, log = sm_bundle(tmp_path_factory.mktemp("sm"))
    return {"bundle": bundle, "log": log}


def _flip_sm2_signature(b: dict[str, Any], vkey: str) -> dict[str, Any]:
    """The bundle with one bit of its block note's SM2 signature flipped (the last byte, in s:
    still DER, no longer the signature)."""
    changed = copy.deepcopy(b)
    signed = b["block"]["block_note"]
    sig = bytearray(sm2_line(signed, vkey).signature)
    sig[-1] ^= 0x01
    changed["block"]["block_note"] = replace_sm2(signed, vkey, bytes(sig))
    return changed


def _flip_root(b: dict[str, Any]) -> dict[str, Any]:
    """The inclusion proof's root (the Merkle tree's top node) with one hex digit changed."""
    changed = copy.deepcopy(b)
    root = changed["inclusion"]["root"]
    changed["inclusion"]["root"] = ("1" if root[0] == "0" else "0") + root[1:]
    return changed


def _flip_token(b: dict[str, Any]) -> dict[str, Any]:
    """The SM2/SM3 time-stamp token with its last byte (in the SM2 signature's s) flipped."""
    changed = copy.deepcopy(b)
    token = bytearray(base64.b64decode(changed["sm2_timestamps"][0]["token"]))
    token[-1] ^= 0x01
    changed["sm2_timestamps"][0]["token"] = base64.b64encode(bytes(token)).decode()
    return changed


def _failing_line(output: str, step_title: str) -> tuple[str, str]:
    """The failed step's title line (after its ✗) and the detail printed under it."""
    lines = output.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("✗"))
    assert step_title in lines[at], lines[at]
    return lines[at], lines[at + 1].strip()


def _trust(log: dict[str, Any]) -> list[str]:
    return ["--trust", log["verifier_key"], "--trust", log["sm2_verifier_key"]]


def test_copyledger_verify_says_why_an_sm2_signature_fails_in_chinese_and_english(
    sm: dict[str, Any], tmp_path: Path
) -> None:
    """The command itself, in new processes, with LANG=zh_CN.UTF-8 and LANG=C."""
    b, log = sm["bundle"], sm["log"]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(_flip_sm2_signature(b, log["sm2_verifier_key"])))
    zh = cli("verify", str(path), *_trust(log), env=ZH)
    assert zh.returncode == 1, zh.stdout + zh.stderr
    _, detail = _failing_line(zh.stdout, "日志的 SM2 密钥签署了检查点")
    assert detail.startswith("区块记录的 SM2 签名："), detail
    assert HAN.search(detail) and not THREE_WORDS.search(detail), detail
    assert "核验未通过：步骤 'sm2' 失败" in zh.stdout, zh.stdout  # the step id, as it is
    en = cli("verify", str(path), *_trust(log), env=EN)
    assert en.returncode == 1, en.stdout + en.stderr
    _, detail = _failing_line(en.stdout, "an SM-suite log's SM2 key signed the checkpoint")
    assert detail.startswith("the block note's SM2 signature: "), detail
    assert not HAN.search(en.stdout), en.stdout
    # The machine-readable report is the same in both languages.
    reports = [json.loads(cli("verify", str(path), *_trust(log), "--json", env=env).stdout)
               for env in (ZH, EN)]
    assert reports[0] == reports[1]
    assert reports[0]["failed_step"] == "sm2" and reports[0]["verified"] is False


@pytest.mark.parametrize(("tamper", "step", "zh_start", "en_start"), [
    (_flip_root, "inclusion", "包含证明", "inclusion proof does not lead to the root"),
    (_flip_token, "sm2", "sm2_timestamps[0]：", "sm2_timestamps[0]: "),
])
def test_every_failing_step_reads_in_chinese(
    sm: dict[str, Any], tmp_path: Path, tamper: Any, step: str, zh_start: str, en_start: str
) -> None:
    """A flipped Merkle node and a flipped byte of the SM2 token: each fails its own step, and
    the detail reads in Chinese under zh-CN and as before under C."""
    b, log = sm["bundle"], sm["log"]
    changed = tamper(b)
    rep = verify_bundle(changed, trusted_keys=[log["verifier_key"]],
                        sm2_keys=[log["sm2_verifier_key"]])
    assert rep.failed is not None and rep.failed.name == step, rep.to_json()
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(changed))
    runner = CliRunner()
    zh = runner.invoke(app, ["verify", str(path), *_trust(log)], env=ZH)
    en = runner.invoke(app, ["verify", str(path), *_trust(log)], env=EN)
    assert zh.exit_code == en.exit_code == 1
    _, zh_detail = _failing_line(zh.stdout, "")
    _, en_detail = _failing_line(en.stdout, "")
    assert en_detail == rep.failed.detail, (en_detail, rep.failed.detail)
    assert en_detail.startswith(en_start) and zh_detail.startswith(zh_start), (en_detail,
                                                                              zh_detail)
    assert HAN.search(zh_detail) and not THREE_WORDS.search(zh_detail), zh_detail
    assert zh_detail == say("zh-CN", rep.failed.detail)


def test_a_verified_bundle_reads_in_chinese_step_by_step(sm: dict[str, Any],
                                                        tmp_path: Path) -> None:
    """What held is said too: every detail under zh-CN is Chinese around its values."""
    b, log = sm["bundle"], sm["log"]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(b))
    r = CliRunner().invoke(app, ["verify", str(path), *_trust(log)], env=ZH)
    assert r.exit_code == 0, r.stdout
    rep = verify_bundle(b, trusted_keys=[log["verifier_key"]], sm2_keys=[log["sm2_verifier_key"]])
    printed = "".join(r.stdout.split())  # as printed, wrapped at the terminal's width
    for s in rep.steps:
        zh = say("zh-CN", s.detail)
        assert "".join(zh.split()) in printed, (s.name, zh)
        assert HAN.search(zh) and not THREE_WORDS.search(zh.replace("openssl ts -verify", "")), (
            s.name, zh)
    assert "SM2（SM3杂凑，区分标识'1234567812345678'）签名" in printed, r.stdout
