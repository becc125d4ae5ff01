"""The log as C2SP tlog-tiles: tiles and entry bundles read from the store, and a static export.

Each tile is one range query: a hash tile over the stored Merkle nodes (`Store.read_node_range`),
an entry bundle over the entries (`Store.read_entry_data`). Tile maths and encodings are in
`ledger.tiles`; HTTP is `api/routes/tiles.py`; `copyledger tiles export` calls `export`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from copyledger.ledger import note
from copyledger.ledger import tiles as t
from copyledger.ledger.errors import Conflict, IntegrityError, InvalidInput, NotFound, said
from copyledger.ledger.store import Store
from copyledger.service import reads
from copyledger.service.node import Node, open_store
from copyledger.service.settings import Settings

__all__ = [
    "CHECKPOINT_CACHE",
    "FULL_TILE_CACHE",
    "PARTIAL_TILE_CACHE",
    "ExportReport",
    "TileSource",
    "cache_control",
    "checkpoint",
    "export",
    "export_registry",
    "read_tile",
    "tile",
    "tile_at",
]

FULL_TILE_CACHE = "public, max-age=31536000, immutable"
"""A full tile or bundle never changes."""
PARTIAL_TILE_CACHE = "public, max-age=5"
"""A partial tile's bytes never change either, but it is superseded (and may be deleted) once its
full tile exists, so caches keep it only briefly."""
CHECKPOINT_CACHE = "no-cache"
"""The checkpoint changes with every block."""


def cache_control(tile: t.Tile) -> str:
    return FULL_TILE_CACHE if tile.full else PARTIAL_TILE_CACHE


class TileSource(Protocol):
    """What tiles are read from: the registry's `Store`, or a monitor's `Mirror`."""

    def read_node_range(self, level: int, lo: int, hi: int) -> dict[int, bytes]: ...

    def read_entry_data(self, lo: int, hi: int) -> list[bytes]: ...


def read_tile(store: TileSource, tile: t.Tile, size: int) -> bytes:
    """The bytes of `tile` (a hash tile or an entry bundle) of the tree of `size` leaves, read
    with one query. NotFound if the tree is too small to have it (the spec's empty tiles)."""
    level, lo, hi = tile.node_range()
    if hi > size >> level:
        raise NotFound(said("{path} is not in a tree of size {size}", path=tile.path(), size=size))
    if tile.entries:
        data = store.read_entry_data(lo, hi)
        if len(data) != tile.width:
            raise IntegrityError(said("entries {lo}..{value} of {path} are not all stored",
                                      lo=lo, value=hi - 1, path=tile.path()))
        return t.encode_bundle(data)
    nodes = store.read_node_range(level, lo, hi)
    try:
        return t.encode_tile([nodes[i] for i in range(lo, hi)])
    except KeyError as e:
        raise IntegrityError(said("stored Merkle hash {value} is missing",
                                  value=(level, e.args[0]))) from None


def checkpoint(node: Node) -> str:
    """The latest signed checkpoint, the same text as `/v1/log/checkpoint`."""
    return reads.checkpoint(node)


def tile(node: Node, path: str) -> tuple[t.Tile, bytes]:
    """The tile a path names and its bytes in the node's current tree: one that holds the
    tile if the database has it (a checkpoint another process has already published names
    it, D128)."""
    want = _parse(path)
    level, _, hi = want.node_range()
    return want, read_tile(node.store, want, node.log_size(hi << level))


def tile_at(source: TileSource, path: str, size: int) -> tuple[t.Tile, bytes]:
    """The tile a path names and its bytes in the tree of `size` leaves of `source` (the
    registry's store, or a monitor's verified copy). A path that names no tile is NotFound, as
    it would be on a static server."""
    want = _parse(path)
    return want, read_tile(source, want, size)


def _parse(path: str) -> t.Tile:
    """The tile a path names; a path that names none is NotFound, as on a static server."""
    try:
        return t.parse_path(path)
    except InvalidInput as e:
        raise NotFound(e.detail) from None


@dataclass
class ExportReport:
    """What one `export` did: the tree size it wrote, the size the directory held before, the
    files and bytes it wrote (the checkpoint included, if it changed), full tiles it found
    already written (`skipped`), and the paths written, in order."""

    directory: str
    tree_size: int
    previous_size: int
    files: int = 0
    bytes: int = 0
    tiles: int = 0
    bundles: int = 0
    skipped: int = 0
    checkpoint: bool = False
    paths: list[str] = field(default_factory=list, repr=False)


def _exported_size(directory: Path, origin: str) -> int:
    """The tree size of the checkpoint an earlier export left (0 if none). The checkpoint is
    written last, so every tile of that size is already there."""
    try:
        text = (directory / "checkpoint").read_text()
    except FileNotFoundError:
        return 0
    cp = note.parse_checkpoint(note.parse_note(text).text)
    if cp.origin != origin:
        raise Conflict(said("{directory} holds log {origin!r}, not {origin2!r}",
                            directory=directory, origin=cp.origin, origin2=origin))
    return cp.size


def _write(path: Path, data: bytes) -> None:
    """Write atomically (a temporary file renamed over), so a reader or a crash never sees half
    a tile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(
    store: Store,
    directory: Path,
    on_start: Callable[[int], None] = lambda total: None,
    progress: Callable[[int], None] = lambda n: None,
) -> ExportReport:
    """Write the log's latest tree as static tlog-tiles files under `directory`: the tiles and
    bundles the tree has that the directory's earlier export lacked (a full tile that is already
    there is never rewritten), then the checkpoint last. `on_start` gets the number of files to
    write, `progress` is called once per file."""
    last = store.latest_block()
    if last is None:
        raise NotFound("the log has no checkpoint yet")
    size, checkpoint = last.header.tree_size, last.checkpoint
    origin = note.parse_checkpoint(note.parse_note(checkpoint).text).origin
    old = _exported_size(directory, origin)
    if old > size:
        raise Conflict(said("{directory} holds a tree of {old} leaves; this log has only {size}",
                            directory=directory, old=old, size=size))
    todo = t.new_tiles(old, size) + t.new_tiles(old, size, entries=True)
    report = ExportReport(str(directory), size, old)
    on_start(len(todo) + 1)
    for tl in todo:
        path = directory / tl.path()
        if tl.full and path.exists():
            report.skipped += 1  # an interrupted export got this far already
        else:
            data = read_tile(store, tl, size)
            _write(path, data)
            report.files += 1
            report.bytes += len(data)
            report.paths.append(tl.path())
            if tl.entries:
                report.bundles += 1
            else:
                report.tiles += 1
        progress(1)
    body = checkpoint.encode()
    cp_path = directory / "checkpoint"
    if not (cp_path.exists() and cp_path.read_bytes() == body):
        _write(cp_path, body)
        report.files += 1
        report.bytes += len(body)
        report.paths.append("checkpoint")
        report.checkpoint = True
    progress(1)
    return report


def export_registry(
    s: Settings,
    directory: Path,
    on_start: Callable[[int], None] = lambda total: None,
    progress: Callable[[int], None] = lambda n: None,
) -> ExportReport:
    """`export` from a data directory, with or without a server running on it (it only reads)."""
    store = open_store(s)
    try:
        return export(store, directory, on_start, progress)
    finally:
        store.close()
