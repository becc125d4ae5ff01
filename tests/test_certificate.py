"""The evidence certificate: a PDF that renders and whose QR code opens the entry's verification
page, an HTML page that states the facts and escapes what registrants typed, and OpenSSL
commands that work as printed."""

from __future__ import annotations

import base64
import copy
import gc
import html
import io
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.service import certificate
from copyledger.service._pdf import Pdf
from copyledger.service.apikeys import create_key
from copyledger.service.certificate import certificate_html, certificate_pdf, openssl_commands
from tests.helpers import open_registry, work_body


def _png() -> bytes:
    from PIL import Image

    img = Image.new("RGB", (96, 64))
    img.putdata([(x * 2, y * 3, (x * y) % 256) for y in range(64) for x in range(96)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


EXHIBIT = _png()
TITLE = "<script>alert('x')</script> & Zoë's \"harbour\" ✓"
CREATOR = "Ada <b>Example</b>"
BASE = "http://testserver"


def _missing(what: str, env: str = "COPYLEDGER_REQUIRE_POPPLER") -> NoReturn:
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} is required in this run ({env}=1) but is not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reg = open_registry(tmp_path_factory.mktemp("reg"), public_url=BASE)
    key, _ = create_key(reg.store, "creator", "alice")
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(reg)) as c:
        for i in range(3):
            assert c.post("/v1/works", json=work_body(i), headers=h).status_code == 201
        r = c.post("/v1/works", headers=h, files={"file": ("x.png", EXHIBIT, "image/png")},
                   data={"title": TITLE, "creators": [CREATOR, "Bob"], "work_type": "image",
                         "license": "CC-BY-4.0"})
        assert r.status_code == 201, r.text
        seq = r.json()["seq"]
        c.post("/v1/works", json=work_body("after"), headers=h)  # the log grows on
        bundle = c.get(f"/v1/entries/{seq}/bundle").json()
        yield {"client": c, "seq": seq, "bundle": bundle}


