"""The log's side of witnessing (D30): cosignatures are collected off the sealing path from a
real witness served over HTTP, kept durably, served as the cosigned checkpoint, carried by
bundles, and checked offline by `verify_bundle(..., witness_keys=, quorum=)` and
`copyledger verify --witness`."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import shutil
import socket
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.api.witness_app import create_witness_app
from copyledger.client import AsyncClient
from copyledger.ledger import cosignature, note
from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.verify import Status, verify_bundle
from copyledger.notary.signer import FileSigner, verifier_key
from copyledger.service import reads
from copyledger.service.certificate import certificate_html, certificate_pdf
from copyledger.service.node import Node
from copyledger.service.witness import LogConfig, Witness
from tests.helpers import open_registry, wait_for
from tests.server import cli, free_port
from tests.test_audit import fill

W = "witness.example/w1"


class WitnessServer:
    """`create_witness_app` on a real socket, in a thread of this process."""

    def __init__(self, witness: Witness, port: int) -> None:
        config = uvicorn.Config(create_witness_app(witness), host="127.0.0.1", port=port,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> WitnessServer:
        self.thread.start()
        wait_for(lambda: self.server.started, "the witness did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def witness_key(tmp_path: Path) -> FileSigner:
    return FileSigner.generate(W, tmp_path / "w.key")


def vkey_of(signer: FileSigner) -> str:
    return cosignature.format_verifier_key(signer.name, signer.public_key)


def open_witnessed(tmp: Path, port: int, signer: FileSigner) -> Node:
    n = open_registry(tmp, witnesses=f"http://127.0.0.1:{port} {vkey_of(signer)}")
    n.cosigner.interval, n.cosigner.max_delay = 0.2, 0.5
    return n


def make_witness(tmp: Path, signer: FileSigner, n: Node) -> Witness:
    return Witness(signer, [LogConfig.from_vkeys(n.origin, [n.verifier_key])],
                   tmp / "w.sqlite3")


def cosigned_up_to_date(n: Node) -> bool:
    found = reads.cosigned(n)
    return found is not None and found[0] == n.sequencer.state.size


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


def verify(b: dict[str, Any], n: Node, wkeys: list[str], quorum: int = 1) -> Any:
    return verify_bundle(b, trusted_keys=[n.verifier_key], witness_keys=wkeys, quorum=quorum)


def test_writes_proceed_while_the_witness_hangs_and_cosignatures_follow(
        tmp_path: Path, port: int, witness_key: FileSigner) -> None:
    # A "witness" that accepts connections and never answers: the worst kind of down.
    hung = socket.socket()
    hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hung.bind(("127.0.0.1", port))
    hung.listen(64)
    hung.settimeout(30)
    n = open_witnessed(tmp_path / "a", port, witness_key)
    # The cosigner's HTTP client takes its timeout when its thread starts. 20 s: longer than
    # 40 writes take on a loaded machine, so "no lag yet" below means the writes finished
    # while the cosigner still waited, whatever the machine's speed (no stopwatch needed).
    n.cosigner._worker.timeout = 20.0
    n.start()
    held = None
    try:
        fill(n, 3)
        held, _ = hung.accept()  # the cosigner's request is now waiting on us
        fill(n, 40)
        assert not n.cosigner.lag  # still waiting: the writes did not wait for it
        wait_for(lambda: n.cosigner.lag, "the cosigner never gave up on the hung witness")
        assert reads.cosigned(n) is None
        assert "witnessed" not in reads.bundle(n, 5)
        api = TestClient(create_app(n, manage=False))
        assert api.get("/v1/log/cosigned-checkpoint").status_code == 404
        assert api.get("/healthz").json()["witness_uncosigned"][vkey_of(witness_key)] > 0

        held.close()
        hung.close()  # it comes back, as a real witness on the same address
        with WitnessServer(make_witness(tmp_path, witness_key, n), port):
            wait_for(lambda: cosigned_up_to_date(n), "cosignatures were not filled in")
            fill(n, 5)  # and it follows new checkpoints, from the size it cosigned
            wait_for(lambda: cosigned_up_to_date(n), "the next checkpoint was not cosigned")
        size = n.sequencer.state.size
        served = api.get("/v1/log/cosigned-checkpoint")
        assert served.status_code == 200
        signed = served.text
        assert note.verify_note(signed, [note.parse_verifier_key(n.verifier_key)])
        [cosig] = cosignature.cosignatures_of(signed, [cosignature.parse_verifier_key(
            vkey_of(witness_key))])
        assert cosig.name == W
        assert note.parse_checkpoint(note.parse_note(signed).text).size == size
        assert f'copyledger_witness_uncosigned_entries{{witness="{vkey_of(witness_key)}"}} 0.0' \
            in api.get("/metrics").text
        gauge = f'copyledger_witness_cosigned_timestamp_seconds{{witness="{vkey_of(witness_key)}"}}'

        def cosigned_at() -> list[float]:
            return [float(line.rsplit(" ", 1)[1]) for line in
                    api.get("/metrics").text.splitlines() if line.startswith(gauge + " ")]

        # the time of the line served (D133), set once the witness thread's pass ends
        wait_for(lambda: cosigned_at() == [cosig.timestamp], "no cosignature time in /metrics")
        assert api.get("/healthz").json()["witness_uncosigned"][vkey_of(witness_key)] == 0

        b = reads.bundle(n, 5)
        assert b["witnessed"]["checkpoint"] == signed
        assert b["witnessed"]["consistency"]  # from the entry's early tree to the later one
        rep = verify(b, n, [vkey_of(witness_key)])
        assert rep.ok, rep.to_json()
        assert rep.steps[-1].status is Status.PASSED
        assert rep.facts["witnesses"][0]["name"] == W
        assert rep.facts["witnessed_size"] == size
    finally:
        if held is not None:
            held.close()
        hung.close()
        n.stop()
    # durable: a restarted node serves them from the table
    n = open_witnessed(tmp_path / "a", port, witness_key)
    try:
        assert reads.cosigned(n) == (size, signed)
    finally:
        n.store.close()


@pytest.fixture
def witnessed(tmp_path: Path, port: int, witness_key: FileSigner
              ) -> Iterator[tuple[Node, dict[str, Any]]]:
    n = open_witnessed(tmp_path / "a", port, witness_key)
    n.start()
    try:
        with WitnessServer(make_witness(tmp_path, witness_key, n), port):
            fill(n, 6)
            wait_for(lambda: cosigned_up_to_date(n), "not cosigned")
        yield n, reads.bundle(n, 2)
    finally:
        n.stop()


def flip_cosignature(signed: str) -> str:
    head, last = signed.rstrip("\n").rsplit("\n", 1)
    name, sig = last.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 1
    return f"{head}\n{name} {base64.b64encode(bytes(raw)).decode()}\n"


def test_verify_needs_a_valid_cosignature_by_the_witness(
        tmp_path: Path, witnessed: tuple[Node, dict[str, Any]], witness_key: FileSigner) -> None:
    n, b = witnessed
    wkey = vkey_of(witness_key)
    assert verify(b, n, [wkey]).ok
    # the certificate lists who cosigned (and says it did not check them)
    page = certificate_html(b, "https://example.test/verify")
    assert f"<th>{W}</th>" in page and "not checked here" in page
    assert "cosigned tree size" in certificate_html(b, "x") and certificate_pdf(b, "x")
    assert "no witnessed checkpoint" in certificate_html(
        {k: v for k, v in b.items() if k != "witnessed"}, "x")
    # without witness keys the step is skipped, and says so
    rep = verify_bundle(b, trusted_keys=[n.verifier_key])
    assert rep.ok and rep.steps[-1].status is Status.SKIPPED
    assert "no witness keys" in rep.steps[-1].detail

    def fails(bad: dict[str, Any], keys: list[str], why: str, quorum: int = 1) -> None:
        rep = verify(bad, n, keys, quorum)
        assert not rep.ok and rep.failed is not None and rep.failed.name == "witnessed", \
            rep.to_json()
        assert why in rep.failed.detail, rep.failed.detail

    flipped = copy.deepcopy(b)
    flipped["witnessed"]["checkpoint"] = flip_cosignature(b["witnessed"]["checkpoint"])
    fails(flipped, [wkey], "invalid cosignature")
    bare = copy.deepcopy(b)  # the log's own signature only: no cosignature at all
    bare["witnessed"]["checkpoint"] = b["witnessed"]["checkpoint"].rsplit("—", 1)[0]
    fails(bare, [wkey], "0 valid cosignature(s)")
    other = vkey_of(FileSigner.generate("witness.example/w2", tmp_path / "w2.key"))
    fails(b, [other], "0 valid cosignature(s)")
    fails(b, [wkey, other], "1 valid cosignature(s) by the witness keys given, 2 required", 2)
    missing = {k: v for k, v in b.items() if k != "witnessed"}
    fails(missing, [wkey], "carries no witnessed checkpoint")
    wrong = copy.deepcopy(b)
    wrong["witnessed"]["consistency"][0] = "00" * 32
    fails(wrong, [wkey], "")

    # the CLI: exit 0 on the log's bundle, 1 on the one with a broken cosignature
    good_file, bad_file = tmp_path / "good.json", tmp_path / "bad.json"
    good_file.write_text(json.dumps(b))
    bad_file.write_text(json.dumps(flipped))
    args = ["--trust", n.verifier_key, "--witness", wkey, "--quorum", "1", "--json"]
    r = cli("verify", str(good_file), *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["steps"][-1]["status"] == "ok"
    r = cli("verify", str(bad_file), *args)
    assert r.returncode == 1 and json.loads(r.stdout)["failed_step"] == "witnessed"


def test_a_bundle_from_a_forked_branch_has_no_witness(tmp_path: Path, port: int,
                                                      witness_key: FileSigner) -> None:
    a = open_registry(tmp_path / "a")
    a.start()
    fill(a, 4)
    base = a.sequencer.state.size
    a.stop()
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # two copies that will diverge after 4
    a = open_witnessed(tmp_path / "a", port, witness_key)
    b = open_witnessed(tmp_path / "b", port, witness_key)
    wkey = vkey_of(witness_key)
    a.start()
    b.start()
    try:
        with WitnessServer(make_witness(tmp_path, witness_key, a), port):
            fill(a, 3)
            wait_for(lambda: cosigned_up_to_date(a), "branch a was not cosigned")
            fill(b, 5)
            size_b = b.sequencer.state.size
            # b's checkpoints reached the witness and were refused: its lag is counted from
            # the shared prefix at most (the witness may have cosigned that, honestly)
            wait_for(lambda: b.cosigner.lag.get(wkey, 0) >= size_b - base,
                     "branch b was never sent")
            time.sleep(1.0)  # several passes: the witness keeps refusing b
            found = reads.cosigned(b)
            assert found is None or found[0] <= base
        seq = b.sequencer.state.size - 1  # an entry only branch b has
        fork_bundle = reads.bundle(b, seq)
        assert "witnessed" not in fork_bundle
        assert verify_bundle(fork_bundle, trusted_keys=[b.verifier_key]).ok  # signed by the log
        rep = verify(fork_bundle, b, [wkey])
        assert rep.failed is not None and rep.failed.name == "witnessed"
        # branch a's witnessed checkpoint spliced into the fork's bundle does not fit it
        spliced = {**fork_bundle, "witnessed": reads.bundle(a, 1)["witnessed"]}
        rep = verify(spliced, b, [wkey])
        assert rep.failed is not None and rep.failed.name == "witnessed"
    finally:
        a.stop()
        b.stop()


def test_a_bundle_refreshed_after_1000_more_entries(tmp_path: Path, port: int,
                                                    witness_key: FileSigner) -> None:
    """`copyledger bundle --refresh` (through the client) adds the later witnessed checkpoint and
    the consistency proof to a saved bundle, and the result verifies offline."""
    from tests.test_tiles import Uvicorn

    n = open_witnessed(tmp_path / "a", port, witness_key)
    wkey = vkey_of(witness_key)
    n.start()
    try:
        with WitnessServer(make_witness(tmp_path, witness_key, n), port):
            fill(n, 5)
            wait_for(lambda: cosigned_up_to_date(n), "not cosigned")
            saved = tmp_path / "saved.json"
            saved.write_text(json.dumps(reads.bundle(n, 2)))
            early = json.loads(saved.read_text())["witnessed"]["checkpoint"]
            fill(n, 1000, batch=100)
            wait_for(lambda: cosigned_up_to_date(n), "the later checkpoint was not cosigned")
        size = n.sequencer.state.size
        out = tmp_path / "refreshed.json"
        fill(n, 3)  # sealed with no witness to cosign them
        newer = tmp_path / "newer.json"
        newer.write_text(json.dumps(reads.bundle(n, size)))
        with Uvicorn(n) as registry:
            # a bundle sealed after the last cosignature: said, not the server's 422
            r = cli("bundle", "--refresh", str(newer), "-o", str(tmp_path / "n.json"),
                    "--server", registry.url, "--trust", n.verifier_key)
            assert r.returncode != 0, r.stdout + r.stderr
            assert "not cosigned the bundle's tree yet" in " ".join(r.stderr.split()), r.stderr
            r = cli("bundle", "--refresh", str(saved), "-o", str(out), "--server", registry.url,
                    "--trust", n.verifier_key)
            assert r.returncode == 0, r.stdout + r.stderr
            # a bundle sealed under a key the client does not trust is not refreshed
            other = FileSigner.generate(n.origin, tmp_path / "other.key")
            bad = cli("bundle", "--refresh", str(saved), "-o", str(tmp_path / "x.json"),
                      "--server", registry.url, "--trust", verifier_key(other))
            assert bad.returncode == 1, bad.stdout + bad.stderr
            assert "does NOT verify" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr

            async def refresh_async() -> dict[str, Any]:
                async with AsyncClient(registry.url, trusted_keys=[n.verifier_key]) as c:
                    return await c.refresh_bundle(json.loads(saved.read_text()))

            by_async = asyncio.run(refresh_async())
        b = json.loads(out.read_text())
        assert by_async == b  # the two clients share everything but the send
        later = b["witnessed"]["checkpoint"]
        assert later != early
        assert note.parse_checkpoint(note.parse_note(later).text).size == size > 1000
        assert len(b["witnessed"]["consistency"]) > 1
        assert {k: v for k, v in b.items() if k != "witnessed"} == {
            k: v for k, v in json.loads(saved.read_text()).items() if k != "witnessed"}
    finally:
        n.stop()
    r = cli("verify", str(out), "--trust", n.verifier_key, "--witness", wkey, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["facts"]["witnessed_size"] == size
    # and a refreshed bundle whose proof was tampered with does not
    b["witnessed"]["consistency"][-1] = "00" * 32
    out.write_text(json.dumps(b))
    r = cli("verify", str(out), "--trust", n.verifier_key, "--witness", wkey, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["failed_step"] == "witnessed"


def cosigned_registry(tmp: Path) -> tuple[Node, str]:
    """A registry of 6 entries whose latest checkpoint a witness cosigned, made without threads
    or sockets: the node is filled, then its Cosigner's pass runs once against the witness app.
    (the node, not started: close its store; the witness's vkey)"""
    signer = FileSigner.generate(W, tmp / "w.key")
    n = open_registry(tmp / "a")
    n.start()
    fill(n, 6)
    n.stop()
    n = open_registry(tmp / "a", witnesses=f"http://testserver {vkey_of(signer)}")
    with TestClient(create_witness_app(make_witness(tmp, signer, n))) as http:
        n.cosigner.run_once(http)
    return n, vkey_of(signer)


def witnessed_bundle(tmp: Path, seq: int = 2) -> tuple[dict[str, Any], str, str]:
    """A bundle with a witnessed checkpoint (cosigned_registry's). (bundle, log vkey, witness
    vkey)"""
    n, wkey = cosigned_registry(tmp)
    try:
        return reads.bundle(n, seq), n.verifier_key, wkey
    finally:
        n.store.close()


def test_the_audit_checks_every_kept_cosignature(tmp_path: Path) -> None:
    """Each kept cosignature must verify under its witness's key over the checkpoint the log
    signed at its size: a forged row, a row moved to another size, or one for a size the log
    never signed fails the audit, naming the size and the witness."""
    from copyledger.ledger.audit import audit
    from copyledger.service.admin import audit_registry

    (tmp_path / "base").mkdir()
    n, wkey = cosigned_registry(tmp_path / "base")
    size = n.sequencer.state.size
    earlier = next(b.header.tree_size for b in n.store.iter_blocks()
                   if 0 < b.header.tree_size < size)  # signed by the log, not cosigned
    line = n.store.cosignature_lines(size, [wkey])[0]
    n.store.close()
    rep = audit_registry(n.settings)
    assert rep.ok, rep.problem
    assert any("1 kept witness cosignatures verify" in c for c in rep.checked), rep.checked

    def audited(row: tuple[int, str, str] | None, *, configured: list[str]) -> Any:
        copy_dir = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tmp_path / "base", copy_dir)
        m = open_registry(copy_dir / "a")
        try:
            if row is not None:
                assert m.store.add_cosignature(*row, 0)  # refused as kept, before as the newest
            return audit(m.store, m.verifier_key, witness_keys=configured)
        finally:
            m.store.close()

    rep = audited(None, configured=[])  # the witness was dropped from the settings since
    assert rep.ok and any("(1 by witnesses no longer configured)" in c for c in rep.checked)
    for row, why in [
        ((earlier, wkey, flip_cosignature("x\n" + line).split("\n", 1)[1]), "invalid"),
        ((earlier, wkey, line), "invalid"),  # a true cosignature, of another size
        ((size + 5, wkey, line), "the log signed no checkpoint of that size"),
        ((earlier, W + "+00000000+AQ==", line), ""),  # not a witness key at all
    ]:
        rep = audited(row, configured=[wkey])
        assert not rep.ok, row
        assert f"tree size {row[0]} by {row[1]}" in str(rep.problem) and why in str(rep.problem)


