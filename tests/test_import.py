"""`copyledger import` (issue 13 item 3): a catalogue by hash through the batch endpoint, killed
halfway and run again, leaves each work in the log exactly once."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.cli.catalogue import ImportProgress, Listing, read_rows
from tests.server import ServerProcess, cli, init_registry, init_with_creator

N = 3000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    d = tmp_path / "data"
    _, key = init_registry(d)
    srv = ServerProcess(d).start()
    try:
        yield srv, key
    finally:
        srv.stop()


def works_in_log(srv: ServerProcess) -> list[tuple[str, str]]:
    db = sqlite3.connect(srv.data_dir / "ledger.sqlite3")
    try:
        rows = db.execute("SELECT sha256, data FROM entries WHERE kind = 'work'").fetchall()
    finally:
        db.close()
    return [(sha.hex(), json.loads(data)["title"]) for sha, data in rows]  # 32 bytes (D124)


def sha(i: int) -> str:
    return hashlib.sha256(f"catalogue {i}".encode()).hexdigest()


def test_an_import_killed_halfway_and_run_again_has_no_duplicates(
    tmp_path: Path, server: tuple[ServerProcess, str]
) -> None:
    srv, key = server
    catalogue = tmp_path / "catalogue.jsonl"
    catalogue.write_text("".join(json.dumps({
        "sha256": sha(i), "title": f"Photo {i}", "creators": ["Agency"], "work_type": "image",
        "license": "All rights reserved"}) + "\n" for i in range(N)))
    progress = tmp_path / "catalogue.jsonl.progress"
    args = [sys.executable, "-m", "copyledger.cli", "import", str(catalogue), "--server", srv.url,
            "--api-key", key, "--chunk", "100", "--json"]
    # Nothing reads its output while it runs: a pipe would fill and stall it.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and len(progress.read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    done = [json.loads(x)["done"] for x in progress.read_text().splitlines()]
    assert 0 < done[-1] < N, "the kill was to land halfway"
    # Run again: it resumes after the last finished chunk.
    again = cli(*args[3:])
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads(again.stdout)
    assert summary["done"] == summary["total"] == N and summary["refused"] == []
    logged = works_in_log(srv)
    assert sorted(s for s, _ in logged) == sorted(sha(i) for i in range(N))
    # Without the progress file every row is sent again: all answered, nothing written.
    progress.unlink()
    third = cli(*args[3:])
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["already_registered"] == N
    assert len(works_in_log(srv)) == N


BAD_ROWS_CSV = (
    "sha256,title,creators,work_type,size,metadata\n"
    f"{sha(1)},Song,Ada;Bob,audio,1234,\"{{\"\"isrc\"\": \"\"X\"\"}}\"\n"
    f"{sha(2)},Poem,Ada,poem,,\n"  # no such work type: refused by the registry
    f"{sha(3)},Film,Ada,video,many,\n"  # a size that is no number: refused when read
    f"{sha(1)},Song again,Ada,audio,,\n")  # the same content: the earlier registration


def test_a_csv_catalogue_with_bad_rows(tmp_path: Path, server: tuple[ServerProcess, str]) -> None:
    srv, key = server
    catalogue = tmp_path / "works.csv"
    catalogue.write_text(BAD_ROWS_CSV)
    r = cli("import", str(catalogue), "--server", srv.url, "--api-key", key, "--json",
            env={**os.environ})
    assert r.returncode == 1, r.stdout + r.stderr
    s = json.loads(r.stdout)
    assert (s["registered"], s["already_registered"]) == (1, 1)
    assert [x["line"] for x in s["refused"]] == [3, 4]
    logged = works_in_log(srv)
    assert logged == [(sha(1), "Song")]


def test_register_of_many_files_sends_them_in_batches(
    tmp_path: Path, server: tuple[ServerProcess, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, key = server
    monkeypatch.chdir(tmp_path)
    files = []
    for i in range(5):
        f = tmp_path / f"note{i}.txt"
        f.write_text(f"note {i}")
        files.append(str(f))
    r = cli("register", *files, "--server", srv.url, "--api-key", key, "--work-type", "text",
            "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert [x["file"] for x in res] == files  # in the files' order
    receipts = [json.loads((tmp_path / "copyledger-receipts" / f"{x['sha256']}.json")
                           .read_text()) for x in res]
    assert len({rc["block_height"] for rc in receipts}) == 1  # one request, one block
    manifest = (tmp_path / "copyledger-receipts" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 5


def test_the_client_answers_each_item(server: tuple[ServerProcess, str]) -> None:
    from copyledger.client import BatchWork, Client, ProblemError, Receipt

    srv, key = server
    with Client(srv.url, api_key=key) as c:
        out = c.register_works([
            BatchWork(sha256=sha(1), title="A", creators=["Ada"], work_type="text"),
            BatchWork(sha256=sha(2), title="B", creators=["Ada"], work_type="poem"),
            BatchWork(sha256=sha(1), title="A", creators=["Ada"], work_type="text")])
    assert isinstance(out[0], Receipt) and not out[0].already_registered
    assert isinstance(out[1], ProblemError) and out[1].status == 422
    assert isinstance(out[2], Receipt) and out[2].already_registered
    assert out[2].seq == out[0].seq


def _entries(data: Path) -> list[dict[str, object]]:
    """The log's entries in seq order, without the one field that depends on the clock."""
    db = sqlite3.connect(data / "ledger.sqlite3")
    try:
        rows = db.execute("SELECT data FROM entries ORDER BY seq").fetchall()
    finally:
        db.close()
    return [{k: v for k, v in json.loads(d).items() if k != "received_at"} for (d,) in rows]


