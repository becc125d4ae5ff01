"""A C2SP tlog-witness (c2sp.org/tlog-witness): a separate party that cosigns a log's
checkpoint only if it extends the last one it cosigned for that log, so that an operator who
shows two different trees to two people is caught by the witness's refusal (decision D28).

HTTP-free: `Witness.add_checkpoint` takes the request body and returns the cosignature line or
raises a domain error; `api/witness_app.py` maps those to the spec's status codes. The memory
of the last cosigned checkpoint per log is a SQLite table written with synchronous=FULL, and
the check and the update happen in one IMMEDIATE transaction, committed before the
cosignature is returned: a SIGKILL after the answer cannot lose it, and two concurrent requests
(even from two processes on one data directory) cannot roll the log back.

The spec's monitor retrieval mechanism (`GET /<origin hash>/checkpoint`) is
`Witness.cosigned_checkpoint`: the last checkpoint cosigned for a log, with the log's signatures
and the cosignature line add-checkpoint returned, so a monitor compares what it was shown with
what the witness saw (D43).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copyledger.ledger import cosignature, merkle, note
from copyledger.ledger.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    ProofError,
    SignatureError,
    said,
)
from copyledger.notary.signer import FileSigner, Signer, replace_file
from copyledger.service.fsperm import private_dir

__all__ = ["LogConfig", "Witness", "init_witness_dir", "open_witness"]

KEY_FILE = "witness.key"
CONFIG_FILE = "witness.json"
STATE_FILE = "witness.sqlite3"

_SCHEMA = """CREATE TABLE IF NOT EXISTS checkpoints (
    origin TEXT PRIMARY KEY,
    size TEXT NOT NULL,      -- decimal: tree sizes are uint64, SQLite integers are int64
    root BLOB NOT NULL,
    checkpoint TEXT NOT NULL, -- the signed note as received, evidence if the log forks later
    cosignature TEXT          -- the line add-checkpoint returned for it (NULL before D43)
)"""


@dataclass(frozen=True)
class LogConfig:
    """A log the witness follows: its origin line and the keys that may sign its checkpoints."""

    origin: str
    verifiers: tuple[note.Verifier, ...]

    @classmethod
    def from_vkeys(cls, origin: str, vkeys: Sequence[str]) -> LogConfig:
        if not vkeys:
            raise InvalidInput(said("log {origin} needs at least one verifier key", origin=origin))
        return cls(origin, tuple(note.parse_verifier_key(v) for v in vkeys))


class Witness:
    """One witness key, the logs it follows, and its durable memory of what it cosigned."""

    def __init__(self, signer: Signer, logs: Sequence[LogConfig], state_path: Path) -> None:
        self.signer = signer
        self.name = signer.name
        self.key_id = cosignature.key_id(signer.name, signer.public_key)
        self.verifier_key = cosignature.format_verifier_key(signer.name, signer.public_key)
        self.logs = {log.origin: log for log in logs}
        if len(self.logs) != len(logs):
            raise InvalidInput(said("a log origin is configured twice"))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(state_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(checkpoints)")}
        if "cosignature" not in columns:  # a state file from before D43
            self._db.execute("ALTER TABLE checkpoints ADD COLUMN cosignature TEXT")

    def close(self) -> None:
        self._db.close()

    def latest(self, origin: str) -> note.Checkpoint | None:
        """The last checkpoint cosigned for `origin`, or None."""
        with self._lock:
            row = self._db.execute("SELECT checkpoint FROM checkpoints WHERE origin = ?",
                                   (origin,)).fetchone()
        return None if row is None else note.parse_checkpoint(note.parse_note(row[0]).text)

    def cosigned_checkpoint(self, origin_hash: str, now: int | None = None) -> str:
        """The last checkpoint cosigned for the log whose origin hashes (SHA-256, lowercase hex)
        to `origin_hash`: the log's note as received plus this witness's cosignature line
        (tlog-witness monitor retrieval). NotFound if it never cosigned one for that log. A row
        stored before D43 kept no line: it is cosigned again now, which states the same thing."""
        for origin in self.logs:
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                break
        else:
            raise NotFound(said("this witness follows no log of that origin hash"))
        with self._lock:
            row = self._db.execute("SELECT checkpoint, cosignature FROM checkpoints "
                                   "WHERE origin = ?", (origin,)).fetchone()
        if row is None:
            raise NotFound(said("this witness has not cosigned a checkpoint of {origin} yet",
                                    origin=origin))
        signed, line = _by_the_log(str(row[0]), self.logs[origin].verifiers), row[1]
        if line is None:
            timestamp = int(time.time()) if now is None else now
            line = self._cosign(note.parse_note(signed).text, timestamp)
        return signed + str(line)

    def _cosign(self, text: str, timestamp: int) -> str:
        message = cosignature.signed_message(text, timestamp)
        return cosignature.Cosignature(self.name, self.key_id, timestamp,
                                       self.signer.sign(message)).line()

    def add_checkpoint(self, body: bytes, now: int | None = None) -> str:
        """Cosign the checkpoint in an add-checkpoint body, or raise (the spec's order):
        InvalidInput (400) for a malformed body or `old` above the checkpoint's size,
        NotFound (404) for an unknown origin, SignatureError (403) with no valid signature by
        the log's key, Conflict (409, `size` = the witness's latest) when `old` is not that
        size, ProofError (422) when the checkpoint does not extend the last one cosigned."""
        req = cosignature.AddCheckpointRequest.from_bytes(body)
        try:
            text = note.parse_note(req.checkpoint_note).text
        except SignatureError as e:
            raise InvalidInput(e.detail) from None
        cp = note.parse_checkpoint(text)
        log = self.logs.get(cp.origin)
        if log is None:
            raise NotFound(said("this witness does not follow the log {origin}",
                                    origin=cp.origin))
        note.verify_note(req.checkpoint_note, log.verifiers)
        if req.old_size > cp.size:
            raise InvalidInput(said("old size {old_size} is above the checkpoint's {size}",
                                    old_size=req.old_size, size=cp.size))
        timestamp = int(time.time()) if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT size, root FROM checkpoints WHERE origin = ?",
                                       (cp.origin,)).fetchone()
                size, root = (0, merkle.EMPTY_ROOT) if row is None else (int(row[0]), row[1])
                if req.old_size != size:
                    raise Conflict(said("the latest checkpoint cosigned for {origin} has size "
                                        "{size}, not {old_size}", origin=cp.origin, size=size,
                                        old_size=req.old_size), size=size)
                _check_extends(size, root, cp, req.proof)
                line = self._cosign(text, timestamp)
                self._db.execute(
                    "INSERT INTO checkpoints (origin, size, root, checkpoint, cosignature)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET"
                    " size = excluded.size, root = excluded.root,"
                    " checkpoint = excluded.checkpoint, cosignature = excluded.cosignature",
                    (cp.origin, str(cp.size), cp.root,
                     _by_the_log(req.checkpoint_note.decode(), log.verifiers), line))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return line


def _check_extends(size: int, root: bytes, cp: note.Checkpoint, proof: Sequence[bytes]) -> None:
    """ProofError unless `cp` extends the tree (size, root) by `proof` (tlog-witness rules)."""
    if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
        raise ProofError(said("a checkpoint of size 0 must have the empty tree's root"))
    if size == 0:
        if proof:
            raise ProofError(said("from old size 0 the consistency proof must be empty"))
        return
    try:
        merkle.verify_consistency(size, cp.size, root, cp.root, proof)
    except ProofError as e:
        raise ProofError(said("checkpoint {size} does not extend the one cosigned at size "
                              "{old_size}: {why}", size=cp.size, old_size=size,
                              why=e.detail)) from None


# ---------------------------------------------------------------- data directory


def init_witness_dir(data_dir: Path, name: str | None = None,
                     logs: Sequence[str] = ()) -> tuple[bool, str]:
    """Create (or keep) the witness key (PEM, mode 0600) and add the logs' verifier keys
    (`origin` = the key's name) to its configuration. Returns (key created, witness vkey)."""
    private_dir(data_dir)
    config_path = data_dir / CONFIG_FILE
    config = _read_config(config_path) if config_path.exists() else {"name": name, "logs": {}}
    if name is not None and name != config["name"]:
        raise InvalidInput(said("this witness is named {name}; use a new directory",
                                name=repr(config["name"])))
    if not isinstance(config["name"], str):
        raise InvalidInput(said("a new witness needs --name"))
    known: dict[str, list[str]] = config["logs"]
    for vkey in logs:
        origin = note.parse_verifier_key(vkey).name
        if vkey not in known.setdefault(origin, []):
            known[origin].append(vkey)
    key_path = data_dir / KEY_FILE
    created = not key_path.exists()
    signer = (FileSigner.generate(config["name"], key_path) if created
              else FileSigner.load(config["name"], key_path))
    replace_file(config_path, (json.dumps(config, indent=2) + "\n").encode(), 0o644)
    return created, cosignature.format_verifier_key(signer.name, signer.public_key)


def open_witness(data_dir: Path) -> Witness:
    """The witness of an initialised data directory."""
    config_path = data_dir / CONFIG_FILE
    if not config_path.exists():
        raise NotFound(said("no witness in {data_dir}: run `copyledger witness init` first",
                            data_dir=data_dir))
    config = _read_config(config_path)
    logs = [LogConfig.from_vkeys(origin, vkeys) for origin, vkeys in config["logs"].items()]
    signer = FileSigner.load(config["name"], data_dir / KEY_FILE)
    return Witness(signer, logs, data_dir / STATE_FILE)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidInput(said("cannot read {path}: {why}", path=path, why=e)) from None
    if not isinstance(config, dict) or not isinstance(config.get("name"), str) \
            or not isinstance(config.get("logs"), dict):
        raise InvalidInput(said('{path} must be {{"name": str, "logs": {{origin: [vkey]}}}}',
                                path=path))
    return config


def _by_the_log(signed: str, verifiers: Sequence[note.Verifier]) -> str:
    """The note with only its signature lines by the log's keys (verified when it was added:
    `verify_note` checks every line by a known key). Any other line the log put in (one under
    this witness's own name, or enough to pass a reader's limit with ours) would make every
    reader of the cosigned checkpoint refuse it, hiding a fork from monitors (D165)."""
    n = note.parse_note(signed)
    ours = {(v.name, v.key_id) for v in verifiers}
    return note.format_note(n.text, [sg for sg in n.signatures if (sg.name, sg.key_id) in ours])