def test_the_audit_refuses_a_newest_cosignature_that_is_not_the_newest(tmp_path: Path) -> None:
    """D138: each witness's newest line must be what its row says and no older than any line
    kept from that witness, with a kept line at its size. Each case is a line that verifies
    over the checkpoint the log signed at its size (so only these checks can refuse it),
    written into the newest row by hand: the audit names the witness, the size and why."""
    from copyledger.ledger.audit import audit

    (tmp_path / "base").mkdir()
    n, wkey = cosigned_registry(tmp_path / "base")
    signer = FileSigner.load(W, tmp_path / "base" / "w.key")
    size = n.sequencer.state.size
    earlier = next(b.header.tree_size for b in n.store.iter_blocks()
                   if 0 < b.header.tree_size < size)
    [kept] = n.store.cosignature_lines(size, [wkey], newest=False)
    t0 = cosignature.Cosignature.parse_line(kept).timestamp

    def line(at_size: int, t: int) -> str:  # a true cosignature of the log's checkpoint
        text = note.parse_note(n.store.block_for_size(at_size).checkpoint).text  # type: ignore[union-attr]
        return cosignature.Cosignature(
            signer.name, cosignature.key_id(signer.name, signer.public_key), t,
            signer.sign(cosignature.signed_message(text, t))).line()

    n.store.close()

    def audited(fresh: tuple[int, int, str], kept_too: bool = False) -> Any:
        copy_dir = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tmp_path / "base", copy_dir)
        m = open_registry(copy_dir / "a")
        try:
            at_size, at, text = fresh
            if kept_too:  # kept as the first line of its size, too
                assert m.store.add_cosignature(at_size, wkey, text, at)
            m.store.execute_raw(f"UPDATE fresh_cosignatures SET tree_size = {at_size}, "
                                f"cosigned_at = {at}, line = '{text}'")
            return audit(m.store, m.verifier_key, witness_keys=[wkey])
        finally:
            m.store.close()

    rep = audited((size, t0 + 50, line(size, t0 + 50)))  # cosigned again later: as it should
    assert rep.ok, rep.problem
    assert any("newest cosignatures verify" in c and "are the newest kept" in c
               for c in rep.checked), rep.checked
    where = f"the newest cosignature by {wkey} (tree size "
    for fresh, why in [
        ((size, t0 + 99, line(size, t0 + 50)), f"its row says it was made at {t0 + 99}"),
        ((size, t0 - 5, line(size, t0 - 5)), f"older than the cosignature of tree size {size}"),
        ((earlier, t0 + 9, line(earlier, t0 + 9)), "no cosignature of that size"),
    ]:
        rep = audited(fresh)
        assert not rep.ok, fresh
        assert f"{where}{fresh[0]})" in str(rep.problem) and why in str(rep.problem), rep.problem
    # A line kept at an earlier size, served as the newest although a larger size is kept.
    rep = audited((earlier, t0 + 9, line(earlier, t0 + 9)), kept_too=True)
    assert not rep.ok
    assert f"older than the cosignature of tree size {size} made at {t0}" in str(rep.problem)


