"""`copyledger register`: a skip rests on a verified receipt, a resumed `--again` run registers
each work once, no receipt is overwritten, and errors are said in the locale's language."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from copyledger.cli import batch
from copyledger.cli.main import app
from copyledger.client import Client, _calls
from tests.server import ServerProcess

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout + (r.stderr if r.stderr_bytes else "")


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running registry and alice's creator key."""
    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    key = json.loads(run("keys", "create", "--role", "creator", "--account", "alice",
                         "--data-dir", str(d), "--json")[1])["key"]
    srv = ServerProcess(d).start()
    try:
        yield srv.url, key
    finally:
        srv.stop()


def _lines(receipts: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (receipts / "manifest.jsonl").read_text().splitlines()]


def _alices(url: str, sha: str) -> list[int]:
    return [x["seq"] for x in httpx.get(f"{url}/v1/search", params={"sha256": sha}).json()[
        "results"] if x["entry"]["registrant"] == "alice"]


@pytest.mark.slow
def test_a_skip_rests_on_a_verified_receipt(
    node: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D171's leftover: a file GET /v1/search said the account registered was skipped and
    written to the manifest with no receipt, on the server's word alone. The skip now keeps
    that entry's receipt, checked as a registration's; a search that lies is an error for the
    file (exit 1), and the manifest does not record it."""
    url, key = node
    receipts = tmp_path / "receipts"
    common = ("--server", url, "--api-key", key, "--work-type", "text", "--creator", "Ada",
              "--receipts", str(receipts), "--json")
    first, copy, other = tmp_path / "a.txt", tmp_path / "copy-of-a.txt", tmp_path / "b.txt"
    first.write_bytes(os.urandom(500))
    copy.write_bytes(first.read_bytes())
    other.write_bytes(os.urandom(500))
    sha_a = hashlib.sha256(first.read_bytes()).hexdigest()
    code, out = run("register", str(first), *common)
    assert code == 0, out
    seq = json.loads(out)[0]["seq"]

    # The same content under another name: the log says alice registered it, and the bundle
    # of that entry gives the receipt kept for it.
    code, out = run("register", str(copy), *common)
    assert code == 0, out
    row = json.loads(out)[0]
    assert row["seq"] == seq and "already registered by alice" in row["skipped"], row
    line = _lines(receipts)[-1]
    assert line["path"] == str(copy) and line["seq"] == seq
    assert line["receipt"] is not None, line  # (the old code wrote null)
    kept = json.loads((receipts / line["receipt"]).read_text())
    assert kept["seq"] == seq and kept["entry"]["content"]["sha256"] == sha_a
    assert _alices(url, sha_a) == [seq]  # nothing new registered

    # A search that says alice registered b.txt (it answers for a.txt's content): the entry
    # it names is not b.txt's, so nothing is skipped on its word.
    with monkeypatch.context() as m:
        m.setattr(_calls, "search", lambda sha: _calls.get("/v1/search", {"sha256": sha_a}))
        code, out = run("register", str(other), *common)
    assert code == 1, out
    row = json.loads(out)[0]
    assert "skipped" not in row, row
    assert "the log says this account registered it" in row["error"], row
    assert str(other) not in [ln["path"] for ln in _lines(receipts)]


class _Killed(Exception):
    """The run stopped after the registry answered, before the receipt was kept."""


@pytest.mark.slow
def test_a_resumed_again_run_registers_each_work_once_and_keeps_every_receipt(
    node: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D171's leftovers: `register --again` gave each work a fresh Idempotency-Key, so a run
    resumed after a stop registered its works again; and a second `--again` overwrote the
    first one's receipt (both named by content hash). A resumed run now sends each work under
    its run's key (the registry answers with what it recorded) and skips what the manifest
    shows it registered; a run that finished is followed by a new one, with new entries; and
    each receipt keeps its own file."""
    url, key = node
    receipts = tmp_path / "receipts"
    common = ("--server", url, "--api-key", key, "--work-type", "text", "--creator", "Ada",
              "--receipts", str(receipts), "--json")
    f, g = tmp_path / "f.txt", tmp_path / "g.txt"
    f.write_bytes(os.urandom(300))
    g.write_bytes(os.urandom(300))
    sha_f, sha_g = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (f, g))
    code, out = run("register", str(f), str(g), *common)
    assert code == 0, out

    # An --again run killed after the registry recorded both works, with f's receipt kept
    # and g's not.
    save = batch.Manifest.save_receipt
    calls = []

    def dies_on_the_second(self: batch.Manifest, sha: str, receipt: dict[str, Any]) -> str:
        calls.append(sha)
        if len(calls) == 2:
            raise _Killed
        return save(self, sha, receipt)

    with monkeypatch.context() as m:
        m.setattr(batch.Manifest, "save_receipt", dies_on_the_second)
        code, out = run("register", str(f), str(g), "--again", *common)
    assert code != 0 and calls == [sha_f, sha_g], out
    assert len(_alices(url, sha_f)) == len(_alices(url, sha_g)) == 2

    # Resumed: f is done, g goes under the same key and is answered with its entry.
    code, out = run("register", str(f), str(g), "--again", *common)
    assert code == 0, out
    rows = json.loads(out)
    assert len(_alices(url, sha_f)) == 2 and len(_alices(url, sha_g)) == 2  # (old code: 3)
    assert "registered by this --again run before it stopped" in rows[0]["skipped"], rows
    assert "skipped" not in rows[1] and "error" not in rows[1], rows
    assert rows[1]["seq"] == _alices(url, sha_g)[1]

    # That run finished: a new --again is a new run, with a new entry for each.
    code, out = run("register", str(f), "--again", *common)
    assert code == 0, out
    assert len(_alices(url, sha_f)) == 3

    # Every receipt of f kept, each in its own file, named by the manifest.
    named = {ln["seq"]: ln["receipt"] for ln in _lines(receipts) if ln["sha256"] == sha_f}
    assert sorted(named) == _alices(url, sha_f), named
    assert len(set(named.values())) == 3, named
    for seq, name in named.items():
        assert json.loads((receipts / name).read_text())["seq"] == seq
    assert named[_alices(url, sha_f)[0]] == f"{sha_f}.json"


