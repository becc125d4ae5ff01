"""A host whose data directory holds another log key refuses to serve the log (D116)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.note import parse_verifier_key, verify_note
from copyledger.ledger.store import BlockRow
from copyledger.service.node import Node, read_verifier_key
from copyledger.service.settings import Settings
from tests.helpers import settings_for
from tests.test_index_start import submit_work


def test_a_host_set_up_with_keys_of_its_own_refuses_to_serve_the_log(
    tmp_path: Path, database_url: str,
) -> None:
    """Host A serves the log. Host B was set up by its own `init` on the same database (its
    own notary key) instead of a copy of A's data directory: B refuses to start, naming the
    key, so it never signs a block of this log; the log is untouched. A copy of A's data
    directory starts and signs with A's key."""
    a = settings_for(tmp_path / "a", database_url)
    size, _ = log_work(a, "first")
    # B: a file key whatever the suite's backend (under the HSM pass A's key is the token's).
    b = settings_for(tmp_path / "b", database_url, key_backend="file")
    with pytest.raises(InvalidInput, match="not signed by this data directory's log key") as e:
        Node.open(b)
    assert read_verifier_key(b) in str(e.value) and read_verifier_key(b) != read_verifier_key(a)

    copy_starts_and_signs(a, tmp_path / "c", database_url, size)


def log_work(s: Settings, title: str) -> tuple[int, BlockRow | None]:
    """Start a node on `s`, log one work, stop: the log's size and latest block after it."""
    reg = Node.open(s)
    reg.start()
    try:
        submit_work(reg, title)
        return reg.store.tree_size(), reg.store.latest_block()
    finally:
        reg.stop()


def copy_starts_and_signs(a: Settings, home: Path, database_url: str, size: int,
                          **over: str) -> None:
    """A copy of A's data directory starts on the log as B left it (`size` entries: B wrote
    nothing) and signs its next block with A's current key."""
    shutil.copytree(a.data_dir, home / "data")
    reg = Node.open(settings_for(home, database_url, **over))
    reg.start()
    try:
        assert reg.store.tree_size() == size
        submit_work(reg, "second")
        last = reg.store.latest_block()
        assert last is not None
        verify_note(last.checkpoint, [parse_verifier_key(read_verifier_key(a))])
    finally:
        reg.stop()


def test_a_process_started_on_an_empty_log_is_checked_again_when_it_takes_the_lock(
    tmp_path: Path, database_url: str,
) -> None:
    """D116 at the lock: host B, set up with keys of its own, starts while the log is still
    empty (nothing to check then); host A begins the log. When B comes to take the lock, it
    finds the log's latest checkpoint not signed by its keys: it gives the lock up, signs
    nothing, and is barred, like a host with another hand-over secret (D113)."""
    b = Node.open(settings_for(tmp_path / "b", database_url, key_backend="file", workers=2))
    log_work(settings_for(tmp_path / "a", database_url), "first")
    starts_barred(b)


def starts_barred(b: Node) -> None:
    """`b` (a `--workers` node, so it tries the lock at `start`) is barred when it comes to
    lead, never leads, and leaves the log as it was; stopped afterwards."""
    from tests.helpers import wait_for

    size, last = b.store.tree_size(), b.store.latest_block()
    b.start()
    try:
        wait_for(lambda: getattr(b.sequencer, "barred", False), "barred for its keys")
        assert not getattr(b.sequencer, "leading", True)
        assert b.store.tree_size() == size and b.store.latest_block() == last
    finally:
        b.stop()


def test_a_host_with_the_keys_of_before_a_rotation_refuses_during_the_overlap(
    tmp_path: Path, database_url: str,
) -> None:
    """D118: host B holds a copy of A's data directory from before A's `notary rotate`. During
    the overlap the log's checkpoints are signed by the retired key too, which B holds as its
    current one, so D116's check alone let B start and, sequencing, sign without the new key
    (verifiers pinned to it refuse that). B now refuses, naming the key it lacks, and so does a
    copy lacking the retired key's file (it would sign without that one); A, and a whole copy
    of A's rotated data directory, start."""
    from datetime import timedelta

    from copyledger.ledger.note import parse_note
    from copyledger.service.operations import rotate_keys

    a = settings_for(tmp_path / "a", database_url, key_backend="file")
    log_work(a, "first")
    shutil.copytree(a.data_dir, tmp_path / "b" / "data")
    rotate_keys(a, timedelta(hours=24))
    size, last = log_work(a, "after the rotation")
    assert last is not None and len(parse_note(last.checkpoint).signatures) == 2  # overlap
    new_key = parse_verifier_key(read_verifier_key(a))
    b = settings_for(tmp_path / "b", database_url, key_backend="file")
    with pytest.raises(InvalidInput, match="neither uses nor lists as retired") as e:
        Node.open(b)
    assert new_key.key_id.hex() in str(e.value)

    # A copy without the retired key's private key would sign the overlap without it.
    shutil.copytree(a.data_dir, tmp_path / "d" / "data")
    (tmp_path / "d" / "data" / "notary" / "retired" / "1" / "log-key.pem").unlink()
    with pytest.raises(InvalidInput, match="retired log key 1 still co-signs"):
        Node.open(settings_for(tmp_path / "d", database_url, key_backend="file"))

    copy_starts_and_signs(a, tmp_path / "c", database_url, size, key_backend="file")


def test_a_process_whose_keys_were_rotated_under_it_does_not_lead_until_restarted(
    tmp_path: Path, database_url: str,
) -> None:
    """D121: process B loaded A's log key, and the data directory was then rotated under it (a
    `notary rotate` while B followed). The log's latest checkpoint is still signed by the key B
    loaded, now retired, so D116/D118's check of the keys on disk passes; but B signs with what
    it loaded, so leading it would sign the overlap without the new key. B refuses to lead,
    signs nothing and is barred; a process started afterwards loads the new keys and leads."""
    from datetime import timedelta

    from copyledger.ledger.note import parse_note
    from copyledger.service.operations import rotate_keys

    a = settings_for(tmp_path / "a", database_url, key_backend="file")
    log_work(a, "first")
    b = Node.open(settings_for(tmp_path / "a", database_url, key_backend="file", workers=2))
    old_key = read_verifier_key(a)
    rotate_keys(a, timedelta(hours=24))
    new_key = read_verifier_key(a)
    starts_barred(b)
    with pytest.raises(InvalidInput, match="changed after this process started") as e:
        b.check_loaded_keys()
    assert new_key in str(e.value)

    _, last = log_work(a, "after the rotation")
    assert last is not None
    assert {s.key_id for s in parse_note(last.checkpoint).signatures} == {
        parse_verifier_key(k).key_id for k in (old_key, new_key)}