def test_a_line_is_kept_and_made_the_newest_in_one_transaction(
        tmp_path: Path, database_url: str) -> None:
    """D138: should making a line the newest fail, it is not kept either, so the audit never
    meets a kept line newer than the newest (as a crash between two transactions left)."""
    from sqlalchemy.exc import DBAPIError

    n = open_registry(tmp_path / "a", database_url)
    pg = n.store.dialect == "postgresql"
    try:
        if pg:
            n.store.execute_raw("CREATE FUNCTION refuse_fresh() RETURNS trigger AS $$ BEGIN "
                                "RAISE EXCEPTION 'refused here'; END $$ LANGUAGE plpgsql")
            n.store.execute_raw("CREATE TRIGGER no_fresh BEFORE INSERT ON fresh_cosignatures "
                                "FOR EACH ROW EXECUTE FUNCTION refuse_fresh()")
        else:
            n.store.execute_raw("CREATE TRIGGER no_fresh BEFORE INSERT ON fresh_cosignatures "
                                "BEGIN SELECT RAISE(ABORT, 'refused here'); END")
        with pytest.raises(DBAPIError, match="refused here"):
            n.store.add_cosignature(3, "w+00000000+x", "line 1\n", 100)
        assert list(n.store.iter_cosigned_checkpoints()) == []
        n.store.execute_raw("DROP TRIGGER no_fresh" + (" ON fresh_cosignatures" if pg else ""))
        assert n.store.add_cosignature(3, "w+00000000+x", "line 1\n", 100)
        assert [r[2] for r in n.store.iter_cosigned_checkpoints()] == ["line 1\n"]
    finally:
        n.store.close()


