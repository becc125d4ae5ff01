"""A monitor and mirror: follows a log through its C2SP tlog-tiles and keeps a verified copy.

A court or platform runs it against a registry it does not operate. Each `Follower.poll` reads
the log's `/checkpoint` and accepts it only if

- a pinned key signed it, for the log (origin) the mirror has followed from the start;
- its tree extends the last tree the mirror verified: the new entries come from the entry
  bundles, each entry must hash to its leaf in the level-0 tile and pass entry validation, and
  appending those leaf hashes to the stored frontier must give the checkpoint's root. Every
  hash tile of the new tree must then equal the mirror's own nodes.

Because every accepted tree is the previous one extended, each checkpoint is consistent with
every one seen before, without a proof from the log. Anything else is a `LogMisbehaved` naming
what the log served and what the mirror holds; a split view also names the first tree size at
which the two trees differ and both roots there. Nothing is stored from a poll that fails.

A checkpoint of a smaller tree whose root is the copy's own root at that size is an earlier
state of the same tree: a cache in front of the log, or a process of it that has not yet heard
of its newest block, can serve one for a moment (D129). Such a poll holds and reports the
stale view (`Update.stale`) while the tree that replaced it (the smallest larger one the
mirror verified) was verified less than `stale_grace` seconds ago; a tree replaced longer ago
than that is no cache's or lag's doing, and is a rollback alert. A smaller tree that is not a
prefix of the copy is an alert at once.

The copy (entries, every complete Merkle node, every verified checkpoint) is one SQLite file,
`mirror.sqlite`, in the monitor's data directory. From it alone `Mirror.proof` answers an
inclusion proof of any entry to any checkpoint the mirror verified (the registry's
`/v1/entries/{seq}/proof` shape, plus the entry and the C2SP tlog-proof text), and
`Mirror.read_node_range` / `read_entry_data` are what `service.tiles.read_tile` needs to serve
the mirror's tiles. It cannot answer what the log never put in its tiles: block headers, RFC 3161
tokens, the notary's TSA certificates (a full evidence bundle needs the registry).

With witnesses (`WitnessSource`: a pinned witness key and where to read the checkpoint it
cosigned: the witness's own tlog-witness monitor retrieval path, or the log's cosigned
checkpoint), each poll that held then compares what the witnesses cosigned with the copy: a
checkpoint signed by the log and cosigned by the witness whose tree is not the copy's at that
size is a split view (a `fork` alert naming the witness, both sizes and both roots), even if the
log never showed the monitor that tree (D43). A cosigned tree larger than the copy waits until
the copy reaches that size; one that does not verify proves nothing and is only reported.

Fetching is injected (`Fetch`: a tlog-tiles path such as `checkpoint` or `tile/0/000.p/5` to its
bytes, NotFound if absent), so the CLI passes `copyledger.client.tiles.TileFetcher` and tests
pass bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from copyledger.ledger import cosignature, jcs, merkle, note
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import tiles as t
from copyledger.ledger.errors import (
    Conflict,
    CopyledgerError,
    InvalidInput,
    NotFound,
    SignatureError,
    VerificationError,
    said,
)
from copyledger.ledger.tlog_proof import TlogProof, format_tlog_proof

__all__ = [
    "MIRROR_FILE",
    "STALE_GRACE_S",
    "WITNESS_STATUSES",
    "Alert",
    "Fetch",
    "Follower",
    "LogMisbehaved",
    "Mirror",
    "MonitorStatus",
    "Stale",
    "Update",
    "VerifiedCheckpoint",
    "WitnessSource",
    "WitnessView",
    "open_follower",
    "parse_witness_option",
]

MIRROR_FILE = "mirror.sqlite"

STALE_GRACE_S = 300.0
"""How long a log may serve earlier states of the verified tree before it is a rollback: far
beyond the few seconds tlog-tiles lets a checkpoint be cached, within a few default polls."""

Fetch = Callable[[str], bytes]
"""A tlog-tiles path (no leading slash) to its bytes; raises ledger.errors.NotFound if absent."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL,
    hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL,
    note TEXT NOT NULL, verified_at TEXT NOT NULL);
"""


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint the mirror accepted: its tree, the signed note verbatim, and when."""

    size: int
    root: bytes
    note: str
    verified_at: str


