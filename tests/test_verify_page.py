"""The /verify page end to end in headless Chromium (Debian's `chromium`, driven by Playwright
with the system browser): a real server, a real file, the browser's own checks. Also: the page's
JavaScript agrees with ledger/verify.py on every mutated field, and its JCS and SHA-256 agree
with ours."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, cast
from zoneinfo import ZoneInfo

import httpx
import pytest

from copyledger.ledger import jcs
from copyledger.ledger.entry import parse_timestamp
from copyledger.ledger.verify import verify_bundle
from copyledger.service.dates import FORMAT, MONTHS, beside_utc, zone_word
from copyledger.service.i18n import gettext
from tests.server import ServerProcess, cli, init_registry, post_works
from tests.test_verify import flip_char, leaves, set_at

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("COPYLEDGER_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _jpeg() -> bytes:
    from PIL import Image

    img = Image.new("RGB", (120, 80))
    img.putdata([(x * 2, y * 3, (x ^ y) % 256) for y in range(80) for x in range(120)])
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


EXHIBIT = _jpeg()
# Every wait in a page ends as soon as its element appears; the limit only bounds a hang, and a
# loaded machine (load 30 on two cores) may take tens of seconds to run the verifier's crypto.
WAIT_MS = 120_000


def _missing(what: str) -> NoReturn:
    if os.environ.get("COPYLEDGER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} is required in this run (COPYLEDGER_REQUIRE_BROWSER=1)")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"headless Chromium ({CHROMIUM}; Debian: chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def context(browser: Any, **options: Any) -> Any:
    """A new browser context whose every wait and navigation may take up to WAIT_MS."""
    ctx = browser.new_context(**options)
    ctx.set_default_timeout(WAIT_MS)
    ctx.set_default_navigation_timeout(WAIT_MS)
    return ctx


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("verify-page")
    data = root / "data"
    _, key = init_registry(data)
    srv = ServerProcess(data).start()
    try:
        post_works(srv.url, key, 3)  # so the exhibit's inclusion proof has hashes in it
        h = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=srv.url, headers=h, timeout=30) as c:
            r = c.post("/v1/works", files={"file": ("harbour.jpg", EXHIBIT, "image/jpeg")},
                       data={"title": "Harbour <at> dawn", "creators": ["Zoë"],
                             "work_type": "image"})
            r.raise_for_status()
            seq = r.json()["seq"]
            bundle = c.get(f"/v1/entries/{seq}/bundle").json()
            page = c.get("/verify")
            assert page.status_code == 200, "GET /verify: is api.routes.pages wired in api/app.py?"
        (root / "harbour.jpg").write_bytes(EXHIBIT)
        (root / "other.jpg").write_bytes(EXHIBIT + b"!")
        (root / "bundle.json").write_text(json.dumps(bundle, indent=2))
        yield {"url": srv.url, "seq": seq, "bundle": bundle, "dir": root}
    finally:
        srv.stop()


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    ctx = context(browser)
    pg = ctx.new_page()
    requests: list[str] = []
    pg.on("request", lambda req: requests.append(req.url))
    pg.requests = requests
    yield pg
    ctx.close()


def verdict(pg: Any, *statuses: str) -> tuple[str, str]:
    """The technical verdict, read as an expert would: with the technical detail unfolded."""
    pg.wait_for_selector("#tech", state="attached", timeout=WAIT_MS)
    pg.evaluate("() => { document.getElementById('tech').open = true; }")
    sel = ", ".join(f'#verdict[data-status="{s}"]' for s in statuses)
    pg.wait_for_selector(sel, timeout=WAIT_MS)
    el = pg.locator("#verdict")
    return str(el.get_attribute("data-status")), el.inner_text()


def plain(pg: Any) -> tuple[str, str]:
    """The plain-language verdict a reader sees first: its status and headline."""
    el = pg.locator("#plain")
    assert el.is_visible()
    return str(el.get_attribute("data-status")), pg.locator("#plain-verdict").inner_text()


def step_statuses(pg: Any) -> dict[str, str]:
    return {str(li.get_attribute("data-step")): str(li.get_attribute("data-status"))
            for li in pg.locator("#steps li").all()}


def test_qr_link_mode_verifies_the_file_then_rejects_a_wrong_one(
    page: Any, server: dict[str, Any]
) -> None:
    url, seq, d = server["url"], server["seq"], server["dir"]
    page.goto(f"{url}/verify?seq={seq}")
    page.wait_for_selector("#bundle-info:has-text('loaded from this registry')", timeout=WAIT_MS)
    status, text = verdict(page, "incomplete", "failed")  # bundle alone: checked, file awaited
    assert status == "incomplete", text

    page.set_input_files("#exhibit", str(d / "harbour.jpg"))
    status, text = verdict(page, "verified", "failed", "unsupported")
    assert status == "verified", (text, step_statuses(page))
    assert text.startswith("Verified")
    steps = step_statuses(page)
    assert steps.pop("timestamp") == "external"  # signature: openssl, commands shown
    assert steps.pop("witnessed") == "skipped"  # this registry has no witnesses
    assert steps.pop("title") == "external"  # links checked; holders replayed by the CLI only
    assert steps.pop("sm2") == "skipped"  # nor the SM suite
    assert set(steps.values()) == {"ok"}, steps
    assert hashlib.sha256(EXHIBIT).hexdigest() in page.locator("#exhibit-info").inner_text()
    assert "Harbour <at> dawn" in page.locator("#facts").inner_text()  # as text, not markup
    assert page.locator("#facts at").count() == 0
    assert plain(page) == ("verified", "This file is exactly the registered one.")
    when = page.locator("#facts").inner_text()
    assert re.search(r"Registered on\s+\d{1,2} [A-Z][a-z]+ 20\d\d, \d\d:\d\d UTC", when), when
    cmds = page.locator("#openssl-commands").inner_text()
    assert f"openssl ts -verify -digest {server['bundle']['block']['hash']}" in cmds

    page.set_input_files("#exhibit", str(d / "other.jpg"))
    status, text = verdict(page, "failed")
    assert text.startswith("NOT verified: file"), text
    assert step_statuses(page)["file"] == "failed"
    assert hashlib.sha256(EXHIBIT + b"!").hexdigest() in text
    # the plain words come first; the hashes are in the technical detail, folded
    assert plain(page) == ("failed", "This is not the registered file; even a re-saved or "
                                     "resized copy is a different file.")
    page.evaluate("() => { document.getElementById('tech').open = false; }")
    assert not page.locator("#verdict").is_visible()
    assert "even a re-saved or resized copy" in page.locator("#plain").inner_text()
    result = page.locator("section[aria-labelledby=result-h]").inner_text()
    assert hashlib.sha256(EXHIBIT + b"!").hexdigest() not in result
    # the file never left the browser, and nothing came from anywhere but the registry
    assert all(u.startswith(url + "/") for u in page.requests), page.requests
    assert not any("harbour" in u or "other" in u for u in page.requests)


def test_drop_bundle_and_file_together(page: Any, server: dict[str, Any]) -> None:
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    dt = page.evaluate_handle(
        """([bundle, b64]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([bundle], 'bundle.json', {type: 'application/json'}));
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], 'harbour.jpg', {type: 'image/jpeg'}));
            return dt;
        }""",
        [(server["dir"] / "bundle.json").read_text(), base64.b64encode(EXHIBIT).decode()],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": dt})
    # D178: a bundle from a file, checked only under the key it carries, is not called the
    # registered one (anyone can make a key and sign a bundle under a log's name)
    status, text = verdict(page, "verified", "unpinned", "failed", "unsupported")
    assert status == "unpinned" and text.startswith("CONSISTENT, NOT TIED"), (
        text, step_statuses(page))
    assert plain(page) == ("unpinned", "This file matches the record, but nothing ties the "
                           "record to a registry you know.")
    assert "bundle.json" in page.locator("#bundle-info").inner_text()
    assert "not pinned" in page.locator("#steps").inner_text()

    # pin the log's published key: trust says so; pin another key: the checkpoint step fails
    vkey = server["bundle"]["notary"]["log_keys"][0]["verifier_key"]
    page.click("#pin-box summary")
    page.fill("#pin", vkey)
    page.click("#run")
    status, _ = verdict(page, "verified", "failed")
    assert status == "verified" and "key you pinned" in page.locator("#trust").inner_text()
    assert plain(page) == ("verified", "This file is exactly the registered one.")
    page.fill("#pin", "other.example/log+1c1c0ff3+AcYm3BbTtlO3Hm2iexg7zDO4fSLXhYHTm1EIvw8ck3IP")
    page.click("#run")
    status, text = verdict(page, "failed")
    assert text.startswith("NOT verified: checkpoint"), text


def test_page_agrees_with_the_python_verifier_on_every_mutation(
    page: Any, server: dict[str, Any]
) -> None:
    """Each field of the bundle changed in turn: the page's JavaScript fails at the same step as
    ledger/verify.py, except where the page delegates (the token's signature, the TSA roots)."""
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    good = server["bundle"]
    file_hash = hashlib.sha256(EXHIBIT).hexdigest()
    cases = []
    for path, value in leaves(good):
        if isinstance(value, bool) or value is None:
            continue
        b = copy.deepcopy(good)
        if isinstance(value, int):
            set_at(b, path, value + 1)
        else:
            set_at(b, path, flip_char(value, len(value) // 2) if value else "x")
        cases.append((path, b))
    js = page.evaluate(
        """async ([cases, hash]) => {
            const out = [];
            for (const b of cases) {
                const r = await window.copyledgerVerify.verify(b, hash, []);
                const f = r.results.find((s) => s.status === 'failed');
                out.push(f ? f.name : null);
            }
            return out;
        }""",
        [[b for _, b in cases], file_hash],
    )
    delegated = {("notary", "tsa_roots"), ("notary", "tsa_chain")}
    compared = 0
    for (path, b), js_failed in zip(cases, js, strict=True):
        rep = verify_bundle(b, file_sha256=file_hash)
        py_failed = rep.failed.name if rep.failed else None
        if path[:2] in delegated or (path[:1] == ("timestamps",) and path[-1] == "token"):
            assert js_failed in (py_failed, None), (path, py_failed, js_failed)
            continue
        assert js_failed == py_failed, (path, py_failed, js_failed)
        compared += 1
    assert compared > 30
    # and the unmodified bundle passes in both
    assert verify_bundle(good, file_sha256=file_hash).ok


def test_page_refuses_each_attack_at_the_same_step_as_python(
    page: Any, server: dict[str, Any], tmp_path: Path
) -> None:
    """Bundles the operator forged and re-signed (tests/test_verify_strict.py): duplicate and
    unknown members, uppercase hex, headers that break the rules, a checkpoint extension line,
    times out of order. The page refuses each at the step where ledger/verify.py does."""
    from tests.test_verify_strict import FILE, attack_bundles, make

    attacks = attack_bundles(make(tmp_path))
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    sha = hashlib.sha256(FILE).hexdigest()
    js = page.evaluate(
        """async ([cases, hash]) => {
            const out = [];
            for (const b of cases) {
                const r = await window.copyledgerVerify.verify(b, hash, []);
                const f = r.results.find((s) => s.status === 'failed');
                out.push(f ? f.name + ': ' + f.detail : null);
            }
            return out;
        }""",
        [[payload for _, payload, _ in attacks], sha],
    )
    for (name, payload, step), js_failed in zip(attacks, js, strict=True):
        raw = payload.encode() if isinstance(payload, str) else payload
        rep = verify_bundle(raw, file_sha256=sha)
        assert rep.failed is not None and rep.failed.name == step, (name, rep.to_json())
        assert js_failed is not None and js_failed.split(":")[0] == step, (name, js_failed)


def test_page_names_witnesses_as_not_verified(page: Any, server: dict[str, Any],
                                              tmp_path: Path) -> None:
    """A bundle with a witnessed checkpoint: the page has no witness keys to pin, so, like
    `copyledger verify` without --witness, it skips the step, and names the cosigners the
    bundle claims as NOT verified; on a bundle whose cosignature is broken it agrees with
    Python (skipped, not passed)."""
    from tests.test_cosign import W, flip_cosignature, witnessed_bundle

    b, log_vkey, _ = witnessed_bundle(tmp_path)
    broken = copy.deepcopy(b)
    broken["witnessed"]["checkpoint"] = flip_cosignature(b["witnessed"]["checkpoint"])
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    out = page.evaluate(
        """async ([cases, pin]) => {
            const out = [];
            for (const b of cases) {
                const r = await window.copyledgerVerify.verify(b, null, [pin]);
                out.push(Object.fromEntries(r.results.map((s) => [s.name, [s.status, s.detail]])));
            }
            return out;
        }""", [[b, broken], log_vkey])
    for case, steps in zip((b, broken), out, strict=True):
        assert steps["witnessed"][0] == "skipped", steps
        assert "NOT verified" in steps["witnessed"][1] and W in steps["witnessed"][1]
        assert steps["title"][0] == "external" and "copyledger verify" in steps["title"][1]
        assert steps["sm2"][0] == "skipped", steps  # not an SM-suite log
        assert all(s == "ok" for name, (s, _) in steps.items()
                   if name not in ("file", "timestamp", "witnessed", "title", "sm2")), steps
        rep = verify_bundle(case, trusted_keys=[log_vkey])
        assert rep.ok and {s.name: s.status for s in rep.steps}["witnessed"] == "skipped"


def test_jcs_and_streaming_sha256_agree_with_python(page: Any, server: dict[str, Any]) -> None:
    page.goto(f"{server['url']}/verify")
    value = {"b": [1, 1.5, -0.0, 1e21, 1e-7, 0.1, 2**53 - 1, True, None], "a": "x\u2028\"\\\n\x1f",
             "\U0001f600": "emoji key sorts by UTF-16 code units", "\uff61": "after U+D83D",
             "é": {"z": [], "y": {}}, "": "empty key"}
    text = json.dumps(value, ensure_ascii=False)
    got = page.evaluate("(t) => window.copyledgerVerify.jcs(JSON.parse(t))", text)
    assert got.encode() == jcs.canonicalize(value)

    sizes = [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 65_537, 300_001]
    out = page.evaluate(
        """async (sizes) => {
            const V = window.copyledgerVerify, res = [];
            for (const n of sizes) {
                const d = new Uint8Array(n);
                for (let i = 0; i < n; i++) d[i] = (i * 2654435761) >>> 24;
                const h = new V.Sha256();
                for (let i = 0; i < n; i += 4099) h.update(d.subarray(i, i + 4099));
                res.push([V.toHex(h.digest()), V.toHex(await V.sha256(d))]);
            }
            return res;
        }""", sizes)
    for n, (ours, webcrypto) in zip(sizes, out, strict=True):
        data = bytes(((i * 2654435761) & 0xFFFFFFFF) >> 24 for i in range(n))
        assert ours == webcrypto == hashlib.sha256(data).hexdigest(), n


def test_without_ed25519_the_page_says_it_cannot_verify(
    browser: Any, server: dict[str, Any]
) -> None:
    ctx = context(browser)
    ctx.add_init_script("""(() => {
        const real = crypto.subtle.importKey.bind(crypto.subtle);
        crypto.subtle.importKey = (fmt, key, alg, ...rest) =>
            (alg && alg.name === 'Ed25519')
                ? Promise.reject(new DOMException('no Ed25519', 'NotSupportedError'))
                : real(fmt, key, alg, ...rest);
    })();""")
    pg = ctx.new_page()
    try:
        pg.goto(f"{server['url']}/verify?seq={server['seq']}")
        pg.set_input_files("#exhibit", str(server["dir"] / "harbour.jpg"))
        status, text = verdict(pg, "unsupported", "verified", "failed")
        assert status == "unsupported" and "Ed25519" in text, text
        assert pg.locator("#support").is_visible()
    finally:
        ctx.close()


def test_page_and_assets_are_served_with_a_strict_policy(server: dict[str, Any]) -> None:
    url = server["url"]
    r = httpx.get(f"{url}/verify")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "<script src=\"static/verify.js\"" in r.text
    js = httpx.get(f"{url}/static/verify.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "http://" not in js.text and "https://" not in js.text  # no third-party code
    assert httpx.get(f"{url}/static/verify.css").status_code == 200
    for bad in ("../app.py", "nope.js", "verify.html"):
        assert httpx.get(f"{url}/static/{bad}").status_code == 404



def test_page_refuses_chain_of_title_tampering_at_the_title_step(
    page: Any, server: dict[str, Any], tmp_path: Path
) -> None:
    """A reordered, foreign or altered link, or a chain not signed by the log: the page fails
    the title step as ledger/verify.py does. (A dropped link that only the holder replay
    catches is the CLI's: the page does not restate the title rules, and says so.)"""
    from tests.test_title_bundle import make_title_log, tampered_chains

    made = make_title_log(tmp_path)
    cases = tampered_chains(made)
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    js = page.evaluate(
        """async ([cases, pin]) => {
            const out = [];
            for (const b of cases) {
                const r = await window.copyledgerVerify.verify(b, null, [pin]);
                const f = r.results.find((s) => s.status === 'failed');
                out.push(f ? f.name : Object.fromEntries(r.results.map((s) => [s.name, s.status])));
            }
            return out;
        }""", [[b for _, b in cases], made["vkey"]])
    for (name, b), js_failed in zip(cases, js, strict=True):
        rep = verify_bundle(b, trusted_keys=[made["vkey"]])
        assert rep.failed is not None and rep.failed.name == "title", name
        assert js_failed == "title", (name, js_failed)
    good = made["bundles"][made["ab"]]
    ok = page.evaluate("""async ([b, pin]) => {
        const r = await window.copyledgerVerify.verify(b, null, [pin]);
        return Object.fromEntries(r.results.map((s) => [s.name, s.status]));
    }""", [good, made["vkey"]])
    assert ok["title"] == "external", ok


def on_page(page: Any, server: dict[str, Any], cases: list[Any], sha: str,
            collect: str) -> list[Any]:
    """Each [bundle, pins] of `cases` verified by the page against the file hash `sha`; of each
    report `r`, what the JavaScript expression `collect` makes of it."""
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    return cast(list[Any], page.evaluate(
        """async ([cases, hash]) => {
            const out = [];
            for (const [b, pins] of cases) {
                const r = await window.copyledgerVerify.verify(b, hash, pins);
                out.push(COLLECT);
            }
            return out;
        }""".replace("COLLECT", collect), [cases, sha]))


def test_page_refuses_a_checkpoint_signed_by_another_pinned_logs_key(
    page: Any, server: dict[str, Any], tmp_path: Path
) -> None:
    """D191, D195 on the page: a checkpoint is of the signing key's own log. With two logs' keys
    pinned, log B's key (named for B) that signs this log's checkpoint, or the chain of title's,
    does not make it this log's, and the block note is checked only with the keys named for
    this log: the page refuses each at the step ledger/verify.py does, with its words."""
    from copyledger.ledger import note
    from copyledger.notary.signer import FileSigner, sign_note, verifier_key
    from tests.test_verify_strict import FILE, make

    made = make(tmp_path / "log")
    other = FileSigner.generate("other.example/log", tmp_path / "other.key")
    vkey, other_vkey = made["vkey"], verifier_key(other)
    good = made["bundle"]
    assert good.get("title_chain"), "the exhibit's bundle carries its chain of title"
    blk = good["block"]
    cp_text = note.verify_note(good["checkpoint"], [note.parse_verifier_key(vkey)])[0].text
    block_text = note.block_note_text(good["origin"], blk["height"], bytes.fromhex(blk["hash"]))

    by_other = copy.deepcopy(good)  # checkpoint and block note signed by log B's key alone
    by_other["checkpoint"] = sign_note(cp_text, [other])
    by_other["block"]["block_note"] = sign_note(block_text, [other])
    by_other.pop("tlog_proof", None)  # (it carries the checkpoint too)
    block_by_other = copy.deepcopy(good)  # the checkpoint by both, the block note by B alone
    block_by_other["checkpoint"] = sign_note(cp_text, [made["reg"].signer, other])
    block_by_other["block"]["block_note"] = sign_note(block_text, [other])
    block_by_other.pop("tlog_proof", None)
    chain_by_other = copy.deepcopy(good)  # the chain of title's checkpoint by B alone
    chain = chain_by_other["title_chain"]
    text = note.verify_note(chain["checkpoint"], [note.parse_verifier_key(vkey)])[0].text
    chain["checkpoint"] = sign_note(text, [other])
    cases = [  # (bundle, pins, the step that fails: None for none)
        (good, [vkey, other_vkey], None),  # (pinning a second log's key is allowed)
        (by_other, [other_vkey], "checkpoint"),
        (by_other, [vkey, other_vkey], "checkpoint"),
        (block_by_other, [vkey, other_vkey], "block-signature"),
        (chain_by_other, [vkey, other_vkey], "title"),
    ]
    sha = hashlib.sha256(FILE).hexdigest()
    out = on_page(page, server, [[b, pins] for b, pins, _ in cases], sha,
                  "(() => { const f = r.results.find((s) => s.status === 'failed');"
                  " return f ? [f.name, f.detail] : [null, '']; })()")
    for (b, pins, step), (js_step, js_detail) in zip(cases, out, strict=True):
        rep = verify_bundle(b, file_sha256=sha, trusted_keys=pins)
        assert (rep.failed.name if rep.failed else None) == step, rep.to_json()
        assert js_step == step, (step, js_step, js_detail)
        if step in ("checkpoint", "title"):
            assert rep.failed is not None and "not for the log of the trusted key" in (
                rep.failed.detail)
            assert js_detail == (
                f"the checkpoint is for log {json.dumps(b['origin'])}, not for the log of the "
                "trusted key that signed it (other.example/log)"), js_detail


def test_page_refuses_an_sm2_signature_by_a_key_named_for_another_log(
    page: Any, server: dict[str, Any], tmp_path: Path
) -> None:
    """D195 on the page: an SM2 note signature does not sign the key's name, so the sm2 step
    takes only the signatures of an SM2 key named for this log: a pinned SM2 key of another log
    that signed the checkpoint and the block note is refused there, as in ledger/verify.py."""
    from copyledger.ledger import note
    from copyledger.notary.sm2 import Sm2Signer
    from tests.test_sm import FILE, sm_bundle

    b, log = sm_bundle(tmp_path)
    other = Sm2Signer("other.example/log", 7)

    def also_signed(signed: str) -> str:
        n = note.parse_note(signed)
        line = note.Signature(other.name, other.key_id,
                              other.sign(note.signature_message(n.text)))
        return note.format_note(n.text, [*n.signatures, line])

    bad = copy.deepcopy(b)
    bad["checkpoint"] = also_signed(b["checkpoint"])
    bad["block"]["block_note"] = also_signed(b["block"]["block_note"])
    bad.pop("tlog_proof", None)
    vkey = log["verifier_key"]
    cases = [(b, [vkey, log["sm2_verifier_key"]]), (bad, [vkey, log["sm2_verifier_key"]]),
             (bad, [vkey, other.verifier_key])]
    sha = hashlib.sha256(FILE).hexdigest()
    out = on_page(page, server, cases, sha,
                  "Object.fromEntries(r.results.map((s) => [s.name, [s.status, s.detail]]))")
    good, also, refused = out
    for steps in (good, also):  # another SM2 line beside this log's key's is ignored
        assert steps["sm2"][0] == "ok", steps["sm2"]
    assert refused["sm2"] == ["failed", "the checkpoint's SM2 signature is by a key named for "
                              f"another log than {b['origin']}"], refused["sm2"]
    assert refused["checkpoint"][0] == refused["block-signature"][0] == "ok", refused
    for case, pins in cases:
        rep = verify_bundle(case, file_sha256=sha, trusted_keys=pins[:1], sm2_keys=pins[1:])
        assert (rep.failed.name if rep.failed else None) == (
            "sm2" if pins[1] == other.verifier_key else None), rep.to_json()
    rep = verify_bundle(bad, file_sha256=sha, trusted_keys=[vkey],
                        sm2_keys=[other.verifier_key])
    assert rep.failed is not None and rep.failed.detail == refused["sm2"][1]


def test_page_and_python_agree_on_sm2_time_stamps_without_an_sm2_key(
    page: Any, server: dict[str, Any], tmp_path: Path
) -> None:
    """A bundle of the standard suite with an empty `sm2_timestamps` list carries no SM2
    token: ledger/verify.py skips its sm2 step, and the page failed it ("carries SM2
    time-stamps") because an empty array is true in JavaScript. A token in the list, with no
    SM2 key to check the notes with, fails the step in both."""
    from tests.test_verify_strict import FILE, make

    made = make(tmp_path / "log")
    good, vkey = made["bundle"], made["vkey"]
    empty = copy.deepcopy(good)
    empty["sm2_timestamps"] = []
    one = copy.deepcopy(good)
    one["sm2_timestamps"] = [copy.deepcopy(good["timestamps"][0]) | {"hash_alg": "sm3"}]
    sha = hashlib.sha256(FILE).hexdigest()
    cases = [(empty, "skipped"), (one, "failed")]
    out = on_page(page, server, [[b, [vkey]] for b, _ in cases], sha,
                  "(() => { const s = r.results.find((x) => x.name === 'sm2');"
                  " const f = r.results.find((x) => x.status === 'failed');"
                  " return [s ? s.status : null, f ? f.name : null]; })()")
    for (b, status), (js_status, js_failed) in zip(cases, out, strict=True):
        rep = verify_bundle(b, file_sha256=sha, trusted_keys=[vkey])
        [py_status] = [st.status.value for st in rep.steps if st.name == "sm2"]
        assert js_status == py_status == status, (status, py_status, js_status, js_failed)
        assert js_failed == (rep.failed.name if rep.failed else None) == (
            "sm2" if status == "failed" else None), rep.to_json()


def test_page_verifies_an_offer_and_its_acceptance(page: Any, server: dict[str, Any]) -> None:
    """The entry kinds of a two-step assignment (D36) pass the page's entry rules, as Python's."""
    data = server["dir"] / "data"
    keys = {}
    for account in ("offerer", "recipient"):
        made = cli("keys", "create", "--role", "creator", "--account", account,
                   "--data-dir", str(data), "--json")
        keys[account] = {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}
    with httpx.Client(base_url=server["url"], timeout=30) as c:
        w = c.post("/v1/works", headers=keys["offerer"], json={
            "sha256": hashlib.sha256(b"offered").hexdigest(), "title": "o", "creators": ["A"],
            "work_type": "text"}).json()["seq"]
        offer = c.post("/v1/transfers", headers=keys["offerer"], json={
            "work_seq": w, "to": "recipient", "transfer_type": "assignment"}).json()["seq"]
        accepted = c.post(f"/v1/transfers/{offer}/accept", headers=keys["recipient"],
                          json={"note": "agreed"}).json()["seq"]
        bundles = [c.get(f"/v1/entries/{s}/bundle").json() for s in (offer, accepted)]
    assert [b["entry"]["kind"] for b in bundles] == ["transfer", "acceptance"]
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    failed = page.evaluate(
        """async (bundles) => {
            const out = [];
            for (const b of bundles) {
                const r = await window.copyledgerVerify.verify(b, null, []);
                const f = r.results.find((s) => s.status === 'failed');
                out.push(f ? `${f.name}: ${f.detail}` : null);
            }
            return out;
        }""", bundles)
    assert failed == [None, None]
    assert all(verify_bundle(b).ok for b in bundles)


def test_page_checks_an_sm_suite_bundle_as_python_does(
    page: Any, server: dict[str, Any], tmp_path: Path
) -> None:
    """The SM suite (D40) on the page: its own SM3 agrees with ours, an SM-suite bundle verifies
    (both keys pinned, or the SM2 key it carries), and any flipped byte of an SM2 signature
    fails the sm2 step, as in ledger/verify.py; so does a flipped byte of its SM2/SM3
    time-stamp token (D51), a sample of them across the token."""
    from copyledger.ledger import sm2
    from tests.test_sm import FILE, replace_sm2, sm2_line, sm_bundle

    b, log = sm_bundle(tmp_path)
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    for data in (b"", b"abc", b"a" * 64, b"x" * 1000, FILE):
        got = page.evaluate("(d) => window.copyledgerVerify.toHex("
                            "window.copyledgerVerify.sm3(new Uint8Array(d)))", list(data))
        assert got == sm2.sm3_hex(data)
    vkey, sm2_vkey = log["verifier_key"], log["sm2_verifier_key"]
    cases = [b]
    for which in ("checkpoint", "block_note"):
        signed = b["checkpoint"] if which == "checkpoint" else b["block"]["block_note"]
        sig = sm2_line(signed, sm2_vkey).signature
        for i in (0, 3, len(sig) // 2, len(sig) - 1):
            bad = bytearray(sig)
            bad[i] ^= 0x04
            changed = copy.deepcopy(b)
            if which == "checkpoint":
                changed["checkpoint"] = replace_sm2(signed, sm2_vkey, bytes(bad))
                changed.pop("tlog_proof")
            else:
                changed["block"]["block_note"] = replace_sm2(signed, sm2_vkey, bytes(bad))
            cases.append(changed)
    token = base64.b64decode(b["sm2_timestamps"][0]["token"])
    for i in range(0, len(token), max(1, len(token) // 24)):
        bad = bytearray(token)
        bad[i] ^= 0x01
        changed = copy.deepcopy(b)
        changed["sm2_timestamps"][0]["token"] = base64.b64encode(bytes(bad)).decode()
        cases.append(changed)
    sha = hashlib.sha256(FILE).hexdigest()
    for pins in ([vkey, sm2_vkey], [vkey]):
        out = page.evaluate(
            """async ([cases, hash, pins]) => {
                const out = [];
                for (const b of cases) {
                    const r = await window.copyledgerVerify.verify(b, hash, pins);
                    out.push(Object.fromEntries(
                        r.results.map((s) => [s.name, [s.status, s.detail]])));
                }
                return out;
            }""", [cases, sha, pins])
        good, *broken = out
        assert good["sm2"][0] == "ok" and "1234567812345678" in good["sm2"][1], [
            (k, v) for k, v in good.items() if v[0] != "ok"]
        assert "1 SM2/SM3 time-stamp token(s) over the header's SM3" in good["sm2"][1], good
        assert all(s in ("ok", "external", "skipped") for s, _ in good.values()), good
        for case, steps in zip(cases[1:], broken, strict=True):
            assert steps["sm2"][0] == "failed", {k: v for k, v in steps.items() if v[0] != "ok"}
            assert steps["block-signature"][0] == "ok", steps
            rep = verify_bundle(case, trusted_keys=[vkey], sm2_keys=pins[1:])
            assert rep.failed is not None and rep.failed.name == "sm2"


def test_page_checks_sm2_bundles_across_a_rotation(page: Any, server: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """After a rotation of an SM-suite registry's SM2 keys (D57) the page, like ledger/verify.py,
    accepts bundles sealed before and during the overlap, and refuses a token that the retired
    SM2 TSA certificate signed after its retirement."""
    from tests.test_sm2_rotation import make_rotated

    r = make_rotated(tmp_path)
    pins = [r["before"]["log"]["verifier_key"], r["after"]["log"]["verifier_key"]]
    cases = [(r["before"]["bundle"], "before"), (r["after"]["bundle"], "after"),
             (r["forged"], "after")]
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    out = page.evaluate(
        """async ([cases, pins]) => {
            const out = [];
            for (const [b, hash] of cases) {
                const r = await window.copyledgerVerify.verify(b, hash, pins);
                out.push(Object.fromEntries(r.results.map((s) => [s.name, [s.status, s.detail]])));
            }
            return out;
        }""", [[(b, hashlib.sha256(tag.encode()).hexdigest()) for b, tag in cases], pins])
    before, after, forged = out
    for steps in (before, after):
        assert steps["sm2"][0] == "ok", steps["sm2"]
        assert all(s in ("ok", "external", "skipped") for s, _ in steps.values()), steps
    assert forged["sm2"][0] == "failed", forged["sm2"]
    assert "SM2 TSA certificate retired at" in forged["sm2"][1], forged["sm2"]
    rep = verify_bundle(r["forged"], trusted_keys=pins)
    assert rep.failed is not None and rep.failed.name == "sm2"


def test_in_chinese_the_page_speaks_chinese_and_its_statuses_do_not_change(
    browser: Any, server: dict[str, Any]
) -> None:
    """Accept-Language: zh-CN (issue 15): the page and the script's words in Chinese, the same
    verdicts and data-status values, the same checks, nothing fetched from elsewhere."""
    url, seq, d = server["url"], server["seq"], server["dir"]
    ctx = context(browser, locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN"})
    pg = ctx.new_page()
    requests: list[str] = []
    pg.on("request", lambda req: requests.append(req.url))
    try:
        pg.goto(f"{url}/verify?seq={seq}")
        assert pg.locator("h1").inner_text() == "核验证据文件"
        pg.wait_for_selector("#bundle-info:has-text('载入条目')", timeout=WAIT_MS)
        pg.set_input_files("#exhibit", str(d / "harbour.jpg"))
        status, text = verdict(pg, "verified", "failed", "unsupported")
        assert status == "verified" and text.startswith("核验通过"), text
        assert plain(pg) == ("verified", "该文件正是登记的文件。")
        facts = pg.locator("#facts").inner_text()
        assert re.search(r"登记时间\s+20\d\d年\d{1,2}月\d{1,2}日 \d\d:\d\d（北京时间 UTC\+8）· "
                         r"20\d\d年\d{1,2}月\d{1,2}日 \d\d:\d\d UTC", facts), facts
        assert "区块 " not in facts and "Registered" not in facts
        steps = step_statuses(pg)
        assert steps["file"] == "ok" and steps["timestamp"] == "external"
        pg.set_input_files("#exhibit", str(d / "other.jpg"))
        status, text = verdict(pg, "failed")
        assert text.startswith("核验未通过：file"), text  # the step's name is machine-readable
        assert plain(pg)[0] == "failed"
        assert all(u.startswith(url + "/") for u in requests), requests
    finally:
        ctx.close()


def test_in_chinese_the_page_says_why_a_step_fails_in_chinese(
    browser: Any, page: Any, server: dict[str, Any], tmp_path: Path
) -> None:
    """The page's own step details are catalogue messages too (`T(...)` in verify.js, D64): a
    flipped bit of an SM-suite bundle's SM2 signature fails the sm2 step with a Chinese detail
    on the zh-CN page, and with the English one, as ledger/verify.py says it, on the English
    page; what held reads in Chinese as well. Step ids and statuses are the same."""
    from tests.test_sm import replace_sm2, sm2_line, sm_bundle

    b, log = sm_bundle(tmp_path)
    vkey, sm2_vkey = log["verifier_key"], log["sm2_verifier_key"]
    bad = copy.deepcopy(b)
    signed = b["block"]["block_note"]
    sig = bytearray(sm2_line(signed, sm2_vkey).signature)
    sig[-1] ^= 0x01
    bad["block"]["block_note"] = replace_sm2(signed, sm2_vkey, bytes(sig))
    run = """async ([cases, pins]) => {
        const out = [];
        for (const b of cases) {
            const r = await window.copyledgerVerify.verify(b, null, pins);
            out.push(Object.fromEntries(r.results.map((s) => [s.name, [s.status, s.detail]])));
        }
        return out;
    }"""
    ctx = context(browser, locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN"})
    try:
        zh_page = ctx.new_page()
        zh_page.goto(f"{server['url']}/verify")
        verdict(zh_page, "waiting")
        good, broken = zh_page.evaluate(run, [[b, bad], [vkey, sm2_vkey]])
    finally:
        ctx.close()
    page.goto(f"{server['url']}/verify")
    verdict(page, "waiting")
    en_good, en_broken = page.evaluate(run, [[b, bad], [vkey, sm2_vkey]])
    han = re.compile(r"[\u4e00-\u9fff]")
    three_words = re.compile(r"\b[A-Za-z]{2,}(\s+[A-Za-z]{2,}){2}\b")
    status, detail = broken["sm2"]
    assert status == "failed" and detail.startswith("区块记录的 SM2 签名："), detail
    assert han.search(detail) and not three_words.search(detail), detail
    assert en_broken["sm2"][0] == "failed"
    assert en_broken["sm2"][1].startswith("the block note's SM2 signature: "), en_broken["sm2"]
    rep = verify_bundle(bad, trusted_keys=[vkey], sm2_keys=[sm2_vkey])
    assert rep.failed is not None and rep.failed.name == "sm2"
    assert rep.failed.detail.startswith("the block note's SM2 signature: ")
    assert {k: v[0] for k, v in broken.items()} == {k: v[0] for k, v in en_broken.items()}
    assert {k: v[0] for k, v in good.items()} == {k: v[0] for k, v in en_good.items()}
    assert good["format"][1] == f"日志 {b['origin']} 的条目 {b['seq']}", good["format"]
    for name, (_, text) in good.items():
        if text:
            assert han.search(text), (name, text)


def page_time(stamp: str, lang: str = "en", tz: str | None = None) -> str:
    """What the page should say for `stamp`, built here from Python's zone database and the
    catalogue (the page's own words): the viewer's zone and UTC, or UTC alone."""
    t = parse_timestamp(stamp).astimezone(UTC)

    def human(d: datetime, template: str) -> str:
        return gettext(lang, template).format(day=d.day, month=gettext(lang, MONTHS[d.month - 1]),
                                              year=d.year, hh=f"{d.hour:02d}", mm=f"{d.minute:02d}")

    utc = human(t, FORMAT)
    name = beside_utc(lang, tz)
    if name is None:
        return utc
    local = t.astimezone(ZoneInfo(name))
    minutes = int((local.utcoffset() or timedelta(0)).total_seconds()) // 60
    hh, mm = divmod(abs(minutes), 60)
    offset = ("-" if minutes < 0 else "+") + str(hh) + (f":{mm:02d}" if mm else "")
    return gettext(lang, "{local} ({zone} UTC{offset}) \u00b7 {utc}").format(
        local=human(local, "{day} {month} {year}, {hh}:{mm}"), zone=zone_word(name, lang),
        offset=offset, utc=utc)


# Every 37 days and 13 hours and 7 minutes from 2000 to 2037: each hour of the day, both sides of
# every summer-time change in New York, a half-hour zone, and Beijing (no summer time).
SWEEP = [(datetime(2000, 1, 1, tzinfo=UTC) + k * timedelta(days=37, hours=13, minutes=7))
         .strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(360)]


def test_times_show_the_viewers_zone_and_utc(browser: Any, server: dict[str, Any]) -> None:
    """Issue 15 item 3 on /verify (D71): zh-CN shows Beijing time and UTC, English UTC alone,
    `?tz=` any IANA zone beside UTC; the zone is the server's choice (service/dates.py), the
    page only computes the time in it, and agrees with Python's zone database on every time."""
    url, seq = server["url"], server["seq"]
    received = server["bundle"]["entry"]["received_at"]
    late = "2026-11-29T23:44:00Z"
    cases = [  # (Accept-Language, ?tz=, what the page says for `late`)
        ("zh-CN", None, "2026年11月30日 07:44（北京时间 UTC+8）· 2026年11月29日 23:44 UTC"),
        ("en", None, "29 November 2026, 23:44 UTC"),
        ("en", "Asia/Shanghai", "30 November 2026, 07:44 (Beijing time UTC+8) · 29 November "
                                "2026, 23:44 UTC"),
        ("zh-CN", "UTC", "2026年11月29日 23:44 UTC"),
        ("en", "America/New_York", "29 November 2026, 18:44 (America/New_York UTC-5) · "
                                   "29 November 2026, 23:44 UTC"),
        ("en", "Asia/Kolkata", "30 November 2026, 05:14 (Asia/Kolkata UTC+5:30) · 29 November "
                               "2026, 23:44 UTC"),
    ]
    for lang, tz, expected in cases:
        ctx = context(browser, locale=lang, extra_http_headers={"Accept-Language": lang})
        try:
            pg = ctx.new_page()
            pg.goto(f"{url}/verify?seq={seq}" + (f"&tz={tz}" if tz else ""))
            assert verdict(pg, "incomplete", "failed")[0] == "incomplete"
            facts = pg.locator("#facts").inner_text()
            assert page_time(received, lang, tz) in facts, (lang, tz, facts)
            assert pg.evaluate("(t) => window.copyledgerVerify.humanTime(t)", late) == expected
            assert page_time(late, lang, tz) == expected  # the page and Python say the same
            said = pg.evaluate("(ts) => ts.map(window.copyledgerVerify.humanTime)", SWEEP)
            assert said == [page_time(t, lang, tz) for t in SWEEP], (lang, tz)
            assert ("北京时间" in facts) == (lang == "zh-CN" and tz is None), facts
        finally:
            ctx.close()
