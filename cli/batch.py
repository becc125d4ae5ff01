"""`copyledger register DIR`: which files a folder holds, and the receipts folder that lets a
run stop anywhere and start again.

The receipts folder holds one `<sha256>.json` per registration (the verified receipt, as the
server sent it) and `manifest.jsonl`, one line per file: path, SHA-256, seq, registrant, a tag
of the API key used (`key_tag`) and the receipt's file name (null when the registration was
found in the log rather than made by this run, so its receipt is not here; `copyledger bundle
SEQ` fetches the evidence). A line is appended only after its receipt is on disk.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copyledger.client.media import SNIFF_BYTES

__all__ = ["MANIFEST", "Hashed", "Manifest", "collect_files", "hash_file", "key_tag"]

MANIFEST = "manifest.jsonl"


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
    return found


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
        self._seen = {(ln.get("path"), ln.get("sha256")) for ln in self.lines}

    def account(self, key: str) -> str | None:
        """The account the latest registration made with this API key was made by: only a
        receipt tells which account a key acts for."""
        tag = key_tag(key)
        for ln in reversed(self.lines):
            if ln.get("key") == tag and isinstance(ln.get("registrant"), str):
                return str(ln["registrant"])
        return None

    def save_receipt(self, sha256: str, receipt: dict[str, Any]) -> str:
        """Write a receipt (atomically: a kill leaves the old file or the new, never half)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{sha256}.json"
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(json.dumps(receipt, indent=2) + "\n")
        tmp.replace(self.folder / name)
        return name

    def add(self, path: Path, sha256: str, seq: int, registrant: str,
            receipt: str | None, key: str) -> None:
        """Record a file's registration, once per (path, content)."""
        if (str(path), sha256) in self._seen:
            return
        line = {"path": str(path), "sha256": sha256, "seq": seq, "registrant": registrant,
                "receipt": receipt, "key": key_tag(key)}
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        self.lines.append(line)
        self._seen.add((str(path), sha256))