class Mirror:
    """The verified copy in `directory/mirror.sqlite`. It pins the log's origin and verifier key
    the first time it follows one and refuses to follow another into the same copy."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / MIRROR_FILE
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- what it follows

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def verifier_key(self) -> str | None:
        return self._meta("verifier_key")

    def pin(self, verifier_key: str) -> note.Verifier:
        """The verifier of `verifier_key`, remembered on first use; Conflict if the mirror
        already follows a log under another key (a new key is a new mirror)."""
        verifier = note.parse_verifier_key(verifier_key)
        held = self.verifier_key
        if held is None:
            self._db.execute("INSERT INTO meta VALUES ('verifier_key', ?)", (verifier_key,))
        elif held != verifier_key:
            raise Conflict(said("{path} follows the log of key {held}, not {key}", path=self.path,
                                held=held, key=verifier_key))
        return verifier

    # --- reads

    def latest(self) -> VerifiedCheckpoint | None:
        row = self._db.execute("SELECT size, root, note, verified_at FROM checkpoints "
                               "ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else VerifiedCheckpoint(row[0], bytes(row[1]), row[2], row[3])

    def checkpoint(self, size: int) -> VerifiedCheckpoint:
        row = self._db.execute("SELECT size, root, note, verified_at FROM checkpoints "
                               "WHERE size = ?", (size,)).fetchone()
        if row is None:
            raise NotFound(said("the mirror verified no checkpoint of size {size}", size=size))
        return VerifiedCheckpoint(row[0], bytes(row[1]), row[2], row[3])

    def sizes(self) -> list[int]:
        """Every tree size the mirror verified a checkpoint of, in order."""
        return [r[0] for r in self._db.execute("SELECT size FROM checkpoints ORDER BY size")]

    def replaced(self, size: int) -> VerifiedCheckpoint | None:
        """The smallest verified checkpoint larger than `size`: the tree that replaced it."""
        row = self._db.execute("SELECT size, root, note, verified_at FROM checkpoints "
                               "WHERE size > ? ORDER BY size LIMIT 1", (size,)).fetchone()
        return None if row is None else VerifiedCheckpoint(row[0], bytes(row[1]), row[2], row[3])

    def read_hashes(self, ids: Sequence[merkle.NodeId]) -> list[bytes]:
        """A merkle.HashReader over the stored nodes."""
        out = []
        for level, idx in ids:
            row = self._db.execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?",
                                   (level, idx)).fetchone()
            if row is None:
                raise NotFound(said("Merkle node {value} is not in the mirror", value=(level, idx)))
            out.append(bytes(row[0]))
        return out

    def read_node_range(self, level: int, lo: int, hi: int) -> dict[int, bytes]:
        """Stored hashes at `level` with lo <= idx < hi (a hash tile)."""
        rows = self._db.execute("SELECT idx, hash FROM nodes WHERE level = ? AND idx >= ? "
                                "AND idx < ?", (level, lo, hi))
        return {i: bytes(h) for i, h in rows}

    def read_entry_data(self, lo: int, hi: int) -> list[bytes]:
        """The entries lo <= seq < hi, in order (an entry bundle)."""
        rows = self._db.execute("SELECT data FROM entries WHERE seq >= ? AND seq < ? "
                                "ORDER BY seq", (lo, hi))
        return [bytes(d) for (d,) in rows]

    def proof(self, seq: int, size: int | None = None) -> dict[str, Any]:
        """Inclusion proof of entry `seq` in the tree of a checkpoint the mirror verified (the
        latest by default), from the mirror alone: the registry's `/v1/entries/{seq}/proof`
        members, plus the entry and the same proof as C2SP tlog-proof text."""
        cp = self.latest() if size is None else self.checkpoint(size)
        if cp is None:
            raise NotFound(said("the mirror holds no verified checkpoint yet"))
        if not 0 <= seq < cp.size:
            raise InvalidInput(said("seq {seq} is not in the mirror's tree of size {size}", seq=seq,
                                    size=cp.size))
        data = self.read_entry_data(seq, seq + 1)[0]
        path = merkle.inclusion_proof(seq, cp.size, self)
        leaf = self.read_hashes([(0, seq)])[0]
        merkle.verify_inclusion(seq, cp.size, leaf, path, cp.root)  # the copy is still intact
        return {
            "seq": seq,
            "tree_size": cp.size,
            "leaf_hash": leaf.hex(),
            "root": cp.root.hex(),
            "proof": [h.hex() for h in path],
            "checkpoint": cp.note,
            "entry": jcs.parse(data),
            "tlog_proof": format_tlog_proof(TlogProof(seq, path, cp.note, extra=data)),
        }

    # --- writes (only Follower calls these)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One batch of the copy, all or nothing. A COMMIT SQLite refuses (the file locked by
        a reader, where the mirror could not be put in WAL mode) is rolled back too, so the
        connection never stays inside a transaction that every later batch would fail on
        (D109). SQLite may have rolled back by itself (a full disk): then nothing is left."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _add(self, start: int, datas: Sequence[bytes], nodes: list[tuple[int, int, bytes]]) -> None:
        self._db.executemany("INSERT INTO entries VALUES (?, ?)",
                             zip(range(start, start + len(datas)), datas, strict=True))
        self._db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", nodes)

    def _add_checkpoint(self, cp: note.Checkpoint, text: str, when: float) -> None:
        self._db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?)",
                         (cp.size, cp.root, text, _iso(when)))


@dataclass(frozen=True)
class Alert:
    """What a log did wrong, with the trees involved (roots as hex in `to_dict`).

    `kind` is one of `fork` (a checkpoint inconsistent with one verified before: a split view),
    `rollback` (a smaller tree than one verified before: at once if it is not an earlier state
    of the verified tree, else once the tree that replaced it was verified at least the
    follower's `stale_grace` ago), `bad-signature` (no valid signature by
    the pinned key, or another log's origin), `invalid-entry` (an entry that fails validation),
    `bad-tile` (a tile or bundle that contradicts the tree, another tile or the checkpoint).
    `verified_*` is the mirror's last tree, `served_*` the log's checkpoint. For a fork,
    `first_difference` is the smallest tree size at which the two trees differ and `ours` /
    `theirs` their roots at that size (None if the log's tiles do not show where). A fork found
    by a witness has `served_*` the tree the witness cosigned and `witness` naming it, where its
    checkpoint was read, when it cosigned, and `ours`: the copy's root at the cosigned size."""

    kind: str
    detail: str
    origin: str
    verified_size: int
    verified_root: bytes
    served_size: int | None = None
    served_root: bytes | None = None
    first_difference: int | None = None
    ours: bytes | None = None
    theirs: bytes | None = None
    seq: int | None = None
    witness: dict[str, Any] | None = None  # a fork shown by a witness's cosigned checkpoint

    def to_dict(self) -> dict[str, Any]:
        def h(b: bytes | None) -> str | None:
            return None if b is None else b.hex()

        return {"alert": self.kind, "detail": self.detail, "origin": self.origin,
                "verified": {"tree_size": self.verified_size, "root": h(self.verified_root)},
                "served": {"tree_size": self.served_size, "root": h(self.served_root)},
                "first_difference": None if self.first_difference is None else {
                    "tree_size": self.first_difference, "ours": h(self.ours),
                    "theirs": h(self.theirs)},
                "seq": self.seq, "witness": self.witness}


class LogMisbehaved(VerificationError):
    """The log served something the mirror cannot accept; `alert` says what and where."""

    def __init__(self, alert: Alert) -> None:
        members = alert.to_dict()
        del members["detail"]
        super().__init__(alert.detail, **members)
        self.alert = alert


@dataclass(frozen=True)
class Stale:
    """The log served an earlier state of the verified tree (a checkpoint of `tree_size`
    whose root is the copy's at that size), replaced by a tree the mirror verified at `since`
    (POSIX time); a rollback alert once `since` is the follower's `stale_grace` ago."""

    tree_size: int
    root: bytes
    since: float

    def to_dict(self) -> dict[str, Any]:
        return {"tree_size": self.tree_size, "root": self.root.hex(), "since": _iso(self.since)}


@dataclass(frozen=True)
class Update:
    """One poll that held: the tree grew from `previous_size` to `tree_size` (or stayed;
    `stale` if the log served an earlier state of it)."""

    previous_size: int
    tree_size: int
    root: bytes
    entries: int
    witnesses: tuple[WitnessView, ...] = ()  # one per configured witness, in order
    stale: Stale | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"previous_size": self.previous_size,
                               "tree_size": self.tree_size, "root": self.root.hex(),
                               "entries": self.entries}
        if self.witnesses:
            out["witnesses"] = [w.to_dict() for w in self.witnesses]
        if self.stale is not None:
            out["stale"] = self.stale.to_dict()
        return out


@dataclass(frozen=True)
class WitnessSource:
    """A witness the monitor compares its copy with: its pinned cosignature key, a Fetch and
    the path at which that Fetch returns the checkpoint the witness cosigned (None: the
    tlog-witness monitor retrieval path of the followed log's origin), and `where` (a URL,
    for reports)."""

    verifier: cosignature.CosignatureVerifier
    fetch: Fetch
    path: str | None
    where: str

    @classmethod
    def at_witness(cls, verifier: cosignature.CosignatureVerifier, fetch: Fetch,
                   where: str) -> WitnessSource:
        """Read the witness itself (tlog-witness monitor retrieval: `<origin hash>/checkpoint`
        under its URL), so a log that shows the monitor another branch cannot hide it."""
        return cls(verifier, fetch, None, where)

    @classmethod
    def at_log(cls, verifier: cosignature.CosignatureVerifier, fetch: Fetch,
               where: str) -> WitnessSource:
        """Read the log's `/v1/log/cosigned-checkpoint`, for a witness with no read endpoint:
        it only shows what the log chose to keep, but a line there still binds the witness."""
        return cls(verifier, fetch, "v1/log/cosigned-checkpoint", where)


WITNESS_STATUSES = ("consistent", "ahead", "old", "none", "unreachable", "unverified", "fork")


@dataclass(frozen=True)
class WitnessView:
    """What one witness's cosigned checkpoint said against the copy. `status`: `consistent`
    (the copy has that tree), `ahead` (a larger tree than the copy, compared once the copy
    gets there), `old` (the copy's tree, but the witness's newest cosignature is older than the
    monitor's `max_age`: the log froze, shows this reader an old tree, or stopped asking the
    witness, D133), `none` (nothing cosigned yet), `unreachable`, or `unverified` (no valid
    log signature or cosignature: it proves nothing either way); `detail` says why. (`fork`
    is an alert, not a view: `MonitorStatus` records it.)"""

    witness: str
    where: str
    status: str
    tree_size: int | None = None
    root: bytes | None = None
    cosigned_at: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"witness": self.witness, "where": self.where, "status": self.status,
                "tree_size": self.tree_size,
                "root": None if self.root is None else self.root.hex(),
                "cosigned_at": self.cosigned_at, "detail": self.detail}


