"""`copyledger register DIR`: which files a folder holds, and the receipts folder that lets a
run stop anywhere and start again.

The receipts folder holds one file per verified receipt: `<sha256>.json` for the first one of a
content, `<sha256>-<seq>.json` for another entry of that content (an `--again` run's), so no
receipt is ever overwritten (`save_receipt`); and `manifest.jsonl`, one line per file: path,
SHA-256, seq, registrant, a tag of the API key used (`key_tag`), the receipt's file name, and
the `--again` run that registered it (`again_run`, null for a run without `--again`). A
registration found in the log rather than made here has its receipt too: the entry's bundle,
checked as a registration's receipt is. A line is appended only after its receipt is on disk.
(A manifest an older version wrote may hold lines with a null receipt.)

`again-run.json` names the current `--again` run (`AgainRun`): the Idempotency-Keys of its
works are made from it, so a run that stopped is resumed under the same keys.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copyledger.client.media import SNIFF_BYTES

__all__ = ["AGAIN_RUN", "MANIFEST", "AgainRun", "Hashed", "Manifest", "collect_files",
           "hash_file", "key_tag"]

MANIFEST = "manifest.jsonl"
AGAIN_RUN = "again-run.json"
RESUME_S = 23 * 3600
"""How long after its start an unfinished `--again` run is resumed: within the 24 hours a
registry keeps Idempotency-Keys by default (D41), so a resent work is still answered with what
its key recorded. Past it (or a run that can never finish, a file the registry refuses for
good), the next `--again` is a new run."""


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def collect_files(paths: Iterable[Path], include: Sequence[str] = (),
                  exclude: Sequence[str] = (), skip: Path | None = None) -> list[Path]:
    """The files to register: each file named, and every file under each folder named (sorted,
    so runs see the same order), kept if it matches an `include` glob (all when none) and no
    `exclude` glob. A glob is matched against the path relative to its folder and against the
    file name, so `*.jpg` finds JPEGs at any depth. Nothing under `skip` (the receipts folder)
    is taken."""
    skip_dir = skip.resolve() if skip is not None else None
    found: list[Path] = []
    for top in paths:
        if not top.is_dir():
            found.append(top)
            continue
        for root, dirs, files in os.walk(top):
            dirs.sort()
            here = Path(root)
            if skip_dir is not None and (here.resolve() == skip_dir
                                         or skip_dir in here.resolve().parents):
                dirs.clear()
                continue
            for name in sorted(files):
                p = here / name
                rel = p.relative_to(top).as_posix()
                if include and not _matches(rel, include):
                    continue
                if exclude and _matches(rel, exclude):
                    continue
                if p.is_file():
                    found.append(p)
    # A file named twice (`register dir dir/a.jpg`) is one file: once, where first named
    first: dict[Path, Path] = {}
    for p in found:
        first.setdefault(_as_named(p), p)
    return list(first.values())


def _as_named(path: Path) -> Path:
    """`path` absolute, its folders resolved: `d/../d/a.txt` is `d/a.txt` (and `d/ln/../a.txt`
    is wherever `d/ln/..` really is), but a link to a file stays a file of its own, as a run
    registers it."""
    return Path(os.path.realpath(path.absolute().parent)) / path.name


@dataclass(frozen=True)
class Hashed:
    """A file's SHA-256, size and first bytes (for the media type)."""

    path: Path
    sha256: str
    size: int
    head: bytes


def hash_file(path: Path) -> Hashed:
    h = hashlib.sha256()
    size = 0
    head = b""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if not head:
                head = chunk[:SNIFF_BYTES]
            h.update(chunk)
            size += len(chunk)
    return Hashed(path, h.hexdigest(), size, head)


