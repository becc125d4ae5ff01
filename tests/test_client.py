"""The public client against a live registry: every endpoint, problem details mapped to typed
errors, tampered answers refused, the async client agreeing with the sync one, and the examples
of docs/client.md run as written."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import tsp
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from copyledger import (
    AsyncClient,
    Client,
    ClientError,
    ProblemError,
    ResponseError,
    TransportError,
    UnverifiedAnswer,
    VerificationError,
)
from copyledger.cli.main import app
from copyledger.client import (
    ClaimCheck,
    InclusionProof,
    Receipt,
    check_claim_check,
    check_history,
    check_proof,
    check_receipt,
)
from copyledger.client import _calls as calls
from copyledger.ledger.errors import CopyledgerError, InvalidInput
from tests.server import ServerProcess

DOCS = Path(__file__).resolve().parents[1] / "docs" / "client.md"
OTHER_KEY = "other.example/log+87e58a47+AfPai71h/wSQO2SAp1HRdqFzIukz77paajEsvtZch3NF"


class Live:
    """A registry served by `copyledger serve`, with a creator (ada) and a platform key."""

    def __init__(self, root: Path) -> None:
        runner = CliRunner()
        d = root / "reg"

        def cli(*args: str) -> dict[str, Any]:
            r = runner.invoke(app, [*args, "--data-dir", str(d), "--json"])
            assert r.exit_code == 0, r.stdout
            out: dict[str, Any] = json.loads(r.stdout)
            return out

        self.log_key: str = cli("init")["verifier_key"]
        self.creator: str = cli("keys", "create", "--role", "creator", "--account", "ada")["key"]
        self.bob: str = cli("keys", "create", "--role", "creator", "--account", "bob")["key"]
        self.platform: str = cli("keys", "create", "--role", "platform",
                                 "--account", "tube")["key"]
        # rights go only to accounts the registry knows
        cli("keys", "create", "--role", "creator", "--account", "harbour-press")
        self.server = ServerProcess(d).start()
        self.url = self.server.url


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    srv = Live(tmp_path_factory.mktemp("client"))
    yield srv
    srv.server.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def work(c: Client, data: bytes, **kw: Any) -> Receipt:
    return c.register_work(sha256=sha(data), title=kw.pop("title", "W"), creators=["Ada"],
                           work_type="text", **kw)


NOTICE: dict[str, Any] = {
    "regime": "dmca_512c3",
    "claimant": {"name": "Ada Example", "email": "ada@example.org", "phone": "+1 555 0100",
                 "address": "1 Harbour St", "authority": "owner", "account": "ada"},
    "targets": [{"url": "https://video.example/watch/1"}],
    "statements": {"good_faith": True, "accuracy": True, "perjury": True},
    "requested_action": "remove", "signature": "/Ada Example/",
}


def test_every_endpoint(live: Live, tmp_path: Path) -> None:
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as c:
        assert c.key_pinned and c.healthz()["status"] == "ok"
        first = work(c, b"every endpoint", size=14, license="CC0-1.0", metadata={"isbn": "1"})
        assert isinstance(first, Receipt) and first.entry.registrant == "ada"
        assert first.entry.content_sha256 == sha(b"every endpoint")

        f = tmp_path / "page.txt"
        f.write_bytes(b"uploaded by multipart")
        up = c.upload_work(f, title="Up", creators=["Ada", "Bo"], work_type="text",
                           license="CC-BY-4.0")
        assert up.entry.content_sha256 == sha(b"uploaded by multipart")
        up_entry = up.entry.to_dict()
        assert up_entry["title"] == "Up" and up_entry["creators"] == ["Ada", "Bo"]

        ev = c.deposit_evidence(sha256=sha(b"screenshot"), captured_at="2026-01-01T00:00:00Z",
                                capture_method="screenshot", description="the copy",
                                source_url="https://copy.example/", related_work=first.seq)
        ev_entry = ev.entry.to_dict()
        assert ev_entry["kind"] == "evidence" and ev_entry["related_work"] == first.seq

        tr = c.transfer(work_seq=first.seq, to="harbour-press",
                        transfer_type="exclusive_licence", territory="EU")
        assert tr.entry.KIND == "transfer"
        hist = c.history(first.seq)
        assert [link["seq"] for link in hist["links"]] == [first.seq, tr.seq]

        assert c.entry(first.seq)["entry"] == first.entry.to_dict()
        p = c.proof(first.seq)
        assert isinstance(p, InclusionProof) and p.leaf_hash == first.leaf_hash
        size = first.receipt.tree_size
        assert c.proof(first.seq, tree_size=size).tree_size == size
        assert c.bundle(first.seq)["seq"] == first.seq
        assert c.certificate(first.seq).startswith(b"<!doctype html>")
        assert c.certificate(first.seq, pdf=True).startswith(b"%PDF")
        assert c.search(sha(b"every endpoint"))["results"][0]["seq"] == first.seq
        log = c.log()
        assert log["verifier_key"] == live.log_key
        cp = c.checkpoint()
        assert (cp.origin, cp.size) == (log["origin"], log["tree_size"])
        assert c.block(log["block_height"])["height"] == log["block_height"]
        assert live.log_key in [k["verifier_key"] if isinstance(k, dict) else k
                                for k in c.notary_keys()["log_keys"]]

        old = c.checkpoint()
        work(c, b"grows the log")
        grown = c.consistency(old)
        assert grown.old_size == old.size and grown.new_size > old.size

        imprint = {"hash_algorithm": {"algorithm": "sha256"},
                   "hashed_message": hashlib.sha256(b"x").digest()}
        query = tsp.TimeStampReq({"version": 1, "message_imprint": imprint, "cert_req": True})
        reply = tsp.TimeStampResp.load(c.timestamp(query.dump()))
        assert reply["status"]["status"].native == "granted"

    with Client(live.url, api_key=live.platform, trusted_keys=[live.log_key]) as plat:
        notice = plat.file_claim({**NOTICE, "works": [{"seq": first.seq}]})
        assert plat.claim(notice.seq)["timeline"][0]["seq"] == notice.seq
        check = plat.check_claim({"sha256": sha(b"every endpoint")}, claimant="ada",
                                 work_seq=first.seq)
        assert isinstance(check, ClaimCheck) and check.verdict == "match"
        assert check.claims[0].seq == notice.seq
        # a licence leaves the holder as it was
        assert check.holder == "ada" and check.claimant_is_holder
        up_check = plat.check_claim_upload(b"uploaded by multipart", claimant="bob",
                                           work_sha256=up.entry.content_sha256)
        assert up_check.verdict == "match" and not up_check.claimant_is_registrant


def test_whoami_sync_async_and_cli(live: Live) -> None:
    """Who a key acts for, from the client (both flavours) and `copyledger whoami`; never the
    key itself."""
    with Client(live.url, api_key=live.platform) as c:
        me = c.whoami()
    assert (me["account"], me["role"]) == ("tube", "platform")
    assert me["key_prefix"] == live.platform[:len(me["key_prefix"])] != live.platform

    async def run() -> dict[str, Any]:
        async with AsyncClient(live.url, api_key=live.creator) as c:
            return await c.whoami()

    assert asyncio.run(run())["account"] == "ada"
    with Client(live.url, api_key="cl_unknown") as c, pytest.raises(ProblemError) as e:
        c.whoami()
    assert e.value.status == 401

    r = CliRunner().invoke(app, ["whoami", "--server", live.url, "--api-key", live.creator,
                                 "--json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert (shown["account"], shown["role"]) == ("ada", "creator")
    assert live.creator not in r.stdout
    r = CliRunner().invoke(app, ["whoami", "--server", live.url, "--api-key", live.creator])
    assert r.exit_code == 0 and "account ada, role creator" in r.stdout, r.output
    r = CliRunner().invoke(app, ["whoami", "--server", live.url, "--api-key", "cl_unknown"])
    assert r.exit_code == 2 and "unknown" in r.output.lower(), r.output


def test_unpinned_client_uses_and_says_the_servers_key(live: Live) -> None:
    with Client(live.url, api_key=live.creator) as c:
        assert not c.key_pinned
        work(c, b"unpinned")
        assert [v.name for v in c.verifiers()] == [live.log_key.split("+")[0]]
        assert not c.key_pinned  # still: the key came from the server


def test_problems_become_typed_errors(live: Live) -> None:
    c = Client(live.url, api_key="cl_wrong", trusted_keys=[live.log_key])
    with c, pytest.raises(ProblemError) as e401:
        work(c, b"no key")
    e = e401.value
    assert isinstance(e, ClientError) and isinstance(e, CopyledgerError)
    assert (e.status, e.slug, e.title) == (401, "unauthorized", "Missing or unknown API key")
    assert e.type.startswith("https://") and e.instance == "/v1/works"
    assert str(e) == f"401 {e.title}: {e.detail}"

    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as c:
        with pytest.raises(ProblemError) as e422:
            c.register_work(sha256="nope", title="x", creators=["A"], work_type="text")
        assert e422.value.status == 422 and e422.value.slug == "invalid-input"
        assert e422.value.extra["errors"][0]["field"] == "content.sha256"
        with pytest.raises(ProblemError) as e404:
            c.entry(10**9)
        assert e404.value.status == 404
        first = work(c, b"only ada may transfer")
    with Client(live.url, api_key=live.bob, trusted_keys=[live.log_key]) as bob:
        with pytest.raises(ProblemError) as e403:
            bob.transfer(work_seq=first.seq, to="bob", transfer_type="assignment")
        assert e403.value.status == 403 and "current holder" in e403.value.detail
    with Client(live.url, api_key=live.platform, trusted_keys=[live.log_key]) as plat:
        with pytest.raises(ProblemError) as missing:
            plat.file_claim({"regime": "dmca_512c3", "claimant": {"name": "A"},
                             "works": [{"seq": first.seq}]})
        assert "signature" in missing.value.extra["missing"]


def test_no_httpx_exception_escapes() -> None:
    with pytest.raises(TransportError) as down:
        Client("http://127.0.0.1:9", timeout=2).healthz()
    assert "cannot reach http://127.0.0.1:9" in down.value.detail
    with pytest.raises(TransportError):
        Client("nonsense://x").healthz()

    def gateway(_: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with pytest.raises(ProblemError) as bad:
        Client("http://r.example", transport=httpx.MockTransport(gateway)).log()
    assert not bad.value.is_problem and str(bad.value) == "502 <html>bad gateway</html>"

    def not_json(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>a captive portal</html>")

    with pytest.raises(ResponseError):
        Client("http://r.example", transport=httpx.MockTransport(not_json)).log()
    with pytest.raises(InvalidInput):
        Client("http://r.example", trusted_keys=["not a key"])


@pytest.mark.parametrize("use_async", [False, True])
def test_a_big_answer_is_decoded_and_finished_without_the_collector(use_async: bool) -> None:
    """D101: from the decoding of a big answer to the end of `finish` the cycle collector is
    held off, and the decoded answer is freed before it resumes. So no collection, during the
    call or after it, ever finds the answer's ~40,000 containers in the young generation: a
    collection's start (`gc.callbacks`) sees the young generation's count as it is."""
    items = 20_000  # two containers each (a dict and a list), far past the threshold of 700
    body = json.dumps([{"n": [i]} for i in range(items)]).encode()
    assert len(body) >= calls._BIG_ANSWER
    enabled: list[bool] = []
    young: list[int] = []  # the young generation's count at each collection's start

    def finish(answer: Any, _: calls.Trust) -> int:
        enabled.append(gc.isenabled())
        return len(answer)

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    def watch(phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            young.append(gc.get_count()[0])

    call = calls.Call("GET", "/v1/big", finish)
    gc.collect()
    assert gc.isenabled() and gc.get_threshold()[0] < items
    gc.callbacks.append(watch)
    try:
        if use_async:
            async def run() -> int:
                async with AsyncClient("http://r.example",
                                       transport=httpx.MockTransport(answer)) as c:
                    return await c._run(call)

            got = asyncio.run(run())
        else:
            with Client("http://r.example", transport=httpx.MockTransport(answer)) as c:
                got = c._run(call)
        made = [[] for _ in range(2 * gc.get_threshold()[0])]  # past the threshold: collects
    finally:
        gc.callbacks.remove(watch)
    assert got == items and len(made) > 0 and gc.isenabled()
    assert enabled == [False]
    assert young and max(young) < items  # no collection found the answer alive


class Tamper(httpx.BaseTransport):
    """Forward to the real server; change the JSON answer of one path on the way back."""

    def __init__(self, path: str, change: Callable[[Any], None]) -> None:
        self.inner, self.path, self.change = httpx.HTTPTransport(), path, change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.inner.handle_request(request)
        if not re.fullmatch(self.path, request.url.path):
            return r
        r.read()
        body = json.loads(r.content)
        self.change(body)
        return httpx.Response(r.status_code, json=body)


def _flip(h: str) -> str:
    return ("0" if h[0] != "0" else "1") + h[1:]


@pytest.mark.parametrize("change", [
    lambda b: b["entry"].update(title="Another title"),
    lambda b: b["receipt"].update(root=_flip(b["receipt"]["root"])),
    lambda b: b.update(leaf_hash=_flip(b["leaf_hash"])),
    lambda b: b["receipt"].update(checkpoint=b["receipt"]["checkpoint"].replace("\n\n", "\n\nx")),
])
def test_tampered_receipt_refused(live: Live, change: Callable[[Any], None]) -> None:
    data = os.urandom(16)
    c = Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
               transport=Tamper("/v1/works", change))
    with c, pytest.raises(UnverifiedAnswer) as e:
        work(c, data)
    assert isinstance(e.value, VerificationError)
    assert e.value.answer["entry"]["content"]["sha256"] == sha(data)  # the answer is kept


def test_tampered_proof_and_claim_check_refused(live: Live) -> None:
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as c:
        for i in range(3):
            last = work(c, b"proof %d" % i)
    p = Client(live.url).proof(0).to_dict()
    assert check_proof(p, [live.log_key]).checkpoint_verified
    with pytest.raises(UnverifiedAnswer):
        check_proof({**p, "leaf_hash": _flip(p["leaf_hash"])}, [live.log_key])
    with pytest.raises(UnverifiedAnswer):
        check_proof(p, [OTHER_KEY])  # signed, but not by the pinned key

    def flip_proof(b: Any) -> None:
        b["proof"][0] = _flip(b["proof"][0])

    with pytest.raises(UnverifiedAnswer):
        Client(live.url, trusted_keys=[live.log_key],
               transport=Tamper(r"/v1/entries/\d+/proof", flip_proof)).proof(0)
    with pytest.raises(UnverifiedAnswer):
        Client(live.url, trusted_keys=[OTHER_KEY]).checkpoint()
    other = Client(live.url).proof(1).to_dict()

    def another_entrys(b: Any) -> None:  # a genuine proof, of seq 1
        b.clear()
        b.update(other)

    with pytest.raises(UnverifiedAnswer) as asked:
        Client(live.url, trusted_keys=[live.log_key],
               transport=Tamper(r"/v1/entries/\d+/proof", another_entrys)).proof(0)
    assert "not the one asked for" in asked.value.detail

    def cleared(b: Any) -> None:
        b["verdict"] = "none"

    plat = Client(live.url, api_key=live.platform, trusted_keys=[live.log_key],
                  transport=Tamper("/v1/claims/check", cleared))
    with plat, pytest.raises(UnverifiedAnswer) as e:
        plat.check_claim({"sha256": sha(b"proof 2")}, claimant="ada", work_seq=last.seq)
    assert "different answer" in e.value.detail
    with Client(live.url, api_key=live.platform, trusted_keys=[live.log_key]) as plat:
        good = plat.check_claim({"sha256": sha(b"proof 2")}, claimant="ada", work_seq=last.seq)
    assert check_claim_check(good.to_dict(), [live.log_key]) == good
    with pytest.raises(UnverifiedAnswer):
        check_claim_check({**good.to_dict(), "holder": "mallory"}, [live.log_key])
    with pytest.raises(UnverifiedAnswer):
        check_claim_check(good.to_dict(), [OTHER_KEY])
    with pytest.raises(UnverifiedAnswer):
        check_receipt(last.to_dict(), [live.log_key], file_sha256=sha(b"another file"))


def test_async_client_does_the_same(live: Live) -> None:
    async def run() -> None:
        async with AsyncClient(live.url, api_key=live.creator,
                               trusted_keys=[live.log_key]) as ac:
            r = await ac.register_work(sha256=sha(b"async"), title="A", creators=["Ada"],
                                       work_type="text")
            with Client(live.url, trusted_keys=[live.log_key]) as c:
                assert await ac.entry(r.seq) == c.entry(r.seq)
                size = r.receipt.tree_size
                assert await ac.proof(r.seq, size) == c.proof(r.seq, size)
                assert await ac.search(sha(b"async")) == c.search(sha(b"async"))
                assert (await ac.log())["origin"] == c.log()["origin"]
            up = await ac.upload_work(b"async upload", title="U", creators=["Ada"],
                                      work_type="text")
            ev = await ac.deposit_evidence(sha256=sha(b"async ev"),
                                           captured_at="2026-01-01T00:00:00Z",
                                           capture_method="screenshot", description="d")
            tr = await ac.transfer(work_seq=r.seq, to="bob", transfer_type="non_exclusive_licence")
            assert (await ac.history(r.seq))["links"][-1]["seq"] == tr.seq
            off = await ac.transfer(work_seq=r.seq, to="bob", transfer_type="assignment")
            assert (await ac.withdraw_offer(off.seq)).entry.KIND == "withdrawal"
            assert (await ac.history(r.seq))["holder"] == "ada"
            assert (await ac.bundle(ev.seq))["seq"] == ev.seq
            assert (await ac.certificate(up.seq)).startswith(b"<!doctype html>")
            old = await ac.checkpoint()
            await ac.register_work(sha256=sha(b"async 2"), title="B", creators=["Ada"],
                                   work_type="text")
            assert (await ac.consistency(old)).new_size > old.size
            assert (await ac.healthz())["status"] == "ok"
            assert (await ac.block(0))["height"] == 0
            assert "log_keys" in await ac.notary_keys()
            assert (await ac.timestamp(b"garbage"))[:1] == b"0"  # an RFC 3161 rejection
            with pytest.raises(ProblemError) as e:
                await ac.entry(10**9)
            assert e.value.status == 404
        async with AsyncClient(live.url, api_key=live.platform,
                               trusted_keys=[live.log_key]) as ap:
            n = await ap.file_claim({**NOTICE, "works": [{"seq": r.seq}]})
            assert (await ap.claim(n.seq))["seq"] == n.seq
            check = await ap.check_claim({"sha256": sha(b"async")}, claimant="ada",
                                         work_seq=r.seq)
            assert check.verdict == "match"
            up_check = await ap.check_claim_upload(b"async upload", claimant="ada",
                                                   work_seq=up.seq)
            assert up_check.verdict == "match"
        async with AsyncClient(live.url, trusted_keys=[live.log_key],
                               transport=_AsyncTamper()) as bad:
            with pytest.raises(UnverifiedAnswer):
                await bad.proof(r.seq)
        with pytest.raises(TransportError):
            await AsyncClient("http://127.0.0.1:9", timeout=2).healthz()

    asyncio.run(run())


class _AsyncTamper(httpx.AsyncBaseTransport):
    """The async twin of Tamper, for proofs: the root is changed."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        r = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/proof"):
            return r
        await r.aread()
        body = json.loads(r.content)
        body["root"] = _flip(body["root"])
        return httpx.Response(r.status_code, json=body)