def parse_witness_option(value: str) -> tuple[str | None, cosignature.CosignatureVerifier]:
    """`URL=VKEY` (read the witness at URL) or a bare `VKEY` (read the log's cosigned
    checkpoint). The URL ends at the first `=`, so it must not hold one."""
    url = None
    if value.startswith(("http://", "https://")):
        url, sep, value = value.partition("=")
        if not sep:
            raise InvalidInput(said("--witness {value}: give URL=VKEY", value=repr(url)))
    return url, cosignature.parse_verifier_key(value)


@dataclass(frozen=True)
class _Served:
    text: str
    cp: note.Checkpoint


class Follower:
    """Follows one log into one Mirror, under one pinned verifier key. `stale_grace`: seconds
    of earlier states of the verified tree before they are a rollback alert (0: at once).
    `max_age`: seconds after which a witness's newest cosignature is `old` (None: never)."""

    def __init__(self, mirror: Mirror, fetch: Fetch, verifier_key: str,
                 witnesses: Sequence[WitnessSource] = (),
                 stale_grace: float = STALE_GRACE_S,
                 clock: Callable[[], float] = time.time,
                 max_age: float | None = None) -> None:
        self.mirror = mirror
        self.fetch = fetch
        self.verifier = mirror.pin(verifier_key)
        self.witnesses = tuple(witnesses)
        self.stale_grace = stale_grace
        self.clock = clock
        self.max_age = max_age

    def poll(self) -> Update:
        """Catch up to the log's checkpoint, then compare the witnesses' cosigned checkpoints
        with the copy; LogMisbehaved if anything fails to check. Transport errors from the log
        (and NotFound for its checkpoint) pass through unchanged; a witness that cannot be read
        is only reported in `Update.witnesses`."""
        up = self._follow()
        if not self.witnesses:
            return up
        views = tuple(self._aged(self._compare(w)) for w in self.witnesses)
        return Update(up.previous_size, up.tree_size, up.root, up.entries, views, up.stale)

    def _follow(self) -> Update:
        last = self.mirror.latest()
        size, root = (last.size, last.root) if last else (0, merkle.EMPTY_ROOT)
        served = self._checkpoint(size, root)
        cp = served.cp
        if cp.size < size:
            return self._stale(size, root, cp)
        if cp.size == size:
            if cp.root != root:
                raise self._fork(size, root, cp,
                                 said("a different root for the verified tree size"))
            return Update(size, size, root, 0)
        with self.mirror._transaction():
            new_root = self._extend(size, root, cp)
            if new_root != cp.root:
                raise self._extension_mismatch(size, root, cp)
            self._check_hash_tiles(size, root, cp)
            self.mirror._add_checkpoint(cp, served.text, self.clock())
        return Update(size, cp.size, cp.root, cp.size - size)

    # --- steps

    def _checkpoint(self, size: int, root: bytes) -> _Served:
        raw = self.fetch("checkpoint")
        try:
            text, cp = self._open(raw)
        except (SignatureError, InvalidInput) as e:
            raise LogMisbehaved(Alert("bad-signature", said("checkpoint: {detail}",
                                                            detail=e.detail),
                                      self.verifier.name, size, root)) from None
        if cp.origin != self.verifier.name:
            raise LogMisbehaved(Alert("bad-signature", said(
                "checkpoint of log {origin!r}, not {name!r}", origin=cp.origin,
                name=self.verifier.name), self.verifier.name, size, root, cp.size, cp.root))
        return _Served(text, cp)

    def _open(self, raw: bytes) -> tuple[str, note.Checkpoint]:
        """The note text and checkpoint of `raw` if the pinned key signed it (any origin);
        SignatureError or InvalidInput otherwise."""
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise InvalidInput("not UTF-8") from None
        msg, _ = note.verify_note(text, [self.verifier])
        return text, note.parse_checkpoint(msg.text)

    def _extend(self, size: int, root: bytes, cp: note.Checkpoint) -> bytes:
        """Append the entries [size, cp.size) from the bundles, checked, and store them with
        their nodes (inside the caller's transaction); the new root."""
        frontier = self.mirror.read_hashes(merkle.frontier_ids(size))
        for bundle in t.iter_new_tiles(size, cp.size, entries=True):
            _, lo, _ = bundle.node_range()
            entries = self._bundle(bundle, size, root, cp)
            held = max(0, size - lo)  # entries of a partial bundle the mirror already has
            if held:
                self._check_held(lo, entries[:held], size, root, cp)
            new = entries[held:]
            for i, data in enumerate(new):
                self._validate(lo + held + i, data, size, root, cp)
            done = merkle.append(lo + held, frontier, merkle.leaf_hashes(new))
            self.mirror._add(lo + held, new, done.nodes)
            frontier = done.frontier
        return merkle.root_from_frontier(frontier)

    def _bundle(self, bundle: t.Tile, size: int, root: bytes, cp: note.Checkpoint) -> list[bytes]:
        tile = t.Tile(0, bundle.index, bundle.width)
        try:
            return t.check_bundle(bundle, self._get(bundle, size, root, cp),
                                  self._get(tile, size, root, cp))
        except VerificationError as e:
            raise self._alert("bad-tile", e.detail, size, root, cp,
                              seq=_int(e.extra.get("seq"))) from None

    def _get(self, tile: t.Tile, size: int, root: bytes, cp: note.Checkpoint) -> bytes:
        try:
            return self.fetch(tile.path())
        except NotFound:
            raise self._alert("bad-tile", said("the log does not serve {path}, which its tree "
                                               "of {size} has", path=tile.path(), size=cp.size),
                              size, root, cp) from None

    def _check_held(self, lo: int, datas: list[bytes], size: int, root: bytes,
                    cp: note.Checkpoint) -> None:
        """Entries re-served in a partial bundle must be the ones already verified."""
        ours = self.mirror.read_node_range(0, lo, lo + len(datas))
        for i, h in enumerate(merkle.leaf_hashes(datas)):
            if ours[lo + i] != h:
                raise self._fork_at(lo + i, h, size, root, cp,
                                    said("other entries in place of verified ones"))

    def _validate(self, seq: int, data: bytes, size: int, root: bytes,
                  cp: note.Checkpoint) -> None:
        """The entry must be a valid entry in its canonical bytes (what the log promises)."""
        try:
            _, canonical = entry_mod.encode(jcs.parse(data))
            if canonical != data:
                raise InvalidInput(said("not in canonical (RFC 8785) form"))
        except CopyledgerError as e:
            raise self._alert("invalid-entry", said("entry {seq}: {detail}", seq=seq,
                                                    detail=e.detail), size, root, cp,
                              seq=seq) from None

    def _check_hash_tiles(self, size: int, root: bytes, cp: note.Checkpoint) -> None:
        """Every hash tile above level 0 the new tree has must hold the mirror's own nodes, so
        the log serves other tile readers the tree it signed (level 0 went with the bundles)."""
        for tile in t.iter_new_tiles(size, cp.size):
            if tile.level == 0:
                continue
            level, lo, hi = tile.node_range()
            nodes = self.mirror.read_node_range(level, lo, hi)
            if self._get(tile, size, root, cp) != b"".join(nodes[i] for i in range(lo, hi)):
                raise self._alert("bad-tile", said("{path} does not hold the hashes of the "
                                                   "verified tree of {size}", path=tile.path(),
                                                   size=cp.size), size, root, cp)

    # --- witnesses

    def _aged(self, view: WitnessView) -> WitnessView:
        """A `consistent` view as `old` if it was cosigned more than `max_age` ago. A log that
        grows or is idle has its witnesses cosign its latest tree again and again (D133); only
        old cosignatures mean it froze, shows this reader an old tree, or stopped asking. An
        `ahead` view stays so whatever its age: it says more (a larger tree exists)."""
        if self.max_age is None or view.cosigned_at is None or view.status != "consistent":
            return view
        age = self.clock() - view.cosigned_at
        if age <= self.max_age:
            return view
        return dataclasses.replace(view, status="old", detail=said(
            "cosigned {age} s ago, more than {max_age} s: the log may have frozen, show this "
            "monitor an old tree, or have stopped asking this witness",
            age=int(age), max_age=format(self.max_age, "g")))

    def _compare(self, source: WitnessSource) -> WitnessView:
        """One witness's cosigned checkpoint against the copy (LogMisbehaved on a split view)."""
        name = source.verifier.name
        path = source.path or (hashlib.sha256(self.verifier.name.encode()).hexdigest()
                               + "/checkpoint")
        try:
            raw = source.fetch(path)
        except NotFound:
            return WitnessView(name, source.where, "none", detail=said("nothing cosigned yet"))
        except CopyledgerError as e:
            return WitnessView(name, source.where, "unreachable", detail=e.detail)
        try:
            text, cp = self._open(raw)
            if cp.origin != self.verifier.name:
                raise InvalidInput(said("a checkpoint of log {origin}", origin=repr(cp.origin)))
            cosigs = cosignature.cosignatures_of(text, [source.verifier])
            if not cosigs:
                raise InvalidInput(said("no cosignature by {name}", name=name))
        except CopyledgerError as e:
            return WitnessView(name, source.where, "unverified", detail=e.detail)
        at = max(c.timestamp for c in cosigs)
        last = self.mirror.latest()
        if last is None or cp.size > last.size:
            return WitnessView(name, source.where, "ahead", cp.size, cp.root, at,
                               said("a larger tree than the copy: compared once the copy "
                                    "has it"))
        ours = merkle.tree_hash(cp.size, self.mirror)
        if ours != cp.root:
            raise LogMisbehaved(Alert(
                "fork", said("split view: witness {name} cosigned a tree of {size} entries "
                             "with root {root}; the copy's tree of {size} has root {ours}",
                             name=name, size=cp.size, root=cp.root.hex(), ours=ours.hex()),
                cp.origin, last.size, last.root, cp.size, cp.root,
                witness={"name": name, "where": source.where, "cosigned_at": at,
                         "ours": ours.hex()}))
        return WitnessView(name, source.where, "consistent", cp.size, cp.root, at)

    # --- alerts

    def _alert(self, kind: str, detail: str, size: int, root: bytes, cp: note.Checkpoint,
               **kw: Any) -> LogMisbehaved:
        return LogMisbehaved(Alert(kind, detail, cp.origin, size, root, cp.size, cp.root, **kw))

    def _divergence(self, upto: int, cp: note.Checkpoint) -> tuple[int, bytes] | None:
        """The first leaf below `upto` where the log's level-0 tiles (of its tree of cp.size)
        leave the mirror's tree, and the log's hash there: one tile per 256 entries, stopping at
        the first difference. None if the tiles agree (or end) before `upto`."""
        for tile in t.iter_new_tiles(0, cp.size):
            if tile.level or tile.index * t.WIDTH >= upto:
                break
            _, lo, hi = tile.node_range()
            try:
                theirs = t.split_tile(self.fetch(tile.path()))
            except CopyledgerError:  # (any failure: the alert stands without its leaf, D165)
                return None
            ours = self.mirror.read_node_range(0, lo, min(hi, upto))
            for i in range(lo, min(hi, upto, lo + len(theirs))):
                if ours[i] != theirs[i - lo]:
                    return i, theirs[i - lo]
        return None

    def _fork(self, size: int, root: bytes, cp: note.Checkpoint, what: str) -> LogMisbehaved:
        """A split view, located by `_divergence` when the log's tiles show it."""
        found = self._divergence(size, cp)
        if found is not None:
            return self._fork_at(*found, size, root, cp, what)
        return self._alert("fork", said("split view: {what}; its tiles do not show where the "
                                        "trees part", what=what), size, root, cp)

    def _extension_mismatch(self, size: int, root: bytes,
                            cp: note.Checkpoint) -> LogMisbehaved:
        """The served entries, appended to the verified tree, do not give the checkpoint's root:
        a fork if the log's tiles part from the verified entries, else tiles that contradict
        the checkpoint they are served with."""
        found = self._divergence(size, cp)
        if found is not None:
            return self._fork_at(*found, size, root, cp, said(
                "a checkpoint that does not extend the verified tree"))
        return self._alert("bad-tile", said("the served entries {first}..{last} appended to the "
                                            "verified tree do not give the checkpoint's root",
                                            first=size, last=cp.size - 1), size, root, cp)

    def _stale(self, size: int, root: bytes, cp: note.Checkpoint) -> Update:
        """A smaller tree than the verified one: a stale view while it is an earlier state of
        the same tree replaced less than `stale_grace` ago; LogMisbehaved (rollback) otherwise.

        The age is that of the tree that replaced it, as this mirror verified it: no state of
        its own, so neither polls that alternate between trees nor a monitor run from cron
        reset it, and a cache (seconds) or a lagging process (D128, milliseconds) never
        reaches it."""
        if merkle.tree_hash(cp.size, self.mirror) != cp.root:
            raise self._rollback(size, root, cp)
        newer = self.mirror.replaced(cp.size)
        assert newer is not None  # (cp.size < size, and size was verified)
        since = _posix(newer.verified_at)
        if self.clock() - since < self.stale_grace:
            return Update(size, size, root, 0, stale=Stale(cp.size, cp.root, since))
        raise self._alert("rollback", said(
            "the log serves a tree of {size} entries after one of {verified} was verified (an "
            "earlier state of the same tree, replaced by the tree of {newer} entries verified "
            "at {at})", size=cp.size, verified=size, newer=newer.size, at=newer.verified_at),
                          size, root, cp)

    def _rollback(self, size: int, root: bytes, cp: note.Checkpoint) -> LogMisbehaved:
        """A smaller tree than one verified that is not an earlier state of it: a rollback,
        and a fork from where the trees part."""
        sizes = {"size": cp.size, "verified": size}
        found = self._divergence(cp.size, cp)
        if found is None:
            return self._alert("rollback", said(
                "the log serves a tree of {size} entries after one of {verified} was verified, "
                "with another root", **sizes), size, root, cp)
        seq, leaf = found
        fork = self._fork_at(seq, leaf, size, root, cp, "")
        return self._alert("rollback", said(
            "the log serves a tree of {size} entries after one of {verified} was verified, and "
            "another tree from size {first}", **sizes, first=seq + 1),
                           size, root, cp, first_difference=seq + 1, ours=fork.alert.ours,
                           theirs=fork.alert.theirs, seq=seq)

    def _fork_at(self, seq: int, their_leaf: bytes, size: int, root: bytes,
                 cp: note.Checkpoint, what: str) -> LogMisbehaved:
        """The fork at leaf `seq`: the trees of size seq + 1 are the first that differ."""
        frontier = self.mirror.read_hashes(merkle.frontier_ids(seq))
        theirs = merkle.append(seq, frontier, [their_leaf]).root
        ours = merkle.tree_hash(seq + 1, self.mirror)
        return self._alert("fork", said("split view: {what}; the trees differ from size {first} "
                                        "(entry {seq}) on: ours {ours}, the log's {theirs}",
                                        what=what, first=seq + 1, seq=seq, ours=ours.hex(),
                                        theirs=theirs.hex()),
                           size, root, cp, first_difference=seq + 1, ours=ours, theirs=theirs,
                           seq=seq)


