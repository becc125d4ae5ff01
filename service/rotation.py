"""Key rotation: a new log key and TSA certificate, without breaking what was signed before.

`copyledger notary rotate` moves the current key and TSA chain to `notary/retired/<n>/`, makes
new ones in their place (an SM-suite registry's SM2 note key and SM2 TSA chain too, D57), and
notes the retired key's validity in `notary/rotations.json`.
Until `overlap_until`, checkpoints and block notes carry both keys' signatures, so a verifier
that pinned either key accepts them; afterwards only the new key signs. Retired public keys
stay published (/v1/notary/keys, bundles) with the period they were valid, so everything signed
before still verifies. The rotation itself is a ledger entry (kind `rotation`), sealed in a
block that both keys sign (or, sealed late after a stopped rotation, the keys of that moment:
D206).

A rotation is crash-safe: it first writes `notary/rotation-intent.json` (durably) naming the
retired directory it moves the keys to, and removes it once the move is recorded in
`rotations.json`. The next start (or rotation) finds an intent left behind and, if the record
was not written, puts the keys back (`finish_stopped_rotation`): a rotation stopped before its
record is undone, one stopped after it is finished by the start (D186), never refused as lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import sm2
from copyledger.ledger.entry import parse_timestamp
from copyledger.ledger.errors import Conflict, InvalidInput, said
from copyledger.ledger.sequencer import Pending
from copyledger.ledger.sm2_timestamp import load_certificates
from copyledger.notary.signer import FileSigner, Signer, fsync_dir, replace_file
from copyledger.notary.sm2 import Sm2Signer
from copyledger.notary.sm2_tsa import SM2_ROOT_FILE, SM2_TSA_CERT_FILE
from copyledger.notary.tsa import ROOT_FILE, TSA_CERT_FILE
from copyledger.service.fsperm import private_dir, trusted_text
from copyledger.service.settings import Settings

ROTATIONS = "rotations.json"
INTENT = "rotation-intent.json"  # a rotation under way: the retired directory it moves to
LOCK = ".rotation.lock"
SM2_KEY_FILE = "log-sm2-key.pem"  # a retired SM2 note key, beside the retired log key


@dataclass(frozen=True)
class Retired:
    n: int
    verifier_key: str
    valid_from: str | None
    valid_until: str  # when the key stopped being the current one
    overlap_until: str  # until when it still co-signs
    tsa_root: str
    tsa_chain: list[str]
    key_path: Path
    # An SM-suite registry's SM2 note key and SM2 TSA chain, retired with the others (D57).
    sm2_verifier_key: str | None = None
    sm2_tsa_root: str | None = None
    sm2_tsa_certificate_sm3: str | None = None  # SM3 (hex) of the retired SM2 TSA cert's DER
    sm2_key_path: Path | None = None

    def sm2_retirement(self) -> dict[str, str] | None:
        """What a verifier needs to refuse an SM2 token its certificate signed after this
        rotation: the certificate (by SM3, as the token's ESS id names it) and when."""
        if self.sm2_tsa_certificate_sm3 is None:
            return None
        return {"certificate_sm3": self.sm2_tsa_certificate_sm3, "retired_at": self.valid_until}


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


log = logging.getLogger("copyledger.rotation")


def retired_keys(s: Settings) -> list[Retired]:
    """The rotations recorded, read as a trust anchor (`trusted_text`): whoever could rewrite
    the file could add a key of their own to those the audit and verifiers accept."""
    path = s.data_dir / "notary" / ROTATIONS
    if not path.exists():
        return []
    out = []
    try:
        for r in json.loads(trusted_text(path, s.data_dir)):
            base = s.data_dir / "notary" / "retired" / str(int(r["n"]))
            out.append(Retired(r["n"], r["verifier_key"], r.get("valid_from"),
                               r["valid_until"], r["overlap_until"], r["tsa_root"],
                               r["tsa_chain"], base / "log-key.pem", r.get("sm2_verifier_key"),
                               r.get("sm2_tsa_root"), r.get("sm2_tsa_certificate_sm3"),
                               base / SM2_KEY_FILE if r.get("sm2_verifier_key") else None))
    except (ValueError, KeyError, TypeError) as e:  # (UnicodeDecodeError is a ValueError)
        raise InvalidInput(said("cannot read {path}: {error}", path=path,
                                error=str(e))) from None
    return out


def _retiring(s: Settings, dest: Path, *, sm2: bool | None = None) -> list[tuple[Path, Path]]:
    """What a rotation moves, and where (the SM2 TSA chain lives in the TSA directory); the
    SM2 key with `sm2` (default: an SM-suite registry's)."""
    sm2 = s.sm_suite if sm2 is None else sm2
    return [*([(s.sm2_key_path, dest / SM2_KEY_FILE)] if sm2 else []),
            (s.log_key_path, dest / "log-key.pem"), (s.tsa_dir, dest / "tsa")]


_held = threading.local()  # the notary folders whose keys lock this thread holds


@contextlib.contextmanager
def keys_lock(notary: Path) -> Iterator[None]:
    """Held while the key files in `notary` change: by a rotation from its intent to its new
    keys, by whoever mends a stopped one, and by a start that makes missing keys. A start must
    not undo a rotation still running (`rotate_keys` does not hold the sequencer lock while it
    moves the keys), nor set aside a chain another process is making (D198's review). Taken
    again by the thread that holds it, it is already held; a killed process's lock is
    released with it."""
    held: set[str] = _held.__dict__.setdefault("paths", set())
    if not notary.is_dir():  # (a first init's; no change to the file system otherwise)
        private_dir(notary)
    name = os.path.realpath(notary)
    if name in held:
        yield
        return
    fd = os.open(notary / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # (held for a few renames, or the keys' making)
        held.add(name)
        try:
            yield
        finally:
            held.discard(name)
    finally:
        os.close(fd)


def narrow_rotations(s: Settings) -> None:
    """Take group and other write off `rotations.json`, which rotations before D194 wrote
    with the umask's mode (0664 under umask 0002): it is read as a trust anchor now, which
    refuses a file others may write, though in the 0700 `notary/` no one else could. Only
    there: a file others could have reached is left to be refused."""
    path = s.data_dir / "notary" / ROTATIONS
    try:
        st, parent = path.lstat(), path.parent.stat()
    except FileNotFoundError:
        return
    if (st.st_uid == parent.st_uid == os.geteuid() and not parent.st_mode & 0o077
            and stat.S_ISREG(st.st_mode) and st.st_mode & 0o022):
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o022)


def finish_stopped_rotation(s: Settings) -> int | None:
    """Mend a rotation stopped part-way (killed, power lost) from its intent, if one is left;
    the number of the rotation it mended, or None. Recorded in rotations.json: the rotation
    only has to forget its intent (the start then makes its new keys, D186). Not recorded:
    the keys it moved to notary/retired/N go back where they were and the rotation is undone,
    to be run again; nothing was signed with a new key, which is made only after the record."""
    notary = s.data_dir / "notary"
    if not (notary / INTENT).exists():
        return None  # (the common case: no lock taken)
    with keys_lock(notary):
        return _finish_stopped(s)


def _finish_stopped(s: Settings) -> int | None:
    """`finish_stopped_rotation`'s work, under the rotation lock."""
    notary = s.data_dir / "notary"
    intent = notary / INTENT
    if not intent.exists():
        return None  # (it was a rotation under way, which has ended)
    try:
        n = json.loads(trusted_text(intent, s.data_dir))["n"]
        if type(n) is not int or n < 1:
            raise ValueError(f"n = {n!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidInput(said("cannot read {path}: {error}", path=intent,
                                error=str(e))) from None
    if all(r.n != n for r in retired_keys(s)):
        dest = notary / "retired" / str(n)
        # (the SM2 key too, whatever the settings say)
        for live, moved in _retiring(s, dest, sm2=True):
            if moved.exists() and not live.exists():
                with contextlib.suppress(FileNotFoundError):  # another start put it back
                    os.rename(moved, live)
        fsync_dir(notary)  # (every key lives in notary/, the TSA chain in notary/tsa/)
        try:
            dest.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            raise Conflict(said(
                "a key rotation stopped before it was recorded, and {dest} still holds "
                "files although the keys are back in {notary}: compare them with the "
                "registry's keys, keep the right ones in {notary}, then remove {dest} and "
                "{intent}", dest=dest, notary=notary, intent=intent)) from None
        log.warning("a key rotation (%d) stopped before it was recorded: its keys were put "
                    "back; run `copyledger notary rotate` again", n)
    else:
        log.warning("a key rotation (%d) stopped after it was recorded: a start makes its "
                    "new keys", n)
    with contextlib.suppress(FileNotFoundError):
        intent.unlink()
    fsync_dir(notary)
    return n


