"""The log explorer's pages, in process: what a reader sees on each, links that lead where they
say, bounded pages, and hostile queries answered with a 4xx page that changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.service import explorer
from copyledger.service.apikeys import create_key
from copyledger.service.dates import human_time
from copyledger.service.node import Node
from tests.helpers import open_registry, sha, work_body

COUNTER = {
    "notice_type": "counter_notice", "regime": "dmca_512c3",
    "claimant": {"name": "Bob Uploader", "address": "2 Main St", "phone": "+1 555 0199"},
    "targets": [{"url": "https://video.example/watch/1"}],
    "statements": {"mistake": True, "perjury": True, "jurisdiction_consent": True},
    "signature": "/Bob/", "requested_action": "restore"}


def hdr(reg: Node, role: str, account: str) -> dict[str, str]:
    k, _ = create_key(reg.store, role, account)
    return {"Authorization": f"Bearer {k}"}


def populate(c: TestClient, reg: Node) -> dict[str, int]:
    """Works (one titled with markup), an assignment offered and accepted, a claim and its
    counter-notice."""
    from tests.test_claims import DMCA

    ada, plat = hdr(reg, "creator", "ada"), hdr(reg, "platform", "tube")
    hdr(reg, "creator", "bob")  # a transfer's recipient must have an account (D36)
    seqs = [c.post("/v1/works", headers=ada, json=work_body(i)).json()["seq"] for i in range(3)]
    song = c.post("/v1/works", headers=ada, json={
        "sha256": sha("song"), "title": "Song <b>bold</b>", "creators": ["Ada"],
        "work_type": "audio"}).json()["seq"]
    bob = hdr(reg, "creator", "bob")
    t = c.post("/v1/transfers", headers=ada, json={
        "work_seq": song, "to": "bob", "transfer_type": "assignment"})
    assert t.status_code == 201, t.text
    accepted = c.post(f"/v1/transfers/{t.json()['seq']}/accept", headers=bob, json={})
    assert accepted.status_code == 201, accepted.text  # bob holds the song (D36)
    claim = c.post("/v1/claims", headers=plat, json={**DMCA, "works": [{"seq": song}]})
    assert claim.status_code == 201, claim.text
    counter = c.post("/v1/claims", headers=plat,
                     json={**COUNTER, "refers_to": claim.json()["seq"]})
    assert counter.status_code == 201, counter.text
    return {"first": seqs[0], "song": song, "transfer": t.json()["seq"],
            "accepted": accepted.json()["seq"],
            "claim": claim.json()["seq"], "counter": counter.json()["seq"]}


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Node:
    return open_registry(tmp_path, database_url)


@pytest.fixture
def world(reg: Node) -> Iterator[tuple[TestClient, dict[str, int]]]:
    with TestClient(create_app(reg)) as c:
        yield c, populate(c, reg)


def text(html: str) -> str:
    """The page's words, tags dropped, whitespace folded (what a reader reads)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&lt;", "<") \
        .replace("&gt;", ">").replace("&amp;", "&")