@dataclass
class MonitorStatus:
    """What a serving monitor reports about its polls (`/metrics`): how many reached the log,
    when the last did and the last held, and the alerts by kind. The same alert raised again by
    the next poll (the log still serving the same bad state) is counted once, and `repeated`
    says so, so that a webhook hears of it once. `witnesses` is the last `WitnessView.status`
    of each configured witness (`fork` once one showed a split view), `cosigned_at` the time of
    the newest cosignature each one showed (D133). `stale_since` is the
    last poll's `Stale.since` (0: the last poll was not a stale view, or raised an alert)."""

    checks: int = 0
    last_check: float = 0.0  # POSIX time of the last poll that reached the log; 0: none yet
    last_verified: float = 0.0  # ... of the last poll that held
    alerts: Counter[str] = field(default_factory=Counter)
    last_alert: dict[str, Any] | None = None  # the latest alert (as `Alert.to_dict`)
    alerting: bool = False  # the last poll raised an alert
    repeated: bool = False  # ... the same as the one before it
    witnesses: dict[str, str] = field(default_factory=dict)
    cosigned_at: dict[str, int] = field(default_factory=dict)  # each witness's newest seen
    stale_since: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def poll(self, follower: Follower) -> Update:
        """`follower.poll()`, recorded. LogMisbehaved passes through after it is counted;
        transport errors pass through uncounted (the log was not reached)."""
        try:
            up = follower.poll()
        except LogMisbehaved as e:
            alert = e.alert.to_dict()
            with self._lock:
                self.checks, self.last_check = self.checks + 1, time.time()
                self.repeated = self.alerting and alert == self.last_alert
                if not self.repeated:
                    self.alerts[e.alert.kind] += 1
                self.last_alert, self.alerting = alert, True
                if e.alert.witness is not None:
                    self.witnesses[e.alert.witness["name"]] = "fork"
                self.stale_since = 0.0  # (a stale view that became a rollback: `alerting`)
            raise
        with self._lock:
            self.checks += 1
            self.last_check = self.last_verified = time.time()
            self.alerting = self.repeated = False
            self.witnesses.update((w.witness, w.status) for w in up.witnesses)
            self.cosigned_at.update((w.witness, w.cosigned_at) for w in up.witnesses
                                    if w.cosigned_at is not None)
            self.stale_since = 0.0 if up.stale is None else up.stale.since
        return up

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters, for one scrape."""
        with self._lock:
            return {"checks": self.checks, "last_check": self.last_check,
                    "last_verified": self.last_verified, "alerts": dict(self.alerts),
                    "alerting": self.alerting, "last_alert": self.last_alert,
                    "witnesses": dict(self.witnesses), "cosigned_at": dict(self.cosigned_at),
                    "stale_since": self.stale_since}


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _posix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _int(v: object) -> int | None:
    return v if isinstance(v, int) else None


def open_follower(directory: Path, fetch: Fetch, verifier_key: str,
                  witnesses: Sequence[WitnessSource] = (),
                  stale_grace: float = STALE_GRACE_S,
                  max_age: float | None = None) -> Follower:
    """A Follower over the mirror in `directory`; the caller closes `follower.mirror`."""
    mirror = Mirror(directory)
    try:
        return Follower(mirror, fetch, verifier_key, witnesses, stale_grace, max_age=max_age)
    except BaseException:
        mirror.close()
        raise