class StaleCheckpoint(httpx.BaseTransport):
    """Forward to the real server, but answer `text` to the first `times` checkpoint reads, as
    a cache or a process that has not heard of the newest block can (D128); log the paths."""

    def __init__(self, text: str, times: int) -> None:
        self.inner, self.text, self.times = httpx.HTTPTransport(), text, times
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == "/v1/log/checkpoint" and self.times > 0:
            self.times -= 1
            return httpx.Response(200, text=self.text)
        return self.inner.handle_request(request)


class _AsyncStaleCheckpoint(httpx.AsyncBaseTransport):
    def __init__(self, text: str, times: int) -> None:
        self.inner, self.text, self.times = httpx.AsyncHTTPTransport(), text, times

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/log/checkpoint" and self.times > 0:
            self.times -= 1
            return httpx.Response(200, text=self.text)
        return await self.inner.handle_async_request(request)


def test_consistency_to_the_latest_asks_again_while_the_log_answers_an_older_tree(
        live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    slept: list[float] = []
    real_sleep, real_async_sleep = time.sleep, asyncio.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (slept.append(s), real_sleep(s))[1])

    async def async_sleep(s: float) -> None:
        slept.append(s)
        await real_async_sleep(s)

    monkeypatch.setattr(asyncio, "sleep", async_sleep)
    with Client(live.url, trusted_keys=[live.log_key]) as c:
        older = c.checkpoint()
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as c:
        work(c, os.urandom(16))
        held = c.checkpoint()
    assert held.size > older.size

    # Two stale answers, then the log's own: proved into the newest, not refused by the server.
    lag = StaleCheckpoint(older.note, 2)
    with Client(live.url, trusted_keys=[live.log_key], transport=lag) as c:
        proof = c.consistency(held)
    assert proof.old_size == held.size and proof.new_size >= held.size
    assert lag.paths.count("/v1/log/checkpoint") == 3 and lag.paths[-1] == "/v1/log/consistency"
    assert slept == [0.05, 0.2]

    # A log that keeps answering the older tree: a verification error, and no proof asked for.
    stuck = StaleCheckpoint(older.note, 100)
    slept.clear()
    with Client(live.url, trusted_keys=[live.log_key], transport=stuck) as c, \
            pytest.raises(UnverifiedAnswer) as e:
        c.consistency(held)
    assert "older than the one given" in e.value.detail and "/v1/log/consistency" not in stuck.paths
    assert e.value.answer == older.note  # the signed older checkpoint: the evidence
    assert stuck.paths.count("/v1/log/checkpoint") == len(calls.STALE_PAUSES) + 1
    assert slept == [0.05, 0.2, 0.5]

    async def run() -> None:
        async with AsyncClient(live.url, trusted_keys=[live.log_key],
                               transport=_AsyncStaleCheckpoint(older.note, 1)) as ac:
            assert (await ac.consistency(held)).new_size >= held.size
        async with AsyncClient(live.url, trusted_keys=[live.log_key],
                               transport=_AsyncStaleCheckpoint(older.note, 100)) as ac:
            with pytest.raises(UnverifiedAnswer) as e:
                await ac.consistency(held)
            assert e.value.answer == older.note

    slept.clear()
    asyncio.run(run())
    assert slept == [0.05, 0.05, 0.2, 0.5]