def page(c: TestClient, path: str, status: int = 200) -> str:
    r = c.get(path, follow_redirects=False)
    assert r.status_code == status, (path, r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    return r.text


def test_home_says_what_the_registry_is_and_shows_its_state(
        world: tuple[TestClient, dict[str, int]]) -> None:
    c, s = world
    html = page(c, "/")
    words = text(html)
    assert "public, permanent record of creative works" in words
    size = c.get("/v1/log").json()["tree_size"]
    assert re.search(rf"Entries recorded {size}\b", words)
    assert c.get("/v1/log/checkpoint").text.splitlines()[0] in html  # the signed note
    assert f'href="entries/{s["counter"]}"' in html and 'href="blocks/' in html
    assert "Song <b>bold</b>" in words and "<b>bold</b>" not in html  # escaped
    assert 'src="static/explorer.js"' in html and "<script>" not in html  # no inline script
    assert "http://" not in html and "https://" not in html  # no third-party asset
    assert c.get("/static/explorer.js").status_code == 200
    assert c.get("/static/explorer.css").status_code == 200
    assert c.get("/static/dropzone.js").status_code == 200
    assert "/" not in c.get("/openapi.json").json()["paths"]  # HTML pages are not the API


def test_entry_page_in_plain_words_with_proof_and_links(
        world: tuple[TestClient, dict[str, int]]) -> None:
    c, s = world
    song = s["song"]
    html = page(c, f"/entries/{song}")
    words = text(html)
    e = c.get(f"/v1/entries/{song}").json()
    when = human_time(e["entry"]["received_at"])
    assert re.fullmatch(r"\d{1,2} [A-Z][a-z]+ \d{4}, \d\d:\d\d UTC", when)
    assert f"ada recorded this registered work on {when}" in words
    for href in (f"../v1/entries/{song}/certificate", f"../verify?seq={song}",
                 f"../v1/entries/{song}/bundle", f"../works/{song}",
                 f"../v1/entries/{song}/certificate?format=pdf"):
        assert f'href="{href.replace("&", "&amp;")}"' in html, href
    proof = c.get(f"/v1/entries/{song}/proof").json()
    assert all(h in html for h in proof["proof"]) and proof["root"] in html
    # the entries that name it: the transfer and the claim, linked
    for named_by in (s["transfer"], s["claim"]):
        assert f'href="../entries/{named_by}"' in html
    assert "transfer of the work" in words and "claim naming the work" in words
    # a transfer names the work
    t = page(c, f"/entries/{s['transfer']}")
    assert f'href="../entries/{song}"' in t and "Transfer of rights" in text(t)


def test_chain_of_title_claim_timeline_and_block(
        world: tuple[TestClient, dict[str, int]]) -> None:
    c, s = world
    words = text(page(c, f"/works/{s['song']}"))
    assert "ada registered this work. Today it is held by bob." in words
    claim = text(page(c, f"/claims/{s['claim']}"))
    assert ("Ada Example filed this notice under US Digital Millennium Copyright Act, "
            "17 U.S.C. § 512 (dmca_512c3)") in claim  # the regime in words, its code beside
    assert "counter-notice" in claim and "Bob Uploader" in claim
    # the counter-notice's page leads to the same timeline
    assert f'href="../claims/{s["counter"]}"' in page(c, f"/entries/{s['counter']}")
    height = c.get(f"/v1/entries/{s['song']}").json()["block_height"]
    b = page(c, f"/blocks/{height}")
    blk = c.get(f"/v1/blocks/{height}").json()
    assert blk["hash"] in b and blk["checkpoint"].splitlines()[0] in b
    assert f"Block {height} was sealed on {human_time(blk['header']['sealed_at'])}" in text(b)
    # Its own TSA by name, not by its label in the database, "notary" (D214).
    assert [t["tsa"] for t in blk["timestamps"]] == ["notary"]
    assert "Time-stamped by this registry's notary" in unescape(text(b))
    zh = text(page(c, f"/blocks/{height}?lang=zh-CN"))
    assert "本登记系统的公证服务" in zh and "this registry" not in zh


def test_search_by_hash_and_by_number(world: tuple[TestClient, dict[str, int]]) -> None:
    c, s = world
    html = page(c, f"/search?q={sha('song').upper()}")  # any case
    assert f'href="entries/{s["song"]}"' in html
    assert "earliest registration" in text(html)
    none = text(page(c, f"/search?q={sha('never')}"))
    assert "Nothing in this registry has a file with the SHA-256 fingerprint" in none
    r = c.get(f"/search?q={s['song']}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"entries/{s['song']}"


def test_the_language_switch_keeps_the_page_and_every_kind_has_words(
        world: tuple[TestClient, dict[str, int]]) -> None:
    """D180: the switch's links were a bare `?lang=`, so a search switched to Chinese lost its
    `q` (a 422) and the verify page lost its `?seq=`; and acceptance, withdrawal and rotation
    read in English on Chinese pages."""
    import html as html_mod

    from copyledger.api.explorer import KINDS, kind_name
    from copyledger.ledger.entry import KINDS as ENTRY_KINDS

    c, s = world
    q = sha("song")
    switch = re.search(r'href="([^"]*lang=zh-CN)"', page(c, f"/search?q={q}"))
    assert switch is not None and html_mod.unescape(switch[1]) == f"?q={q}&lang=zh-CN"
    r = c.get(f"/search{html_mod.unescape(switch[1])}", follow_redirects=False)
    assert r.status_code == 200 and r.headers["content-language"] == "zh-CN", r.status_code
    verify = c.get(f"/verify?seq={s['song']}&lang=en").text
    assert f'href="?seq={s["song"]}&amp;lang=zh-CN"' in verify
    assert set(ENTRY_KINDS) <= set(KINDS)
    # D182: a zh-CN entry page shows Beijing time beside UTC, and its footer says so
    zh = c.get(f"/entries/{s['song']}?lang=zh-CN").text
    assert "北京时间" in zh and "所有时间均为 UTC" not in zh
    assert "时间以北京时间和 UTC" in zh
    assert "All times are in UTC" in c.get(f"/entries/{s['song']}?lang=en").text
    # (D186: the pages that show UTC alone, in zh-CN too, say so)
    for path in ("/entries", "/blocks", "/"):
        assert "所有时间均为 UTC" in c.get(f"{path}?lang=zh-CN").text, path
    for kind in ("acceptance", "withdrawal", "rotation"):
        assert kind_name(kind, "zh-CN") != kind_name(kind, "en"), kind


def test_pages_are_bounded_and_link_to_their_neighbours(reg: Node) -> None:
    with TestClient(create_app(reg)) as c:
        h = hdr(reg, "creator", "ada")
        for i in range(7):
            c.post("/v1/works", headers=h, json=work_body(i)).raise_for_status()
        first = page(c, "/entries?limit=3")
        assert [int(x) for x in re.findall(r'href="entries/(\d+)"', first)] == [6, 5, 4]
        assert 'href="entries?before=4&amp;limit=3"' in first
        second = page(c, "/entries?before=4&limit=3")
        assert [int(x) for x in re.findall(r'href="entries/(\d+)"', second)] == [3, 2, 1]
        assert 'href="entries?before=7&amp;limit=3"' in second  # newer
        last = page(c, "/entries?before=1&limit=3")
        assert re.findall(r'href="entries/(\d+)"', last) == ["0"] and "Older" not in last
        d = explorer.entries_page(reg, None, explorer.MAX_ROWS)
        assert len(d["rows"]) == 7
        blocks = page(c, "/blocks?limit=2")
        assert len(re.findall(r'href="blocks/(\d+)"', blocks)) == 2


HOSTILE = [
    ("/entries/999", 404), ("/blocks/999", 404), ("/works/999", 404), ("/claims/0", 404),
    ("/search?q=nonsense", 422), ("/search?q=" + "9" * 40, 422), ("/search?q=", 422),
    ("/entries?limit=0", 422), ("/entries?limit=101", 422), ("/entries?before=-1", 422),
    ("/blocks/abc", 422), ("/entries/99999999999999999999999", 422),
    ("/search?q=" + "x" * 5000, 422), ("/search?q=%00%ff", 422), ("/search?q=%D9%A3", 422),
    ("/entries?before=abc", 422), ("/blocks?limit=1.5", 422), ("/blocks/1?after=x", 422),
    ("/works/abc", 422), ("/claims/-1", 422), ("/search?q=" + sha("x") + "&limit=abc", 422),
]


def test_hostile_queries_get_a_4xx_and_change_nothing(
        world: tuple[TestClient, dict[str, int]]) -> None:
    """Each answered with an HTML page in the reader's language: a value the route's
    parameters refused (too long, not a number) was the API's JSON problem, which a browser
    showed as text; the API under /v1 keeps its problem documents."""
    c, _ = world
    size = c.get("/v1/log").json()["tree_size"]
    for path, status in HOSTILE:
        r = c.get(path, follow_redirects=False)
        assert r.status_code == status, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html"), (path, r.text[:300])
        assert r.text.startswith("<!doctype html>") and "Back to the log explorer" in r.text
    zh = c.get("/entries?before=abc&lang=zh-CN")
    assert zh.status_code == 422 and '<html lang="zh-CN">' in zh.text
    assert "输入无效" in zh.text and "Invalid input" not in zh.text
    css = re.search(r'href="([^"]*static/explorer.css)"', page(c, "/blocks/abc", 422))
    assert css is not None and css[1] == "../static/explorer.css"  # its links from its depth
    for api in ("/v1/entries/abc", "/v1/search?sha256=" + "x" * 5000):
        r = c.get(api)
        assert r.status_code == 422 and r.headers["content-type"].startswith(
            "application/problem+json"), api
    assert c.get("/v1/log").json()["tree_size"] == size


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_an_address_with_no_page_is_a_page_for_a_browser(
        world: tuple[TestClient, dict[str, int]]) -> None:
    """A mistyped address in a browser was answered with the API's JSON problem, shown as
    text: it is a 404 page in the reader's language now, its links from its depth. Clients
    that do not ask for HTML first (curl's `*/*`, JSON), and every address under /v1, keep the
    problem document."""
    c, _ = world
    for path, depth in (("/nope", 0), ("/entries/1/nope", 2), ("/certificates/", 1),
                        ("/a" * 5000, 32)):  # (depth capped: the links stay short)
        r = c.get(path, headers=BROWSER)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), path
        assert "No page has this address." in r.text and "Back to the log explorer" in r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "Accept" in r.headers["vary"].split(", ")  # (JSON to others: a cache must know)
        css = re.search(r'href="([^"]*static/explorer.css)"', r.text)
        assert css is not None and css[1] == "../" * depth + "static/explorer.css", path[:20]
    zh = c.get("/nope?lang=zh-CN", headers=BROWSER)
    assert zh.status_code == 404 and '<html lang="zh-CN">' in zh.text
    assert "No page has this address." not in zh.text and "未找到" in zh.text
    for path, accept in (("/nope", "*/*"), ("/nope", "application/json"),
                         ("/nope", "application/json, text/html;q=0.5"),
                         ("/v1/nope", BROWSER["Accept"]), ("/v1/entries/999", BROWSER["Accept"]),
                         ("/v1", BROWSER["Accept"])):
        r = c.get(path, headers={"Accept": accept})
        assert r.status_code == 404 and r.headers["content-type"].startswith(
            "application/problem+json"), (path, accept)
    assert "Accept" in c.get("/nope").headers["vary"].split(", ")
    assert "Accept" not in c.get("/v1/nope").headers["vary"].split(", ")


def test_a_monitor_answers_a_browsers_404_with_a_problem_not_an_explorer_page(
        tmp_path: Path) -> None:
    """The explorer's 404 page is the registry's: a monitor (and a witness) has no explorer,
    so the page's links and stylesheet would go nowhere (the review of D213)."""
    from copyledger.api.monitor_app import create_monitor_app
    from copyledger.service.monitor import MonitorStatus

    with TestClient(create_monitor_app(tmp_path / "monitor", MonitorStatus())) as m:
        r = m.get("/entries/5", headers=BROWSER)
    assert r.status_code == 404 and r.headers["content-type"].startswith(
        "application/problem+json")


def test_works_page_refuses_what_is_not_a_work(
        world: tuple[TestClient, dict[str, int]]) -> None:
    c, s = world
    html = page(c, f"/works/{s['transfer']}", 422)
    assert "not a work" in html


def test_empty_log_home(tmp_path: Path) -> None:
    reg = open_registry(tmp_path)
    with TestClient(create_app(reg)) as c:
        words = text(page(c, "/"))  # a genesis block, sealed at start, and no entry
        assert "Entries recorded 0" in words and "Nothing here yet." in words


def test_human_time() -> None:
    assert human_time("2026-11-29T23:44:51.123456Z") == "29 November 2026, 23:44 UTC"
    assert human_time("2026-03-01T01:02:03+02:00") == "28 February 2026, 23:02 UTC"
    assert human_time("not a time") == "not a time"




def test_a_block_and_an_entrys_referrers_are_paged(tmp_path: Path) -> None:
    """A block of many entries and a work named by many claims: each page holds at most
    `limit` rows, and following "next" visits every row once."""
    from tests.test_sequencer import pending

    reg = open_registry(tmp_path, linger_ms=200.0)  # one block for the batch below
    with TestClient(create_app(reg)) as c:
        futures = [reg.sequencer.submit(pending(i)) for i in range(7)]
        seqs = [f.result(timeout=120).seq for f in futures]
        height = c.get(f"/v1/entries/{seqs[0]}").json()["block_height"]
        assert c.get(f"/v1/entries/{seqs[-1]}").json()["block_height"] == height
        seen, after = [], None
        while True:
            d = explorer.block_view(reg, height, after, 3)
            assert len(d["rows"]) <= 3
            seen += [r["seq"] for r in d["rows"]]
            if d["next"] is None:
                break
            html = page(c, f"/blocks/{height}?after={d['next']}&limit=3")
            assert f'href="../entries/{d["next"] + 1}"' in html
            after = d["next"]
        assert seen == seqs


def test_the_entries_that_refer_to_an_entry_are_paged(
        world: tuple[TestClient, dict[str, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    c, s = world
    monkeypatch.setattr(explorer, "MAX_ROWS", 2)
    first = page(c, f"/entries/{s['song']}")
    shown = re.findall(r'href="\.\./entries/(\d+)">\d+</a></td><td>', first)
    assert shown == [str(s["transfer"]), str(s["accepted"])]
    more = f"../entries/{s['song']}?after={s['accepted']}"
    assert f'href="{more}"' in first
    rest = page(c, f"/entries/{s['song']}?after={s['accepted']}")
    assert re.findall(r'href="\.\./entries/(\d+)">\d+</a></td><td>', rest) == [
        str(s["claim"]), str(s["counter"])]
    assert f"?after={s['counter']}" not in rest
