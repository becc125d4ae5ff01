"""A key or certificate file appears whole or not at all, even when the process writing it is
killed (D196): before, `write_new_file` created the file under its name and then wrote it, so
a kill -9 in between left an empty or partial key that every later start failed to load (and
that D176's lost-key check could not tell from a good one)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from copyledger.ledger.errors import Conflict
from copyledger.notary.signer import remove_stray_writes, write_new_file
from copyledger.service.node import init_data_dir
from tests.helpers import HSM, settings_for
from tests.test_rotation_crash import audit_ok, registry
from tests.test_sm import sm_settings

# A process that writes 1 MiB through write_new_file with a write that stops after the first
# 16 bytes (and says so), so the parent can kill it mid-file.
CHILD = """
import os, sys, time
from pathlib import Path
from copyledger.notary import signer
real = os.write
def slow(fd, data):
    n = real(fd, bytes(data[:16]))
    Path(sys.argv[2]).touch()
    time.sleep(120)
    return n
signer.os.write = slow
signer.write_new_file(Path(sys.argv[1]), b"k" * (1 << 20), 0o600)
"""


def test_a_file_killed_while_written_is_not_left_under_its_name(tmp_path: Path) -> None:
    path, marker = tmp_path / "log-key.pem", tmp_path / "writing"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, "child did not write"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert not path.exists()  # whole or not at all: the next start makes it or says it is lost
    # what it left (the key's first bytes, 0600) is a stray the next start removes
    [stray] = [p for p in tmp_path.iterdir() if p.name.startswith(".log-key.pem.")]
    assert stray.stat().st_mode & 0o777 == 0o600
    (tmp_path / ".kept.tmp").write_bytes(b"")  # (not a name write_new_file makes)
    remove_stray_writes(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kept.tmp", "writing"]
    write_new_file(path, b"key", 0o600)  # and it can be written then
    assert path.read_bytes() == b"key" and path.stat().st_mode & 0o777 == 0o600


def test_a_start_removes_what_stopped_key_writes_left(tmp_path: Path) -> None:
    """A key write killed midway (above) leaves `.<name>.<hex>.tmp` in `notary/` or
    `notary/tsa/`, a private key's partial copy: `init` (every start) removes it, under the
    keys lock, and nothing else."""
    s = settings_for(tmp_path)
    init_data_dir(s)
    notary, tsa = s.verifier_key_path.parent, s.tsa_dir
    strays = [notary / ".log-key.pem.0123456789abcdef.tmp",
              tsa / ".tsa-key.pem.fedcba9876543210.tmp"]
    for p in strays:
        p.write_bytes(b"-----BEGIN")
    before = {d: sorted(os.listdir(d)) for d in (notary, tsa)}
    init_data_dir(s)
    for d, names in before.items():
        assert sorted(os.listdir(d)) == [n for n in names if n not in {p.name for p in strays}]


def test_a_new_file_is_exact_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "tsa.pem"
    old = os.umask(0o077)
    try:
        write_new_file(path, b"cert", 0o644)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"cert" and path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(Conflict, match="already exists"):
        write_new_file(path, b"other", 0o644)
    assert path.read_bytes() == b"cert"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tsa.pem"]  # no temporary left


# `init` in a process that kills itself (SIGKILL) as it is about to write the file named
# argv[1]: the TSA chains' certificates are written last, so what is left is a key and a root.
INIT_KILLED = """
import os, signal, sys
from pathlib import Path
from copyledger.notary import sm2_tsa, tsa
from copyledger.service.node import init_data_dir
from tests.helpers import settings_for
from tests.test_sm import sm_settings

def killing(real):
    def write(path, data, mode):
        if Path(path).name == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data, mode)
    return write

