"""A host whose data directory holds another log key refuses to serve the log (D116)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from copyledger.ledger.errors import Conflict, InvalidInput
from copyledger.ledger.note import parse_verifier_key, verify_note
from copyledger.ledger.store import BlockRow
from copyledger.service.node import Node, init_notary_keys, read_verifier_key
from copyledger.service.settings import Settings
from tests.helpers import settings_for
from tests.test_index_start import submit_work


def test_a_host_set_up_with_keys_of_its_own_refuses_to_serve_the_log(
    tmp_path: Path, database_url: str,
) -> None:
    """Host A serves the log. Host B was set up by its own `init` on the same database (its
    own notary key) instead of a copy of A's data directory: B refuses to start, naming the
    key, so it never signs a block of this log; the log is untouched. A copy of A's data
    directory starts and signs with A's key. B with a data directory of no keys at all is
    refused before it makes any (D202): the log has signed, so its keys are missing."""
    a = settings_for(tmp_path / "a", database_url)
    size, _ = log_work(a, "first")
    # B: a file key whatever the suite's backend (under the HSM pass A's key is the token's).
    b = settings_for(tmp_path / "b", database_url, key_backend="file")
    with pytest.raises(Conflict, match="copy the data directory of a host that serves it"):
        Node.open(b)
    assert not b.verifier_key_path.exists() and not b.log_key_path.exists()
    # (a data directory of no keys for another log: the database is the wrong one, not the
    # keys lost)
    elsewhere = settings_for(tmp_path / "e", database_url, origin="elsewhere.example/log")
    with pytest.raises(InvalidInput, match=r"the database holds log 'test\.example/log', not"):
        Node.open(elsewhere)
    assert not elsewhere.verifier_key_path.exists()
    init_notary_keys(b)  # keys of its own, as an `init` on another database makes them
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


@pytest.mark.parametrize("suite", ["standard", "sm"])
def test_a_process_whose_keys_were_rotated_under_it_does_not_lead_until_restarted(
    tmp_path: Path, database_url: str, suite: str,
) -> None:
    """D121: process B loaded A's keys, and the data directory was then rotated under it (a
    `notary rotate` while B followed). The log's latest checkpoint is still signed by the key B
    loaded, now retired, so D116/D118's check of the keys on disk passes; but B signs with what
    it loaded, so leading it would sign the overlap without the new key (and, on an SM-suite
    registry, without the new SM2 key). B refuses to lead, signs nothing and is barred; so is
    a process whose notary/ cannot be read; a process started afterwards loads the new keys and
    leads, its block signed by the old and new keys."""
    from datetime import timedelta

    from copyledger.ledger import sm2
    from copyledger.ledger.errors import WrongLogKey
    from copyledger.ledger.note import parse_note
    from copyledger.service.operations import rotate_keys

    a = settings_for(tmp_path / "a", database_url, key_backend="file", crypto_suite=suite)
    log_work(a, "first")
    b = Node.open(replace(a, workers=2))

    def key_ids() -> set[bytes]:
        ids = {parse_verifier_key(read_verifier_key(a)).key_id}
        if a.sm_suite:
            ids.add(sm2.parse_verifier_key(a.sm2_verifier_key_path.read_text().strip()).key_id)
        return ids

    old = key_ids()
    rotate_keys(a, timedelta(hours=24))
    new_keys = [read_verifier_key(a)]  # the message names one of them
    if a.sm_suite:
        new_keys.append(a.sm2_verifier_key_path.read_text().strip())
    starts_barred(b)
    with pytest.raises(WrongLogKey, match="changed after this process started") as e:
        b.check_loaded_keys()
    assert any(k in str(e.value) for k in new_keys)
    a.verifier_key_path.rename(tmp_path / "moved")
    with pytest.raises(WrongLogKey, match="keys cannot be read"):
        b.check_loaded_keys()
    (tmp_path / "moved").rename(a.verifier_key_path)

    _, last = log_work(a, "after the rotation")
    assert last is not None
    assert {s.key_id for s in parse_note(last.checkpoint).signatures} == old | key_ids()


@pytest.mark.parametrize("suite", ["standard", "sm"])
def test_a_process_whose_tsa_certificate_was_replaced_under_it_does_not_lead(
    tmp_path: Path, database_url: str, suite: str,
) -> None:
    """D121 for the TSA: the log key unchanged but notary/tsa/ replaced under a process (a new
    chain; on an SM-suite registry, a new SM2 TSA chain with the ECDSA one left as it was): its
    tokens would come from a certificate the directory no longer holds, so it is refused when
    it comes to lead, naming the certificate on disk."""
    import hashlib

    from copyledger.ledger.errors import WrongLogKey
    from copyledger.ledger.sm2_timestamp import load_certificates
    from copyledger.notary.keys import init_tsa_chain
    from copyledger.notary.sm2_tsa import create_sm2_tsa_chain
    from copyledger.service.node import key_config

    a = settings_for(tmp_path / "a", database_url, key_backend="file", crypto_suite=suite)
    node = Node.open(a)
    try:
        node.check_loaded_keys()  # as loaded: passes
        other = tmp_path / "other"
        if a.sm_suite:
            create_sm2_tsa_chain(other, a.origin)
            names, which = ("sm2-tsa.pem", "sm2-root.pem", "sm2-tsa-key.pem"), "SM2 TSA"
        else:
            init_tsa_chain(key_config(a), other, a.origin)
            names, which = ("tsa.pem", "root.pem", "tsa-key.pem"), "TSA"
        for name in names:
            if (other / name).exists():
                shutil.copy(other / name, a.tsa_dir / name)
        new = load_certificates((a.tsa_dir / names[0]).read_bytes())[0]
        with pytest.raises(WrongLogKey) as e:
            node.check_loaded_keys()
        assert f"({which} certificate sha256:{hashlib.sha256(new).hexdigest()} is one" in str(
            e.value)
    finally:
        node.stop()