def overlapping(s: Settings) -> list[tuple[Retired, datetime]]:
    """Retired keys still inside their overlap (they co-sign), with the moment each stops."""
    now = _now()
    return [(r, until) for r in retired_keys(s)
            if (until := parse_timestamp(r.overlap_until)) > now]


def overlap_signers(s: Settings, passphrase: bytes | None) -> list[tuple[Signer, datetime]]:
    """Retired keys still inside their overlap, with the moment each stops co-signing."""
    return [(FileSigner.load(s.origin, r.key_path, passphrase), until)
            for r, until in overlapping(s) if r.key_path.exists()]


def overlap_sm2_signers(s: Settings,
                        passphrase: bytes | None) -> list[tuple[Sm2Signer, datetime]]:
    """Retired SM2 note keys still inside their overlap: they add their SM2 line, as the
    retired Ed25519 key adds its own, so a verifier that pinned either SM2 key accepts."""
    return [(Sm2Signer.load(s.origin, r.sm2_key_path, s.sm2_distid.encode(), passphrase), until)
            for r, until in overlapping(s)
            if r.sm2_key_path is not None and r.sm2_key_path.exists()]


def rotate(s: Settings, *, overlap: timedelta, valid_from: str | None) -> Retired:
    """Retire the current log key and TSA chain (the caller makes the new ones). Each step
    can be stopped (`finish_stopped_rotation`): the intent is on disk before a key moves,
    each move is a rename (whole or not at all), and the record is written last."""
    if s.key_backend != "file" or s.notary_url:
        raise InvalidInput("rotation here covers keys in files; HSM keys and a stand-alone "
                           "notary's keys have no rotation yet (notary.md §6.2)")
    notary = s.data_dir / "notary"
    with keys_lock(notary):
        return _rotate(s, overlap, valid_from)