def key_tag(key: str) -> str:
    """A short tag of an API key (it is a random secret, so its hash reveals nothing): which
    key made a registration, so a rerun with another key does not take that key's account."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Manifest:
    """The receipts folder: what earlier runs registered, and where each receipt is."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST
        self.lines: list[dict[str, Any]] = []
        if self.path.exists():
            for raw in self.path.read_text().splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue  # a line cut short by a kill: its file is looked up again
                if isinstance(line, dict):
                    self.lines.append(line)
        self._seen = {(ln.get("path"), ln.get("sha256"), ln.get("again_run"))
                      for ln in self.lines}

    def account(self, key: str) -> str | None:
        """The account the latest registration made with this API key was made by: only a
        receipt tells which account a key acts for."""
        tag = key_tag(key)
        for ln in reversed(self.lines):
            if ln.get("key") == tag and isinstance(ln.get("registrant"), str):
                return str(ln["registrant"])
        return None

    def save_receipt(self, sha256: str, receipt: dict[str, Any]) -> str:
        """Keep a receipt and return its file name, never overwriting another: `<sha256>.json`,
        else `<sha256>-<seq>.json` (a later entry of the same content, an `--again` run's),
        else that with `-2`, `-3`... A file already holding a receipt of this entry (its seq
        and leaf hash) is kept as it is. Written whole or not at all (a kill leaves no half
        file under the name)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        seq = receipt.get("seq")
        tmp = self.folder / f".{sha256}.json.tmp"
        tmp.write_text(json.dumps(receipt, indent=2) + "\n")
        try:
            for name in _receipt_names(sha256, seq):
                target = self.folder / name
                if target.exists():
                    if _same_receipt(target, receipt):
                        return name
                    continue
                try:
                    os.link(tmp, target)  # fails if the name was taken meanwhile
                except FileExistsError:
                    if _same_receipt(target, receipt):
                        return name
                    continue
                except OSError:  # a file system without hard links: the check above holds
                    tmp.replace(target)
                return name
            raise AssertionError("unreachable")  # (the names go on without end)
        finally:
            tmp.unlink(missing_ok=True)

    def add(self, path: Path, sha256: str, seq: int, registrant: str,
            receipt: str | None, key: str, again_run: str | None = None) -> None:
        """Record a file's registration, once per (path, content, `--again` run)."""
        if (str(path), sha256, again_run) in self._seen:
            return
        line = {"path": str(path), "sha256": sha256, "seq": seq, "registrant": registrant,
                "receipt": receipt, "key": key_tag(key), "again_run": again_run}
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        self.lines.append(line)
        self._seen.add((str(path), sha256, again_run))

    def done_in_run(self, path: Path, sha256: str, again_run: str) -> dict[str, Any] | None:
        """The line recording this file's registration by `again_run`, if that run made it."""
        if (str(path), sha256, again_run) not in self._seen:
            return None
        return next(ln for ln in self.lines if (ln.get("path"), ln.get("sha256"),
                                                ln.get("again_run")) == (str(path), sha256,
                                                                          again_run))


def _receipt_names(sha256: str, seq: object) -> Iterator[str]:
    yield f"{sha256}.json"
    yield f"{sha256}-{seq}.json"
    n = 2
    while True:
        yield f"{sha256}-{seq}-{n}.json"
        n += 1


def _same_receipt(path: Path, receipt: dict[str, Any]) -> bool:
    """Whether `path` keeps a receipt of the same entry: the same seq and leaf hash (a seq
    alone could be another registry's, a folder used against a test registry first)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and (doc.get("seq"), doc.get("leaf_hash")) == (
        receipt.get("seq"), receipt.get("leaf_hash"))


@dataclass(frozen=True)
class AgainRun:
    """The `--again` run a receipts folder is in (`again-run.json`): its id, from which each
    work's Idempotency-Key is made (`key`). A run that stopped (killed, a lost connection, a
    file that failed) is not finished, and the next `--again` run into the folder resumes it:
    the same keys, so what the registry recorded for the stopped run is answered again rather
    than recorded twice, and the files the manifest shows it registered are not sent at all.
    A run that registered every file is finished, and the next `--again` is a new run, with
    new keys: a new entry for each file, as `--again` asks."""

    folder: Path
    run: str
    started: float  # (Unix time) a run is resumed only within RESUME_S of it
    resumed: bool = False  # the run was recorded unfinished: this one goes on with it
    dropped: float | None = None  # the start of an unfinished run too old to resume

    @classmethod
    def resume_or_start(cls, folder: Path) -> AgainRun:
        """The unfinished run recorded in `folder`, else a new one (recorded there)."""
        path = folder / AGAIN_RUN
        dropped = None
        try:
            doc = json.loads(path.read_text())
            if (isinstance(doc, dict) and isinstance(doc.get("run"), str)
                    and doc.get("finished") is False
                    and type(doc.get("started")) in (int, float)):
                age = time.time() - doc["started"]
                if 0 <= age < RESUME_S:
                    return cls(folder, doc["run"], doc["started"], resumed=True)
                if math.isfinite(age) and age >= RESUME_S:  # (said: its files go again)
                    dropped = float(doc["started"])
        except (OSError, ValueError):
            pass  # none yet, or one cut short by a kill (its run registered nothing kept)
        made = cls(folder, uuid.uuid4().hex, time.time(), dropped=dropped)
        made._write(finished=False)
        return made

    def key(self, path: Path, sha256: str) -> str:
        """The Idempotency-Key this run sends `path` (with content `sha256`) under: the same in
        every resumption of the run, another in each run and for each file and content."""
        # (the path as named, made absolute: two links to one file are two files, as a run
        # without --again registers them, and need two keys)
        h = hashlib.sha256(f"{self.run}\n{_as_named(path)}\n{sha256}".encode())
        return f"register-{h.hexdigest()[:48]}"

    def finish(self) -> None:
        """Mark the run finished: the next `--again` starts a new one."""
        self._write(finished=True)

    def _write(self, finished: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{AGAIN_RUN}.tmp"
        tmp.write_text(json.dumps({"run": self.run, "started": self.started,
                                   "finished": finished}) + "\n")
        tmp.replace(self.folder / AGAIN_RUN)