def test_one_pass_without_threads(tmp_path: Path) -> None:
    b, log_vkey, wkey = witnessed_bundle(tmp_path)
    rep = verify_bundle(b, trusted_keys=[log_vkey], witness_keys=[wkey])
    assert rep.ok, rep.to_json()


def test_one_witness_key_pinned_under_two_names_counts_once(tmp_path: Path) -> None:
    """D165's "Left": an Ed25519 cosignature does not sign the witness's name, so its line can
    be copied under a second name's key ID; one key pinned under two names must not meet a
    quorum of 2 (c2sp.org/tlog-cosignature: one key per cosigner). Keys are counted."""
    b, log_vkey, wkey = witnessed_bundle(tmp_path)
    w = cosignature.parse_verifier_key(wkey)
    alias = "witness.example/alias"
    alias_vkey = cosignature.format_verifier_key(alias, w.public_key)
    # the witness's own line, copied under the alias's name and key ID: a valid cosignature
    signed = b["witnessed"]["checkpoint"]
    [line] = [s for s in note.parse_note(signed).signatures if s.name == W]
    copied = note.format_signature_line(
        note.Signature(alias, cosignature.key_id(alias, w.public_key), line.signature))
    b["witnessed"]["checkpoint"] = signed + copied
    assert len(cosignature.cosignatures_of(b["witnessed"]["checkpoint"],
                                           [w, cosignature.parse_verifier_key(alias_vkey)])) == 2
    assert verify_bundle(b, trusted_keys=[log_vkey], witness_keys=[wkey, alias_vkey]).ok

    def failed(keys: list[str], quorum: int) -> str:
        rep = verify_bundle(b, trusted_keys=[log_vkey], witness_keys=keys, quorum=quorum)
        assert not rep.ok and rep.failed is not None and rep.failed.name == "witnessed", \
            rep.to_json()
        return rep.failed.detail

    assert failed([wkey, alias_vkey], 2) == (
        "the witness keys given are 1 distinct key(s), fewer than the quorum 2: a key given "
        "under two names counts once")
    # with a third, distinct key pinned that did not cosign: 1 key cosigned, 2 required
    other = vkey_of(FileSigner.generate("witness.example/w2", tmp_path / "w2.key"))
    assert failed([wkey, alias_vkey, other], 2) == (
        "1 valid cosignature(s) by the witness keys given, 2 required")