def test_a_local_import_makes_the_log_an_import_over_http_makes(
    tmp_path: Path, server: tuple[ServerProcess, str]
) -> None:
    """`import --local` (the operator's path, no HTTP) against `import --server` of the same
    catalogue: the same entries in the same order, the same refused rows; resumed without
    duplicates; the audit clean."""
    srv, key = server
    catalogue = tmp_path / "works.csv"
    catalogue.write_text(
        BAD_ROWS_CSV + "".join(f"{sha(i)},Photo {i},Agency,image,,\n" for i in range(10, 260)))
    over_http = cli("import", str(catalogue), "--server", srv.url, "--api-key", key, "--json",
                    "--chunk", "100", "--progress-file", str(tmp_path / "http.progress"))
    local = tmp_path / "local"
    db, _, _ = init_with_creator(local, "sqlite")
    args = ["import", str(catalogue), "--local", "--data-dir", str(local), *db,
            "--account", "alice", "--chunk", "100", "--json",
            "--progress-file", str(tmp_path / "local.progress")]
    here = cli(*args)
    assert here.returncode == over_http.returncode == 1, here.stdout + here.stderr
    mine, theirs = json.loads(here.stdout), json.loads(over_http.stdout)
    assert (mine["registered"], mine["already_registered"]) == (251, 1)
    assert [x["line"] for x in mine["refused"]] == [x["line"] for x in theirs["refused"]] == [3, 4]
    # The server's registry holds its own genesis and key entries before the works: compare
    # the work entries, the registrant aside (the server's key has its own account).
    works = [{k: v for k, v in e.items() if k != "registrant"}
             for e in _entries(srv.data_dir) if e["kind"] == "work"]
    assert works == [{k: v for k, v in e.items() if k != "registrant"}
                     for e in _entries(local) if e["kind"] == "work"]
    assert {e["registrant"] for e in _entries(local) if e["kind"] == "work"} == {"alice"}
    before = _entries(local)
    again = cli(*args)  # finished: the progress file says so, nothing is sent
    assert json.loads(again.stdout)["done"] == 254
    (tmp_path / "local.progress").unlink()
    third = cli(*args)  # every row again: answered with the earlier registrations
    assert json.loads(third.stdout)["already_registered"] == 252
    assert _entries(local) == before
    audit = cli("audit", "--data-dir", str(local), "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _again_catalogue(path: Path) -> Path:
    """Three rows: a work, the same content sent `again` (a second entry, which the D36
    answer does not stop), and another work sent `again` for the first time."""
    path.write_text("".join(json.dumps(row) + "\n" for row in (
        {"sha256": sha(70), "title": "Photo", "creators": ["A"], "work_type": "image"},
        {"sha256": sha(70), "title": "Photo, new edition", "creators": ["A"],
         "work_type": "image", "again": True},
        {"sha256": sha(71), "title": "Song", "creators": ["A"], "work_type": "audio",
         "again": True})))
    return path


def test_rows_sent_again_are_written_once_however_often_the_import_runs(
        tmp_path: Path, server: tuple[ServerProcess, str]) -> None:
    """A resumed import resends the chunks its progress file did not record (a kill between
    the registry's commit and the file's line). A row sent `again` is not answered by D36's
    "already registered", so it goes under a key made from the row (its catalogue, line and
    content): every run sends it under the same key and it is written once, over HTTP and
    with `--local` alike (D162). Run here without the progress file, the whole resend."""
    srv, key = server
    catalogue = _again_catalogue(tmp_path / "again.jsonl")
    args = ["import", str(catalogue), "--server", srv.url, "--api-key", key, "--json"]
    first = cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["registered"] == 3
    before = works_in_log(srv)
    assert len(before) == 3
    (tmp_path / "again.jsonl.progress").unlink()
    resent = cli(*args)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert works_in_log(srv) == before
    local = tmp_path / "local"
    db, _, _ = init_with_creator(local, "sqlite")
    args = ["import", str(catalogue), "--local", "--data-dir", str(local), *db,
            "--account", "alice", "--json", "--progress-file", str(tmp_path / "l.progress")]
    assert json.loads(cli(*args).stdout)["registered"] == 3
    entries = _entries(local)
    (tmp_path / "l.progress").unlink()
    resent = cli(*args)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert _entries(local) == entries, json.loads(resent.stdout)
    summary = json.loads(resent.stdout)  # (a row answered from its key is its first receipt,
    assert (summary["registered"], summary["already_registered"]) == (2, 1), summary  # a 201)
    audit = cli("audit", "--data-dir", str(local), "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_row_the_registry_cannot_take_is_refused_on_its_own(tmp_path: Path) -> None:
    """A row that is JSON but not JSON the client sends (NaN, an integer past 2**53 - 1,
    nesting deeper than the encoder goes), a line that is not UTF-8, and a CSV record with
    more or fewer cells than its header are each refused as their own row: before, each
    ended the import with a traceback, and every resumed run at the same chunk."""
    good = {"sha256": sha(80), "title": "T", "creators": ["A"], "work_type": "image"}
    lines = [json.dumps(good).encode(),
             json.dumps({**good, "metadata": {"x": float("nan")}}).encode(),
             json.dumps({**good, "size": 2**53}).encode(),
             json.dumps(good).encode()[:-1] + b', "metadata": {"x": '
             + b"[" * 300 + b"]" * 300 + b"}}",
             b'{"sha256": "' + sha(81).encode() + b'", "title": "\xff\xfe"}',
             b"[" * 5000 + b"]" * 5000,
             json.dumps({**good, "sha256": sha(82)}).encode()]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    rows = list(read_rows(jsonl))
    assert [r.line for r in rows] == list(range(1, 8))
    assert [r.work is not None for r in rows] == [True] + [False] * 5 + [True], rows
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("sha256,title,creators,work_type\n"
                        f"{sha(83)},T,A,image\n"
                        f"{sha(84)},T, with a comma,A,image\n"
                        f"{sha(85)},T\n")
    rows = list(read_rows(csv_file))
    assert [r.work is not None for r in rows] == [True, False, False], rows
    assert "5 cells where the header names 4" in str(rows[1].error)
    assert "2 cells where the header names 4" in str(rows[2].error)


def test_a_local_import_needs_an_account_that_holds_a_key(tmp_path: Path) -> None:
    catalogue = tmp_path / "works.jsonl"
    catalogue.write_text(json.dumps({"sha256": sha(1), "title": "T", "creators": ["A"],
                                     "work_type": "image"}) + "\n")
    data = tmp_path / "data"
    init_with_creator(data, "sqlite")
    r = cli("import", str(catalogue), "--local", "--data-dir", str(data), "--json")
    assert r.returncode == 2 and "--account" in r.stderr
    r = cli("import", str(catalogue), "--local", "--data-dir", str(data), "--account", "bob",
            "--json")
    assert r.returncode == 1 and "bob" in json.loads(r.stdout)["stopped"]
    assert _entries(data) == [e for e in _entries(data) if e["kind"] != "work"]


def test_a_progress_file_keeps_the_refusals_and_a_torn_line_is_left_alone(
        tmp_path: Path) -> None:
    """The refused rows of every run are read back from the progress file, in order, not
    kept in memory (D152); after a line a kill cut short, the next chunk's line starts on a
    line of its own instead of being glued to it and lost; loading writes nothing."""
    path = tmp_path / "c.jsonl.progress"
    first = ImportProgress.load(path)
    first.advance(100, 97, 1, [{"line": 4, "problem": "a"}, {"line": 9, "problem": "b"}])
    first.advance(100, 99, 0, [{"line": 150, "problem": "c"}])
    torn = '{"done": 300, "registered": 296, "refused": [{"line": 2'
    with path.open("a") as f:  # a third chunk's line, cut by a kill
        f.write(torn)
    before = path.read_bytes()
    again = ImportProgress.load(path)
    assert path.read_bytes() == before, "loading only reads"
    assert (again.done, again.registered, again.already, again.refused) == (200, 196, 1, 3)
    again.advance(100, 100, 0, [{"line": 201, "problem": "d"}])
    lines = path.read_text().splitlines()
    assert lines[2] == torn and [json.loads(x)["done"] for x in lines[:2] + lines[3:]] == [
        100, 200, 300]
    third = ImportProgress.load(path)
    assert (third.done, third.registered, third.refused) == (300, 296, 4)
    assert [r["line"] for r in third.refusals()] == [4, 9, 150, 201]
    assert ImportProgress.load(tmp_path / "none").refused == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({"line": st.integers(1, 10**9), "problem": st.text()}),
                max_size=5), st.booleans())
