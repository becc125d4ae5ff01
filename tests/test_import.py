"""`copyledger import` (issue 13 item 3): a catalogue by hash through the batch endpoint, killed
halfway and run again, leaves each work in the log exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import ServerProcess, cli, init_registry

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
    return [(sha, json.loads(data)["title"]) for sha, data in rows]


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


def test_a_csv_catalogue_with_bad_rows(tmp_path: Path, server: tuple[ServerProcess, str]) -> None:
    srv, key = server
    catalogue = tmp_path / "works.csv"
    catalogue.write_text(
        "sha256,title,creators,work_type,size,metadata\n"
        f"{sha(1)},Song,Ada;Bob,audio,1234,\"{{\"\"isrc\"\": \"\"X\"\"}}\"\n"
        f"{sha(2)},Poem,Ada,poem,,\n"  # no such work type: refused by the registry
        f"{sha(3)},Film,Ada,video,many,\n"  # a size that is no number: refused here
        f"{sha(1)},Song again,Ada,audio,,\n")  # the same content: the earlier registration
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
