"""The log as C2SP tlog-tiles: paths and bytes exactly as the spec writes them, tiles served
over HTTP and exported as files, and Go's tlog.TileHashReader (tools/tlogcheck) reading both to
the same tree hashes the JSON API gives, past 65,536 leaves (a level-2 tile)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import merkle
from copyledger.ledger import tiles as t
from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.sequencer import Pending
from copyledger.service.node import Node
from copyledger.service.tiles import FULL_TILE_CACHE, export
from tests.helpers import open_registry, sha, wait_for
from tests.server import cli, free_port

# --- paths and bytes, from the spec's own examples ----------------------------------------------


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (t.Tile(1, 1234067), "tile/1/x001/x234/067"),  # the spec's example index
        (t.Tile(1, 1234067, 5), "tile/1/x001/x234/067.p/5"),
        (t.Tile(0, 0), "tile/0/000"),
        (t.Tile(0, 999, 255), "tile/0/999.p/255"),
        (t.Tile(0, 1000), "tile/0/x001/000"),
        (t.Tile(63, 1_000_000), "tile/63/x001/x000/000"),
        (t.Tile(t.ENTRIES, 1234067), "tile/entries/x001/x234/067"),
        (t.Tile(t.ENTRIES, 2, 17), "tile/entries/002.p/17"),
    ],
)
def test_tile_paths_round_trip(tile: t.Tile, path: str) -> None:
    assert tile.path() == path
    assert t.parse_path(path) == tile
    assert t.parse_path("/" + path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/01/000",  # leading zero in L
        "tile/64/000",  # L past 63
        "tile/-1/000",
        "tile/0/1234",  # not 3-digit elements
        "tile/0/00",
        "tile/0/001/234",  # all but the last element need an x
        "tile/0/x001/x234",  # the last one must not have it
        "tile/0/x000/001",  # not the shortest spelling
        "tile/0/000.p/0",  # widths are 1..255
        "tile/0/000.p/256",
        "tile/0/000.p/05",  # no leading zeros in W
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/data/000",  # Go's name, not the spec's
        "tile/entries",
        "tiles/0/000",
        "tile/0/0a0",
        "tile/0/٠٠٠",  # digits, but not ASCII
    ],
)
def test_parse_path_refuses_what_the_spec_does_not_allow(path: str) -> None:
    with pytest.raises(InvalidInput):
        t.parse_path(path)


def _paths(size: int) -> list[str]:
    return [x.path() for x in t.tiles_for_size(size)]


def test_tiles_of_a_tree_match_the_spec_examples() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0
    # tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and one
    # partial level 2 tile of width 1."
    tiles = t.tiles_for_size(70_000)
    level0 = [x for x in tiles if x.level == 0]
    assert [x for x in level0 if x.full] == [t.Tile(0, n) for n in range(273)]
    assert [x for x in tiles if not x.full or x.level > 0] == [
        t.Tile(0, 273, 112), t.Tile(1, 0), t.Tile(1, 1, 17), t.Tile(2, 0, 1)]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1 tile
    # of width 1."
    assert _paths(256) == ["tile/0/000", "tile/1/000.p/1"]
    assert _paths(0) == [] and _paths(1) == ["tile/0/000.p/1"]
    assert [x.path() for x in t.tiles_for_size(513, entries=True)] == [
        "tile/entries/000", "tile/entries/001", "tile/entries/002.p/1"]


@pytest.mark.parametrize(("old", "new"), [(0, 5), (5, 5), (5, 300), (256, 257), (255, 70_000),
                                          (65_535, 65_536), (65_536, 65_537)])
def test_new_tiles_never_repeat_a_full_tile(old: int, new: int) -> None:
    before, after = t.tiles_for_size(old), t.new_tiles(old, new)
    assert {x for x in before if x.full}.isdisjoint(after)
    # what was there plus what is new covers the bigger tree
    assert set(t.tiles_for_size(new)) <= set(before) | set(after)
    assert set(after) <= set(t.tiles_for_size(new))
    with pytest.raises(InvalidInput):
        t.new_tiles(new + 1, new)


def test_tiles_hold_the_spec_merkle_tree_hashes() -> None:
    """The n-th tile at level l holds MTH(D[(n*256+i)*256**l : (n*256+i+1)*256**l])."""
    leaves = merkle.leaf_hashes([b"e%d" % i for i in range(600)])
    assert t.Tile(0, 1, 200).node_range() == (0, 256, 456)
    assert t.Tile(1, 0, 2).node_range() == (8, 0, 2)
    assert t.Tile(2, 3, 1).node_range() == (16, 768, 769)
    assert t.Tile(2, 3, 1).leaf_range() == (768 * 65_536, 769 * 65_536)
    assert t.Tile(t.ENTRIES, 1).node_range() == (0, 256, 512)
    reader = merkle.MemoryReader()
    reader.update(merkle.append(0, [], leaves).nodes)
    level, lo, hi = t.Tile(1, 0, 2).node_range()
    tile = t.encode_tile(reader.read_hashes([(level, i) for i in range(lo, hi)]))
    assert tile == merkle.root(leaves[:256]) + merkle.root(leaves[256:512])
    assert t.split_tile(tile) == [merkle.root(leaves[:256]), merkle.root(leaves[256:512])]
    with pytest.raises(InvalidInput):
        t.encode_tile([b"short"])
    with pytest.raises(InvalidInput):
        t.split_tile(tile[:-1])


def test_entry_bundle_bytes() -> None:
    entries = [b"a", b"", b"x" * 300, b"\xff" * 0xFFFF]
    want = (b"\x00\x01a" + b"\x00\x00" + b"\x01\x2c" + b"x" * 300
            + b"\xff\xff" + b"\xff" * 0xFFFF)
    assert t.encode_bundle(entries) == want
    assert t.decode_bundle(want) == entries
    with pytest.raises(InvalidInput):
        t.encode_bundle([b"x" * 0x10000])  # its length does not fit a uint16
    with pytest.raises(InvalidInput):
        t.encode_bundle([])
    for cut in (b"\x00", b"\x00\x05abc", b""):
        with pytest.raises(InvalidInput):
            t.decode_bundle(cut)


# --- a registry --------------------------------------------------------------------------------


def fill(reg: Node, n: int) -> None:
    """Append n valid work entries fast: one entry built and validated, the rest differ only in
    their content hash (same length, so still canonical), submitted at once in big blocks."""
    start = reg.sequencer.state.size
    model = entry_mod.canonical_bytes(entry_mod.build_work(
        registrant="alice", received_at=entry_mod.utc_now(), sha256=sha("model"), title="w",
        creators=["A"], work_type="text"))
    futs = []
    for i in range(start, start + n):
        h = sha(i)
        data = model.replace(sha("model").encode(), h.encode())
        futs.append(reg.sequencer.submit(Pending(data, "work", h, "alice")))
    for f in futs:
        f.result(timeout=120)
    assert reg.sequencer.state.size == start + n


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Iterator[Node]:
    r = open_registry(tmp_path, database_url, linger_ms=20.0)
    r.start()
    yield r
    r.stop()


def test_api_serves_tiles_bundles_and_checkpoint(reg: Node) -> None:
    fill(reg, 600)  # 2 full level-0 tiles and one of 88; a level-1 tile of 2
    leaves = reg.store.read_hashes([(0, i) for i in range(600)])
    datas = [reg.store.get_entry(i).data for i in range(600)]
    with TestClient(create_app(reg, manage=False)) as c:
        r = c.get("/tile/0/001")
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        assert r.headers["cache-control"] == FULL_TILE_CACHE == (
            "public, max-age=31536000, immutable")
        assert r.content == b"".join(leaves[256:512]) and len(r.content) == 8192
        r = c.get("/tile/0/002.p/88")
        assert r.content == b"".join(leaves[512:600])
        assert "immutable" not in r.headers["cache-control"]
        assert c.get("/tile/0/002.p/10").content == b"".join(leaves[512:522])
        r = c.get("/tile/1/000.p/2")
        assert r.content == merkle.root(leaves[:256]) + merkle.root(leaves[256:512])
        assert "content-encoding" not in r.headers  # hashes do not compress
        r = c.get("/tile/entries/000")  # httpx asks for gzip and decodes it
        assert r.headers["cache-control"] == FULL_TILE_CACHE
        assert r.headers["content-encoding"] == "gzip"
        assert int(r.headers["content-length"]) < len(r.content) // 2
        assert t.decode_bundle(r.content) == datas[:256]
        plain = c.get("/tile/entries/000", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == r.content
        assert t.decode_bundle(c.get("/tile/entries/002.p/88").content) == datas[512:]
        assert merkle.leaf_hashes(t.decode_bundle(r.content)) == leaves[:256]
        # Tiles the tree does not have yet, and paths that name no tile, are 404.
        for missing in ("/tile/0/002", "/tile/0/002.p/89", "/tile/0/003.p/1", "/tile/1/000",
                        "/tile/2/000.p/1", "/tile/entries/003.p/1", "/tile/0/2", "/tile/x"):
            assert c.get(missing).status_code == 404, missing
        cp = c.get("/checkpoint")
        assert cp.status_code == 200
        assert cp.headers["content-type"] == "text/plain; charset=utf-8"
        assert cp.headers["cache-control"] == "no-cache"
        assert cp.text == c.get("/v1/log/checkpoint").text
        assert cp.text.split("\n")[1] == "600"
        assert "/tile/{path}" in c.get("/openapi.json").json()["paths"]


# --- Go's tlog reads them ---------------------------------------------------------------------


class Uvicorn:
    """`create_app(node)` served on a real socket in this process, for Go to fetch from."""

    def __init__(self, node: Node) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(node, manage=False), host="127.0.0.1",
                                port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Uvicorn:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "uvicorn hung")
        assert self.server.started, "uvicorn did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=30)
    except httpx.HTTPError:
        return False
    return True


@dataclass
class GoRead:
    """What Go's tlog computed from the tiles: the checkpoint ("origin size roothex"), the root
    of each tree size, the leaf hash of entry size-1 (from its bundle), the paths it fetched."""

    checkpoint: str = ""
    trees: dict[int, str] = field(default_factory=dict)
    leaves: dict[int, str] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)


def go_read(tlogcheck: str, source: str, vkey: str, sizes: list[int]) -> GoRead:
    """Run `tlogcheck tiles` on a URL or a directory and parse its answer."""
    r = subprocess.run([tlogcheck, "tiles", source, vkey, ",".join(map(str, sizes))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = GoRead()
    for line in r.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "checkpoint":
            got.checkpoint = rest
        elif kind == "tree":
            size, root = rest.split()
            got.trees[int(size)] = root
        elif kind == "entry":
            seq, leaf = rest.split()
            got.leaves[int(seq)] = leaf
        else:
            assert kind == "fetched", line
            got.fetched.append(rest)
    return got


def assert_same_as_api(api: str, got: GoRead, size: int, sizes: list[int]) -> None:
    """Go's roots and leaves from the tiles equal the JSON API's consistency and proof roots."""
    assert sorted(got.trees) == sorted(sizes) and sorted(got.leaves) == [s - 1 for s in sizes]
    for s in sizes:
        c = httpx.get(f"{api}/v1/log/consistency", params={"from": s, "to": size}).json()
        assert got.trees[s] == c["old_root"], s
        p = httpx.get(f"{api}/v1/entries/{s - 1}/proof", params={"tree_size": size}).json()
        assert got.leaves[s - 1] == p["leaf_hash"], s
    root = httpx.get(f"{api}/v1/log").json()["root"]
    assert got.checkpoint == f"test.example/log {size} {root}"


@pytest.mark.slow
@pytest.mark.interop
def test_go_reads_served_and_exported_tiles_past_level_2(tmp_path: Path, tlogcheck: str) -> None:
    reg = open_registry(tmp_path, linger_ms=20.0)
    reg.start()
    try:
        with Uvicorn(reg) as srv:
            fill(reg, 1000)
            sizes = [1, 255, 256, 257, 999, 1000]
            got = go_read(tlogcheck, srv.url, reg.verifier_key, sizes)
            assert_same_as_api(srv.url, got, 1000, sizes)
            assert {"tile/0/003.p/232", "tile/entries/003.p/232"} <= set(got.fetched)

            fill(reg, 66_000 - 1000)  # past 65,536: level 2 has a tile of one hash
            sizes = [1, 1000, 65_535, 65_536, 65_537, 66_000]
            got = go_read(tlogcheck, srv.url, reg.verifier_key, sizes)
            assert_same_as_api(srv.url, got, 66_000, sizes)
            # 66,000 = 257·256 + 208 leaves; 257 = 1·256 + 1 level-1 hashes; 1 level-2 hash
            assert {"tile/0/257.p/208", "tile/1/000", "tile/1/001.p/1", "tile/2/000.p/1",
                    "tile/entries/257.p/208"} <= set(got.fetched)

            out = tmp_path / "tiles"
            rep = export(reg.store, out)
            assert (rep.tree_size, rep.previous_size) == (66_000, 0)
            assert rep.tiles == len(t.tiles_for_size(66_000)) == 257 + 1 + 1 + 1 + 1
            got = go_read(tlogcheck, str(out), reg.verifier_key, sizes)
            assert_same_as_api(srv.url, got, 66_000, sizes)
    finally:
        reg.stop()


@pytest.mark.slow
@pytest.mark.interop
def test_export_is_incremental_and_verifies(tmp_path: Path, tlogcheck: str) -> None:
    reg = open_registry(tmp_path, linger_ms=20.0)
    reg.start()
    out = tmp_path / "site"
    data_dir = str(reg.settings.data_dir)
    try:
        fill(reg, 300)
        r = cli("tiles", "export", str(out), "--data-dir", data_dir, "--json")
        assert r.returncode == 0, r.stderr
        first = json.loads(r.stdout)
        assert first == {"directory": str(out), "tree_size": 300, "previous_size": 0,
                         "files": 3 + 2 + 1, "bytes": first["bytes"], "tiles": 3,
                         "bundles": 2, "checkpoint": True, "skipped": 0}
        written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        assert written == ["checkpoint", "tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1",
                           "tile/entries/000", "tile/entries/001.p/44"]
        assert first["bytes"] == sum((out / w).stat().st_size for w in written)
        assert (out / "checkpoint").read_text() == reg.sequencer.state.last.checkpoint  # type: ignore[union-attr]
        full = out / "tile/0/000"
        stamp = full.stat().st_mtime_ns
        os.utime(full, ns=(1, 1))  # so that any rewrite would show

        # Nothing new: nothing written.
        again = export(reg.store, out)
        assert (again.files, again.previous_size, again.paths) == (0, 300, [])

        fill(reg, 700)  # 1,000: level 0 gets full tiles 1 and 2 and a partial 3
        rep = export(reg.store, out)
        assert rep.previous_size == 300 and rep.tree_size == 1000
        assert rep.paths == ["tile/0/001", "tile/0/002", "tile/0/003.p/232", "tile/1/000.p/3",
                             "tile/entries/001", "tile/entries/002", "tile/entries/003.p/232",
                             "checkpoint"]
        assert full.stat().st_mtime_ns == 1 != stamp  # the full tile was not rewritten

        # An export interrupted before its checkpoint: the next run finds the full tiles it
        # wrote and leaves them alone.
        (out / "checkpoint").unlink()
        redo = export(reg.store, out)
        assert (redo.previous_size, redo.skipped) == (0, 6)
        assert redo.paths == ["tile/0/003.p/232", "tile/1/000.p/3", "tile/entries/003.p/232",
                              "checkpoint"]
        assert full.stat().st_mtime_ns == 1
        sizes = [1, 256, 300, 301, 999, 1000]
        with Uvicorn(reg) as srv:
            got = go_read(tlogcheck, str(out), reg.verifier_key, sizes)
            assert_same_as_api(srv.url, got, 1000, sizes)
        # and through a plain static web server
        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                                "127.0.0.1", "--directory", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: _answers(url + "/checkpoint"), "http.server did not start")
            served = go_read(tlogcheck, url, reg.verifier_key, sizes)
            assert (served.trees, served.leaves) == (got.trees, got.leaves)
        finally:
            web.terminate()
            web.wait(10)

        # Go refuses a changed hash tile and a changed entry bundle.
        for path in ("tile/0/001", "tile/1/000.p/3", "tile/entries/001", "tile/entries/003.p/232"):
            f = out / path
            good = f.read_bytes()
            f.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
            r2 = subprocess.run([tlogcheck, "tiles", str(out), reg.verifier_key, "300,1000"],
                                capture_output=True, text=True, timeout=60)
            assert r2.returncode == 1 and r2.stderr.startswith("tlogcheck tiles"), path
            f.write_bytes(good)

        # A directory that holds another log is refused.
        other = tmp_path / "other"
        other.mkdir()
        (other / "checkpoint").write_text(
            (out / "checkpoint").read_text().replace("test.example/log", "other.example/log"))
        r = cli("tiles", "export", str(other), "--data-dir", data_dir)
        assert r.returncode == 2 and "other.example/log" in r.stderr
    finally:
        reg.stop()
