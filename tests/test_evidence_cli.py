"""Evidence deposits from the shell: a WARC capture hashed record by record, and lookup."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from copyledger.cli.main import app
from copyledger.client.warc import warc_records
from copyledger.ledger.errors import InvalidInput
from tests.server import ServerProcess

runner = CliRunner()
PAGES = {"https://shop.example/item/1": b"<html>copy of the photo</html>",
         "https://shop.example/item/2": b"<html>another listing</html>"}


def make_warc(path: Path) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with path.open("wb") as f:
        w = WARCWriter(f, gzip=False)
        for uri, body in PAGES.items():
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")],
                                       protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(uri, "response", payload=io.BytesIO(body),
                                                http_headers=headers))
            w.write_record(w.create_warc_record(uri, "request", payload=io.BytesIO(b"GET /")))


def test_warc_records_hash_each_response(tmp_path: Path) -> None:
    f = tmp_path / "crawl.warc"
    make_warc(f)
    recs = warc_records(f)
    assert [r["target_uri"] for r in recs] == list(PAGES)
    assert [r["payload_sha256"] for r in recs] == [hashlib.sha256(b).hexdigest()
                                                   for b in PAGES.values()]
    (tmp_path / "x.warc").write_bytes(b"not a warc at all")
    with pytest.raises(InvalidInput, match="WARC"):
        warc_records(tmp_path / "x.warc")
    # A crawl still being written: its last response record cut inside the payload.
    data = f.read_bytes()
    last = list(PAGES.values())[-1]
    (tmp_path / "cut.warc").write_bytes(data[:data.rindex(last) + len(last) // 2])
    with pytest.raises(InvalidInput, match="is cut short"):
        warc_records(tmp_path / "cut.warc")


@pytest.mark.slow
def test_evidence_and_lookup_against_a_server(tmp_path: Path) -> None:
    d = tmp_path / "reg"
    assert runner.invoke(app, ["init", "--data-dir", str(d)]).exit_code == 0
    key = json.loads(runner.invoke(app, ["keys", "create", "--role", "court", "--account",
                                         "court-1", "--data-dir", str(d), "--json"]).stdout)["key"]
    f = tmp_path / "crawl.warc"
    make_warc(f)
    srv = ServerProcess(d).start()
    try:
        r = runner.invoke(app, ["evidence", str(f), "--captured-at", "2026-11-20T10:00:00Z",
                                "--method", "warc", "--description", "listings",
                                "--url", "https://shop.example/", "--server", srv.url,
                                "--api-key", key, "--json"])
        assert r.exit_code == 0, r.stdout
        res = json.loads(r.stdout)
        assert res["warc_records"] == 2
        # D181: sent under an Idempotency-Key (--retries, 3 by default), so a resend after a
        # lost answer records it once
        import sqlite3

        with sqlite3.connect(d / "ledger.sqlite3") as db:
            keyed = db.execute("SELECT seq, account FROM idempotency_written").fetchall()
        assert keyed == [(res["seq"], "court-1")], keyed
        r = runner.invoke(app, ["lookup", str(f), "--server", srv.url, "--json"])
        found = json.loads(r.stdout)["results"]
        assert [x["seq"] for x in found] == [res["seq"]] and found[0]["kind"] == "evidence"
        assert found[0]["registrant"] == "court-1"
        # D186: a deposit that got no answer names its key; sent again under it, the registry
        # answers with what it recorded rather than recording anew
        again = ["evidence", str(f), "--captured-at", "2026-11-20T10:00:00Z", "--method",
                 "warc", "--description", "again", "--api-key", key, "--json"]
        from copyledger.client import Client, TransportError

        def lost(self: Client, **fields: object) -> None:
            e = TransportError("the connection broke off")
            e.idempotency_key = str(fields.get("idempotency_key") or "k-of-the-run")
            raise e

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Client, "deposit_evidence", lost)
            r = runner.invoke(app, [*again, "--server", srv.url])
        said = r.stdout + (r.stderr if r.stderr_bytes else "")
        assert r.exit_code == 2 and "--idempotency-key" in " ".join(said.split()), said
        first = json.loads(runner.invoke(app, [*again, "--server", srv.url,
                                               "--idempotency-key", "court-1-try"]).stdout)
        second = json.loads(runner.invoke(app, [*again, "--server", srv.url,
                                                "--idempotency-key", "court-1-try"]).stdout)
        assert first["seq"] == second["seq"] != res["seq"], (first, second)
        r = runner.invoke(app, ["evidence", str(f), "--captured-at", "yesterday", "--method",
                                "warc", "--description", "d", "--server", srv.url,
                                "--api-key", key])
        assert r.exit_code == 1 and "captured_at" in r.stdout
    finally:
        srv.stop()
