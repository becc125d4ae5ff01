"""Issue 15's must-show: the certificate PDF and `/verify` in zh-CN, as a reader sees them.

Renders both for an organisation-registered work with a Chinese title and saves them in
`docs/images/` (`certificate-zh-CN.png` from the PDF through poppler's `pdftoppm`,
`verify-zh-CN.png` from headless Chromium), after checking that what they show is Chinese, the
operator's statement of who the registrant is, and Beijing time beside UTC.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import ServerProcess, cli, init_registry
from tests.test_verify_page import EXHIBIT, WAIT_MS, browser, context, verdict

pytestmark = pytest.mark.slow
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
ORG = "上海某某文化传播有限公司"
__all__ = ["browser"]  # the fixture, shared with the /verify page tests


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("zh-shots")
    data = root / "data"
    _, key = init_registry(data)  # a key for the account "default"
    assert cli("accounts", "set", "default", "--name", ORG, "--kind", "organisation",
               "--data-dir", str(data)).returncode == 0
    srv = ServerProcess(data).start(timeout=180)  # a loaded machine starts slowly
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as c:
            who = c.get("/v1/whoami").json()["account"]
            r = c.post("/v1/works", files={"file": ("chunjiang.jpg", EXHIBIT, "image/jpeg")},
                       data={"title": "《春江花月夜》插图", "creators": ["张若虚"],
                             "work_type": "image"})
            r.raise_for_status()
            seq = r.json()["seq"]
            pdf = c.get(f"/v1/entries/{seq}/certificate?format=pdf",
                        headers={"Accept-Language": "zh-CN"})
            assert pdf.status_code == 200
            origin = c.get("/v1/log").json()["origin"]
        (root / "chunjiang.jpg").write_bytes(EXHIBIT)
        yield {"url": srv.url, "seq": seq, "dir": root, "pdf": pdf.content, "account": who,
               "origin": origin}
    finally:
        srv.stop()


def test_certificate_pdf_in_chinese(server: dict[str, Any], tmp_path: Path) -> None:
    if not shutil.which("pdftoppm") or not shutil.which("pdftotext"):
        pytest.fail("poppler-utils (pdftoppm, pdftotext) is required: .ci/system-deps")
    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(server["pdf"])
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          check=True, timeout=60).stdout.decode()
    flat = "".join(text.split())
    assert ORG in flat and "登记系统运营方的陈述" in flat and "北京时间UTC+8" in flat
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile",
                    str(pdf), str(tmp_path / "certificate-zh-CN")], check=True, timeout=120)
    assert (tmp_path / "certificate-zh-CN.png").stat().st_size > 10_000
    publish(tmp_path / "certificate-zh-CN.png")


def test_verify_page_in_chinese_shows_who_the_account_is(
        browser: Any, server: dict[str, Any], tmp_path: Path) -> None:
    ctx = context(browser, locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN"},
                              viewport={"width": 1000, "height": 1400})
    pg = ctx.new_page()
    try:
        pg.goto(f"{server['url']}/verify?seq={server['seq']}")
        pg.set_input_files("#exhibit", str(server["dir"] / "chunjiang.jpg"))
        status, _ = verdict(pg, "verified", "failed", "unsupported")
        assert status == "verified"
        pg.evaluate("() => { document.getElementById('tech').open = false; }")
        pg.wait_for_selector(f"dd[data-profile='{server['account']}']", timeout=WAIT_MS)
        shown = pg.locator("#facts").inner_text()
        assert f"{ORG}（组织）：登记系统运营方的陈述，不由日志签名" in shown
        assert "（北京时间 UTC+8）·" in shown, shown  # Beijing time beside UTC (D71)
        pg.screenshot(path=str(tmp_path / "verify-zh-CN.png"), full_page=True)
        # The technical detail unfolded: each step's detail in Chinese too (D64).
        pg.evaluate("() => { document.getElementById('tech').open = true; }")
        steps = pg.locator("#steps").inner_text()
        assert f"日志 {server['origin']} 的条目 {server['seq']}" in steps, steps
        assert "区块记录核验通过" in steps and "叶哈希" in steps, steps
        pg.locator("#tech").screenshot(path=str(tmp_path / "verify-zh-CN-steps.png"))
    finally:
        ctx.close()
    publish(tmp_path / "verify-zh-CN.png")
    publish(tmp_path / "verify-zh-CN-steps.png")


def publish(image: Path) -> None:
    """Put an image made in a test's own folder into docs/images whole, by a rename: CI's two
    passes run at once, and neither must see the other's half-written file."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    tmp = IMAGES / f".{image.name}.{os.getpid()}.tmp"
    shutil.copyfile(image, tmp)
    os.replace(tmp, IMAGES / image.name)