def _rotate(s: Settings, overlap: timedelta, valid_from: str | None) -> Retired:
    """`rotate`'s work, under the rotation lock."""
    notary = s.data_dir / "notary"
    _finish_stopped(s)
    done = retired_keys(s)
    n = max((r.n for r in done), default=0) + 1
    dest = notary / "retired" / str(n)
    vkey = trusted_text(s.verifier_key_path, s.data_dir).strip()
    needed = [s.log_key_path, s.tsa_dir / ROOT_FILE, s.tsa_dir / TSA_CERT_FILE,
              *([s.sm2_key_path, s.tsa_dir / SM2_ROOT_FILE, s.tsa_dir / SM2_TSA_CERT_FILE]
                if s.sm_suite else [])]
    if (done and done[-1].verifier_key == vkey) or not all(p.exists() for p in needed):
        # (the last rotation stopped after its record: its new keys are not all made yet)
        raise Conflict(said("the last key rotation is not finished or a key is missing: run "
                            "`copyledger init`, which finishes a stopped rotation or names "
                            "what to restore"))
    now = _now()
    tsa_root = trusted_text(s.tsa_dir / ROOT_FILE, s.data_dir)
    chain_text = (s.tsa_dir / TSA_CERT_FILE).read_text()
    record: dict[str, Any] = {
        "n": n, "verifier_key": vkey, "valid_from": valid_from, "valid_until": _ts(now),
        "overlap_until": _ts(now + overlap), "tsa_root": tsa_root, "tsa_chain": [chain_text],
    }
    if s.sm_suite:  # the SM2 note key and SM2 TSA chain retire with the others (D57)
        sm2_cert = load_certificates((s.tsa_dir / SM2_TSA_CERT_FILE).read_bytes())[0]
        record |= {
            "sm2_verifier_key": trusted_text(s.sm2_verifier_key_path, s.data_dir).strip(),
            "sm2_tsa_root": trusted_text(s.tsa_dir / SM2_ROOT_FILE, s.data_dir),
            "sm2_tsa_certificate_sm3": sm2.sm3_hex(sm2_cert),
        }
    intent = json.dumps({"n": n, "retired_to": f"retired/{n}"}) + "\n"
    replace_file(notary / INTENT, intent.encode(), 0o644)
    (notary / "retired").mkdir(exist_ok=True, mode=0o700)
    dest.mkdir(mode=0o700)
    fsync_dir(notary / "retired")  # (the keys' new home, durable before they move into it)
    for live, moved in _retiring(s, dest):  # renames: each whole or not at all
        os.rename(live, moved)
    fsync_dir(dest)
    fsync_dir(notary)  # (every key lives in notary/, the TSA chain in notary/tsa/)
    # The record: from here the rotation is done but for its new keys (a start makes them).
    replace_file(notary / ROTATIONS,
                 (json.dumps([*(_record(r) for r in done), record], indent=2) + "\n").encode(),
                 0o644)
    (notary / INTENT).unlink()
    fsync_dir(notary)
    return retired_keys(s)[-1]


