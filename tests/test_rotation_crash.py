"""A key rotation stopped at any step (kill -9, power lost) is mended by the next start: undone
if it was not yet recorded in rotations.json, finished (its new keys made, D186) if it was. The
stop is simulated in-process: every change the rotation makes to the file system (rename,
replace, unlink, mkdir, rmdir) is counted, and the k-th raises an exception nothing catches,
for each k in turn until a rotation runs through. rotations.json and the TSA roots are trust
anchors, read with `trusted_text`'s checks; a stand-alone notary and an SM-suite registry that
lost a key are refused as a registry is (D176)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from copyledger.api.app import create_app
from copyledger.cli.main import app as cli_app
from copyledger.ledger import sm2
from copyledger.ledger.documents import Rotation, parse_entry
from copyledger.ledger.errors import Conflict
from copyledger.ledger.store import Store
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from copyledger.service.operations import rotate_keys
from copyledger.service.rotation import retired_keys, sha256_text
from copyledger.service.settings import Settings, load
from tests.helpers import HSM, settings_for, work_body

pytestmark = pytest.mark.skipif(HSM, reason="rotation of file keys; HSM keys rotate by label")

CHANGES = ("rename", "replace", "unlink", "mkdir", "rmdir")


class Killed(BaseException):
    """The process stopped here: nothing after this point ran (no `except Exception`)."""


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli_app, list(args))
    return r.exit_code, r.stdout + (r.stderr if r.stderr_bytes else "")


def registry(s: Settings, works: int = 2) -> None:
    """A registry with a few works registered (so a log, blocks and tokens to audit)."""
    node = Node.open(s)
    try:
        key, _ = create_key(node.store, "creator", "alice")
        with TestClient(create_app(node)) as c:
            for i in range(works):
                sm3 = {"sm3": sm2.sm3_hex(f"crash{i}".encode())} if s.sm_suite else {}
                r = c.post("/v1/works", json=work_body(f"crash{i}", **sm3),
                           headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 201, r.text
    finally:
        node.stop()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("rotcrash")
    registry(settings_for(tmp))
    return tmp / "data"


def killed_at(k: int, d: Path) -> bool:
    """Rotate the keys of the registry in `d`, stopped before the rotation's (k+1)-th change
    to the file system made by this thread (the sequencer's own thread is left alone); True
    if it was stopped."""
    main, done = threading.current_thread(), 0

    def stopping(real: Callable[..., Any]) -> Callable[..., Any]:
        def change(*a: Any, **kw: Any) -> Any:
            nonlocal done
            if threading.current_thread() is main:
                if done == k:
                    raise Killed
                done += 1
            return real(*a, **kw)
        return change

    with pytest.MonkeyPatch.context() as mp:
        for name in CHANGES:
            mp.setattr(os, name, stopping(getattr(os, name)))
        try:
            rotate_keys(load(d), timedelta(hours=1))
        except Killed:
            return True
    return False


def audit_ok(d: Path) -> None:
    code, out = run("audit", "--data-dir", str(d), "--json")
    assert code == 0 and json.loads(out)["ok"] is True, out


def serve_once(d: Path) -> None:
    """Start the registry in `d` as `serve` does (it leads) and stop it once what its lead
    queued is sealed."""
    node = Node.open(load(d))
    node.start()
    try:
        for sealed in node.rotation_sealed:
            sealed.result(60)
    finally:
        node.stop()


def rotations_logged(d: Path) -> int:
    """How many rotations the log records, after checking that each one rotations.json
    records has exactly one `rotation` entry, naming its old and its new key (the next
    rotation's old one, or the key now published), and none else is logged."""
    s = load(d)
    done = retired_keys(s)
    now = (s.verifier_key_path.read_text().strip(), (s.tsa_dir / "root.pem").read_text(),
           s.sm2_verifier_key_path.read_text().strip() if s.sm_suite else None)
    news = [(r.verifier_key, r.tsa_root, r.sm2_verifier_key) for r in done[1:]] + (
        [now] if done else [])
    store = Store.open(s.database_url)
    try:
        for old, (new, new_root, new_sm2) in zip(done, news, strict=True):
            found = store.search_sha256(sha256_text(new), kind="rotation")
            assert len(found) == 1, (old.n, len(found))
            entry = parse_entry(found[0].data)
            assert isinstance(entry, Rotation)
            assert (entry.old_verifier_key, entry.new_verifier_key) == (old.verifier_key, new)
            assert entry.overlap_until == old.overlap_until
            assert (entry.old_tsa_root_sha256, entry.new_tsa_root_sha256) == (
                sha256_text(old.tsa_root), sha256_text(new_root))
            assert (entry.old_sm2_verifier_key, entry.new_sm2_verifier_key) == (
                old.sm2_verifier_key, new_sm2)
        with store.engine.connect() as conn:
            logged = conn.exec_driver_sql(
                "SELECT count(*) FROM entries WHERE kind = 'rotation'").scalar_one()
    finally:
        store.close()
    assert logged == len(done), (logged, len(done))
    return len(done)


def test_a_rotation_stopped_at_any_step_is_undone_or_finished_by_the_next_start(
        tmp_path: Path, template: Path) -> None:
    """Before: a stop between the file moves and rotations.json left keys moved to
    notary/retired/1 that nothing recorded, and every start refused them as lost (exit 2)."""
    old_key = (template / "notary" / "log-key.pem").read_bytes()
    old_vkey = (template / "notary" / "log.vkey").read_text()
    k, undone, finished = 0, 0, 0
    while True:
        d = tmp_path / f"k{k}"
        shutil.copytree(template, d)
        if not killed_at(k, d):
            break  # the rotation ran through: every step before was tried
        code, out = run("audit", "--data-dir", str(d), "--json")  # before any start: clean,
        assert ((code == 0 and json.loads(out)["ok"] is True)  # or a refusal naming `init`
                or (code == 2 and "run `copyledger init`" in " ".join(out.split()))), (k, out)
        code, out = run("init", "--data-dir", str(d), "--json")
        assert code == 0, (k, out)
        notary = d / "notary"
        assert not (notary / "rotation-intent.json").exists(), k
        if not (notary / "rotations.json").exists():  # stopped before its record: undone
            undone += 1
            assert (notary / "log-key.pem").read_bytes() == old_key, k
            assert (notary / "log.vkey").read_text() == old_vkey, k
            assert not (notary / "retired" / "1").exists(), k
        else:  # stopped after its record: finished (its new keys made)
            finished += 1
            assert json.loads(out)["verifier_key"] + "\n" != old_vkey, k
            assert (notary / "retired" / "1" / "log-key.pem").read_bytes() == old_key, k
            # Its entry is sealed by the next process to lead (D206; before, no entry ever
            # recorded it): a start, or the next rotation's.
            if k % 2:
                serve_once(d)
                assert rotations_logged(d) == 1, k
        audit_ok(d)
        code, out = run("notary", "rotate", "--data-dir", str(d), "--json")  # rotates still
        assert code == 0, (k, out)
        audit_ok(d)
        assert rotations_logged(d) == (2 if (notary / "retired" / "2").exists() else 1), k
        k += 1
    assert undone >= 4 and finished >= 2, (undone, finished)  # the moves, and the keys made


def test_a_rotation_run_again_after_a_stop_mends_the_stopped_one_first(
        tmp_path: Path, template: Path) -> None:
    """`notary rotate` run again at once (no start between) undoes a stopped rotation not yet
    recorded and rotates; one recorded but without new keys is refused, naming `init`.
    Before: a stop between the moves gave a FileNotFoundError traceback on the rerun."""
    k, outcomes, both = 0, set(), False
    while True:
        d = tmp_path / f"k{k}"
        shutil.copytree(template, d)
        if not killed_at(k, d):
            break
        code, out = run("notary", "rotate", "--data-dir", str(d), "--json")
        if code == 2:
            assert "run `copyledger init`" in " ".join(out.split()), (k, out)
            assert run("init", "--data-dir", str(d))[0] == 0
            serve_once(d)
            assert rotations_logged(d) == 1, k  # (D206: before, it had no entry)
        else:
            assert code == 0, (k, out)
            # 2 when the stopped one had made its new keys but not sealed its entry: the
            # rerun's start seals it before its own (D206)
            both |= rotations_logged(d) == 2
        outcomes.add(code)
        audit_ok(d)
        k += 1
    assert outcomes == {0, 2} and both, (outcomes, both)


def test_a_rotation_entry_that_failed_to_be_sealed_is_sealed_later(
        tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """D206's review: a failure to seal a missing rotation entry (here: reading what it
    needs fails once) is logged, and the entry is sealed at the next try while the process
    leads (a minute later; 0.2 s here). Before the review nothing tried again."""
    import copyledger.service.node as node_mod

    d = tmp_path / "data"
    shutil.copytree(template, d)
    with monkeypatch.context() as mp:  # a rotation whose entry was never sealed
        mp.setattr(Node, "seal_rotations", lambda self: [])
        with pytest.raises(Conflict, match="not sealed"):
            rotate_keys(load(d), timedelta(hours=1))
    assert len(retired_keys(load(d))) == 1
    calls: list[int] = []
    real = node_mod.rotation_entries

    def flaky(*a: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("a disk that failed once")
        return real(*a)

    monkeypatch.setattr(node_mod, "rotation_entries", flaky)
    monkeypatch.setattr(node_mod, "ROTATION_RETRY_S", 0.2)
    node = Node.open(load(d))
    node.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                f.done() and f.exception() is None for f in node.rotation_sealed):
            time.sleep(0.05)
        assert len(calls) == 2 and len(node.rotation_sealed) == 1
        node.rotation_sealed[0].result(0)
    finally:
        node.stop()
    assert rotations_logged(d) == 1
    audit_ok(d)


def test_a_process_that_takes_over_the_lead_seals_a_missing_rotation_entry(
        tmp_path: Path, template: Path) -> None:
    """D206 through the Handoff (`serve --workers`): the process that leads first seals
    nothing here (as one from before D206 would not), another follows; once the first stops,
    the follower takes the log's lock and, coming to lead, seals the entry the log lacks."""
    from dataclasses import replace

    from copyledger.service.handoff import Handoff

    d = tmp_path / "data"
    shutil.copytree(template, d)
    with pytest.MonkeyPatch.context() as mp:  # a rotation whose entry was never sealed
        mp.setattr(Node, "seal_rotations", lambda self: [])
        with pytest.raises(Conflict, match="not sealed"):
            rotate_keys(load(d), timedelta(hours=1))
    s = replace(load(d), workers=2)
    first = Node.open(s)
    first.seal_rotations = lambda: []  # type: ignore[method-assign]
    first.start()
    second: Node | None = None
    first_running = True
    try:
        assert isinstance(first.sequencer, Handoff) and first.sequencer.leading
        second = Node.open(s)
        second.start()
        assert isinstance(second.sequencer, Handoff) and not second.sequencer.leading
        assert second.rotation_sealed == []
        first.stop()
        first_running = False
        deadline = time.monotonic() + 30
        while not second.rotation_sealed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.sequencer.leading and len(second.rotation_sealed) == 1
        second.rotation_sealed[0].result(60)
    finally:
        if first_running:
            first.stop()
        if second is not None:
            second.stop()
    assert rotations_logged(d) == 1
    audit_ok(d)


@pytest.mark.parametrize("k", [4, 7])
def test_an_sm_registry_s_stopped_rotation_is_mended_with_its_sm2_key(
        tmp_path: Path, k: int) -> None:
    """An SM-suite rotation moves the SM2 note key first: stopped after that move (4 changes:
    the intent, two directories, the SM2 key) it is undone, SM2 key and all; stopped after
    its record (7), it is finished."""
    from tests.test_sm import sm_settings

    s = sm_settings(tmp_path)
    registry(s, works=1)
    sm2_key = s.sm2_key_path.read_bytes()
    assert killed_at(k, s.data_dir)
    assert not s.sm2_key_path.exists()
    code, out = run("init", "--data-dir", str(s.data_dir))
    assert code == 0, out
    retired = s.data_dir / "notary" / "retired" / "1" / "log-sm2-key.pem"
    if k == 4:
        assert s.sm2_key_path.read_bytes() == sm2_key and not retired.exists()
    else:
        assert s.sm2_key_path.read_bytes() != sm2_key and retired.read_bytes() == sm2_key
    serve_once(s.data_dir)  # (D206: the finished one's entry, SM2 keys and all, sealed)
    assert rotations_logged(s.data_dir) == (0 if k == 4 else 1)
    audit_ok(s.data_dir)


def test_a_stopped_rotation_whose_keys_were_restored_by_hand_is_refused_clearly(
        tmp_path: Path, template: Path) -> None:
    """Keys both back in notary/ and in the unrecorded retired directory: nothing is guessed,
    the refusal names what to compare and what to remove."""
    d = tmp_path / "data"
    shutil.copytree(template, d)
    # stopped after its 4th change (the intent, two directories, the log key moved)
    assert killed_at(4, d)
    moved = d / "notary" / "retired" / "1" / "log-key.pem"
    assert moved.exists() and not (d / "notary" / "log-key.pem").exists()
    shutil.copy(moved, d / "notary" / "log-key.pem")  # an operator's own restore
    code, out = run("init", "--data-dir", str(d))
    flat = out.replace("\n", "")  # (long paths are wrapped)
    assert code == 2 and "still holds files" in flat and "rotation-intent.json" in flat, out


@pytest.mark.parametrize("anchor", ["notary/rotations.json", "notary/tsa/root.pem"])
def test_rotations_and_tsa_roots_are_read_as_trust_anchors(
        tmp_path: Path, template: Path, anchor: str) -> None:
    """Before: both were read whatever their mode, so anyone who could write them could add a
    log key or TSA root of their own to what the audit (and /v1/notary/keys) trusts."""
    d = tmp_path / "data"
    shutil.copytree(template, d)
    assert run("notary", "rotate", "--data-dir", str(d))[0] == 0
    audit_ok(d)
    os.chmod(d / anchor, 0o666)
    code, out = run("audit", "--data-dir", str(d), "--json")
    assert code == 2 and "can be written by other users" in " ".join(out.split()), out


def test_a_rotations_file_an_older_release_wrote_with_the_umask_is_narrowed_at_start(
        tmp_path: Path, template: Path) -> None:
    """Rotations before D194 wrote rotations.json with the umask's mode (0664 under 0002);
    read as a trust anchor it was refused, so the registry stopped starting on upgrade. In
    the 0700 notary/ no other user could write it: the start narrows it to 0644."""
    d = tmp_path / "data"
    shutil.copytree(template, d)
    assert run("notary", "rotate", "--data-dir", str(d))[0] == 0
    path = d / "notary" / "rotations.json"
    os.chmod(path, 0o664)
    assert run("init", "--data-dir", str(d))[0] == 0
    assert path.stat().st_mode & 0o777 == 0o644
    audit_ok(d)


def test_a_rotations_file_that_is_not_json_is_a_clear_error(
        tmp_path: Path, template: Path) -> None:
    d = tmp_path / "data"
    shutil.copytree(template, d)
    (d / "notary" / "rotations.json").write_text('[{"n": 1}]')
    os.chmod(d / "notary" / "rotations.json", 0o644)  # (whatever the umask)
    code, out = run("audit", "--data-dir", str(d))
    assert code == 2 and "cannot read" in out and "Traceback" not in out, out


@pytest.mark.parametrize("lost", ["tsa", "log-key.pem"])
def test_a_stand_alone_notary_that_lost_a_key_is_not_given_a_new_one(
        tmp_path: Path, lost: str) -> None:
    """D186 left: `notary init` made any missing key anew, as a registry's start did (D176)."""
    d = tmp_path / "notary"
    assert run("notary", "init", "--data-dir", str(d), "--origin", "n.example/log")[0] == 0
    vkey = (d / "notary" / "log.vkey").read_text()
    path = d / "notary" / lost
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    code, out = run("notary", "init", "--data-dir", str(d), "--origin", "n.example/log")
    assert code == 2 and "is missing: restore it from a backup" in " ".join(out.split()), out
    assert not path.exists() and (d / "notary" / "log.vkey").read_text() == vkey


@pytest.mark.parametrize("lost", ["all", "sm2-tsa.pem"])
def test_an_sm_registry_that_lost_its_sm2_tsa_chain_is_not_given_a_new_one(
        tmp_path: Path, lost: str) -> None:
    """D186 left: a lost SM2 TSA chain was made anew at the next start, and the next block's
    SM2 token chained to a root no verifier pinned."""
    from tests.test_sm import sm_settings

    s = sm_settings(tmp_path)
    registry(s, works=1)
    tsa = s.data_dir / "notary" / "tsa"
    names = ["sm2-tsa.pem", "sm2-tsa-key.pem", "sm2-root.pem"] if lost == "all" else [lost]
    for name in names:
        (tsa / name).unlink()
    with pytest.raises(Exception, match="is missing: restore it from a backup"):
        Node.open(s)
    assert all(not (tsa / name).exists() for name in names)


def test_an_sm_registry_made_before_sm2_tokens_gets_its_sm2_tsa_chain(tmp_path: Path) -> None:
    """A guard: a registry whose log has no SM2 token (made before D51) is given its first
    SM2 TSA chain, as before."""
    from tests.test_sm import sm_settings

    s = sm_settings(tmp_path)
    Node.open(s).stop()  # keys made, no block sealed yet
    tsa = s.data_dir / "notary" / "tsa"
    for name in ("sm2-tsa.pem", "sm2-tsa-key.pem", "sm2-root.pem"):
        (tsa / name).unlink()
    Node.open(s).stop()
    assert (tsa / "sm2-tsa.pem").exists()