def test_docs_examples_run(live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    (tmp_path / "poem.txt").write_text("The harbour at dawn, in grey and gold.\n")
    ns: dict[str, Any] = {"SERVER": live.url, "CREATOR_KEY": live.creator,
                          "PLATFORM_KEY": live.platform, "LOG_KEY": live.log_key,
                          "__name__": "docs"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, block in enumerate(blocks):
            exec(compile(block, f"docs/client.md block {i + 1}", "exec"), ns)
    printed = out.getvalue()
    assert "['content.sha256']" in printed
    assert "cannot reach http://127.0.0.1:9" in printed
    assert "not signed by the pinned key:" in printed
    assert "match" in printed and "Harbour at dawn" in printed
    assert (tmp_path / f"bundle-{ns['receipt'].seq}.json").exists()


def test_registering_again_and_offers_of_assignment(live: Live) -> None:
    data = os.urandom(16)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as ada:
        first = work(ada, data)
        assert first.already_registered is None
        same = work(ada, data, title="renamed")  # the earlier registration, verified as ever
        assert same.already_registered is True and same.seq == first.seq
        assert same.to_dict() == {**first.to_dict(), "already_registered": True}
        anew = work(ada, data, again=True)
        assert anew.seq > first.seq and anew.already_registered is None
        up = ada.upload_work(data, title="Up", creators=["Ada"], work_type="text")
        assert up.already_registered is True and up.seq == first.seq
        offer = ada.transfer(work_seq=first.seq, to="bob", transfer_type="assignment")
        assert offer.to_dict()["entry"]["needs_acceptance"] is True
        assert ada.history(first.seq)["pending_offer"]["seq"] == offer.seq
        with pytest.raises(ProblemError) as e403:
            ada.accept_offer(offer.seq)
        assert e403.value.status == 403 and "'bob'" in e403.value.detail
    with Client(live.url, api_key=live.bob, trusted_keys=[live.log_key]) as bob:
        accepted = bob.accept_offer(offer.seq, note="thanks")
        assert accepted.entry.KIND == "acceptance"
        assert bob.history(first.seq)["holder"] == "bob"
        with pytest.raises(ProblemError) as e409:
            bob.accept_offer(offer.seq)
        assert e409.value.status == 409
        again = bob.transfer(work_seq=first.seq, to="ada", transfer_type="assignment")
        assert bob.withdraw_offer(again.seq).entry.KIND == "withdrawal"
        assert bob.history(first.seq)["holder"] == "bob"


def test_a_history_whose_title_is_not_what_its_links_say_is_refused(live: Live) -> None:
    """The title a history answer states (registrant, holder, licences, pending offer, each
    link's kind and holder after it, the work it is of) is checked against the replay of its
    links, each proven in the signed tree: before, only the proofs were, and a server could
    name any holder under a genuine checkpoint."""
    data = os.urandom(16)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as ada:
        first = work(ada, data)
        ada.transfer(work_seq=first.seq, to="bob", transfer_type="non_exclusive_licence")
        ada.transfer(work_seq=first.seq, to="bob", transfer_type="assignment")  # an offer
        good = ada.history(first.seq)
    assert check_history(good, [live.log_key], first.seq) == good
    lie: list[Callable[[dict[str, Any]], None]] = [
        lambda h: h.update(holder="mallory"),
        lambda h: h.update(registrant="mallory"),
        lambda h: h.update(licences=[]),
        lambda h: h.update(pending_offer=None),
        lambda h: h.update(work_seq=h["work_seq"] + 1),
        lambda h: h["links"][1].update(holder_after="mallory"),
        lambda h: h["links"][1].update(kind="work"),
        lambda h: h.update(links=h["links"][1:]),  # (the work left out)
        lambda h: h.update(links=[h["links"][0], h["links"][2], h["links"][1]]),
    ]
    for change in lie:
        forged = copy.deepcopy(good)
        change(forged)
        with pytest.raises(UnverifiedAnswer):
            check_history(forged, [live.log_key], first.seq)
    with pytest.raises(UnverifiedAnswer):  # another work's chain than the one asked for
        check_history(good, [live.log_key], first.seq + 1)

    def holder(b: Any) -> None:
        b["holder"] = "mallory"

    with Client(live.url, trusted_keys=[live.log_key],
                transport=Tamper(r"/v1/works/\d+/history", holder)) as c, \
            pytest.raises(UnverifiedAnswer):
        c.history(first.seq)


class RewriteRequest(httpx.BaseTransport):
    """Forward to the real server with the JSON body of one path changed on the way there: the
    registry then records, and validly signs, another work than the client sent (D92)."""

    def __init__(self, path: str, change: Callable[[Any], None]) -> None:
        self.inner, self.path, self.change = httpx.HTTPTransport(), path, change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path:
            body = json.loads(request.read())
            self.change(body)
            request = httpx.Request(request.method, request.url, json=body,
                                    headers={k: v for k, v in request.headers.items()
                                             if k.lower() != "content-length"})
        return self.inner.handle_request(request)


def _retitle(body: dict[str, Any]) -> None:
    body["title"] = "Not what was sent"


def test_a_new_entry_must_be_the_work_sent(live: Live) -> None:
    """D92: a receipt that verifies but records another title than the one sent is refused,
    naming the field; the same entry answered as this account's earlier registration
    (`already_registered`) is accepted: the earlier work need not be today's fields."""
    data = os.urandom(16)
    c = Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
               transport=RewriteRequest("/v1/works", _retitle))
    with c, pytest.raises(UnverifiedAnswer) as e:
        work(c, data, title="Sent")
    assert "title = 'Not what was sent', not the 'Sent' sent" in e.value.detail
    assert e.value.answer["entry"]["title"] == "Not what was sent"  # recorded, and kept
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as c:
        again = work(c, data, title="Sent")  # the earlier entry, another title: accepted
        assert again.already_registered and again.entry.title == "Not what was sent"


def test_batch_checks_each_new_entry_against_its_work(live: Live) -> None:
    """D92 in a batch: each new entry is compared with its own item. A work with every field a
    work can carry (size, media type, licence, metadata, fingerprints) is accepted as sent; an
    item the registry recorded with another title is refused alone, naming the field."""
    datas = [os.urandom(16) for _ in range(3)]
    full: dict[str, Any] = {
        "sha256": sha(datas[0]), "title": "Full", "creators": ["Ada", "Bo"],
        "work_type": "image", "size": 16, "media_type": "image/png", "license": "CC-BY-4.0",
        "metadata": {"year": 2026, "tags": ["harbour"]},
        "fingerprints": {"pdq": {"algorithm": "pdq", "version": "1", "hash": "AB" * 32,
                                 "quality": 90}},  # lowered and `low_quality` added as stored
    }
    plain = {"sha256": sha(datas[1]), "title": "Plain", "creators": ["Ada"], "work_type": "text"}
    changed = {"sha256": sha(datas[2]), "title": "Sent", "creators": ["Ada"], "work_type": "text"}

    def retitle_third(body: dict[str, Any]) -> None:
        body["works"][2]["title"] = "Not what was sent"

    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=RewriteRequest("/v1/works/batch", retitle_third)) as c:
        got = c.register_works([full, plain, changed])  # type: ignore[list-item]
    assert isinstance(got[0], Receipt) and isinstance(got[1], Receipt)
    assert got[0].entry.content.fingerprints == {"pdq": {  # type: ignore[union-attr]
        "algorithm": "pdq", "version": "1", "hash": "ab" * 32, "quality": 90,
        "low_quality": False}}
    assert isinstance(got[2], UnverifiedAnswer)
    assert "title = 'Not what was sent', not the 'Sent' sent" in got[2].detail