def test_cosignatures_are_append_only(tmp_path: Path, database_url: str) -> None:
    from sqlalchemy.exc import DBAPIError

    n = open_registry(tmp_path / "a", database_url)
    try:
        w = "w+00000000+x"
        assert n.store.add_cosignature(3, w, "line 1\n", 100)
        assert not n.store.add_cosignature(3, w, "line 2\n", 200)  # the first stays
        assert [r[2] for r in n.store.iter_cosigned_checkpoints()] == ["line 1\n"]
        # ... and the newest is served (D133), but not in bundles' lines
        assert n.store.cosignature_lines(3, [w]) == ["line 2\n"]
        assert n.store.cosignature_lines(3, [w], newest=False) == ["line 1\n"]
        # never replaced by a line of a smaller size, or of the same size and an earlier time
        assert n.store.add_cosignature(2, w, "line 0\n", 300)
        assert not n.store.add_cosignature(3, w, "line 3\n", 150)
        assert n.store.cosignature_lines(3, [w]) == ["line 2\n"]
        assert n.store.cosignature_lines(2, [w]) == ["line 0\n"]
        assert [r[:3] for r in n.store.iter_fresh_cosignatures()] == [(3, w, "line 2\n")]
        assert not n.store.add_cosignature(3, w, "line 4\n", 201)
        assert n.store.add_cosignature(4, "v+00000000+y", "other\n", 1)  # another witness
        assert [r[:3] for r in n.store.iter_fresh_cosignatures()] == [
            (4, "v+00000000+y", "other\n"), (3, w, "line 4\n")]
        for sql in ("UPDATE cosignatures SET line = 'x'", "DELETE FROM cosignatures"):
            with pytest.raises(DBAPIError, match="append-only"):
                n.store.execute_raw(sql)
    finally:
        n.store.close()