tsa.write_new_file = killing(tsa.write_new_file)
sm2_tsa.write_new_file = killing(sm2_tsa.write_new_file)
init_data_dir((sm_settings if sys.argv[3] == "sm" else settings_for)(Path(sys.argv[2])))
"""


#: a chain's certificate: its key file and root
CHAINS = {"tsa.pem": ("tsa-key.pem", "root.pem"),
          "sm2-tsa.pem": ("sm2-tsa-key.pem", "sm2-root.pem")}


@pytest.mark.parametrize(("suite", "certificate"), [
    ("standard", "tsa.pem"), ("sm", "tsa.pem"), ("sm", "sm2-tsa.pem")])
def test_an_init_killed_before_a_tsa_certificate_is_finished_by_the_next(
        tmp_path: Path, suite: str, certificate: str) -> None:
    """Before: the next `init` refused, "tsa-key.pem already exists; refusing to overwrite a
    TSA chain", so a registry whose first start was killed there never started. Now what the
    stopped creation left (its key, never used, and root) is set aside, kept, and a whole
    chain made, under which the registry signs and audits."""
    s = (sm_settings if suite == "sm" else settings_for)(tmp_path)
    child = subprocess.run([sys.executable, "-c", INIT_KILLED, certificate, str(tmp_path),
                            suite], capture_output=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    tsa = s.data_dir / "notary" / "tsa"
    keyfile, root = CHAINS[certificate]
    # (a standard registry's TSA key with an HSM is in the token, reused by the next init:
    # no file; an SM registry's keys are files, D40)
    left = {root} if HSM and suite == "standard" else {keyfile, root}
    assert {p.name for p in tsa.iterdir()} >= left and not (tsa / certificate).exists()
    before = {name: (tsa / name).read_bytes() for name in left}
    init_data_dir(s)
    aside = {p.name.split(".unfinished-")[0]: p for p in tsa.iterdir()
             if ".unfinished-" in p.name}
    assert set(aside) == left, aside
    for name, data in before.items():  # kept as they were, not deleted
        assert aside[name].read_bytes() == data and (tsa / name).read_bytes() != data
    if keyfile in aside:
        assert aside[keyfile].stat().st_mode & 0o777 == 0o600
    registry(s, works=1)  # signs and time-stamps under the new chain
    audit_ok(s.data_dir)


@pytest.mark.parametrize("gone", ["certificate", "certificate and root", "TSA folder"])
def test_a_signed_log_whose_tsa_chain_and_verifier_key_are_gone_is_refused(
        tmp_path: Path, gone: str) -> None:
    """With the verifier key deleted too (a public file `init` makes again), nothing said the
    chain had signed. D198's review: the TSA key beside a missing `tsa.pem` was set aside as
    a stopped init's, so no earlier token chained to the new root. D200's review: deleting
    every public file of the chain (`tsa.pem`, `root.pem`; with an HSM the TSA key stays in
    the token) or the whole `tsa/` folder left nothing to set aside, and the next start made
    a new chain (certifying, with an HSM, the token's TSA key under a new root). A log with a
    block has signed: the start is refused, and nothing is made or renamed; with the files
    put back it starts and the audit passes."""
    s = settings_for(tmp_path)
    registry(s, works=1)
    tsa = s.data_dir / "notary" / "tsa"
    saved = tmp_path / "saved"
    saved.mkdir()
    names = {"certificate": ["tsa.pem"], "certificate and root": ["tsa.pem", "root.pem"],
             "TSA folder": [p.name for p in tsa.iterdir()]}[gone]
    for name in names:
        os.rename(tsa / name, saved / name)
    if gone == "TSA folder":
        tsa.rmdir()
    vkey = s.verifier_key_path.read_text()
    s.verifier_key_path.unlink()
    before = sorted(os.listdir(tsa)) if tsa.exists() else None
    with pytest.raises(Conflict, match=r"tsa\.pem is missing, and so is its verifier key"):
        init_data_dir(s)
    assert not s.verifier_key_path.exists()
    assert (sorted(os.listdir(tsa)) if tsa.exists() else None) == before
    tsa.mkdir(mode=0o700, exist_ok=True)
    for name in names:
        os.rename(saved / name, tsa / name)
    init_data_dir(s)  # every key there: the verifier key is made again, the same
    assert s.verifier_key_path.read_text() == vkey
    audit_ok(s.data_dir)


@pytest.mark.parametrize("suite", ["standard", "sm"])
def test_a_log_key_swapped_for_another_is_refused(tmp_path: Path, suite: str) -> None:
    """D202's review: a log key file (or an SM-suite registry's SM2 key file) replaced by
    another key was loaded, and `init` rewrote the published verifier key with it; only a
    later start refused (D116). `init` now refuses, and the published key stays."""
    from copyledger.notary.signer import FileSigner
    from copyledger.notary.sm2 import Sm2Signer

    s = sm_settings(tmp_path) if suite == "sm" else settings_for(tmp_path, key_backend="file")
    registry(s, works=1)
    key, published = ((s.sm2_key_path, s.sm2_verifier_key_path) if suite == "sm"
                      else (s.log_key_path, s.verifier_key_path))
    before, mine = published.read_text(), key.read_bytes()
    key.unlink()
    if suite == "sm":
        Sm2Signer.generate(s.origin, key, s.sm2_distid.encode())
    else:
        FileSigner.generate(s.origin, key)
    with pytest.raises(Conflict, match="publishes the verifier key"):
        init_data_dir(s)
    assert published.read_text() == before
    key.unlink()
    key.write_bytes(mine)
    os.chmod(key, 0o600)
    init_data_dir(s)
    audit_ok(s.data_dir)


def test_keys_are_made_under_the_keys_lock(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """D198's review: a start made keys (and set leftovers aside) without the lock a rotation
    holds, so it could set aside the chain a rotation was making. The lock is held wherever
    a TSA chain is made: at init and in a rotation, through its new keys. D200's review: a
    rotation also read the last rotation (its `valid_from`) before the lock and sealed its
    entry after it, so another rotation could come between; both are under it now (D204)."""
    from copyledger.service import node as node_mod
    from copyledger.service import operations as operations_mod
    from copyledger.service.rotation import LOCK

    s = settings_for(tmp_path)
    made: list[str] = []

    def locked(name: str, real: Any) -> Any:
        def checked(*a: Any, **kw: Any) -> Any:
            fd = os.open(s.data_dir / "notary" / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:  # (another open file: blocked as another process would be)
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
            made.append(name)
            return real(*a, **kw)
        return checked

    monkeypatch.setattr(node_mod, "init_tsa_chain",
                        locked("chain", node_mod.init_tsa_chain))
    init_data_dir(s)
    assert made == ["chain"]
    if not HSM:  # (rotation covers file keys)
        registry(s, works=1)
        del made[:]
        monkeypatch.setattr(operations_mod, "retired_keys",
                            locked("read", operations_mod.retired_keys))
        node = operations_mod.Node
        monkeypatch.setattr(node, "stop", locked("sealed", node.stop))
        operations_mod.rotate_keys(s, timedelta(hours=1))
        # the last rotation read, the rotation's new chain, its entry sealed (the node that
        # sealed it stopped): all under the lock
        assert made[0] == "read" and "chain" in made and made[-1] == "sealed", made