def _record(r: Retired) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": r.n, "verifier_key": r.verifier_key, "valid_from": r.valid_from,
        "valid_until": r.valid_until, "overlap_until": r.overlap_until,
        "tsa_root": r.tsa_root, "tsa_chain": r.tsa_chain}
    if r.sm2_verifier_key is not None:
        out |= {"sm2_verifier_key": r.sm2_verifier_key, "sm2_tsa_root": r.sm2_tsa_root,
                "sm2_tsa_certificate_sm3": r.sm2_tsa_certificate_sm3}
    return out


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def rotation_entries(s: Settings, current_vkey: str) -> list[tuple[str, Pending]]:
    """Each recorded rotation's `rotation` entry, oldest first, with its content hash (the
    new verifier key's, by which the log is searched for it): both keys, both TSA roots'
    hashes (and the SM2 twins, D57) and the overlap. A rotation's new keys are the next
    record's old ones, or for the last, the keys now in `notary/` (`current_vkey` and the
    files), read as trust anchors are (D194's review)."""
    done = retired_keys(s)
    out = []
    nexts: list[Retired | None] = [*done[1:], None] if done else []
    for old, new in zip(done, nexts, strict=True):
        new_vkey = new.verifier_key if new else current_vkey
        if new_vkey == old.verifier_key:  # (the last: stopped after its record, its new
            log.warning("rotation %d names the key it retired as its successor: no entry "
                        "for it", old.n)  # keys not made yet, D186; else a record edited)
            continue
        entry: dict[str, object] = {
            "schema": entry_mod.SCHEMA, "kind": "rotation", "registrant": "notary",
            "received_at": entry_mod.utc_now(), "content": {"sha256": sha256_text(new_vkey)},
            "old_verifier_key": old.verifier_key, "new_verifier_key": new_vkey,
            "old_tsa_root_sha256": sha256_text(old.tsa_root),
            "new_tsa_root_sha256": sha256_text(
                new.tsa_root if new else trusted_text(s.tsa_dir / ROOT_FILE, s.data_dir)),
            "overlap_until": old.overlap_until,
        }
        if old.sm2_verifier_key is not None and old.sm2_tsa_root is not None:  # D57
            new_sm2 = ((new.sm2_verifier_key, new.sm2_tsa_root) if new else
                       (trusted_text(s.sm2_verifier_key_path, s.data_dir).strip(),
                        trusted_text(s.tsa_dir / SM2_ROOT_FILE, s.data_dir)))
            if new_sm2[0] is None or new_sm2[1] is None:  # (the suite is fixed at init, D40)
                why = f"rotation {new.n if new else old.n} has no SM2 keys"
                raise InvalidInput(said("cannot read {path}: {error}",
                                        path=s.data_dir / "notary" / ROTATIONS, error=why))
            entry |= {
                "old_sm2_verifier_key": old.sm2_verifier_key,
                "new_sm2_verifier_key": new_sm2[0],
                "old_sm2_tsa_root_sha256": sha256_text(old.sm2_tsa_root),
                "new_sm2_tsa_root_sha256": sha256_text(new_sm2[1]),
            }
        _, data = entry_mod.encode(entry)
        digest = sha256_text(new_vkey)
        out.append((digest, Pending(data, "rotation", digest, "notary",
                                    received_at=str(entry["received_at"]))))
    return out