def test_witness_settings_are_checked(tmp_path: Path, witness_key: FileSigner) -> None:
    with pytest.raises(InvalidInput, match="witness_quorum"):
        open_registry(tmp_path / "a", witnesses=f"http://w {vkey_of(witness_key)}",
                      witness_quorum=2)
    with pytest.raises(InvalidInput):
        open_registry(tmp_path / "b", witnesses="http://w not-a-vkey")
    with pytest.raises(InvalidInput, match="not `<url> <vkey>`"):
        open_registry(tmp_path / "c", witnesses="http://w")
    # D196: one key under two names would count twice toward the quorum (a cosignature does
    # not sign the witness's name, so its line can be copied under the other name)
    w = cosignature.parse_verifier_key(vkey_of(witness_key))
    alias = cosignature.format_verifier_key("witness.example/alias", w.public_key)
    with pytest.raises(InvalidInput, match="one key under two names"):
        open_registry(tmp_path / "d", witnesses=f"http://w {vkey_of(witness_key)},"
                      f"http://w2 {alias}", witness_quorum=2)


@pytest.mark.parametrize("body", ["\u00b2", "\u0663", "1" * 21, "9" * 5000, "", "-1", "1 2"])
def test_a_409_without_an_ascii_tree_size_is_a_verification_error(body: str) -> None:
    """A 409's `text/x.tlog.size` body is a size in ASCII digits (at most a uint64's 20):
    "²" passes str.isdigit() yet int() refuses it, and "٣" (Arabic-Indic 3) int() reads."""
    from copyledger.ledger.cosignature import AddCheckpointRequest
    from copyledger.ledger.errors import Conflict, VerificationError
    from copyledger.notary.witnesses import add_checkpoint

    def answer(size: str) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(lambda _r: httpx.Response(
            409, text=size, headers={"content-type": "text/x.tlog.size"})))

    request = AddCheckpointRequest(0, (), b"x\n")
    with pytest.raises(VerificationError, match="409 without a tree size"):
        add_checkpoint(answer(body), "http://w", request)
    with pytest.raises(Conflict) as caught:
        add_checkpoint(answer(" 18446744073709551615\n"), "http://w", request)
    assert caught.value.extra["size"] == 2**64 - 1


