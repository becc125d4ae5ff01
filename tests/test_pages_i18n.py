"""What a zh-CN reader sees on the explorer's pages and the certificate: no English line made by
the code (a list's line naming a claim or transfer, a transfer's or work's type, a claim's legal
regime, the PDF's notice of unprintable characters), the recorded code kept beside its words;
and one sentence on how times are given, the same on a page and a certificate.

The words are checked against a catalogue overlay (`ZH`), so the tests hold before the
catalogue has the new strings and whatever wording it settles on."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.service import certificate, i18n
from tests.helpers import open_registry, sha, work_body
from tests.test_explorer import hdr, populate, text

BASE = "http://testserver"
ZH = {  # the new msgids, as the report gives them for the catalogue
    "assignment": "转让",
    "exclusive licence": "独占许可",
    "non-exclusive licence": "非独占许可",
    "image": "图像",
    "{words} ({code})": "{words}（{code}）",
    "{notice} by {name}": "{name} 提交的{notice}",
    "{type}: {giver} to {to}": "{type}：{giver} 至 {to}",
    "US Digital Millennium Copyright Act, 17 U.S.C. § 512":
        "美国《数字千年版权法》，17 U.S.C. § 512",
    "{shown} and {n} more": "{shown}，另有 {n} 个",
    "Some characters cannot be printed with this PDF's fonts and are left out or shown as "
    "'?': {shown}. The HTML certificate and the evidence bundle hold the exact text.":
        "部分字符无法用本 PDF 的字体打印，已略去或显示为“?”：{shown}。HTML 证书和证据包中保存有"
        "确切文本。",
}


@pytest.fixture(autouse=True)
def zh(monkeypatch: pytest.MonkeyPatch) -> None:
    real = i18n._messages

    def messages(lang: str) -> Mapping[str, str]:
        return {**real(lang), **ZH} if lang == "zh-CN" else real(lang)

    monkeypatch.setattr(i18n, "_messages", messages)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, int]]]:
    reg = open_registry(tmp_path_factory.mktemp("reg"), public_url=BASE)
    with TestClient(create_app(reg)) as c:
        s = populate(c, reg)
        ada = hdr(reg, "creator", "ada")
        s["work"] = c.post("/v1/works", headers=ada, json=work_body("licensed")).json()["seq"]
        lic = c.post("/v1/transfers", headers=ada, json={
            "work_seq": s["work"], "to": "bob", "transfer_type": "exclusive_licence"})
        assert lic.status_code == 201, lic.text
        s["licence"] = lic.json()["seq"]
        yield c, s


def zh_page(c: TestClient, path: str) -> str:
    r = c.get(path + ("&" if "?" in path else "?") + "lang=zh-CN")
    assert r.status_code == 200 and r.headers["content-language"] == "zh-CN", (path, r.text)
    return text(r.text)


def test_list_lines_name_claims_and_transfers_in_the_readers_language(
        world: tuple[TestClient, dict[str, int]]) -> None:
    """The service made each line in English ("exclusive_licence: ada to bob", "notice by Ada
    Example"), whatever the page's language."""
    c, _ = world
    for path in ("/entries", "/", f"/search?q={sha('song')}"):
        words = zh_page(c, path)
        assert "Ada Example 提交的通知" in words, path
        assert "Bob Uploader 提交的反通知" in words, path
        assert "转让：ada 至 bob" in words, path
        assert not re.search(r"notice by|assignment:|exclusive_licence| to bob", words), path
    assert "独占许可：ada 至 bob" in zh_page(c, "/entries")
    english = text(c.get("/entries", params={"lang": "en"}).text)
    assert "notice by Ada Example" in english and "exclusive licence: ada to bob" in english


def test_transfer_types_and_regimes_in_words_with_the_recorded_code(
        world: tuple[TestClient, dict[str, int]]) -> None:
    c, s = world
    title = zh_page(c, f"/works/{s['work']}")
    assert "独占许可（exclusive_licence），受让方 bob" in title  # the chain of title's licences
    claim = zh_page(c, f"/claims/{s['claim']}")
    regime = "美国《数字千年版权法》，17 U.S.C. § 512（dmca_512c3）"
    assert claim.count(regime) == 3  # the sentence and each notice's row
    entry = zh_page(c, f"/entries/{s['licence']}")
    assert "独占许可：ada 至 bob" in entry  # and the record as signed, in the page's detail:
    assert '"transfer_type": "exclusive_licence"' in html.unescape(entry)
    # the certificate: the type in words, the code a court may quote beside it
    cert = zh_page(c, f"/v1/entries/{s['licence']}/certificate")
    assert "类型 独占许可（exclusive_licence）" in cert
    assert "作品类型 图像（image）" in zh_page(c, f"/v1/entries/{s['work']}/certificate")
    # in English, words that are the code's own are not said twice
    english = text(c.get(f"/v1/entries/{s['licence']}/certificate",
                         params={"lang": "en"}).text)
    assert "Type exclusive licence " in english and "exclusive_licence" not in english


def test_the_pdfs_notice_of_unprintable_characters_is_in_the_readers_language(
        world: tuple[TestClient, dict[str, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    from copyledger.service import _pdf

    c, s = world
    bundle: dict[str, Any] = c.get(f"/v1/entries/{s['work']}/bundle").json()
    bundle["entry"]["title"] = "".join(chr(0x13000 + i) for i in range(14))  # no font has them
    monkeypatch.setattr(certificate, "FALLBACK_FONTS", ())
    written: list[str] = []
    real = _pdf.Pdf.multi_cell

    def multi_cell(self: Any, w: float, h: float | None = None, text: str = "",
                   *a: Any, **kw: Any) -> Any:
        written.append(text)
        return real(self, w, h, text, *a, **kw)

    monkeypatch.setattr(_pdf.Pdf, "multi_cell", multi_cell)
    assert certificate.certificate_pdf(bundle, f"{BASE}/verify?seq=1", "zh-CN").startswith(
        b"%PDF-")
    notice = [t for t in written if "U+13000" in t]
    assert notice and notice[0].startswith("部分字符无法用本 PDF 的字体打印"), notice
    assert "另有 2 个" in notice[0] and "Some characters" not in notice[0]


def test_the_pdfs_notice_is_in_english_where_its_own_words_cannot_be_printed() -> None:
    """D190's review: in a zh-CN PDF without a CJK font, the notice that explains missing
    characters was Chinese itself, so it was missing too; it falls back to English then."""

    class Fonts:
        def __init__(self, cjk: bool) -> None:
            self.cjk = cjk

        def cover(self, text: str) -> list[str]:
            return [] if self.cjk else sorted({c for c in text if ord(c) > 0x2FFF})

    missing = [chr(0x13000 + i) for i in range(3)]
    with_cjk = certificate._unprintable_notice(Fonts(True), missing, "zh-CN")
    without = certificate._unprintable_notice(Fonts(False), missing, "zh-CN")
    assert with_cjk.startswith("部分字符无法用本 PDF 的字体打印") and "U+13000" in with_cjk
    assert without.startswith("Some characters cannot be printed") and "U+13002" in without
    assert certificate._unprintable_notice(Fonts(False), missing, "en").startswith("Some")


def test_one_sentence_on_times_for_pages_and_certificates(
        world: tuple[TestClient, dict[str, int]]) -> None:
    """`times_note` is the explorer's footer and the certificate's note; the certificate read a
    zone named "Etc/UTC" as one shown beside UTC, though its times were in UTC alone."""
    from copyledger.service.dates import times_note

    c, s = world
    beijing = times_note("zh-CN", "Asia/Shanghai")
    assert "北京时间" in beijing
    assert beijing in c.get(f"/entries/{s['song']}", params={"lang": "zh-CN"}).text
    assert beijing in c.get(f"/v1/entries/{s['song']}/certificate",
                            params={"lang": "zh-CN"}).text
    utc = times_note("en", None)
    assert utc == "All times are in UTC (Coordinated Universal Time)."
    bundle = c.get(f"/v1/entries/{s['song']}/bundle").json()
    page = certificate.certificate_html(bundle, f"{BASE}/verify?seq=1", "en", tz="Etc/UTC")
    assert utc in page and "Times are given in" not in page
    paris = certificate.certificate_html(bundle, f"{BASE}/verify?seq=1", "en",
                                         tz="Europe/Paris")
    assert times_note("en", "Europe/Paris") in paris
    assert "Times are given in Europe/Paris and in UTC" in paris

