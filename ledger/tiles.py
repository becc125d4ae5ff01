"""C2SP tlog-tiles (c2sp.org/tlog-tiles): tile coordinates, their paths and their bytes.

Pure functions, in the style of Go's golang.org/x/mod/sumdb/tlog `Tile`, with the C2SP paths
(no height element: the height is always 8). A tile at tile level L, index N, width W holds the
W consecutive RFC 6962 hashes at Merkle level 8·L with indices N·256 … N·256+W−1; each is the
hash of the complete subtree over leaves [(N·256+i)·256^L, (N·256+i+1)·256^L). These are
exactly the stored nodes `(8·L, index)` of `ledger.merkle`, so a tile is one range read. Level
`ENTRIES` (−1, Go's "data" level) names an entry bundle: the leaf data of the level-0 tile
with the same index and width, each entry prefixed by its length as a big-endian uint16.

A full tile has width 256 and never changes; a partial tile (width 1 … 255) exists only for the
rightmost tile of a level, for the tree size it was cut at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from copyledger.ledger.errors import InvalidInput, VerificationError, said
from copyledger.ledger.merkle import HASH_SIZE, leaf_hashes

__all__ = [
    "ENTRIES",
    "HEIGHT",
    "MAX_LEVEL",
    "WIDTH",
    "Tile",
    "check_bundle",
    "decode_bundle",
    "encode_bundle",
    "encode_index",
    "encode_tile",
    "iter_new_tiles",
    "new_tiles",
    "parse_path",
    "split_tile",
    "tiles_for_size",
]

HEIGHT = 8
"""Merkle levels a tile spans (fixed by the spec)."""
WIDTH = 1 << HEIGHT
"""Hashes (or entries) in a full tile: 256."""
MAX_LEVEL = 63
MAX_INDEX_ELEMENTS = 7  # 2**64 has 20 digits: 7 three-digit elements
ENTRIES = -1
"""The tile level that names entry bundles (`tile/entries/...`), as Go's L = -1 names data."""
MAX_ENTRY = 0xFFFF
"""The largest entry an entry bundle can hold: its length is a uint16."""

