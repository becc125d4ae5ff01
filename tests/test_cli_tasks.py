"""A command for each task (issue #14): register a folder (resumable, receipts kept, work type
from the content), transfer, history, claims, check-claim's holder and claims, and `serve`
refusing a taken port plainly."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from copyledger.cli.batch import Manifest, collect_files
from copyledger.cli.main import app
from copyledger.client import Client
from copyledger.client.media import media_type_of, sniff, work_type_of
from tests.server import ServerProcess, cli

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout + (r.stderr if r.stderr_bytes else "")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ content sniffing (pure)

@pytest.mark.parametrize(("head", "media"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
    (b"GIF89a\x01\x00", "image/gif"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav"),
    (b"%PDF-1.7\n", "application/pdf"),
    (b"ID3\x04\x00\x00", "audio/mpeg"),
    (b"\xff\xfb\x90\x64", "audio/mpeg"),
    (b"\x00\x00\x00\x18ftypisom", "video/mp4"),
    (b"\x00\x00\x00\x18ftypM4A ", "audio/mp4"),
    (b"fLaC\x00", "audio/flac"),
    (b"OggS\x00", "audio/ogg"),
    (b"\x1aE\xdf\xa3", "video/webm"),
    (b"\x7fELF\x02\x01", "application/x-executable"),
    ("Grüße, ein Gedicht\n".encode(), "text/plain"),
    ("日本語のテキスト".encode()[:-1], "text/plain"),  # cut inside a character
    (b"\x00\x01\x02\x03binary", None),
    (b"", None),
])
def test_sniff_reads_magic_numbers_and_utf8(head: bytes, media: str | None) -> None:
    assert sniff(head) == media


def test_a_misleading_name_loses_to_the_content() -> None:
    png = _png()
    assert media_type_of(png, "poem.txt") == "image/png"
    assert work_type_of(media_type_of(png, "poem.txt")) == "image"
    assert media_type_of(b"%PDF-1.4\n", "photo.jpg") == "application/pdf"
    assert media_type_of(b"\x00\x01\x02\x03", "notes.txt") is None  # not text, whatever the name
    # the name refines what bytes cannot tell apart
    assert media_type_of(b'{"a": 1}', "data.json") == "application/json"
    assert media_type_of(b"a,b\n1,2\n", "t.csv") == "text/csv"
    assert work_type_of("text/csv") == "dataset"
    assert work_type_of("application/x-executable") == "software"
    assert work_type_of("application/pdf") == "text"
    assert work_type_of("application/zip") == "other"
    assert work_type_of(None) == "other"


def test_collect_files_walks_filters_and_skips_the_receipts(tmp_path: Path) -> None:
    top = tmp_path / "art"
    for rel in ("a.jpg", "b.txt", "sub/c.jpg", "sub/deep/d.jpg", "sub/skip.jpg",
                "copyledger-receipts/x.json"):
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(rel.encode())
    got = collect_files([top], include=["*.jpg"], exclude=["sub/skip*"])
    assert [p.relative_to(top).as_posix() for p in got] == ["a.jpg", "sub/c.jpg",
                                                           "sub/deep/d.jpg"]
    got = collect_files([top], skip=top / "copyledger-receipts")
    assert "copyledger-receipts/x.json" not in [p.relative_to(top).as_posix() for p in got]
    assert len(got) == 5


def test_manifest_survives_a_line_cut_short(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    m.add(Path("a"), "0" * 64, 0, "alice", m.save_receipt("0" * 64, {"seq": 0}), "cl_a")
    m.add(Path("a"), "0" * 64, 0, "alice", None, "cl_a")  # once per (path, content)
    with (tmp_path / "manifest.jsonl").open("a") as f:
        f.write('{"path": "b", "sha')  # killed mid-write
    again = Manifest(tmp_path)
    assert len(again.lines) == 1 and again.account("cl_a") == "alice"
    assert again.account("cl_b") is None  # another key's account is not assumed
    assert json.loads((tmp_path / ("0" * 64 + ".json")).read_text()) == {"seq": 0}


# ------------------------------------------------------------------ against a real server

@pytest.fixture()
def node(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    keys = {}
    for account, role in (("alice", "creator"), ("bob", "creator"), ("carol", "creator"),
                          ("host", "platform")):
        keys[account] = json.loads(run("keys", "create", "--role", role, "--account",
                                       account, "--data-dir", str(d), "--json")[1])["key"]
    srv = ServerProcess(d).start()
    try:
        yield srv, keys
    finally:
        srv.stop()


@pytest.mark.slow
def test_register_a_folder_then_transfer_history_claims(
    node: tuple[ServerProcess, dict[str, str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv, keys = node
    monkeypatch.chdir(tmp_path)
    art = tmp_path / "art"
    (art / "sub").mkdir(parents=True)
    (art / "poem.txt").write_bytes(_png())  # a PNG with a misleading name
    (art / "sub" / "story.md").write_text("Once upon a time " * 50)
    (art / "sub" / "ignored.tmp").write_text("scratch")
    code, out = run("register", str(art), "--exclude", "*.tmp", "--server", srv.url,
                    "--api-key", keys["alice"], "--creator", "Ada", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [Path(r["file"]).name for r in rows] == ["poem.txt", "story.md"]
    with Client(srv.url) as c:
        png_entry = c.entry(rows[0]["seq"])["entry"]
        assert png_entry["work_type"] == "image"
        assert png_entry["content"]["media_type"] == "image/png"
        assert "pdq" in png_entry["content"]["fingerprints"]  # fingerprinted as an image
        assert c.entry(rows[1]["seq"])["entry"]["work_type"] == "text"
    receipts = tmp_path / "copyledger-receipts"  # kept by default
    manifest = [json.loads(x) for x in (receipts / "manifest.jsonl").read_text().splitlines()]
    assert [(m["path"], m["sha256"], m["seq"]) for m in manifest] == [
        (r["file"], r["sha256"], r["seq"]) for r in rows]
    for r in rows:
        saved = json.loads((receipts / f"{r['sha256']}.json").read_text())
        assert saved["seq"] == r["seq"] and saved["entry"]["content"]["sha256"] == r["sha256"]
    # again: nothing new is registered
    code, out = run("register", str(art), "--exclude", "*.tmp", "--server", srv.url,
                    "--api-key", keys["alice"], "--json")
    assert code == 0, out
    assert all("already registered by alice" in r["skipped"] for r in json.loads(out))
    # ...but another account's registration of the same content is its own
    code, out = run("register", str(art / "poem.txt"), "--server", srv.url, "--api-key",
                    keys["bob"], "--receipts", str(tmp_path / "bob"), "--json")
    assert code == 0 and "skipped" not in json.loads(out)[0], out
    bobs = json.loads(out)[0]["seq"]
    # Without its manifest the server still knows: the earlier registration, no new entry ...
    code, out = run("register", str(art / "poem.txt"), "--server", srv.url, "--api-key",
                    keys["bob"], "--receipts", str(tmp_path / "bob2"), "--json")
    assert code == 0 and f"already registered by bob (seq {bobs})" in json.loads(out)[0][
        "skipped"], out
    # ... unless asked for one.
    code, out = run("register", str(art / "poem.txt"), "--again", "--server", srv.url,
                    "--api-key", keys["bob"], "--receipts", str(tmp_path / "bob"), "--json")
    assert code == 0 and "skipped" not in json.loads(out)[0], out
    assert json.loads(out)[0]["seq"] > bobs
    # D93: a receipt must name the account the key acts for; bob's key, said to be alice's
    code, out = run("register", str(art / "sub" / "story.md"), "--again", "--account",
                    "alice", "--server", srv.url, "--api-key", keys["bob"], "--receipts",
                    str(tmp_path / "bob3"), "--json")
    assert code == 1, out
    assert ("under the account 'bob', not under this client's account 'alice'"
            in json.loads(out)[0]["error"]), out
    # ... and the typed account neither skips alice's file for bob nor enters the manifest.
    code, out = run("register", str(art / "poem.txt"), "--account", "alice", "--server",
                    srv.url, "--api-key", keys["bob"], "--receipts", str(tmp_path / "bob4"),
                    "--json")
    assert code == 1 and "skipped" not in json.loads(out)[0], out
    assert "not under this client's account 'alice'" in json.loads(out)[0]["error"], out
    assert "alice" not in (tmp_path / "bob4" / "manifest.jsonl").read_text() if (
        tmp_path / "bob4" / "manifest.jsonl").exists() else True

    work = rows[0]["seq"]
    terms = tmp_path / "contract.pdf"
    terms.write_bytes(b"%PDF-1.4 signed contract")
    code, out = run("transfer", str(work), "--to", "bbo", "--type", "assignment",
                    "--server", srv.url, "--api-key", keys["alice"])  # a typo: no such account
    assert code == 1 and "no account 'bbo'" in out, out
    code, out = run("transfer", str(work), "--to", "bob", "--type", "assignment", "--terms",
                    str(terms), "--note", "sold", "--server", srv.url, "--api-key",
                    keys["alice"], "--json")
    assert code == 0, out
    t = json.loads(out)
    assert t["receipt_verified"] is True and t["receipt"]["entry"]["to"] == "bob"
    assert t["terms_sha256"] == t["receipt"]["entry"]["terms_sha256"] and t["pending"] is True
    code, out = run("history", str(work), "--server", srv.url)
    assert code == 0 and "holder alice" in out and f"pending offer seq {t['seq']}" in out, out
    code, out = run("transfer", "accept", str(t["seq"]), "--server", srv.url, "--api-key",
                    keys["carol"])  # not carol's to accept
    assert code == 1 and "refused" in out, out
    code, out = run("transfer", "accept", str(t["seq"]), "--server", srv.url, "--api-key",
                    keys["bob"])
    assert code == 0 and "you now hold work" in out, out
    code, out = run("transfer", str(work), "--to", "carol", "--type", "exclusive_licence",
                    "--territory", "EU", "--server", srv.url, "--api-key", keys["bob"])
    assert code == 0 and "recorded as seq" in out, out
    code, out = run("transfer", str(work), "--to", "carol", "--type", "assignment",
                    "--server", srv.url, "--api-key", keys["alice"])  # alice no longer holds it
    assert code == 1 and "refused" in out, out
    code, out = run("transfer", str(work), "--to", "carol", "--type", "gift",
                    "--server", srv.url, "--api-key", keys["bob"])
    assert code == 2 and "--type" in out

    code, out = run("history", str(work), "--server", srv.url, "--json")
    assert code == 0, out
    h = json.loads(out)
    assert h["verified"] is True and h["holder"] == "bob"
    assert [x["holder_after"] for x in h["links"]] == ["alice", "alice", "bob", "bob"]
    assert [x["kind"] for x in h["links"]] == ["work", "transfer", "acceptance", "transfer"]
    assert h["pending_offer"] is None
    assert h["licences"][0]["to"] == "carol"
    code, out = run("history", str(work), "--server", srv.url)
    assert code == 0 and "holder bob" in out and "exclusive_licence to carol" in out, out

    notice = ["claim", "notice", "--regime", "dmca_512c3", "--claimant-name", "Bo Example",
              "--claimant-email", "bo@example.org", "--claimant-phone", "+1 555 0100",
              "--claimant-address", "1 Harbour St", "--authority", "owner",
              "--claimant-account", "bob", "--work", str(work),
              "--target", "https://video.example/watch/1", "--signature", "/Bo Example/",
              "--server", srv.url, "--api-key", keys["host"], "--json"]
    code, out = run(*notice)  # the statements 512(c)(3) requires are missing
    assert code == 1 and "statements.good_faith" in out, out
    code, out = run(*notice, "--statement", "good_faith", "--statement", "accuracy",
                    "--statement", "perjury")
    assert code == 0, out
    notice_seq = json.loads(out)["seq"]
    body = tmp_path / "counter.json"
    body.write_text(json.dumps({
        "regime": "dmca_512c3", "signature": "/Ed Example/",
        "claimant": {"name": "Ed Example", "address": "2 Quay", "phone": "+1 555 0101"},
        "targets": [{"url": "https://video.example/watch/1"}],
        "statements": {"mistake": True, "perjury": True, "jurisdiction_consent": True}}))
    code, out = run("claim", "counter", "--refers-to", str(notice_seq), "--from", str(body),
                    "--server", srv.url, "--api-key", keys["host"], "--json")
    assert code == 0, out
    counter_seq = json.loads(out)["seq"]
    code, out = run("claim", "show", str(counter_seq), "--server", srv.url, "--json")
    assert code == 0, out
    assert [(x["seq"], x["notice_type"]) for x in json.loads(out)["timeline"]] == [
        (notice_seq, "notice"), (counter_seq, "counter_notice")]
    code, out = run("claim", "show", str(notice_seq), "--server", srv.url)
    assert code == 0 and "Ed Example" in out and "counter_notice" in out, out

    code, out = run("check-claim", "--claimant", "alice", "--file", str(art / "poem.txt"),
                    "--work-seq", str(work), "--server", srv.url, "--api-key", keys["host"])
    assert code == 0, out
    assert "holder bob" in out
    assert f"claim seq {notice_seq}: notice (dmca_512c3) by host" in out
    assert f"claim seq {counter_seq}: counter_notice" in out and f"answering {notice_seq}" in out


@pytest.mark.slow
def test_register_1000_files_killed_halfway_then_resumed(
    node: tuple[ServerProcess, dict[str, str]], tmp_path: Path,
) -> None:
    srv, keys = node
    n = 1000
    art = tmp_path / "many"
    for i in range(n):
        (art / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        (art / f"d{i % 10}" / f"f{i:04}.txt").write_text(f"small work number {i}\n")
    receipts = tmp_path / "receipts"
    args = [sys.executable, "-m", "copyledger.cli", "register", str(art), "--server", srv.url,
            "--receipts", str(receipts), "--json"]
    env = {**os.environ, "COPYLEDGER_API_KEY": keys["alice"]}
    started = time.monotonic()
    # Nothing reads its output while it runs: a pipe would fill and stall it.
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = receipts / "manifest.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= n // 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    first = manifest.read_text().count("\n")
    assert n // 2 <= first < n, first
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == n
    skipped = sum(1 for x in rows if "skipped" in x)
    assert skipped >= first  # at least every file the first run recorded
    print(f"\n1,000 files: {elapsed:.1f} s across both runs (killed after {first})")
    with Client(srv.url) as c:
        for x in rows:
            found = [e for e in c.search(x["sha256"])["results"]
                     if e["entry"]["registrant"] == "alice" and e["entry"]["kind"] == "work"]
            assert len(found) == 1, x
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert sorted(x["sha256"] for x in lines) == sorted(x["sha256"] for x in rows)


def test_serve_on_a_taken_port_says_so_and_exits(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("serve", "--data-dir", str(tmp_path / "reg"), "--port", str(port))  # or times out
    assert r.returncode == 1
    assert f"port {port} is in use" in r.stderr and f"PORT={port + 1} make run" in r.stderr
    assert "serving" not in r.stderr  # no "serving on" line before the failure
    assert not (tmp_path / "reg").exists()  # nothing was created


def test_a_refused_registration_row_carries_its_status_and_problem_type(
    node: tuple[ServerProcess, dict[str, str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`register --json`'s row for a file the registry refused: `error` is the registry's
    words, which may be in the locale's language (the client asks for it), so a script reads
    `status` and `problem_type`, the same in every language."""
    srv, keys = node
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("a short text")
    rows = []
    for lang in ("C.UTF-8", "zh_CN.UTF-8"):  # (a process each: the language is chosen once)
        done = cli("register", str(tmp_path / "a.txt"), "--title", "t" * 600, "--server",
                   srv.url, "--api-key", keys["alice"], "--receipts", str(tmp_path / lang),
                   "--json", env={"LANG": lang, "LC_ALL": "", "LC_MESSAGES": ""})
        assert done.returncode == 1, done.stdout + done.stderr
        [row] = json.loads(done.stdout)
        rows.append(row)
    en, zh = rows
    assert "title" in en["error"] and "title" in zh["error"], rows
    assert en["status"] == zh["status"] == 422
    assert en["problem_type"] == zh["problem_type"] == "https://copyledger.dev/problems/invalid-input"
