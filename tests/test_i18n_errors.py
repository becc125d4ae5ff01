"""The last English a person read in zh-CN (issue 15, D56): domain errors' details, the audit's
failure reasons, the monitor's alerts, the 503s of the background install, Click's usage errors.

The static check reads `ledger/`, `notary/`, `service/`, `api/`, `client/` and `matching/`: the
detail of every domain error (`CopyledgerError` or a subclass, however deep, called with its
detail first), of every monitor alert and of every step of `ledger.verify` (`_Fail`, `_Held`,
`_skipped`: what `copyledger verify` prints) must be a translated catalogue msgid: a
`said("template", ...)` or a literal the catalogue holds. An f-string, a `+` or a `.format`
on a literal is never a msgid, so a new `raise InvalidInput(f"bad {x}")` fails here. A detail
held in a variable cannot be read statically; the places that build one (`seq {seq}: {detail}`)
nest a `said` in a `said`, and a noun chosen in code ("the TSA key") is a `said` too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from typer.testing import CliRunner

from copyledger.cli.main import app
from copyledger.cli.words import USAGE_ERRORS, usage_error
from copyledger.ledger import components, merkle
from copyledger.ledger.errors import CopyledgerError, ProofError, said
from copyledger.notary.keys import KeyConfig
from copyledger.service.i18n import say
from tests import i18n_catalog

# Where a detail sits in a call that is not a domain error's: (name, argument index).
ALERTS = i18n_catalog.DETAIL_AT
HAN = re.compile(r"[\u4e00-\u9fff]")


def _detail_arg(node: ast.Call, classes: set[str]) -> ast.expr | None:
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    at = 0 if name in classes else ALERTS.get(name)
    return node.args[at] if at is not None and len(node.args) > at else None


def _glued(node: ast.expr) -> bool:
    """A `+` or `%` with a literal or f-string among its operands."""
    if isinstance(node, ast.BinOp):
        return _glued(node.left) or _glued(node.right)
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                               and isinstance(node.value, str))


def _unsayable(arg: ast.expr, msgids: set[str]) -> bool:
    if isinstance(arg, ast.JoinedStr) or (isinstance(arg, ast.BinOp) and _glued(arg)):
        return True
    if isinstance(arg, ast.IfExp):
        return _unsayable(arg.body, msgids) or _unsayable(arg.orelse, msgids)
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute):
        return arg.func.attr == "format" and isinstance(arg.func.value, ast.Constant)
    return (isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            and re.search(r"[A-Za-z]{2,}", arg.value) is not None and arg.value not in msgids)


def unsaid(source: str, msgids: set[str], classes: set[str]) -> list[tuple[int, str]]:
    """(line, source) of every detail in `source` that a reader's language cannot say: an
    f-string, a literal glued with `+`/`%`/`.format`, or a literal with English words that is
    not a translated msgid (either side of an `if` counts)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            arg = _detail_arg(node, classes)
            if arg is not None and _unsayable(arg, msgids):
                found.append((node.lineno, ast.get_source_segment(source, arg) or ""))
    return found


@pytest.fixture(scope="module")
def translated() -> set[str]:
    with i18n_catalog.po_path("zh-CN").open("rb") as fh:
        return {str(m.id) for m in read_po(fh, locale="zh_CN") if m.id and m.string}


def test_every_domain_error_and_alert_is_said_in_a_catalogue_message(
    translated: set[str]
) -> None:
    classes = i18n_catalog.error_classes()
    paths = sorted(p for d in i18n_catalog.ERRORS_IN for p in (i18n_catalog.ROOT / d).rglob("*.py"))
    left = [f"{p.relative_to(i18n_catalog.ROOT)}:{line}: {text}" for p in paths
            for line, text in unsaid(p.read_text(encoding="utf-8"), translated, classes)]
    assert not left, ("details a zh-CN reader would get in English: build them with "
                      "said(\"template {name}\", name=...), run `make i18n`, translate:\n"
                      + "\n".join(left))