def two_witnesses(tmp: Path, first: str) -> tuple[Node, FastAPI, str, str]:
    """A registry of 6 entries asking two witnesses, the first at `first` (a path on the
    second's app, which cosigns): (the node, the app, first vkey, second vkey)."""
    good = FileSigner.generate(W, tmp / "w.key")
    other = FileSigner.generate("witness.example/w0", tmp / "w0.key")
    n = open_registry(tmp / "a")
    n.start()
    fill(n, 6)
    n.stop()
    n = open_registry(tmp / "a", witnesses=f"http://testserver{first} {vkey_of(other)},"
                                           f"http://testserver {vkey_of(good)}")
    return n, create_witness_app(make_witness(tmp, good, n)), vkey_of(other), vkey_of(good)


def test_a_witness_answering_409_with_a_size_not_ascii_does_not_stop_the_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 409 whose size is "²" (str.isdigit() says yes, int() raises ValueError) was a
    ValueError out of the pass: the witnesses after it were never asked."""
    n, app, first, second = two_witnesses(tmp_path, "/first")

    @app.post("/first/add-checkpoint")
    def superscript() -> Response:
        return Response("\u00b2", 409, media_type="text/x.tlog.size")

    try:
        with TestClient(app) as http:
            n.cosigner.run_once(http)
        size = n.sequencer.state.size
        assert n.store.cosignature_lines(size, [second])  # the second one was asked
        assert not n.store.cosignature_lines(size, [first])
        assert first in n.cosigner._retry_at and second not in n.cosigner._retry_at
        assert n.cosigner.lag == {first: size, second: 0}
        assert "409 without a tree size" in caplog.text
    finally:
        n.store.close()


def test_any_fault_with_one_witness_does_not_stop_the_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever one witness's turn raises, it is logged and that witness backs off; the
    others are asked in the same pass."""
    from copyledger.notary import witnesses

    n, app, first, second = two_witnesses(tmp_path, "/first")
    real = witnesses.add_checkpoint

    def faulty(http: httpx.Client, url: str, request: Any) -> str:
        if url.endswith("/first"):
            raise RuntimeError("a fault nobody expected")
        return real(http, url, request)

    monkeypatch.setattr(witnesses, "add_checkpoint", faulty)
    try:
        with TestClient(app) as http:
            n.cosigner.run_once(http)
        assert n.store.cosignature_lines(n.sequencer.state.size, [second])
        assert first in n.cosigner._retry_at
        assert "a fault nobody expected" in caplog.text
    finally:
        n.store.close()