_INDEX_ELEMENT = re.compile(r"x[0-9]{3}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True, order=True)
class Tile:
    """Tile `index` at tile `level` (ENTRIES for an entry bundle), `width` hashes wide."""

    level: int
    index: int
    width: int = WIDTH

    def __post_init__(self) -> None:
        if not ENTRIES <= self.level <= MAX_LEVEL:
            raise InvalidInput(said("tile level {level} is not in {lo}..{hi}", level=self.level,
                                    lo=ENTRIES, hi=MAX_LEVEL))
        if self.index < 0:
            raise InvalidInput(said("tile index {n} is negative", n=self.index))
        if not 1 <= self.width <= WIDTH:
            raise InvalidInput(said("tile width {width} is not in 1..{max}", width=self.width,
                                    max=WIDTH))

    @property
    def full(self) -> bool:
        return self.width == WIDTH

    @property
    def entries(self) -> bool:
        return self.level == ENTRIES

    def path(self) -> str:
        """`tile/<L>/<N>[.p/<W>]`, or `tile/entries/<N>[.p/<W>]` for a bundle; no leading slash.

        >>> Tile(1, 1234067).path()
        'tile/1/x001/x234/067'
        >>> Tile(ENTRIES, 0, 5).path()
        'tile/entries/000.p/5'
        """
        level = "entries" if self.entries else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    def node_range(self) -> tuple[int, int, int]:
        """(Merkle level, lo, hi): the stored nodes `(level, i)`, lo <= i < hi, this tile lists.
        For an entry bundle, the level-0 nodes (leaves) whose data it holds."""
        level = 0 if self.entries else HEIGHT * self.level
        lo = self.index * WIDTH
        return level, lo, lo + self.width

    def leaf_range(self) -> tuple[int, int]:
        """[start, end): the leaves this tile's hashes span (the spec's start and end index for
        a full tile; a partial tile ends where its last hash does)."""
        span = 1 << (HEIGHT * max(self.level, 0))
        _, lo, hi = self.node_range()
        return lo * span, hi * span


def encode_index(n: int) -> str:
    """N as zero-padded 3-digit path elements, all but the last prefixed with `x`:
    1234067 → `x001/x234/067`, 5 → `005`."""
    if n < 0:
        raise InvalidInput(said("tile index {n} is negative", n=n))
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    parts = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([f"x{p}" for p in parts[:-1]] + parts[-1:])


def parse_path(path: str) -> Tile:
    """The tile a path names, refusing every spelling the spec does not allow (leading zeros in
    L or W, a missing `x`, a width of 0 or 256, a level past 63). A leading `/` is ignored."""
    parts = path.lstrip("/").split("/")
    bad = InvalidInput(said("{path!r} is not a tlog-tiles path", path=path))
    if len(parts) < 3 or parts[0] != "tile":
        raise bad
    level_s, elems = parts[1], parts[2:]
    width = WIDTH
    if len(elems) >= 2 and elems[-2].endswith(".p"):
        w = elems[-1]
        if not _DECIMAL.fullmatch(w) or not 1 <= int(w) < WIDTH:
            raise bad
        width = int(w)
        elems = [*elems[:-2], elems[-2][:-2]]
    last = elems[-1]
    if not (len(last) == 3 and last.isdigit() and last.isascii()):
        raise bad
    if len(elems) > MAX_INDEX_ELEMENTS or not all(
            _INDEX_ELEMENT.fullmatch(e) for e in elems[:-1]):
        raise bad  # more digits than any 64-bit index has: refused before `int` reads them
    index = int("".join(e.lstrip("x") for e in elems))
    if len(elems) > 1 and elems[0] == "x000":
        raise bad  # not the shortest encoding: it would name the same tile twice
    if level_s == "entries":
        level = ENTRIES
    elif _DECIMAL.fullmatch(level_s) and int(level_s) <= MAX_LEVEL:
        level = int(level_s)
    else:
        raise bad
    return Tile(level, index, width)


def _levels(size: int) -> Iterator[tuple[int, int, int]]:
    """(level, full tiles, partial width) of each tile level a tree of `size` leaves has."""
    level = 0
    while size >> (HEIGHT * level):
        hashes = size >> (HEIGHT * level)
        yield level, hashes >> HEIGHT, hashes & (WIDTH - 1)
        level += 1


def tiles_for_size(size: int, *, entries: bool = False) -> list[Tile]:
    """Every hash tile (entry bundle with `entries`) a tree of `size` leaves is served as: each
    level's full tiles and, when the level's hash count is not a multiple of 256, its partial
    tile. A tree of 70,000 leaves has 273 full and one partial (112) level-0 tiles, one full and
    one partial (17) level-1 tile, and a partial (1) level-2 tile."""
    return new_tiles(0, size, entries=entries)


def new_tiles(old_size: int, new_size: int, *, entries: bool = False) -> list[Tile]:
    """The tiles (entry bundles with `entries`) a tree of `new_size` has that one of `old_size`
    lacks: full tiles completed since, and the partial tiles of `new_size` unless unchanged.
    Like Go's tlog.NewTiles, level by level from the bottom."""
    return list(iter_new_tiles(old_size, new_size, entries=entries))


def iter_new_tiles(old_size: int, new_size: int, *, entries: bool = False) -> Iterator[Tile]:
    """`new_tiles` one at a time: a reader of a tree whose size it does not control (a log's
    signed checkpoint may say 2**63) meets the first missing tile before it would have
    listed billions (D165)."""
    if not 0 <= old_size <= new_size:
        raise InvalidInput(said("tree sizes {old_size} → {new_size} do not grow",
                                old_size=old_size, new_size=new_size))
    old = {lv: (f, w) for lv, f, w in _levels(old_size)}
    for level, full, width in _levels(new_size):
        if entries and level > 0:
            break
        name = ENTRIES if entries else level
        old_full, old_width = old.get(level, (0, 0))
        yield from (Tile(name, n) for n in range(old_full, full))
        if width and (full, width) != (old_full, old_width):
            yield Tile(name, full, width)


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    """A hash tile's bytes: its hashes concatenated (32 bytes each, 8,192 for a full tile)."""
    if not 1 <= len(hashes) <= WIDTH:
        raise InvalidInput(said("a tile holds 1..{max} hashes, not {n}", max=WIDTH,
                                n=len(hashes)))
    if any(len(h) != HASH_SIZE for h in hashes):
        raise InvalidInput(said("a tile holds {size}-byte hashes", size=HASH_SIZE))
    return b"".join(hashes)


def split_tile(data: bytes) -> list[bytes]:
    """The hashes of a hash tile's bytes."""
    if not data or len(data) % HASH_SIZE or len(data) > WIDTH * HASH_SIZE:
        raise InvalidInput(said("{n} bytes is not a tile of {size}-byte hashes", n=len(data),
                                size=HASH_SIZE))
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle's bytes: each entry as a big-endian uint16 length, then the entry."""
    if not 1 <= len(entries) <= WIDTH:
        raise InvalidInput(said("an entry bundle holds 1..{max} entries, not {n}", max=WIDTH,
                                n=len(entries)))
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY:
            raise InvalidInput(said("an entry of {n} bytes does not fit a uint16 length",
                                    n=len(e)))
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def decode_bundle(data: bytes) -> list[bytes]:
    """The entries of an entry bundle's bytes; a truncated or over-long bundle is refused."""
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise InvalidInput(said("entry bundle ends inside a length prefix"))
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise InvalidInput(said("entry bundle ends inside an entry"))
        entries.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    if not 1 <= len(entries) <= WIDTH:
        raise InvalidInput(said("an entry bundle holds 1..{max} entries, not {n}", max=WIDTH,
                                n=len(entries)))
    return entries


def check_bundle(tile: Tile, bundle: bytes, hashes: bytes) -> list[bytes]:
    """The entries of entry bundle `tile` (bytes `bundle`), each checked against the level-0
    hash tile of the same index and width (bytes `hashes`): entry i must hash to hash i, as
    SHA-256(0x00 || entry). This is all that ties a bundle to the tree; a mismatch is a
    VerificationError naming the first entry (`seq`) that does not hash to its tile."""
    if not tile.entries:
        raise InvalidInput(said("{path} is not an entry bundle", path=tile.path()))
    try:
        entries, want = decode_bundle(bundle), split_tile(hashes)
    except InvalidInput as e:
        raise VerificationError(said("{path}: {detail}",
                                     path=tile.path(), detail=e.detail)) from None
    if len(entries) != tile.width or len(want) != tile.width:
        raise VerificationError(said("{path} holds {n} entries and its hash tile {m} hashes, "
                                     "not {width}", path=tile.path(), n=len(entries),
                                     m=len(want), width=tile.width))
    for i, (got, h) in enumerate(zip(leaf_hashes(entries), want, strict=True)):
        if got != h:
            seq = tile.index * WIDTH + i
            raise VerificationError(said("entry {seq} in {path} does not hash to its leaf hash in "
                                         "the level-0 tile", seq=seq, path=tile.path()), seq=seq)
    return entries