def test_the_static_check_catches_an_unsaid_detail_and_passes_a_said_one(
    translated: set[str]
) -> None:
    classes = i18n_catalog.error_classes()
    assert {"InvalidInput", "ProofError", "Unavailable", "_Fault"} <= classes
    assert "LogMisbehaved" not in classes  # takes an alert, whose detail is checked instead
    bad = ('raise InvalidInput(f"bad size {n}")\n'
           'raise NotFound("no such thing is here")\n'
           'raise _Fault("seq " + str(n) + " is gone")\n'
           'raise ProofError("tree {n} is odd".format(n=n))\n'
           'raise Conflict("one thing" if x else "another thing")\n'
           'raise LogMisbehaved(Alert("fork", f"split at {n}", o, 1, b""))\n'
           'raise _fail("untrusted", f"issuer {name} is not a CA")\n'
           'raise _Fail(f"the file\'s SM3 is {sm3}")\n'
           'return _Held("block " + str(h) + " sealed")\n'
           'return _skipped("a step with nothing to do here")\n')
    assert sorted(line for line, _ in unsaid(bad, translated, classes)) == list(range(1, 11))
    good = ('raise InvalidInput(said("tree size {size} is negative", size=n))\n'
            'raise ProofError("inclusion proof is too short")\n'
            'raise NotFound(detail)\nraise InvalidInput("q")\n'
            'raise _Fail(said("seq {seq} is not among this block\'s entries", seq=s))\n'
            'return _skipped("no tlog-proof in the bundle")\n'
            'x = f"not a {detail} of an error"\n')
    assert unsaid(good, translated, classes) == []


def test_merkle_and_notary_errors_read_in_chinese() -> None:
    with pytest.raises(ProofError) as proof:
        merkle.verify_inclusion(5, 3, b"\0" * 32, [], b"\0" * 32)
    assert str(proof.value.detail) == "leaf index 5 is not in a tree of size 3"
    assert say("zh-CN", proof.value.detail) == "叶索引 5 不在大小为 3 的树中"
    with pytest.raises(CopyledgerError) as backend:
        KeyConfig(backend="vault")
    zh = say("zh-CN", backend.value.detail)
    assert "'vault'" in zh and HAN.search(zh) and "is not one of" not in zh