def test_every_write_is_checked_against_what_was_sent(live: Live) -> None:
    """D170, D92 for the other writes: evidence, a licence, an answer to an offer and a claim
    the registry recorded otherwise than sent are refused, naming the field, though their
    receipts verify; sent as they are, each is accepted (`test_every_endpoint`)."""
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as ada:
        first, second = work(ada, os.urandom(16)), work(ada, os.urandom(16))
        offer = ada.transfer(work_seq=second.seq, to="bob", transfer_type="assignment")

    def rewrite(path: str, change: Callable[[Any], None], key: str) -> Client:
        return Client(live.url, api_key=key, trusted_keys=[live.log_key],
                      transport=RewriteRequest(path, change))

    with rewrite("/v1/transfers", lambda b: b.update(to="harbour-press"), live.creator) as c, \
            pytest.raises(UnverifiedAnswer) as e:
        c.transfer(work_seq=first.seq, to="bob", transfer_type="non_exclusive_licence")
    assert "to = 'harbour-press', not the 'bob' sent" in e.value.detail
    with rewrite("/v1/evidence", lambda b: b.update(description="other"), live.creator) as c, \
            pytest.raises(UnverifiedAnswer) as e:
        c.deposit_evidence(sha256=sha(os.urandom(8)), captured_at="2026-01-01T00:00:00Z",
                           capture_method="screenshot", description="the copy")
    assert "description = 'other', not the 'the copy' sent" in e.value.detail
    with rewrite(f"/v1/transfers/{offer.seq}/accept", lambda b: b.update(note="no"),
                 live.bob) as c, pytest.raises(UnverifiedAnswer) as e:
        c.accept_offer(offer.seq, "yes")
    assert "note = 'no', not the 'yes' sent" in e.value.detail
    with rewrite("/v1/claims", lambda b: b.update(works=[{"seq": second.seq}]),
                 live.platform) as c, pytest.raises(UnverifiedAnswer) as e:
        c.file_claim({**NOTICE, "works": [{"seq": first.seq}]})
    assert (f"works = [{{'seq': {second.seq}, " in e.value.detail
            and f"not the [{{'seq': {first.seq}, " in e.value.detail), e.value.detail
    # a counter-notice whose works are sent as null is given the notice's, as the registry
    # does (D186), and its receipt verifies
    with Client(live.url, api_key=live.platform, trusted_keys=[live.log_key]) as plat:
        notice = plat.file_claim({**NOTICE, "works": [{"seq": first.seq}]})
        counter = plat.file_claim({
            "notice_type": "counter_notice", "regime": "dmca_512c3", "refers_to": notice.seq,
            "works": None, "claimant": {"name": "Bob Uploader", "address": "2 Main St",
                                        "phone": "+1 555 0199"},
            "targets": [{"url": "https://video.example/watch/1"}],
            "statements": {"mistake": True, "perjury": True, "jurisdiction_consent": True},
            "signature": "/Bob/", "requested_action": "restore"})
        assert counter.entry.to_dict()["works"] == notice.entry.to_dict()["works"]
    # what a proxy adds is refused too: a target, the claimant's account, a requested action
    for added, field in ((lambda b: b.update(targets=[*b["targets"], {"url": "https://v.example/"}]),
                          "targets"),
                         (lambda b: b["claimant"].update(account="bob"), "claimant"),
                         (lambda b: b.update(requested_action="disable_access"),
                          "requested_action")):
        with rewrite("/v1/claims", added, live.platform) as c, \
                pytest.raises(UnverifiedAnswer) as e:
            c.file_claim({**NOTICE, "works": [{"seq": first.seq}]})
        assert f"recorded {field} = " in e.value.detail, e.value.detail


