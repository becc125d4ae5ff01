"""zh-CN and English where people read (issue 15): a complete catalogue, the language a reader
asks for, pages and problems in it, and a Chinese certificate PDF that embeds its own font.

The catalogue tests fail on any string a person reads that has no translation, on a catalogue
out of step with the code (run `make i18n`), and on a translation that loses a placeholder or
a tag. The page tests fail when a page in Chinese still shows a sentence of the English tables.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from copyledger.api.app import create_app
from copyledger.service import certificate, i18n
from copyledger.service.apikeys import create_key
from copyledger.service.certificate import certificate_html, certificate_pdf
from copyledger.service.dates import human_time
from tests import i18n_catalog
from tests.helpers import MIXED, ZH_CREATORS, ZH_TITLE, open_registry, sha, work_body, zh_work_body

BASE = "http://testserver"
PDF_LIMIT = 150_000  # bytes: the Chinese certificate, its font subset embedded, is 112 kB (D56)


# ------------------------------------------------------------------ the catalogue

def _catalogue() -> Any:
    with i18n_catalog.po_path("zh-CN").open("rb") as fh:
        return read_po(fh, locale="zh_CN")


def test_every_string_a_person_reads_has_a_zh_cn_translation() -> None:
    wanted = i18n_catalog.messages()
    cat = _catalogue()
    have = {m.id: m for m in cat if m.id}
    missing = sorted(m for m in wanted if m not in have or not have[m].string
                     or have[m].fuzzy)
    assert not missing, f"untranslated (add msgstr in the .po; `make i18n` adds msgids): {missing}"
    stale = sorted(m for m in have if m not in wanted)
    assert not stale, f"the catalogue is out of step with the code (run `make i18n`): {stale}"


def test_translations_keep_every_placeholder_and_tag() -> None:
    for m in _catalogue():
        if not m.id:
            continue
        def slots(text: str) -> list[str]:
            return sorted(re.findall(r"\{\w*\}", text))

        assert slots(m.string) == slots(m.id), m.id
        assert re.findall(r"</?\w+", m.string) == re.findall(r"</?\w+", m.id), m.id


def test_english_is_the_source_and_reads_unchanged() -> None:
    assert i18n.gettext("en", "Block") == "Block"
    assert i18n.gettext("zh-CN", "Block") == "区块"
    assert i18n.gettext("zh-CN", "a sentence no table has") == "a sentence no table has"


# ------------------------------------------------------------------ choosing the language

@pytest.mark.parametrize(("header", "lang"), [
    ("zh-CN", "zh-CN"), ("zh", "zh-CN"), ("zh-Hans", "zh-CN"), ("zh-Hans-CN", "zh-CN"),
    ("ZH-cn", "zh-CN"), ("en-GB,zh;q=0.5", "en"), ("zh;q=0.4, en;q=0.8", "en"),
    ("fr-FR, zh-CN;q=0.9, en;q=0.8", "zh-CN"), ("en;q=0.9, zh-CN", "zh-CN"),
    ("zh-TW", "en"), ("zh-CN;q=0", "en"), ("de", "en"), ("", "en"), ("zh-CN;q=abc", "en"),
    ("zh-CN, en", "zh-CN"), ("en, zh-CN", "en"),
])
def test_accept_language_is_honoured_by_q_value(header: str, lang: str) -> None:
    assert i18n.negotiate(header) == lang


def test_the_switch_wins_over_the_header_and_unknown_switches_are_ignored() -> None:
    assert i18n.negotiate("zh-CN", "en") == "en"
    assert i18n.negotiate("en", "zh") == "zh-CN"
    assert i18n.negotiate("zh-CN", "klingon") == "zh-CN"


@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=20)))
def test_any_header_gives_a_language_we_serve(header: str, override: str | None) -> None:
    assert i18n.negotiate(header, override) in i18n.LANGS


def test_times_in_chinese_say_the_date_the_chinese_way() -> None:
    assert human_time("2026-11-29T23:44:05.123456Z", "zh-CN") == "2026年11月29日 23:44 UTC"
    assert human_time("2026-11-29T23:44:05.123456Z") == "29 November 2026, 23:44 UTC"


# ------------------------------------------------------------------ over HTTP

@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reg = open_registry(tmp_path_factory.mktemp("reg"), public_url=BASE)
    key, _ = create_key(reg.store, "creator", "alice")
    h = {"Authorization": f"Bearer {key}"}
    platform = {"Authorization": f"Bearer {create_key(reg.store, 'platform', 'tube')[0]}"}
    with TestClient(create_app(reg)) as c:
        first = c.post("/v1/works", json=work_body(0), headers=h)
        assert first.status_code == 201, first.text
        r = c.post("/v1/works", headers=h, json=zh_work_body())
        assert r.status_code == 201, r.text
        seq = r.json()["seq"]
        bundle = c.get(f"/v1/entries/{seq}/bundle").json()
        yield {"client": c, "seq": seq, "bundle": bundle, "sha": sha("春江"),
               "platform": platform}


ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}


def _sentences() -> list[str]:
    """The English fragments of three words or more (between placeholders and tags) of every
    msgid (commands in <code> are not words): none may show on a page in Chinese."""
    out = set()
    for msgid in i18n_catalog.messages():
        for part in re.split(r"\{\w*\}|<[^>]+>", re.sub(r"<code>.*?</code>", "", msgid)):
            part = part.strip(" .,:;()")
            if len(part.split()) >= 3:
                out.add(part)
    return sorted(out)


def _visible(page: str) -> str:
    """The page's text as a reader sees it, without the translation data block (its keys are
    the English msgids, for the script) or markup."""
    page = re.sub(r'<script type="application/json" id="l10n">.*?</script>', "", page, flags=re.S)
    page = re.sub(r"<[^>]+>", " ", page)
    return " ".join(html.unescape(page).split())


def _pages(made: dict[str, Any]) -> dict[str, str]:
    seq = made["seq"]
    return {"/": "", "/entries": "", "/blocks": "", f"/entries/{seq}": "", "/blocks/0": "",
            f"/works/{seq}": "", f"/search?q={made['sha']}": "", "/search?q=" + "0" * 64: "",
            "/verify": "", f"/v1/entries/{seq}/certificate": "", "/entries/999999": ""}


def test_pages_in_chinese_show_no_english_sentence(made: dict[str, Any]) -> None:
    c = made["client"]
    english = _sentences()
    for path in _pages(made):
        r = c.get(path, headers=ZH)
        assert r.status_code in (200, 404), (path, r.status_code)
        assert r.headers["content-language"] == "zh-CN", path
        assert "Accept-Language" in r.headers["vary"], path
        text = _visible(r.text)
        assert re.search(r"[\u4e00-\u9fff]", text), path
        left = [s for s in english if s in text]
        assert not left, f"{path} in zh-CN still shows: {left}"
        assert '<html lang="zh-CN">' in r.text, path


def test_pages_are_english_by_default_and_the_switch_is_on_every_page(
    made: dict[str, Any]
) -> None:
    c = made["client"]
    for path in _pages(made):
        r = c.get(path)
        assert r.headers["content-language"] == "en", path
        if not path.startswith("/v1/"):
            for code in ("zh-CN", "en"):  # (the page's own query kept before it: D180)
                assert re.search(rf'href="\?([^"]*&amp;)?lang={code}"', r.text), (path, code)
    home = c.get("/?lang=zh-CN")  # no header: the switch alone, remembered in a cookie
    assert home.headers["content-language"] == "zh-CN" and "日志浏览器" in home.text
    assert "lang=zh-CN" in home.headers["set-cookie"]
    assert c.get("/entries").headers["content-language"] == "zh-CN"  # the cookie kept it
    back = c.get("/?lang=en", headers=ZH)
    assert back.headers["content-language"] == "en" and "Log explorer" in back.text
    c.cookies.clear()


def test_machine_readable_fields_never_change(made: dict[str, Any]) -> None:
    c, seq = made["client"], made["seq"]
    en, zh = c.get(f"/v1/entries/{seq}/bundle"), c.get(f"/v1/entries/{seq}/bundle", headers=ZH)
    assert en.content == zh.content and "content-language" not in zh.headers
    p_en, p_zh = c.get("/v1/entries/999999/bundle"), c.get("/v1/entries/999999/bundle",
                                                           headers=ZH)
    assert p_en.status_code == p_zh.status_code == 404
    a, b = p_en.json(), p_zh.json()
    assert a["type"] == b["type"] and a["status"] == b["status"] and a.keys() == b.keys()
    assert b["title"] == "未找到" and p_zh.headers["content-language"] == "zh-CN"
    bad = c.get("/v1/entries/-1/bundle", headers=ZH).json()
    assert bad["title"] == "输入无效" and bad["type"].endswith("/invalid-input")
    page = c.get("/verify", headers=ZH).text
    assert 'data-status="waiting"' in page and 'id="plain-verdict"' in page


def test_the_verify_page_carries_its_script_strings_in_chinese(made: dict[str, Any]) -> None:
    page = made["client"].get("/verify", headers=ZH)
    m = re.search(r'<script type="application/json" id="l10n">(.*?)</script>', page.text, re.S)
    assert m is not None
    import json

    words = json.loads(m.group(1))
    js = i18n_catalog.js_strings((i18n_catalog.ROOT / i18n_catalog.VERIFY_JS)
                                 .read_text(encoding="utf-8"))
    assert set(words) == set(js) and all(words[s] for s in js)
    assert words["This file is exactly the registered one."] == "该文件正是登记的文件。"
    assert page.headers["content-security-policy"].startswith("default-src 'none'; "
                                                              "script-src 'self';")
    assert "l10n" not in made["client"].get("/verify").text  # English needs no table


# ------------------------------------------------------------------ the certificate

def test_the_certificate_html_in_chinese(made: dict[str, Any]) -> None:
    page = certificate_html(made["bundle"], f"{BASE}/verify?seq={made['seq']}", "zh-CN")
    assert ZH_TITLE in page and "张若虚; 李清照" in page and "兹证明" in page
    assert "作品登记存证证书" in page and "区块高度" in page


def _poppler(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: make system-deps installs poppler-utils")
    return path


def test_the_chinese_pdf_embeds_its_font_and_every_glyph_round_trips(
    made: dict[str, Any], tmp_path: Path
) -> None:
    assert certificate.CJK_FONT.is_file(), "make system-deps installs fonts-wqy-microhei"
    bundle = made["bundle"]
    pdf = certificate_pdf(bundle, f"{BASE}/verify?seq={made['seq']}", "zh-CN")
    assert len(pdf) < PDF_LIMIT, len(pdf)
    path = tmp_path / "cert.pdf"
    path.write_bytes(pdf)
    fonts = subprocess.run([_poppler("pdffonts"), str(path)], capture_output=True, text=True,
                           check=True).stdout
    cjk = [line for line in fonts.splitlines() if "WenQuanYi" in line]
    assert cjk, fonts
    assert all(" yes yes " in f" {' '.join(line.split())} " for line in cjk), fonts  # emb, sub
    assert all(re.match(r"[A-Z]{6}\+", line) for line in cjk), fonts  # a subset's name tag
    text = subprocess.run([_poppler("pdftotext"), "-enc", "UTF-8", str(path), "-"],
                          capture_output=True, text=True, check=True).stdout
    flat = "".join(text.split())
    for want in (ZH_TITLE, *ZH_CREATORS, "作品登记存证证书", "本证书证明的事项", "区块高度",
                 "".join(MIXED.split())):
        assert "".join(want.split()) in flat, want
    assert "Some characters cannot be printed" not in text
    subprocess.run([_poppler("pdftoppm"), "-r", "60", "-f", "1", "-l", "1", "-png", str(path),
                    str(tmp_path / "page")], check=True)
    assert list(tmp_path.glob("page*.png"))


def test_the_pdf_cache_keys_on_the_language(made: dict[str, Any]) -> None:
    c, seq = made["client"], made["seq"]
    en = c.get(f"/v1/entries/{seq}/certificate?format=pdf")
    zh = c.get(f"/v1/entries/{seq}/certificate?format=pdf", headers=ZH)
    assert en.content != zh.content
    assert en.headers["content-language"] == "en" and zh.headers["content-language"] == "zh-CN"
    assert "Accept-Language" in zh.headers["vary"] and "Accept" in zh.headers["vary"]
    again = c.get(f"/v1/entries/{seq}/certificate?format=pdf", headers=ZH)
    assert again.content == zh.content


# ------------------------------------------------------------------ problem details, caveats

def test_problem_details_built_with_values_read_in_chinese(made: dict[str, Any]) -> None:
    c = made["client"]
    en = c.get("/v1/entries/999999/bundle").json()
    zh = c.get("/v1/entries/999999/bundle", headers=ZH).json()
    assert en["detail"] == "no entry with seq 999999"
    assert zh["detail"] == "没有 seq 为 999999 的条目"
    assert (en["type"], en["status"]) == (zh["type"], zh["status"])
    blocks = c.get("/v1/blocks/424242", headers=ZH).json()
    assert blocks["detail"] == "没有高度为 424242 的区块"


def test_said_keeps_the_template_and_values_and_reads_as_english() -> None:
    import pickle

    from copyledger.ledger.errors import NotFound, said

    d = said("no entry with seq {seq}", seq=7)
    assert d == "no entry with seq 7" and d.template == "no entry with seq {seq}"
    assert i18n.say("zh-CN", d) == "没有 seq 为 7 的条目" and i18n.say("en", d) == d
    back = pickle.loads(pickle.dumps(NotFound(d)))  # audit workers send errors between processes
    assert i18n.say("zh-CN", back.detail) == "没有 seq 为 7 的条目"
    hostile = said("no entry with seq {seq}", seq="{x} {0}")  # values are never formatted
    assert i18n.say("zh-CN", hostile) == "没有 seq 为 {x} {0} 的条目"


def test_claim_check_caveats_carry_stable_codes_a_reader_can_render(
    made: dict[str, Any]
) -> None:
    from copyledger.service import claims

    c, plat = made["client"], made["platform"]
    body = {"claimant": "alice", "work_sha256": made["sha"], "content": {"sha256": made["sha"]}}
    en = c.post("/v1/claims/check", json=body, headers=plat).json()
    zh = c.post("/v1/claims/check", json=body, headers={**plat, **ZH}).json()
    for a in (en, zh):  # the signed answer does not depend on the reader's language
        assert a["caveat_codes"][0] == "exact-only"
        assert a["caveats"] == [claims.CAVEAT_TEXT[k] for k in a["caveat_codes"]]
    assert set(claims.CAVEAT_TEXT) >= {"not-ownership", "audio", "video", "index-rebuilding"}
    for code, english in claims.CAVEAT_TEXT.items():
        said_zh = claims.caveat_text(code, "zh-CN")
        assert said_zh and said_zh != english and re.search(r"[\u4e00-\u9fff]", said_zh)
    assert claims.caveat_text("a-newer-servers-code", "zh-CN") is None
    from copyledger.ledger.documents import ClaimCheck  # the client keeps the codes, signed

    assert ClaimCheck.from_dict(en).to_dict() == en
    older = {k: v for k, v in en.items() if k != "caveat_codes"}  # an older server's answer
    assert ClaimCheck.from_dict(older).to_dict() == older


# ------------------------------------------------------------------ the command line

def _cli_env(lang: str) -> dict[str, str]:
    return {"LANG": lang, "LC_ALL": "", "LC_MESSAGES": "", "COLUMNS": "120"}


@pytest.mark.parametrize(("env", "lang"), [
    ({"LANG": "zh_CN.UTF-8"}, "zh-CN"), ({"LANG": "zh_CN"}, "zh-CN"),
    ({"LC_ALL": "zh_CN.utf8", "LANG": "en_GB.UTF-8"}, "zh-CN"),
    ({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LC_MESSAGES": "zh_CN.GB18030", "LANG": "C.UTF-8"}, "zh-CN"),
    ({"LC_ALL": "", "LANG": "zh_TW.UTF-8"}, "en"), ({}, "en"), ({"LANG": "POSIX"}, "en"),
])
def test_the_cli_language_follows_the_posix_locale(env: dict[str, str], lang: str) -> None:
    assert i18n.from_environment(env) == lang


def test_every_cli_help_text_has_a_translation() -> None:
    import typer.main

    from copyledger.cli import main as cli_main
    from copyledger.cli import words

    texts = words.help_texts(typer.main.get_command(cli_main.app))
    assert len(texts) > 150  # the whole tree, not just the top level
    left = [t for t in texts if i18n.gettext("zh-CN", t) == t]
    assert not left, f"help texts without zh-CN (run `make i18n`, add msgstr): {left}"


def _help_sentences() -> list[str]:
    """English fragments of three words or more of the CLI's help msgids and Typer's words."""
    import typer.main

    from copyledger.cli import main as cli_main
    from copyledger.cli import words

    texts = words.help_texts(typer.main.get_command(cli_main.app)) + list(words.CHROME.values())
    return i18n_catalog.cli_sentences(texts)


@pytest.mark.parametrize("args", [(), ("keys", "create"), ("verify",), ("register",),
                                  ("claim",), ("check-claim",), ("accounts", "set"),
                                  ("transfer",), ("monitor",)])
def test_cli_help_in_chinese_shows_no_english_sentence(args: tuple[str, ...]) -> None:
    from tests.server import cli

    zh = cli(*args, "--help", env=_cli_env("zh_CN.UTF-8"))
    en = cli(*args, "--help", env=_cli_env("C.UTF-8"))
    assert zh.returncode == en.returncode == 0, zh.stderr
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", zh.stdout).split())
    assert "用法：" in text and "显示此帮助信息并退出。" in text
    left = [s for s in _help_sentences() if s in text]
    assert not left, f"`copyledger {' '.join(args)} --help` in zh-CN still shows: {left}"
    assert "Usage:" in en.stdout and "Show this message and exit." in en.stdout


def test_cli_errors_and_messages_in_chinese_and_json_unchanged(tmp_path: Path) -> None:
    from tests.server import cli

    data = str(tmp_path / "none")
    zh = cli("keys", "list", "--data-dir", data, env=_cli_env("zh_CN.UTF-8"))
    assert zh.returncode == 2 and zh.stderr.startswith("错误：")
    assert "中没有登记系统" in zh.stderr
    en = cli("keys", "list", "--data-dir", data, env=_cli_env("C.UTF-8"))
    assert en.stderr.startswith("error: no registry in")
    reg = str(tmp_path / "reg")
    assert cli("init", "--data-dir", reg).returncode == 0
    assert cli("keys", "create", "--role", "creator", "--account", "ada", "--data-dir",
               reg).returncode == 0
    table = cli("keys", "list", "--data-dir", reg, env=_cli_env("zh_CN.UTF-8")).stdout
    assert all(h in table for h in ("前缀", "角色", "账户")) and "prefix" not in table
    j_zh = cli("keys", "list", "--json", "--data-dir", reg, env=_cli_env("zh_CN.UTF-8"))
    j_en = cli("keys", "list", "--json", "--data-dir", reg, env=_cli_env("C.UTF-8"))
    assert j_zh.stdout == j_en.stdout and json.loads(j_en.stdout)[0]["account"] == "ada"


def test_cli_verify_reports_in_chinese_and_its_json_is_the_same(
    made: dict[str, Any], tmp_path: Path
) -> None:
    from copyledger.ledger.verify import STEPS
    from tests.server import cli

    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(made["bundle"]))
    key = made["client"].get("/v1/log").json()["verifier_key"]
    zh = cli("verify", str(path), "--trust", key, env=_cli_env("zh_CN.UTF-8"))
    assert zh.returncode == 0, zh.stdout + zh.stderr
    assert "核验通过" in zh.stdout and "日志密钥（已固定）" in zh.stdout
    assert "证据包是 copyledger/bundle/v1 文档" in zh.stdout
    assert not [t for _, t in STEPS if t in zh.stdout] and "VERIFIED" not in zh.stdout
    j = [cli("verify", str(path), "--trust", key, "--json", env=_cli_env(lang)).stdout
         for lang in ("zh_CN.UTF-8", "C.UTF-8")]
    assert j[0] == j[1] and json.loads(j[0])["verified"] is True