def test_the_background_install_503_names_its_part_in_chinese(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / ".installing"
    marker.touch()
    monkeypatch.setenv(components.INSTALLING_ENV, str(marker))
    soon = components.missing(components.PDQHASH).detail
    assert soon == ("pdqhash (PDQ image hashes) is still being installed (make run finishes it "
                    "in the background); try again in 30 s")
    assert say("zh-CN", soon) == ("pdqhash（PDQ 图像哈希）仍在安装中（make run 在后台完成安装）；"
                                  "请 30 秒后重试")
    marker.unlink()
    later = say("zh-CN", components.missing(components.FONTS).detail)
    assert later.startswith("本服务器未安装证书所用的字体（Debian 软件包：") and "make run" in later


def test_a_nested_detail_is_said_whole_and_values_stay_as_given() -> None:
    inner = said("tree size {size} is negative", size=-1)
    outer = said("seq {seq}: {detail}", seq=7, detail=inner)
    assert outer == "seq 7: tree size -1 is negative"
    assert say("zh-CN", outer) == "seq 7：树大小 -1 为负数"
    plain = said("seq {seq}: {detail}", seq=7, detail="tree size {size} is negative")
    assert say("zh-CN", plain) == "seq 7：tree size {size} is negative"  # data, not a message


# ------------------------------------------------------------------ Click's usage errors

ZH = {"LANG": "zh_CN.UTF-8", "LC_ALL": "", "LC_MESSAGES": "", "COLUMNS": "200"}
EN = {**ZH, "LANG": "C.UTF-8"}
runner = CliRunner()


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    r = runner.invoke(app, args, env=env)
    return r.exit_code, " ".join((r.stdout + r.stderr).replace("│", " ").split())


def test_every_usage_error_template_reads_its_own_english_back() -> None:
    for template in USAGE_ERRORS:
        english = template.format(**{k: f"<{k}>" for k in re.findall(r"\{(\w+)\}", template)})
        zh = usage_error(english, "zh-CN")
        assert zh != english and HAN.search(zh), template
        assert all(f"<{k}>" in zh for k in re.findall(r"\{(\w+)\}", template)), template
    assert usage_error("Something Click said that no template makes", "zh-CN") == (
        "Something Click said that no template makes")


@pytest.mark.parametrize(("args", "zh", "en"), [
    (["transfer", "1"], "缺少选项 '--to'。", "Missing option '--to'."),
    (["nosuchcommand"], "没有命令 'nosuchcommand'。", "No such command 'nosuchcommand'."),
    (["lookup", "--nope", "x"], "没有这个选项：--nope", "No such option: --nope"),
    (["history", "abc"], "'work_seq' 的值无效：'abc' 不是有效的整数。",
     "Invalid value for 'work_seq': 'abc' is not a valid int range."),
])
def test_click_usage_errors_in_chinese_and_english_stays_english(
    args: list[str], zh: str, en: str
) -> None:
    code, text = _run(args, ZH)
    assert code == 2 and zh in text, text
    assert "用法：" in text and "获取帮助" in text, text
    assert en not in text and "Usage:" not in text, text
    code, text = _run(args, EN)  # the same process, back in English
    assert code == 2 and en in text and "Usage:" in text, text
    assert not HAN.search(text), text


# ------------------------------------------------- no English left inside a Chinese sentence

THREE_WORDS = re.compile(r"\b[A-Za-z]{2,}(?:\s+[A-Za-z]{2,}){2}\b")  # "the TSA key", "log key…"


def _all_chinese(zh: str) -> None:
    assert HAN.search(zh) and not THREE_WORDS.search(zh), zh


def test_the_notary_names_what_it_loads_in_chinese(tmp_path: Path) -> None:
    from copyledger.notary import signer, tsa

    with pytest.raises(CopyledgerError) as pem:
        signer.load_private_pem(b"not a key", None,
                                said("key file {path}", path=tmp_path / "log.key"))
    assert str(pem.value.detail).endswith("log.key: not a PEM private key")
    _all_chinese(say("zh-CN", pem.value.detail))
    assert "密钥文件" in say("zh-CN", pem.value.detail)
    with pytest.raises(CopyledgerError) as missing:
        tsa.load_tsa(tmp_path)
    assert str(missing.value.detail).startswith("no TSA certificate at ")
    zh = say("zh-CN", missing.value.detail)
    _all_chinese(zh)
    assert zh.endswith("处没有时间戳服务证书"), zh


def test_api_client_and_matching_details_read_in_chinese(client: object, creator: dict[str, str]
                                                          ) -> None:
    from fastapi.testclient import TestClient

    from copyledger.matching import scoring
    from copyledger.service.operations import MAX_BATCH

    assert isinstance(client, TestClient)
    zh = {**creator, "Accept-Language": "zh-CN", "Content-Type": "application/json"}
    for method, path, body, status, detail in [
        ("POST", "/v1/works/batch", b"{not json", 422, "请求体：不是 JSON"),
        ("POST", "/v1/works/batch", b'{"works": []}', 422,
         f"请求体：必须是只含 `works` 的对象：一个包含 1 到 {MAX_BATCH} 项的列表"),
        ("GET", "/static/nothing-here.css", b"", 404, "没有静态文件 'nothing-here.css'"),
    ]:
        r = client.request(method, path, content=body or None, headers=zh)
        assert r.status_code == status, r.text
        got = r.json()["detail"]
        assert got == detail, got
        _all_chinese(got)
    en = client.post("/v1/works/batch", content=b"{not json",
                     headers={**zh, "Accept-Language": "en"})
    assert en.json()["detail"] == "body: not JSON"  # English byte-identical
    with pytest.raises(CopyledgerError) as lengths:
        scoring.hamming("ab", "abcd")
    assert say("zh-CN", lengths.value.detail) == "哈希长度不同（2 与 4 个十六进制数字）"


def test_the_verify_page_says_every_step_detail_through_the_catalogue() -> None:
    """verify.js makes its step details with `T('template', {...})`, whose templates are
    catalogue msgids (as `said` in ledger/verify.py); an English literal or template literal
    outside the tables and `T(...)` fails here."""
    js = (i18n_catalog.ROOT / i18n_catalog.VERIFY_JS).read_text(encoding="utf-8")
    assert i18n_catalog.js_unsaid(js) == []
    bad = js.replace("fail(T('truncated DER'));", "fail('truncated DER data');", 1).replace(
        "return T('the block note verifies');", "return `the block ${n} note verifies`;", 1)
    assert [t for _, t in i18n_catalog.js_unsaid(bad)] == [
        "'truncated DER data'", "`the block ${n} note verifies`"]
    strings = i18n_catalog.js_strings(js)
    assert "{what}'s SM2 signature: {why}" in strings  # a T(...) template is a msgid
    assert ("{n} link(s) of work {work} in the log as of tree size {size}: {seqs}. Who held the "
            "work after each: check with copyledger verify, which replays the chain.") in strings
