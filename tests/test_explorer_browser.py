"""The log explorer, /verify and the certificate in headless Chromium, as a reader uses them:
a file chosen or dropped on the explorer is hashed in the browser and found; and axe-core
(the engine the `axe-playwright-python` package ships) reports no WCAG 2.x A or AA violation
on any page, /verify before and after a check included."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import pytest

from tests.server import ServerProcess, cli
from tests.test_explorer import COUNTER
from tests.test_verify_page import EXHIBIT, WAIT_MS, _missing, browser, context

pytestmark = pytest.mark.slow
__all__ = ["browser"]  # the shared Chromium fixture

AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def axe_source() -> str:
    try:
        return (resources.files("axe_playwright_python") / "axe.min.js").read_text("utf-8")
    except ModuleNotFoundError:
        _missing("axe-core (pip: axe-playwright-python, in the [dev] extra)")


def _key(data: str, role: str, account: str) -> str:
    made = cli("keys", "create", "--role", role, "--account", account, "--data-dir", data,
               "--json")
    return str(json.loads(made.stdout)["key"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.test_claims import DMCA

    root = tmp_path_factory.mktemp("explorer")
    data = root / "data"
    assert cli("init", "--data-dir", str(data)).returncode == 0
    ada, plat = _key(str(data), "creator", "ada"), _key(str(data), "platform", "tube")
    bob = _key(str(data), "creator", "bob")
    srv = ServerProcess(data).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            a = {"Authorization": f"Bearer {ada}"}
            p = {"Authorization": f"Bearer {plat}"}
            for i in range(3):
                c.post("/v1/works", headers=a, json={
                    "sha256": hashlib.sha256(b"%d" % i).hexdigest(), "title": f"w{i}",
                    "creators": ["A"], "work_type": "text"}).raise_for_status()
            r = c.post("/v1/works", headers=a, files={"file": ("harbour.jpg", EXHIBIT,
                                                                "image/jpeg")},
                       data={"title": "Harbour <at> dawn", "creators": ["Zoë"],
                             "work_type": "image"})
            r.raise_for_status()
            work = r.json()["seq"]
            t = c.post("/v1/transfers", headers=a, json={"work_seq": work, "to": "bob",
                                                         "transfer_type": "assignment"})
            t.raise_for_status()
            c.post(f"/v1/transfers/{t.json()['seq']}/accept", json={},
                   headers={"Authorization": f"Bearer {bob}"}).raise_for_status()
            claim = c.post("/v1/claims", headers=p, json={**DMCA, "works": [{"seq": work}]})
            claim.raise_for_status()
            c.post("/v1/claims", headers=p, json={**COUNTER, "refers_to": claim.json()["seq"]}
                   ).raise_for_status()
            height = c.get(f"/v1/entries/{work}").json()["block_height"]
        (root / "harbour.jpg").write_bytes(EXHIBIT)
        (root / "other.jpg").write_bytes(EXHIBIT + b"!")
        yield {"url": srv.url, "work": work, "claim": claim.json()["seq"], "height": height,
               "dir": root}
    finally:
        srv.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # axe is injected by the test harness: the pages' CSP (script-src 'self') rightly refuses
    # an injected script, so this context, and only this one, bypasses CSP.
    ctx = context(browser, bypass_csp=True)
    yield ctx.new_page()
    ctx.close()


def violations(pg: Any) -> list[str]:
    """axe-core's WCAG 2.x A and AA violations on the page as it is now, one line each."""
    pg.evaluate(axe_source())
    result = pg.evaluate("(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                         AA)
    return [f"{v['id']} ({v['impact']}): {v['help']} — "
            + "; ".join(n["html"][:120] for n in v["nodes"][:3]) for v in result["violations"]]


def test_search_by_a_chosen_file_finds_its_entry(page: Any, site: dict[str, Any]) -> None:
    page.goto(site["url"] + "/")
    with page.expect_navigation(timeout=WAIT_MS):
        page.set_input_files("#file", str(site["dir"] / "harbour.jpg"))
    assert page.url.endswith("/search?q=" + hashlib.sha256(EXHIBIT).hexdigest())
    assert page.locator(f'a[href="entries/{site["work"]}"]').count() == 1
    assert "Harbour <at> dawn" in page.locator("main").inner_text()


def test_search_by_a_dropped_file_finds_its_entry_and_never_uploads_it(
        page: Any, site: dict[str, Any]) -> None:
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    page.goto(site["url"] + "/")
    dt = page.evaluate_handle(
        """(b64) => {
            const dt = new DataTransfer();
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], 'harbour.jpg', {type: 'image/jpeg'}));
            return dt;
        }""", __import__("base64").b64encode(EXHIBIT).decode())
    with page.expect_navigation(timeout=WAIT_MS):
        page.dispatch_event("#drop", "drop", {"dataTransfer": dt})
    page.click(f'a[href="entries/{site["work"]}"]')
    assert page.url.endswith(f"/entries/{site['work']}")
    assert "ada recorded this registered work" in page.locator("main").inner_text()
    assert all(m == "GET" for m, _ in requests), requests  # nothing was sent but page loads
    assert all(u.startswith(site["url"] + "/") for _, u in requests)


def test_every_page_has_no_wcag_aa_violation(page: Any, site: dict[str, Any]) -> None:
    url, work = site["url"], site["work"]
    pages = ["/", "/entries", "/blocks", f"/entries/{work}", f"/works/{work}",
             f"/claims/{site['claim']}", f"/blocks/{site['height']}",
             f"/search?q={hashlib.sha256(EXHIBIT).hexdigest()}",
             f"/search?q={'0' * 64}", "/entries/999999", f"/v1/entries/{work}/certificate"]
    found = {}
    for path in pages:
        page.goto(url + path)
        found[path] = violations(page)
    assert found == {p: [] for p in pages}


def test_verify_page_has_no_violation_before_or_after_a_check(
        page: Any, site: dict[str, Any]) -> None:
    page.goto(f"{site['url']}/verify?seq={site['work']}")
    page.wait_for_selector('#plain[data-status="incomplete"]', timeout=WAIT_MS)
    assert violations(page) == []
    page.set_input_files("#exhibit", str(site["dir"] / "harbour.jpg"))
    page.wait_for_selector('#plain[data-status="verified"]', timeout=WAIT_MS)
    page.evaluate("() => { document.getElementById('tech').open = true; }")
    assert violations(page) == []
    page.set_input_files("#exhibit", str(site["dir"] / "other.jpg"))
    page.wait_for_selector('#plain[data-status="failed"]', timeout=WAIT_MS)
    assert page.locator("#plain-verdict").inner_text() == (
        "This is not the registered file; even a re-saved or resized copy is a different file.")
    assert violations(page) == []


def test_the_harness_sees_a_violation(page: Any, site: dict[str, Any]) -> None:
    """axe really runs: a page with an unlabelled input and grey-on-grey text fails."""
    page.goto(site["url"] + "/")
    page.evaluate("""() => {
        const i = document.createElement('input'); document.querySelector('main').append(i);
        const p = document.createElement('p'); p.textContent = 'faint';
        p.style.color = '#ccc'; document.querySelector('main').append(p);
    }""")
    ids = {v.split(" ")[0] for v in violations(page)}
    assert {"label", "color-contrast"} <= ids, ids