def test_a_listing_is_written_as_json_writes_the_list(items: list[dict[str, Any]],
                                                      pinned: bool) -> None:
    """An import's `--json` summary streams a `Listing` from its source (the progress file's
    refusals): the text is what `json.dumps` writes for the list it stands for, each item
    read once; an empty source is `[]` whatever the counts say."""
    from copyledger.cli.main import _emit_streamed

    out = io.StringIO()
    written: list[int] = []  # how much was written when each item was read

    def source() -> Iterator[dict[str, Any]]:
        for item in items:
            written.append(len(out.getvalue()))
            yield item

    expected = json.dumps({"done": 3, "refused": items, "key_pinned": pinned}, indent=2) + "\n"
    with contextlib.redirect_stdout(out):
        _emit_streamed({"done": 3, "refused": Listing(source()), "key_pinned": pinned})
    assert out.getvalue() == expected
    json.loads(out.getvalue())
    assert len(written) == len(items), "each item read once"
    out.seek(0)
    out.truncate()
    written.clear()
    with mock.patch("copyledger.cli.main._EMIT_PIECES", 1), contextlib.redirect_stdout(out):
        # a write per token: what the encoder made is out before it reads on
        _emit_streamed({"done": 3, "refused": Listing(source()), "key_pinned": pinned})
    assert out.getvalue() == expected
    assert written == sorted(set(written)), "each item's text written before the next is read"


def test_refused_rows_leave_nothing_for_the_cycle_collector() -> None:
    """A refusal kept as a row's answer holds no traceback whose frames hold it back: an
    import of millions of refused rows, whose collector runs rarely (D68), would keep 18-30
    objects a row until a full collection (D152)."""
    from copyledger.service.operations import prepare_works

    def doc(i: int, **bad: Any) -> tuple[str, dict[str, Any]]:
        return f"line {i}: ", {"sha256": sha(i), "title": f"Work {i}", "creators": ["Ada"],
                               "work_type": "text", **bad}

    docs = [doc(i, **[{"work_type": "poem"}, {"sha256": "zz"}, {"bogus": 1}, {"title": 5}][i % 4])
            for i in range(2000)]
    gc.collect()
    gc.disable()
    try:
        out = prepare_works(False, "alice", docs)
        assert all(isinstance(w, Exception) or isinstance(b, Exception) for w, b in out)
        del out
        assert gc.collect() < 100
    finally:
        gc.enable()