def test_an_unchanged_tree_is_cosigned_again_once_its_newest_cosignature_is_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """D133: while the tree does not grow, the log asks each witness again about the same
    checkpoint once its newest cosignature is `refresh` seconds old (not before); the witness
    cosigns it with a new time, which the cosigned checkpoint then carries, while the first
    line of that size stays kept and bundles carry it. A witness whose clock is behind is
    asked once a period, not at every pass. The audit checks the newest lines too: one
    changed by hand is named. `refresh` 0 never asks again."""
    import copyledger.service.witness as witness_module
    from copyledger.service.admin import audit_registry

    signer = FileSigner.generate(W, tmp_path / "w.key")
    wkey = vkey_of(signer)
    n = open_registry(tmp_path / "a")
    n.start()
    fill(n, 6)
    n.stop()
    n = open_registry(tmp_path / "a", witnesses=f"http://testserver {wkey}")
    skew = [0.0]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew[0])  # the log's and witness's clock

    def later(seconds: float) -> None:  # both clocks, the log's monotonic one too
        skew[0] += seconds
        n.cosigner._asked_at.update((k, v - seconds) for k, v in n.cosigner._asked_at.items())

    asked: list[str] = []
    try:
        with TestClient(create_witness_app(make_witness(tmp_path, signer, n))) as http:
            http.event_hooks["request"].append(lambda r: asked.append(r.url.path))
            n.cosigner.run_once(http)
            size = n.sequencer.state.size
            [first] = n.store.cosignature_lines(size, [wkey])
            later(200)
            n.cosigner.run_once(http)
            assert asked == ["/add-checkpoint"]  # 200 s: not asked again yet
            later(101)
            n.cosigner.run_once(http)
            assert asked == ["/add-checkpoint"] * 2
            [newer] = n.store.cosignature_lines(size, [wkey])
            at = [cosignature.Cosignature.parse_line(x).timestamp for x in (first, newer)]
            assert at[1] - at[0] >= 301, at
            assert n.cosigner.cosigned_at == {wkey: at[1]}  # what /metrics shows
            checkpoint = n.store.block_for_size(size).checkpoint  # type: ignore[union-attr]
            assert reads.cosigned(n) == (size, checkpoint + newer)
            assert reads.bundle(n, 2)["witnessed"]["checkpoint"] == checkpoint + first
            for line in (first, newer):
                assert cosignature.cosignatures_of(
                    checkpoint + line, [cosignature.parse_verifier_key(wkey)])
            assert [r[2] for r in n.store.iter_cosigned_checkpoints()] == [first]
            # The witness's clock 1,000 s behind: every line it returns looks old at once,
            # yet it is asked once a period by this process's clock.
            behind = types.SimpleNamespace(time=lambda: real() + skew[0] - 1000)
            monkeypatch.setattr(witness_module, "time", behind)
            later(301)
            for _ in range(3):
                n.cosigner.run_once(http)
            assert len(asked) == 3
            later(301)
            n.cosigner.run_once(http)
            assert len(asked) == 4
            monkeypatch.setattr(witness_module, "time", time)
            later(301)
            n.cosigner.run_once(http)
            [newer] = n.store.cosignature_lines(size, [wkey])  # its clock right: newest again
            n.cosigner.refresh = 0
            later(10_000)
            n.cosigner.run_once(http)
            assert len(asked) == 5
    finally:
        n.store.close()
    rep = audit_registry(n.settings)
    assert rep.ok, rep.problem
    assert any("1 witnesses' newest cosignatures verify" in c for c in rep.checked), rep.checked
    n = open_registry(tmp_path / "a")
    try:
        n.store.execute_raw("UPDATE fresh_cosignatures SET line = '"
                            + flip_cosignature("x\n" + newer).split("\n", 1)[1] + "'")
    finally:
        n.store.close()
    rep = audit_registry(n.settings)
    assert not rep.ok
    assert f"the newest cosignature by {wkey} (tree size {size})" in str(rep.problem)


def test_an_idle_log_keeps_a_recent_cosignature_that_a_monitor_can_require(
        tmp_path: Path, port: int, witness_key: FileSigner) -> None:
    """D133 end to end, with the witness thread and a witness served over HTTP: a log that
    does not grow keeps its witness's newest cosignature recent, so a monitor reading the
    witness and requiring a cosignature younger than 5 s finds it `consistent` after 7 s of
    idleness; a log that stopped asking (refresh 0) is `old` after as long."""
    from copyledger.service.monitor import Follower, Mirror, WitnessSource
    from tests.test_monitor import node_fetch
    from tests.test_monitor_witness import read

    n = open_witnessed(tmp_path / "a", port, witness_key)
    n.cosigner.refresh = 1.0
    w = make_witness(tmp_path, witness_key, n)
    n.start()
    try:
        with WitnessServer(w, port):
            fill(n, 3)
            wait_for(lambda: cosigned_up_to_date(n), "not cosigned")
            follower = Follower(Mirror(tmp_path / "m"), node_fetch(n), n.verifier_key, [
                WitnessSource.at_witness(cosignature.parse_verifier_key(vkey_of(witness_key)),
                                         read(w), "w")], max_age=5)
            size = n.sequencer.state.size
            time.sleep(7)
            # Fresh within a moment: a second's rounding and a slow cosigner round trip on a
            # loaded machine can make one poll see it old; a log that never refreshes stays so.
            wait_for(lambda: follower.poll().witnesses[0].status == "consistent",
                     "the idle log's cosignature grew old", 30)
            (view,) = follower.poll().witnesses
            assert (view.status, view.tree_size) == ("consistent", size), view
            n.cosigner.refresh = 0
            time.sleep(7)
            (view,) = follower.poll().witnesses
            assert (view.status, view.tree_size) == ("old", size), view
            assert n.sequencer.state.size == size  # idle all along
    finally:
        n.stop()