def test_an_entry_that_differs_by_a_null_member_names_its_kind() -> None:
    """`_same_entry`'s last resort (no field differs in value: a member recorded as null and
    not sent, or sent as null and not recorded) names the kind sent, not "the work" for every
    kind."""
    from copyledger.client.verify import check_sent, check_sent_work
    from copyledger.ledger import entry as entry_mod

    made = {"registrant": "ada", "received_at": "2026-01-01T00:00:00Z"}
    evidence = {"sha256": sha(b"e"), "captured_at": "2026-01-01T00:00:00Z",
                "capture_method": "screenshot", "description": "the copy"}
    entry = entry_mod.build_evidence(**made, source_url=None, **evidence)
    check_sent(entry, "evidence", evidence)  # as sent: accepted
    with pytest.raises(UnverifiedAnswer) as e:
        check_sent({**entry, "source_url": None}, "evidence", evidence)
    assert e.value.detail == "the registry recorded another entry than the evidence sent"
    transfer = {"work_seq": 3, "to": "bob", "transfer_type": "non_exclusive_licence"}
    held = entry_mod.build_transfer(**made, work_seq=3, work_sha256=sha(b"w"), from_account="ada",
                                    to_account="bob", transfer_type="non_exclusive_licence",
                                    check=False)
    check_sent(held, "transfer", transfer)
    with pytest.raises(UnverifiedAnswer) as e:
        check_sent({**held, "note": None}, "transfer", transfer)
    assert e.value.detail == "the registry recorded another entry than the transfer sent"
    work_sent = {"sha256": sha(b"w"), "title": "T", "creators": ["Ada"], "work_type": "text"}
    recorded = entry_mod.build_work(**made, **work_sent)
    check_sent_work(recorded, work_sent)
    with pytest.raises(UnverifiedAnswer) as e:
        check_sent_work({**recorded, "license": None}, work_sent)
    assert e.value.detail == "the registry recorded another entry than the work sent"


def test_client_verify_exports_every_public_check() -> None:
    """Every public check in `client.verify` is in its `__all__` (`check_sent`, which
    `check_receipt`'s `sent` runs and docs/client.md names, and `check_contact`, which the
    package exports and docs/privacy.md names, were left out)."""
    from copyledger.client import verify

    public = {name for name, value in vars(verify).items()
              if name.startswith("check_") and callable(value)
              and getattr(value, "__module__", None) == verify.__name__}
    assert {"check_sent", "check_sent_work", "check_contact"} <= public
    assert public <= set(verify.__all__), public - set(verify.__all__)


class ActAs(httpx.BaseTransport):
    """Forward to the real server, but send the writes to `paths` with another account's key:
    the registry then records, and validly signs, the entry under that account (D93)."""

    def __init__(self, key: str, *paths: str) -> None:
        self.inner, self.key, self.paths = httpx.HTTPTransport(), key, paths
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        if request.url.path in self.paths:
            request.headers["Authorization"] = f"Bearer {self.key}"
        return self.inner.handle_request(request)


def test_an_entry_must_name_this_clients_account(live: Live) -> None:
    """D93: a registration recorded under another account than this client's is refused,
    single and batch, sync and async, whether the account was given (pinned) or learned from
    GET /v1/whoami (asked once, after the first write); entries under this account pass."""
    data = [os.urandom(16) for _ in range(4)]
    swap = ActAs(live.bob, "/v1/works", "/v1/works/batch")
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=swap) as c:
        assert not c.account_pinned
        with pytest.raises(UnverifiedAnswer) as e:
            work(c, data[0])
        assert e.value.detail == ("the registry recorded this entry under the account 'bob', "
                                  "not under this client's account 'ada'")
        got = c.register_works([{"sha256": sha(d), "title": "W", "creators": ["Ada"],
                                 "work_type": "text"} for d in data[1:3]])
        assert all(isinstance(g, UnverifiedAnswer) and "'bob'" in g.detail for g in got)
        c.deposit_evidence(sha256=sha(data[3]), captured_at="2026-01-01T00:00:00Z",
                           capture_method="screenshot", description="d")  # not swapped: ada
    assert swap.sent.count("GET /v1/whoami") == 1
    assert swap.sent.index("GET /v1/whoami") == swap.sent.index("POST /v1/works") + 1

    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                account="ada") as c:  # the right account, pinned: no whoami, accepted
        assert c.account_pinned
        assert work(c, os.urandom(16)).entry.registrant == "ada"
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                account="bob") as c, pytest.raises(UnverifiedAnswer) as e:
        work(c, os.urandom(16))  # the key is ada's, the caller said bob: refused
    assert "'ada', not under this client's account 'bob'" in e.value.detail

    async def main() -> None:
        async with AsyncClient(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                               account="bob") as c:
            with pytest.raises(UnverifiedAnswer):
                await c.register_work(sha256=sha(os.urandom(16)), title="W",
                                      creators=["Ada"], work_type="text")
            got = await c.register_works([{"sha256": sha(os.urandom(16)), "title": "W",
                                          "creators": ["Ada"], "work_type": "text"}])
            assert isinstance(got[0], UnverifiedAnswer)
    asyncio.run(main())


def _whoami_down() -> httpx.Response:
    return httpx.Response(503, json={"title": "Unavailable", "status": 503,
                                     "detail": "whoami is down"})


class _NoWhoami(httpx.BaseTransport):
    """Forward to the real server, but GET /v1/whoami answers 503 while `down`."""

    def __init__(self) -> None:
        self.inner, self.down = httpx.HTTPTransport(), True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down and request.url.path == "/v1/whoami":
            return _whoami_down()
        return self.inner.handle_request(request)