def test_pdf_renders_and_its_qr_code_opens_the_verify_page(
    made: dict[str, Any], tmp_path: Path
) -> None:
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        _missing("pdftoppm (Debian: poppler-utils)")
    zxingcpp = pytest.importorskip("zxingcpp")
    from PIL import Image

    seq = made["seq"]
    r = made["client"].get(f"/v1/entries/{seq}/certificate", params={"format": "pdf"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert f"copyledger-entry-{seq}.pdf" in r.headers["content-disposition"]
    assert r.content.startswith(b"%PDF-")
    # the QR code has alternative text, for a screen reader (D180)
    assert b"/Alt (QR code for " in r.content, "the QR code has no alternative text"
    (tmp_path / "cert.pdf").write_bytes(r.content)
    subprocess.run([pdftoppm, "-r", "110", "-f", "1", "-l", "1", "-png", "cert.pdf", "page"],
                   cwd=tmp_path, check=True, timeout=60, capture_output=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 1
    img = Image.open(pages[0]).convert("L")
    assert img.width > 800 and img.height > 1100  # A4 at 110 dpi is 910 x 1286
    dark = sum(img.histogram()[:128])
    assert 0.01 < dark / (img.width * img.height) < 0.5, "page 1 is blank or all ink"
    codes = zxingcpp.read_barcodes(img)
    assert [c.text for c in codes] == [f"{BASE}/verify?seq={seq}"]
    assert codes[0].format == zxingcpp.BarcodeFormat.QRCode


def test_accept_header_chooses_pdf_or_html(made: dict[str, Any]) -> None:
    c, seq = made["client"], made["seq"]
    url = f"/v1/entries/{seq}/certificate"
    assert c.get(url, headers={"Accept": "application/pdf"}).content.startswith(b"%PDF-")
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for accept in (browser, "*/*", "application/pdf;q=0.5, text/html", ""):
        r = c.get(url, headers={"Accept": accept})
        assert r.headers["content-type"].startswith("text/html"), accept
    assert c.get(url, params={"format": "html"},
                 headers={"Accept": "application/pdf"}).text.startswith("<!doctype html>")


def test_html_states_the_facts_and_escapes_what_registrants_typed(made: dict[str, Any]) -> None:
    seq, b = made["seq"], made["bundle"]
    r = made["client"].get(f"/v1/entries/{seq}/certificate")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src" not in r.headers["content-security-policy"]  # no script may run
    page = r.text
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; Zoë&#x27;s" in page
    assert "Ada &lt;b&gt;Example&lt;/b&gt;; Bob" in page
    entry = b["entry"]
    cp_root = b["inclusion"]["root"]
    for fact in ("alice", entry["received_at"], entry["content"]["sha256"], "image", "CC-BY-4.0",
                 b["block"]["hash"], b["block"]["header"]["sealed_at"], cp_root, b["origin"],
                 f"Entry {seq} of the transparency log", f"{BASE}/verify?seq={seq}",
                 f"openssl ts -verify -digest {b['block']['hash']}",
                 f"copyledger bundle {seq} -o bundle.json --server {BASE}",
                 b["notary"]["log_keys"][0]["verifier_key"], "data:image/png;base64,"):
        assert fact in page, fact
    for name in entry["content"].get("fingerprints", {}):  # perceptual hashes, when recorded
        assert f"Fingerprint ({name})" in page
    assert "hashvalues" not in page  # a MinHash signature is summarised, not dumped
    stamp = certificate.facts(b).stamps[0]
    assert stamp.status.startswith("verified") and stamp.gen_time in page
    assert "CN=" in stamp.authority and stamp.authority in page


def test_unknown_entry_is_a_404_problem(made: dict[str, Any]) -> None:
    for params in ({}, {"format": "pdf"}):
        r = made["client"].get("/v1/entries/999999/certificate", params=params)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "999999" in r.json()["detail"]
    r = made["client"].get(f"/v1/entries/{made['seq']}/certificate", params={"format": "docx"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")


def test_a_token_that_does_not_verify_is_shown_as_not_verified(made: dict[str, Any]) -> None:
    b = copy.deepcopy(made["bundle"])
    tok = bytearray(base64.b64decode(b["timestamps"][0]["token"]))
    tok[-10] ^= 0xFF  # inside the signature
    b["timestamps"][0]["token"] = base64.b64encode(bytes(tok)).decode()
    page = certificate_html(b, f"{BASE}/verify?seq=1")
    assert "not verified:" in page
    assert certificate.facts(b).stamps[0].gen_time == ""
    b["timestamps"] = []
    assert "no token" in certificate_html(b, f"{BASE}/verify?seq=1")
    assert certificate_pdf(b, f"{BASE}/verify?seq=1").startswith(b"%PDF-")


def test_other_entry_kinds_render(made: dict[str, Any]) -> None:
    """Certificates only read the bundle, so any entry kind renders with its own facts."""
    b = copy.deepcopy(made["bundle"])
    b["entry"] = {"kind": "evidence", "registrant": "court-7",
                  "received_at": "2026-01-01T00:00:00Z", "content": {"sha256": "ab" * 32},
                  "description": "Capture of <a> page", "source_url": "https://example.org/?a=1&b=2",
                  "captured_at": "2025-12-31T23:00:00Z", "capture_method": "browser",
                  "related_work": 3}
    page = certificate_html(b, f"{BASE}/verify?seq=9")
    for fact in ("Certificate of evidence deposit", "Capture of &lt;a&gt; page",
                 "https://example.org/?a=1&amp;b=2", "entry 3 of this log", "ab" * 32):
        assert fact in page, fact
    b["entry"] = {"kind": "transfer", "registrant": "alice",
                  "received_at": "2026-01-01T00:00:00Z", "work": {"seq": 3, "sha256": "cd" * 32},
                  "from": "alice", "to": "bob", "transfer_type": "assignment",
                  "territory": "worldwide"}
    page = certificate_html(b, f"{BASE}/verify?seq=9")
    assert "Certificate of a recorded transfer of rights" in page and "cd" * 32 in page
    assert certificate_pdf(b, f"{BASE}/verify?seq=9").startswith(b"%PDF-")


def test_pdf_without_dejavu_falls_back_to_core_fonts(
    made: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certificate, "FONT_DIR", Path("/nonexistent"))
    pdf = certificate_pdf(made["bundle"], f"{BASE}/verify?seq={made['seq']}")
    assert pdf.startswith(b"%PDF-") and b"DejaVu" not in pdf


def test_a_pdf_leaves_no_garbage_for_the_collector(made: dict[str, Any]) -> None:
    """fpdf2 and fontTools keep each document's parsed fonts in reference cycles (about
    4.5 MiB); `serve` runs the old generations' collection rarely, so the renderer frees them
    itself (D47)."""
    gc.collect()
    gc.disable()
    try:
        pdf = certificate_pdf(made["bundle"], f"{BASE}/verify?seq={made['seq']}")
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert pdf.startswith(b"%PDF-")


def test_pdf_renders_take_turns_and_none_is_refused(
    made: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each render holds its own parsed fonts, and the heap keeps the peak that concurrent
    renders reach, so at most RENDER_SLOTS run at once: while they render no slot is free, and
    the callers that waited all get their document (D53)."""
    entered, release = threading.Semaphore(0), threading.Event()
    real = certificate._certificate_pdf

    def slow(*a: Any) -> bytes:
        entered.release()
        release.wait(60)
        return real(*a)

    monkeypatch.setattr(certificate, "_certificate_pdf", slow)
    url = f"{BASE}/verify?seq={made['seq']}"
    out: list[bytes] = []
    threads = [threading.Thread(target=lambda: out.append(certificate_pdf(made["bundle"], url)))
               for _ in range(certificate.RENDER_SLOTS + 1)]
    for t in threads:
        t.start()
    for _ in range(certificate.RENDER_SLOTS):
        assert entered.acquire(timeout=60)
    free = certificate._RENDER_SLOTS.acquire(blocking=False)
    if free:
        certificate._RENDER_SLOTS.release()
    assert not free, "a render could start while every slot was rendering"
    release.set()
    for t in threads:
        t.join(120)
    assert len(out) == len(threads) and all(pdf.startswith(b"%PDF-") for pdf in out)
    _assert_every_slot_free()


def test_a_render_that_waited_too_long_is_refused_not_run(
    made: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renders past the slots would each add their glyphs to fpdf2's process-wide cache (the
    soak's growth, D74): past RENDER_WAIT_S the caller is told to retry (503), nothing is
    rendered, and no slot it did not take is given back."""
    from copyledger.ledger.errors import Unavailable

    monkeypatch.setattr(certificate, "RENDER_WAIT_S", 0)
    rendered: list[object] = []
    monkeypatch.setattr(certificate, "_certificate_pdf", lambda *a: rendered.append(a))
    for _ in range(certificate.RENDER_SLOTS):
        assert certificate._RENDER_SLOTS.acquire(blocking=False)
    try:
        with pytest.raises(Unavailable, match="retry"):
            certificate_pdf(made["bundle"], f"{BASE}/verify?seq={made['seq']}")
    finally:
        for _ in range(certificate.RENDER_SLOTS):
            certificate._RENDER_SLOTS.release()
    assert rendered == []
    _assert_every_slot_free()


def _assert_every_slot_free() -> None:
    taken = [certificate._RENDER_SLOTS.acquire(blocking=False)
             for _ in range(certificate.RENDER_SLOTS)]
    for ok in taken:
        if ok:
            certificate._RENDER_SLOTS.release()
    assert all(taken)


def test_openssl_commands_work_as_printed(made: dict[str, Any], tmp_path: Path) -> None:
    """The certificate's time-stamp commands, run verbatim, print Verification: OK."""
    if not (shutil.which("openssl") and shutil.which("jq")):
        _missing("openssl and jq", "COPYLEDGER_REQUIRE_OPENSSL")
    import json

    (tmp_path / "bundle.json").write_text(json.dumps(made["bundle"], indent=2))
    r = subprocess.run(" && ".join(openssl_commands(made["bundle"])), shell=True, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Verification: OK" in r.stdout, r.stdout + r.stderr


def test_qr_png_is_a_png() -> None:
    png = certificate.qr_png("https://example.org/verify?seq=1")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image

    assert Image.open(io.BytesIO(png)).size[0] >= 200


def test_characters_no_font_can_print_are_named_not_dropped(
    made: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fallbacks = certificate.FALLBACK_FONTS
    if any(p.is_file() for p in fallbacks):  # e.g. Debian's fonts-droid-fallback
        assert Pdf().cover("Zoë 漢字") == []
    monkeypatch.setattr(certificate, "FALLBACK_FONTS", ())
    assert Pdf().cover("Zoë 漢字") == ["字", "漢"]
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        _missing("pdftotext (Debian: poppler-utils)")
    b = copy.deepcopy(made["bundle"])
    b["entry"]["title"] = "港の夜明け"
    pdf = certificate_pdf(b, f"{BASE}/verify?seq=1")
    text = subprocess.run([pdftotext, "-", "-"], input=pdf, capture_output=True, check=True,
                          timeout=60).stdout.decode()
    assert "Some characters cannot be printed" in text and "U+6E2F" in text


def test_first_page_speaks_to_a_judge_the_second_to_an_expert(
    made: dict[str, Any]
) -> None:
    """Page 1 says what was registered, by whom and when in words and human dates, and what it
    proves and does not; the exact values, signatures and commands come after, on page 2."""
    from copyledger.service.dates import human_time

    b = made["bundle"]
    entry = b["entry"]
    when = human_time(entry["received_at"])
    assert re.fullmatch(r"\d{1,2} [A-Z][a-z]+ \d{4}, \d\d:\d\d UTC", when), when
    summary = (f'This certifies that the account "alice" registered the file described below '
               f"with the copyright evidence registry {b['origin']} on {when}, as entry "
               f"{b['seq']} of its public log.")
    page = made["client"].get(f"/v1/entries/{b['seq']}/certificate").text
    reader, expert = page.split('<section class="expert"', 1)
    assert html.unescape(summary) in html.unescape(reader)
    for words in ("What was registered", "What this proves", "What this does not prove",
                  "Who owns the copyright", entry["content"]["sha256"], when,
                  human_time(b["block"]["header"]["sealed_at"]),
                  "by copyledger TSA, the registry's own time-stamp authority (the operator's "
                  "statement, not an independent one)"):
        assert words in html.unescape(reader), words
    # D177: the registry's own TSA is not called independent, nor said to prove a time.
    for claim in ("Independently time-stamped", "outside the registry saw the record"):
        assert claim not in html.unescape(page), claim
    for technical in (entry["received_at"], b["block"]["hash"], "openssl ts -verify", "jq -r",
                      b["notary"]["log_keys"][0]["verifier_key"]):
        assert technical not in reader and technical in expert, technical

    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        _missing("pdftotext (Debian: poppler-utils)")
    pdf = certificate_pdf(b, f"{BASE}/verify?seq={b['seq']}")

    def text_of(first: int, last: int) -> str:
        out = subprocess.run([pdftotext, "-f", str(first), "-l", str(last), "-", "-"], input=pdf,
                             capture_output=True, check=True, timeout=60).stdout.decode()
        return " ".join(out.split())

    one, rest = text_of(1, 1), text_of(2, 99)
    assert " ".join(summary.split()) in one and "What this does not prove" in one
    assert entry["received_at"] not in one and "openssl" not in one
    assert rest.startswith("Technical detail, for an expert")
    assert entry["received_at"] in rest and "openssl ts -verify" in rest