def test_save_receipt_never_overwrites(tmp_path: Path) -> None:
    m = batch.Manifest(tmp_path)
    sha = "ab" * 32
    assert m.save_receipt(sha, {"seq": 4}) == f"{sha}.json"
    assert m.save_receipt(sha, {"seq": 9}) == f"{sha}-9.json"
    assert m.save_receipt(sha, {"seq": 4, "again": 1}) == f"{sha}.json"  # kept as it was
    (tmp_path / f"{sha}-7.json").write_text("not a receipt")
    assert m.save_receipt(sha, {"seq": 7}) == f"{sha}-7-2.json"
    assert json.loads((tmp_path / f"{sha}.json").read_text()) == {"seq": 4}
    assert json.loads((tmp_path / f"{sha}-9.json").read_text()) == {"seq": 9}
    assert (tmp_path / f"{sha}-7.json").read_text() == "not a receipt"
    assert not list(tmp_path.glob(".*.tmp"))
    # D193's review: the same seq of another log (a test registry's) is another receipt
    assert m.save_receipt(sha, {"seq": 4, "leaf_hash": "cd" * 32}) == f"{sha}-4.json"


def test_again_runs_resume_until_finished(tmp_path: Path) -> None:
    one = batch.AgainRun.resume_or_start(tmp_path)
    again = batch.AgainRun.resume_or_start(tmp_path)  # stopped: resumed
    assert again.run == one.run and again.resumed and not one.resumed
    assert again.key(Path("x"), "0" * 64) == one.key(Path("x"), "0" * 64)
    assert one.key(Path("x"), "0" * 64) != one.key(Path("y"), "0" * 64)
    assert one.key(Path("x"), "0" * 64) != one.key(Path("x"), "1" * 64)
    again.finish()
    new = batch.AgainRun.resume_or_start(tmp_path)
    assert not new.resumed and new.run != one.run
    assert new.key(Path("x"), "0" * 64) != one.key(Path("x"), "0" * 64)
    # D193's review: a run is resumed only while the registry still keeps its keys (24 h by
    # default): past RESUME_S an unfinished run (one a refused file keeps open, say) is not
    path = tmp_path / batch.AGAIN_RUN
    doc = json.loads(path.read_text())
    assert doc["finished"] is False and doc["run"] == new.run
    path.write_text(json.dumps({**doc, "started": doc["started"] - batch.RESUME_S - 1}))
    later = batch.AgainRun.resume_or_start(tmp_path)
    assert not later.resumed and later.run != new.run
    assert later.dropped == doc["started"] - batch.RESUME_S - 1  # (the CLI says so)
    assert new.dropped is None
    for odd in (float("nan"), float("inf"), time.time() + 3600):  # never said as too old
        path.write_text(json.dumps({**doc, "run": "x", "started": odd}))
        assert batch.AgainRun.resume_or_start(tmp_path).dropped is None


def test_a_file_named_twice_is_one_file_and_two_links_are_two(tmp_path: Path) -> None:
    """D193's review: `register --again d d/a.txt` sent one file twice under one key, which
    the registry refuses in a batch; a link to it is another file, with another key."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("a")
    (d / "link.txt").symlink_to(d / "a.txt")
    files = batch.collect_files([d, d / "a.txt", d / ".." / "d" / "a.txt", d / "link.txt"])
    assert files == [d / "a.txt", d / "link.txt"]
    # `..` after a linked folder is where the link leads, not the text before it
    (tmp_path / "other" / "sub").mkdir(parents=True)
    (tmp_path / "other" / "a.txt").write_text("theirs")
    (d / "ln").symlink_to(tmp_path / "other" / "sub")
    assert len(batch.collect_files([d / "a.txt", d / "ln" / ".." / "a.txt"])) == 2
    run = batch.AgainRun.resume_or_start(tmp_path / "receipts")
    assert run.key(d / "a.txt", "0" * 64) != run.key(d / "link.txt", "0" * 64)


# ------------------------------------------------------------------ the locale's language

def test_a_domain_error_is_said_in_the_locale_language(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """`_die(str(e))` printed English under zh-CN: a said(...) detail is now looked up in the
    catalogue, as the server looks up a problem's."""
    f = tmp_path / "w.txt"
    f.write_bytes(b"w")
    monkeypatch.setenv("LC_ALL", "zh_CN.UTF-8")
    code, out = run("lookup", str(f), "--server", "http://127.0.0.1:1")
    assert code == 2 and "无法连接 http://127.0.0.1:1" in out, out
    assert "cannot reach" not in out


def test_the_client_asks_for_the_language() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("accept-language"))
        return httpx.Response(200, json={"status": "ok"})

    with Client("http://registry.test", transport=httpx.MockTransport(answer),
                language="zh-CN") as c:
        c.healthz()
    with Client("http://registry.test", transport=httpx.MockTransport(answer)) as c:
        c.healthz()
    assert seen == ["zh-CN", None]


@pytest.mark.slow
def test_the_registry_answers_the_cli_in_its_language(
    node: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI sends Accept-Language from its locale: the registry's problem comes back in it."""
    url, _ = node
    monkeypatch.setenv("LC_ALL", "zh_CN.UTF-8")
    code, out = run("whoami", "--server", url, "--api-key", "cl_wrong")
    assert code == 2 and "401 缺少 API 密钥或密钥无效" in out, out