class _AsyncSlowWhoami(httpx.AsyncBaseTransport):
    """Forward to the real server, counting requests; GET /v1/whoami answers once `writes`
    POSTs have been answered (at most a minute) and 0.5 s more, so every write sent together
    is answered while it is out however slowly the server seals them (a fixed 0.5 s from the
    first answer could pass before a later one on a loaded machine); a 503 if `fail`."""

    def __init__(self, fail: bool = False, writes: int = 1) -> None:
        self.inner, self.fail, self.writes = httpx.AsyncHTTPTransport(), fail, writes
        self.sent: list[str] = []
        self.answered = 0
        self._all_answered = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/whoami":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._all_answered.wait(), 60)
            await asyncio.sleep(0.5)
            if self.fail:
                return _whoami_down()
        answer = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.answered += 1
            if self.answered >= self.writes:
                self._all_answered.set()
        return answer


def test_a_write_answered_before_whoami_fails_is_kept_on_the_error(live: Live) -> None:
    """D99: the write went through but the account to check it against could not be learned:
    the answer is refused as unverified, not dropped, and kept on the error (before, only
    whoami's 503 was raised, as if nothing had been written). Once whoami answers, the client
    learns the account and verifies as usual."""
    data = os.urandom(16)
    down = _NoWhoami()
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=down) as c:
        with pytest.raises(UnverifiedAnswer) as e:
            work(c, data)
        assert "GET /v1/whoami" in e.value.detail and "whoami is down" in e.value.detail
        assert sha(data) in json.dumps(e.value.answer["entry"])
        assert c.search(sha(data)), "the write went through"
        down.down = False
        again = work(c, data)  # the same content: the earlier entry, now verified
        assert again.already_registered and again.entry.registrant == "ada"

    async def main() -> None:
        async with AsyncClient(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                               transport=_AsyncSlowWhoami(fail=True)) as c:
            await c.register_works([{"sha256": sha(os.urandom(16)), "title": "W",
                                    "creators": ["Ada"], "work_type": "text"}])
    with pytest.raises(UnverifiedAnswer) as e:
        asyncio.run(main())
    assert "GET /v1/whoami" in e.value.detail and e.value.answer["registered"] == 1


@pytest.mark.parametrize("fail", [False, True])
def test_first_writes_in_flight_together_ask_whoami_once(live: Live, fail: bool) -> None:
    """D99: an AsyncClient's first writes, answered while one GET /v1/whoami is out, all wait
    on that one: each is then held to the account it names, or, if it fails, each is told at
    once (not after a whoami of its own, one after the other)."""
    slow = _AsyncSlowWhoami(fail, writes=4)

    async def main() -> list[Any]:
        async with AsyncClient(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                               transport=slow) as c:
            return list(await asyncio.gather(*(
                c.register_work(sha256=sha(os.urandom(16)), title="W", creators=["Ada"],
                                work_type="text") for _ in range(4)), return_exceptions=True))

    got = asyncio.run(main())
    if fail:
        assert all(isinstance(r, UnverifiedAnswer) and "whoami is down" in r.detail
                   for r in got)
    else:
        assert all(isinstance(r, Receipt) and r.entry.registrant == "ada" for r in got)
    assert slow.sent.count("POST /v1/works") == 4
    assert slow.sent.count("GET /v1/whoami") == 1


# ------------------------------------------------------------ resending (D131)


class _Flaky(httpx.BaseTransport):
    """Forward to the real server, recording each request's path and Idempotency-Key. The
    first `lose` requests to `path` reach the server, but their answers are lost (a read
    error, as a dropped connection gives); then `answers` (status, headers) are given
    instead of forwarding, one per request, before the server's own."""

    def __init__(self, path: str, lose: int = 0,
                 answers: tuple[tuple[int, dict[str, str]] | tuple[int, dict[str, str], Any],
                                ...] = ()) -> None:
        self.inner, self.path = httpx.HTTPTransport(), path
        self.lose, self.answers = lose, list(answers)
        self.sent: list[tuple[str, str | None, bytes]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != self.path:
            return self.inner.handle_request(request)
        self.sent.append((request.url.path, request.headers.get("idempotency-key"),
                          request.read()))
        if self.answers and not self.lose:
            status, headers, *body = self.answers.pop(0)
            return httpx.Response(status, headers=headers, json=body[0] if body else {
                "type": "about:blank", "title": "t", "status": status, "detail": "busy"})
        r = self.inner.handle_request(request)
        r.read()
        if self.lose:
            self.lose -= 1
            raise httpx.ReadError("the connection dropped", request=request)
        return r


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the clients take before resending, recorded instead of waited; the clients'
    monotonic clock moves by them alone."""
    from types import SimpleNamespace

    from copyledger.client import _client

    pauses: list[float] = []

    def sleep(s: float) -> None:
        pauses.append(s)

    monkeypatch.setattr(_client, "time", SimpleNamespace(sleep=sleep,
                                                         monotonic=lambda: sum(pauses)))

    async def no_wait(s: float) -> None:
        sleep(s)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    return pauses


def _size(live: Live) -> int:
    with Client(live.url, trusted_keys=[live.log_key]) as c:
        return c.checkpoint().size


def test_a_write_whose_answer_was_lost_is_resent_under_one_key_and_recorded_once(
        live: Live, slept: list[float]) -> None:
    """The server recorded the work and the answer never came back (twice): the client sends
    it again under the key it made, and the server replays the first receipt; the log grew by
    one entry. Without retries the same loss is a TransportError, and the caller's own key,
    sent again, gets the first receipt too."""
    data = os.urandom(16)
    before = _size(live)
    flaky = _Flaky("/v1/works", lose=2)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=flaky, retries=2) as c:
        got = work(c, data)
    assert got.entry.content_sha256 == sha(data) and not got.already_registered
    keys = {key for _, key, _ in flaky.sent}
    assert len(flaky.sent) == 3 and len(keys) == 1 and None not in keys
    assert len({body for _, _, body in flaky.sent}) == 1
    assert _size(live) == before + 1
    assert [0.5 <= slept[0] <= 0.625, 1.0 <= slept[1] <= 1.25] == [True, True]

    once = _Flaky("/v1/evidence", lose=1)
    ev = {"sha256": sha(os.urandom(16)), "captured_at": "2026-01-01T00:00:00Z",
          "capture_method": "screenshot", "description": "d"}
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=once) as c:
        with pytest.raises(TransportError):
            c.deposit_evidence(idempotency_key="evidence-1", **ev)
        first_size = _size(live)
        again = c.deposit_evidence(idempotency_key="evidence-1", **ev)
    assert [key for _, key, _ in once.sent] == ["evidence-1", "evidence-1"]
    assert _size(live) == first_size and again.seq == first_size - 1


def test_a_lost_batch_is_resent_and_each_work_recorded_once(live: Live,
                                                            slept: list[float]) -> None:
    """A batch sent `again` gets a key on each work (the caller's kept): resent after a lost
    answer, every work is the first receipt replayed, none already registered. A batch of
    works not sent `again` needs no keys (the server answers a resend with the entries,
    D36), so none are sent: resent, each work is its one entry."""
    def batch(n: int) -> list[Any]:
        return [{"sha256": sha(os.urandom(16)), "title": f"B{i}", "creators": ["Ada"],
                 "work_type": "text"} for i in range(n)]

    items = batch(5)
    items[0]["idempotency_key"] = "mine-0"
    before = _size(live)
    flaky = _Flaky("/v1/works/batch", lose=1)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=flaky, retries=1) as c:
        got = c.register_works(items, again=True)
    assert all(isinstance(r, Receipt) and not r.already_registered for r in got)
    sent = [json.loads(body)["works"] for _, _, body in flaky.sent]
    assert len(sent) == 2 and sent[0] == sent[1] and len(slept) == 1
    keys = [w["idempotency_key"] for w in sent[0]]
    assert keys[0] == "mine-0" and len(set(keys)) == 5
    assert _size(live) == before + 5
    assert sorted(r.seq for r in got if isinstance(r, Receipt)) == list(range(before,
                                                                             before + 5))

    lost = _Flaky("/v1/works/batch", lose=2)  # resends used up: the error names the keys
    again = batch(2)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=lost, retries=1) as c, pytest.raises(TransportError) as e:
        c.register_works(again, again=True)
    sent_keys = tuple(w["idempotency_key"] for w in json.loads(lost.sent[0][2])["works"])
    assert e.value.idempotency_keys == sent_keys and None not in sent_keys
    assert _size(live) == before + 7

    plain = batch(4)
    flaky = _Flaky("/v1/works/batch", lose=1)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=flaky, retries=1) as c:
        got = c.register_works(plain)
    assert all(isinstance(r, Receipt) and r.already_registered for r in got)
    assert [w for _, _, body in flaky.sent for w in json.loads(body)["works"]] == plain * 2
    assert _size(live) == before + 11
    assert sorted(r.seq for r in got if isinstance(r, Receipt)) == list(range(before + 7,
                                                                             before + 11))


def test_a_batch_is_resent_when_an_item_asks_for_a_wait(live: Live,
                                                        slept: list[float]) -> None:
    """A 200 batch answer whose items include a 503 of a busy sequencer or a 409 for a key
    still in flight: the whole batch is sent again; an item that is a replay, or a 409
    without a wait, is final."""
    def item(i: int, status: int, **problem: Any) -> dict[str, Any]:
        return {"index": i, "status": status, "problem": {"status": status, **problem}}

    works = [{"sha256": sha(os.urandom(16)), "title": f"I{i}", "creators": ["Ada"],
              "work_type": "text"} for i in range(2)]
    busy = {"results": [item(0, 503, retry_after=2), item(1, 409, retry_after=1)]}
    flaky = _Flaky("/v1/works/batch", answers=((200, {}, busy),))
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=flaky, retries=2) as c:
        got = c.register_works(works)
    assert all(isinstance(r, Receipt) for r in got) and len(flaky.sent) == 2
    assert 2 <= slept[0] <= 2.5
    final = {"results": [{**item(0, 503, retry_after=1), "replayed": True},
                         item(1, 409, detail="an offer is pending")]}
    flaky = _Flaky("/v1/works/batch", answers=((200, {}, final),))
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=flaky, retries=2) as c:
        got = c.register_works(works)
    assert [r.status for r in got if isinstance(r, ProblemError)] == [503, 409]
    assert len(flaky.sent) == 1


@pytest.mark.parametrize(("answers", "resent"), [
    (((503, {"Retry-After": "2"}),), True),  # pushback: nothing recorded
    (((429, {"Retry-After": "1"}),), True),
    (((409, {"Retry-After": "1"}),), True),  # the key's first request still running (D59)
    (((502, {}),), True),  # a gateway
    (((409, {}),), False),  # a conflict (another transfer pending): final
    (((503, {"Retry-After": "1", "Idempotent-Replayed": "true"}),), False),  # a kept answer
    (((503, {"Retry-After": "3600"}),), False),  # past RESEND_WINDOW_S
    (((422, {}),), False),
])
def test_what_is_resent_and_what_is_final(live: Live, slept: list[float],
                                          answers: Any, resent: bool) -> None:
    data = os.urandom(16)
    flaky = _Flaky("/v1/works", answers=answers)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=flaky, retries=3) as c:
        if resent:
            assert work(c, data).entry.content_sha256 == sha(data)
        else:
            with pytest.raises(ProblemError) as e:
                work(c, data)
            assert e.value.status == answers[0][0]
    assert len(flaky.sent) == (2 if resent else 1)
    if resent:
        asked = float(answers[0][1].get("Retry-After", "0"))
        assert max(asked, 0.5) <= slept[0] <= 1.25 * max(asked, 0.5)


def test_no_resend_goes_out_past_the_window(live: Live, slept: list[float]) -> None:
    """Two answers of 503 `Retry-After: 20`: the first is waited out (20-25 s after the
    first try), the second would put the resend past RESEND_WINDOW_S (30 s), nearer the time
    the server could take a dead process's key over and run the write again (D69): raised,
    naming the key the write went under, for a resend by hand."""
    flaky = _Flaky("/v1/works", answers=((503, {"Retry-After": "20"}),) * 2)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=flaky, retries=5) as c, pytest.raises(ProblemError) as e:
        work(c, os.urandom(16))
    assert e.value.status == 503 and len(flaky.sent) == 2
    assert len(slept) == 1 and 20 <= slept[0] <= 25
    assert e.value.idempotency_key == flaky.sent[0][1] is not None


def test_reads_are_resent_and_calls_without_a_key_are_not(live: Live,
                                                          slept: list[float]) -> None:
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as c:
        first = work(c, os.urandom(16))
        offer = c.transfer(work_seq=first.seq, to="bob", transfer_type="assignment")
    flaky = _Flaky("/v1/log", answers=((503, {"Retry-After": "1"}), (504, {})))
    with Client(live.url, transport=flaky, retries=2) as c:
        assert c.log()["tree_size"] > first.seq
    assert len(flaky.sent) == 3 and [round(s) for s in slept[:1]] == [1]
    assert 1.0 <= slept[1] <= 1.25  # the second resend's backoff (1 s) beat no Retry-After
    # The answer to an offer takes no key: one try, whatever the client's retries.
    answer = _Flaky(f"/v1/transfers/{offer.seq}/accept", lose=1)
    with Client(live.url, api_key=live.bob, trusted_keys=[live.log_key],
                transport=answer, retries=3) as c, pytest.raises(TransportError):
        c.accept_offer(offer.seq)
    assert len(answer.sent) == 1
    with pytest.raises(TransportError):  # no server at all: each try fails, the last is raised
        Client("http://127.0.0.1:9", timeout=2, retries=2).healthz()
    with pytest.raises(InvalidInput):
        Client(live.url, retries=-1)


def test_a_lost_upload_is_resent_under_one_key_and_recorded_once(
        live: Live, slept: list[float]) -> None:
    """D137: an upload goes under a key like any other write, so the client resends it when
    its answer is lost; sent `again` (where only the key keeps a resend from being a second
    entry), the log grows by one entry and the receipt is that entry's. Without retries the
    loss is a TransportError, and the caller's own key, sent again by hand, gets the first
    receipt too."""
    data, before = os.urandom(16), _size(live)
    up = _Flaky("/v1/works", lose=2)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=up, retries=2) as c:
        got = c.upload_work(data, title="U", creators=["Ada"], work_type="text", again=True)
    keys = {key for _, key, _ in up.sent}
    assert len(up.sent) == 3 and len(keys) == 1 and None not in keys
    assert got.seq == before and got.entry.content_sha256 == sha(data)
    assert _size(live) == before + 1
    once = _Flaky("/v1/works", lose=1)
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                transport=once) as c:
        with pytest.raises(TransportError):
            c.upload_work(data, idempotency_key="upload-1", title="U", creators=["Ada"],
                          work_type="text", again=True)
        again = c.upload_work(data, idempotency_key="upload-1", title="U", creators=["Ada"],
                              work_type="text", again=True)
    assert [key for _, key, _ in once.sent] == ["upload-1", "upload-1"]
    assert again.seq == before + 1 and _size(live) == before + 2


class _AsyncLose(httpx.AsyncBaseTransport):
    """`_Flaky`'s lost answers, for the AsyncClient."""

    def __init__(self, path: str, lose: int) -> None:
        self.inner, self.path, self.lose = httpx.AsyncHTTPTransport(), path, lose
        self.keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        r = await self.inner.handle_async_request(request)
        if request.url.path == self.path:
            self.keys.append(request.headers.get("idempotency-key"))
            await r.aread()
            if self.lose:
                self.lose -= 1
                raise httpx.ReadError("the connection dropped", request=request)
        return r


def test_the_async_client_resends_a_lost_write_under_one_key(live: Live,
                                                             slept: list[float]) -> None:
    lose = _AsyncLose("/v1/claims", 1)
    before = _size(live)

    async def main() -> Receipt:
        async with AsyncClient(live.url, api_key=live.platform, trusted_keys=[live.log_key],
                               transport=lose, retries=1) as c:
            return await c.file_claim({**NOTICE, "works": [{"seq": 0}]})

    got = asyncio.run(main())
    assert got.seq == before and _size(live) == before + 1
    assert len(lose.keys) == 2 and lose.keys[0] == lose.keys[1] is not None
    assert len(slept) == 1 and 0.5 <= slept[0] <= 0.625

    up = _AsyncLose("/v1/works", 1)  # an upload too (D137), sent `again`: recorded once

    async def upload() -> Receipt:
        async with AsyncClient(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                               transport=up, retries=1) as c:
            return await c.upload_work(b"async lost upload", title="U", creators=["Ada"],
                                       work_type="text", again=True)

    before = _size(live)
    got = asyncio.run(upload())
    assert got.seq == before and _size(live) == before + 1
    assert len(up.keys) == 2 and up.keys[0] == up.keys[1] is not None


def test_the_cli_resends_a_lost_chunk_under_keys_and_records_it_once(
        live: Live, slept: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`copyledger import` (and `register`) send with `--retries` (3 by default): a chunk
    whose answer was lost is sent again and each work recorded once (answered as already
    registered); with `--retries 0` the import stops and says why (a rerun resumes it)."""
    from copyledger.cli import main

    rows = [{"sha256": sha(os.urandom(16)), "title": f"C{i}", "creators": ["Ada"],
             "work_type": "text"} for i in range(3)]
    catalogue = tmp_path / "cat.jsonl"
    catalogue.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flaky = _Flaky("/v1/works/batch", lose=1)
    monkeypatch.setattr(main, "Client", lambda *a, **kw: Client(*a, transport=flaky, **kw))
    args = ["import", str(catalogue), "--server", live.url, "--api-key", live.creator,
            "--trust", live.log_key, "--json"]
    before = _size(live)
    r = CliRunner().invoke(app, [*args, "--retries", "0"])
    assert r.exit_code == 1 and "cannot reach" in json.loads(r.stdout)["stopped"], r.output
    assert _size(live) == before + 3  # the lost answer's works were recorded
    flaky.lose = 1
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert (summary["done"], summary["already_registered"]) == (3, 3), summary
    assert _size(live) == before + 3 and len(slept) == 1
    sent = [json.loads(body)["works"] for _, _, body in flaky.sent]
    assert len(sent) == 3 and sent[0] == sent[1] == sent[2] == rows  # no keys needed (D36)


@given(attempt=st.integers(0, 40), status=st.sampled_from([None, 200, 409, 422, 429, 502, 503,
                                                           504]),
       asked=st.one_of(st.none(), st.integers(0, 10**6).map(str), st.just("Fri, 04 Dec"),
                       st.sampled_from(["²", " 7 ", "-3", "1e3", "١٢"])),
       replayed=st.booleans(), method=st.sampled_from(["GET", "POST"]),
       resendable=st.booleans(), elapsed=st.floats(0, 100))
def test_a_resend_never_comes_sooner_than_asked_nor_past_its_window(
        attempt: int, status: int | None, asked: str | None, replayed: bool, method: str,
        resendable: bool, elapsed: float) -> None:
    headers = {**({"retry-after": asked} if asked is not None else {}),
               **({"idempotent-replayed": "true"} if replayed else {})}
    call = calls.Call(method, "/x", calls._raw, resendable=resendable)
    pause = calls.resend_pause(call, attempt, status, headers, elapsed)
    seconds = (float(asked) if asked is not None and asked.strip().isascii()
               and asked.strip().isdigit() and status is not None
               else None)  # no answer: no header to heed
    floor = max(seconds or 0.0, min(calls.BACKOFF_S * 2 ** attempt, calls.BACKOFF_MAX_S))
    never = (not (resendable or method == "GET")
             or elapsed + floor > calls.RESEND_WINDOW_S
             or (status is not None and (
                 replayed
                 or (status not in (429, 502, 503, 504)
                     and not (status == 409 and seconds is not None)))))
    if never:
        assert pause is None
    elif elapsed + 1.25 * floor <= calls.RESEND_WINDOW_S:
        assert pause is not None  # (between the two, the random quarter decides)
    if pause is not None:
        assert floor <= pause <= 1.25 * floor
        assert elapsed + pause <= calls.RESEND_WINDOW_S


def test_retry_after_dates_and_odd_digits() -> None:
    from email.utils import format_datetime

    now = datetime.now(UTC)
    assert calls.retry_after_s(" 7 ") == 7.0
    assert 9 <= (calls.retry_after_s(format_datetime(now + timedelta(seconds=12), usegmt=True))
                 or 0) <= 12
    assert calls.retry_after_s(format_datetime(now - timedelta(hours=1), usegmt=True)) == 0.0
    for odd in ("²", "١٢", "-3", "1e3", "soon", ""):
        assert calls.retry_after_s(odd) is None  # unreadable: the backoff alone decides


def test_which_writes_get_a_key_and_checks_are_resent(live: Live, slept: list[float]) -> None:
    """With retries, a transfer and a deposit go under a key the client made (one per call);
    without, nothing is added. A claim check, which records nothing, is resent."""
    with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key]) as c:
        first = work(c, os.urandom(16))
    ev = {"sha256": sha(os.urandom(16)), "captured_at": "2026-01-01T00:00:00Z",
          "capture_method": "screenshot", "description": "d"}
    for retries in (0, 1):
        tr = _Flaky("/v1/transfers")
        dep = _Flaky("/v1/evidence")
        for flaky, send in ((tr, lambda c: c.transfer(work_seq=first.seq, to="harbour-press",
                                                      transfer_type="non_exclusive_licence")),
                            (dep, lambda c: c.deposit_evidence(**ev))):
            with Client(live.url, api_key=live.creator, trusted_keys=[live.log_key],
                        transport=flaky, retries=retries) as c:
                send(c)
                send(c)
            keys = [key for _, key, _ in flaky.sent]
            assert (keys == [None, None]) if retries == 0 else (None not in keys
                                                                and keys[0] != keys[1])
    check = _Flaky("/v1/claims/check", lose=1)
    with Client(live.url, api_key=live.platform, trusted_keys=[live.log_key],
                transport=check, retries=1) as p:
        assert p.check_claim({"sha256": first.entry.content_sha256}, claimant="ada",
                             work_seq=first.seq).verdict == "match"
    assert len(check.sent) == 2 and len(slept) == 1


def test_import_stops_on_a_work_whose_key_is_in_flight(
        live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An item answered 409 with `retry_after` (its key's first request still running, D131)
    is not the row's fault: with no resends left `import` stops at that chunk, to be rerun,
    instead of listing the row as refused and moving past it."""
    from copyledger.cli import main

    rows = [{"sha256": sha(os.urandom(16)), "title": "F", "creators": ["Ada"],
             "work_type": "text"}]
    catalogue = tmp_path / "cat.jsonl"
    catalogue.write_text(json.dumps(rows[0]) + "\n")
    busy = {"results": [{"index": 0, "status": 409, "problem": {
        "status": 409, "title": "Conflict", "detail": "still in progress", "retry_after": 1}}],
        "registered": 0, "already_registered": 0, "refused": 1}
    flaky = _Flaky("/v1/works/batch", answers=((200, {}, busy),))
    monkeypatch.setattr(main, "Client", lambda *a, **kw: Client(*a, transport=flaky, **kw))
    r = CliRunner().invoke(app, ["import", str(catalogue), "--server", live.url, "--api-key",
                                 live.creator, "--trust", live.log_key, "--json",
                                 "--retries", "0"])
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and "still in progress" in out["stopped"], r.output
    assert out["done"] == 0 and out["refused"] == []
