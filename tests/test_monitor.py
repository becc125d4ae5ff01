"""The monitor and mirror (`copyledger monitor`, `service/monitor.py`): it catches up on a live
registry through its tiles past a tile boundary and follows new entries, answers the same proofs
as the registry from its copy alone, and reports a split view (two copies of one database that
diverge), a rollback, a bad signature, a tampered entry bundle and an invalid entry, naming the
tree sizes and roots involved, with a non-zero exit."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from copyledger.client.tiles import TileFetcher
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import merkle, note
from copyledger.ledger import tiles as t
from copyledger.ledger.errors import NotFound, VerificationError
from copyledger.ledger.sequencer import Pending
from copyledger.notary.signer import sign_note
from copyledger.service import tiles as service_tiles
from copyledger.service.monitor import Follower, LogMisbehaved, Mirror, MonitorStatus
from copyledger.service.node import Node
from tests.helpers import open_registry, sha
from tests.server import cli
from tests.test_tiles import Uvicorn

# --- the pure check ---------------------------------------------------------------------------


def test_check_bundle_ties_each_entry_to_its_leaf_hash() -> None:
    entries = [b"a", b"bb", b"ccc"]
    bundle, tile = t.Tile(t.ENTRIES, 4, 3), t.encode_tile(merkle.leaf_hashes(entries))
    assert t.check_bundle(bundle, t.encode_bundle(entries), tile) == entries
    with pytest.raises(VerificationError) as e:
        t.check_bundle(bundle, t.encode_bundle([b"a", b"bX", b"ccc"]), tile)
    assert e.value.extra["seq"] == 4 * 256 + 1
    with pytest.raises(VerificationError, match="not 3"):
        t.check_bundle(bundle, t.encode_bundle(entries[:2]), tile)
    with pytest.raises(VerificationError, match="ends inside"):
        t.check_bundle(bundle, t.encode_bundle(entries)[:-1], tile)


# --- a registry to follow ---------------------------------------------------------------------


def fill(reg: Node, n: int, salt: str = "") -> None:
    """Append n valid work entries (content hashes from `salt` and the seq) in big blocks."""
    start = reg.sequencer.state.size
    model = entry_mod.canonical_bytes(entry_mod.build_work(
        registrant="alice", received_at=entry_mod.utc_now(), sha256=sha("model"), title="w",
        creators=["A"], work_type="text"))
    futs = []
    for i in range(start, start + n):
        h = sha(f"{salt}{i}")
        futs.append(reg.sequencer.submit(
            Pending(model.replace(sha("model").encode(), h.encode()), "work", h, "alice")))
    for f in futs:
        f.result(timeout=120)
    assert reg.sequencer.state.size == start + n


def node_fetch(reg: Node) -> Callable[[str], bytes]:
    """What a tiles server would answer, without HTTP."""
    def fetch(path: str) -> bytes:
        if path == "checkpoint":
            return service_tiles.checkpoint(reg).encode()
        return service_tiles.tile(reg, path)[1]
    return fetch


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Node]:
    r = open_registry(tmp_path / "reg", linger_ms=20.0)
    r.start()
    yield r
    r.stop()


def monitor_cli(url: str, vkey: str, mdir: Path, *extra: str) -> tuple[int, Any]:
    r = cli("monitor", "--log", url, "--trust", vkey, "--data-dir", str(mdir), "--once",
            "--json", *extra)
    try:
        return r.returncode, json.loads(r.stdout)
    except ValueError:
        return r.returncode, r.stdout + r.stderr


# --- catching up and following ----------------------------------------------------------------


def test_catches_up_past_tile_boundaries_follows_and_answers_the_registrys_proofs(
        reg: Node, tmp_path: Path) -> None:
    mdir = tmp_path / "monitor"
    fill(reg, 2000)  # 7 full level-0 tiles and one of 208
    with Uvicorn(reg) as srv:
        code, up = monitor_cli(srv.url, reg.verifier_key, mdir)
        assert code == 0, up
        root = httpx.get(srv.url + "/v1/log").json()["root"]
        assert up == {"previous_size": 0, "tree_size": 2000, "root": root, "entries": 2000}

        fill(reg, 300)  # completes tile 7, starts tile 8: re-reads the partial bundle it held
        mirror = Mirror(mdir)
        with TileFetcher(srv.url) as fetch:
            follower = Follower(mirror, fetch, reg.verifier_key)
            up2 = follower.poll()
            assert (up2.previous_size, up2.tree_size, up2.entries) == (2000, 2300, 300)
            assert follower.poll().entries == 0  # nothing new: nothing stored, nothing wrong
        assert mirror.sizes() == [2000, 2300]

        # The mirror's proofs are the registry's, at every tree size it verified.
        for seq, size in ((0, 2000), (1999, 2000), (5, 2300), (2100, 2300), (2299, 2300)):
            mine = mirror.proof(seq, size)
            theirs = httpx.get(f"{srv.url}/v1/entries/{seq}/proof",
                               params={"tree_size": size}).json()
            assert {k: mine[k] for k in theirs} == theirs, (seq, size)
            assert mine["entry"] == httpx.get(f"{srv.url}/v1/entries/{seq}").json()["entry"]
        # The last entry was sealed at 2300: the mirror's tlog-proof is the bundle's, byte for byte.
        assert mirror.proof(2299)["tlog_proof"] == httpx.get(
            f"{srv.url}/v1/entries/2299/bundle").json()["tlog_proof"]
        # It can serve the same tiles as the registry, from its copy alone.
        for tile in t.tiles_for_size(2300) + t.tiles_for_size(2300, entries=True):
            assert service_tiles.read_tile(mirror, tile, 2300) == httpx.get(
                f"{srv.url}/{tile.path()}").content, tile
        mirror.close()

        r = cli("monitor", "bundle", "2100", "--data-dir", str(mdir))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["proof"] == httpx.get(
            f"{srv.url}/v1/entries/2100/proof").json()["proof"]
        assert cli("monitor", "bundle", "2300", "--data-dir", str(mdir)).returncode == 2


# --- split view ----------------------------------------------------------------------------


class Webhook:
    """A tiny server that records the JSON alerts POSTed to it."""

    def __init__(self) -> None:
        got: list[Any] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.alerts = got
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_split_view_is_reported_with_the_first_differing_tree_size_and_both_roots(
        tmp_path: Path) -> None:
    a = open_registry(tmp_path / "a", linger_ms=20.0)
    a.start()
    fill(a, 300)
    a.stop()
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same database, copied
    a, b = open_registry(tmp_path / "a", linger_ms=20.0), open_registry(tmp_path / "b",
                                                                         linger_ms=20.0)
    a.start()
    b.start()
    hook = Webhook()
    try:
        fill(a, 50, salt="A")  # 350 entries on branch A, 300 shared
        assert a.verifier_key == b.verifier_key
        mdir = tmp_path / "monitor"
        with Uvicorn(a) as sa, Uvicorn(b) as sb:
            assert monitor_cli(sa.url, a.verifier_key, mdir)[0] == 0

            # B, still at 300, is an earlier state of A's tree: stale, not yet a rollback.
            code, up = monitor_cli(sb.url, b.verifier_key, mdir)
            assert code == 0 and (up["tree_size"], up["entries"]) == (350, 0), up
            assert up["stale"]["tree_size"] == 300
            assert up["stale"]["root"] == httpx.get(sb.url + "/v1/log").json()["root"]
            code, alert = monitor_cli(sb.url, b.verifier_key, mdir, "--rollback-after", "0")
            assert code == 1 and alert["alert"] == "rollback", alert
            assert alert["first_difference"] is None and alert["served"]["tree_size"] == 300
            code, said_ = monitor_cli(sb.url, b.verifier_key, mdir, "--rollback-after", "inf")
            assert code == 2 and "finite" in said_

            fill(b, 30, salt="B")

            def root_at(url: str, size: int) -> str:
                return str(httpx.get(url + "/v1/log/consistency",
                                     params={"from": size}).json()["old_root"])

            ours, theirs = root_at(sa.url, 301), root_at(sb.url, 301)
            assert ours != theirs and root_at(sa.url, 300) == root_at(sb.url, 300)
            fork = {"tree_size": 301, "ours": ours, "theirs": theirs}
            verified = {"tree_size": 350, "root": root_at(sa.url, 350)}

            # B is smaller (330): a rollback, and a different tree from 301 on.
            code, alert = monitor_cli(sb.url, b.verifier_key, mdir, "--alert-webhook", hook.url)
            assert code == 1
            assert alert["alert"] == "rollback" and alert["first_difference"] == fork
            assert alert["verified"] == verified
            assert alert["served"] == {"tree_size": 330, "root": root_at(sb.url, 330)}
            assert hook.alerts == [alert]

            fill(b, 20, salt="B")  # the same size as A, another root: located through tiles
            code, alert = monitor_cli(sb.url, b.verifier_key, mdir)
            assert code == 1 and alert["alert"] == "fork" and alert["first_difference"] == fork
            assert alert["served"]["tree_size"] == 350 and alert["seq"] == 300
            assert alert["served"]["root"] != verified["root"]

            fill(b, 30, salt="B")  # larger: its partial bundle re-serves entries 256.. otherwise
            code, alert = monitor_cli(sb.url, b.verifier_key, mdir)
            assert code == 1 and alert["alert"] == "fork" and alert["first_difference"] == fork
            assert alert["served"] == {"tree_size": 380, "root": root_at(sb.url, 380)}

            # Nothing from B was stored: A is still followed as before.
            fill(a, 10, salt="A")
            code, up = monitor_cli(sa.url, a.verifier_key, mdir)
            assert code == 0 and (up["previous_size"], up["tree_size"]) == (350, 360)
    finally:
        hook.close()
        a.stop()
        b.stop()


# --- rollback, signatures, tampered tiles, invalid entries -----------------------------------


def _poll_alert(follower: Follower) -> LogMisbehaved:
    with pytest.raises(LogMisbehaved) as e:
        follower.poll()
    return e.value


def test_an_earlier_state_of_the_tree_is_stale_until_its_replacement_is_old_then_a_rollback(
        reg: Node, tmp_path: Path) -> None:
    fill(reg, 300)
    old = service_tiles.checkpoint(reg)
    old_root = note.parse_checkpoint(note.parse_note(old).text).root
    fill(reg, 100)
    fetch = node_fetch(reg)

    def serving(text: str) -> Callable[[str], bytes]:
        return lambda p: text.encode() if p == "checkpoint" else fetch(p)

    now = [1_000_000.0]
    follower = Follower(Mirror(tmp_path / "m"), fetch, reg.verifier_key, stale_grace=300,
                        clock=lambda: now[0])
    assert follower.poll().tree_size == 400  # verified at 1,000,000
    verified = follower.mirror.latest()
    assert verified is not None and verified.verified_at == "1970-01-12T13:46:40Z"

    # A cache, or a process that has not heard of the newest block: the poll holds, the copy
    # stays at 400, and the stale view names when the tree that replaced it was verified.
    follower.fetch = serving(old)
    up = follower.poll()
    assert (up.previous_size, up.tree_size, up.root, up.entries) == (400, 400, verified.root, 0)
    assert up.stale is not None and (up.stale.tree_size, up.stale.root) == (300, old_root)
    assert up.to_dict()["stale"] == {"tree_size": 300, "root": old_root.hex(),
                                     "since": "1970-01-12T13:46:40Z"}
    now[0] += 299
    assert follower.poll().stale == up.stale
    follower.fetch = fetch  # the log's own tree in between changes nothing about the age
    assert follower.poll().stale is None
    follower.fetch = serving(old)

    # 300 s after 400 was verified, 300 is no cache's doing: a rollback, nothing stored, and
    # the same alert on the next poll (a webhook hears of it once).
    now[0] += 1
    status = MonitorStatus()
    with pytest.raises(LogMisbehaved) as e:
        status.poll(follower)
    assert e.value.alert.kind == "rollback" and "earlier state of the same tree" in e.value.detail
    assert "replaced by the tree of 400 entries verified at 1970-01-12T13:46:40Z" in e.value.detail
    assert e.value.alert.first_difference is None
    assert (e.value.alert.verified_size, e.value.alert.served_size) == (400, 300)
    assert e.value.alert.served_root == old_root
    assert e.value.alert.verified_root.hex() == reg.store.latest_block().header.tree_root.hex()
    with pytest.raises(LogMisbehaved):
        status.poll(follower)
    assert status.repeated and status.alerts["rollback"] == 1
    assert follower.mirror.sizes() == [400]

    # A monitor run again on the same copy (from cron) says the same at once.
    again = Follower(Mirror(tmp_path / "m"), serving(old), reg.verifier_key, stale_grace=300,
                     clock=lambda: now[0])
    assert _poll_alert(again).alert.kind == "rollback"
    again.mirror.close()

    # The log grows: an earlier state of the new tree is stale while that tree is new, but
    # 300 is still a tree replaced long ago.
    follower.fetch = fetch
    at400 = service_tiles.checkpoint(reg)
    fill(reg, 10)
    assert follower.poll().tree_size == 410
    follower.fetch = serving(at400)
    stale = follower.poll().stale
    assert stale is not None and (stale.tree_size, stale.since) == (400, now[0])
    follower.fetch = serving(old)
    assert _poll_alert(follower).alert.kind == "rollback"


def test_with_no_grace_the_first_earlier_state_is_a_rollback(reg: Node, tmp_path: Path) -> None:
    fill(reg, 30)
    old = service_tiles.checkpoint(reg)
    fill(reg, 5)
    fetch = node_fetch(reg)
    follower = Follower(Mirror(tmp_path / "m"), fetch, reg.verifier_key, stale_grace=0)
    assert follower.poll().tree_size == 35
    follower.fetch = lambda p: old.encode() if p == "checkpoint" else fetch(p)
    e = _poll_alert(follower)
    assert e.alert.kind == "rollback" and "earlier state of the same tree" in e.detail


def test_a_smaller_tree_that_is_not_an_earlier_state_is_a_rollback_at_once(
        reg: Node, tmp_path: Path) -> None:
    fill(reg, 300)
    fetch = node_fetch(reg)
    follower = Follower(Mirror(tmp_path / "m"), fetch, reg.verifier_key)
    assert follower.poll().tree_size == 300
    # The log's own key signs a checkpoint of 200 entries with a root that is not the copy's.
    forged = sign_note(note.format_checkpoint(note.Checkpoint(
        reg.origin, 200, merkle.tree_hash(199, follower.mirror))), [reg.signer])
    follower.fetch = lambda p: forged.encode() if p == "checkpoint" else fetch(p)
    e = _poll_alert(follower)
    assert e.alert.kind == "rollback" and "another root" in e.detail
    assert (e.alert.verified_size, e.alert.served_size) == (300, 200)


def test_a_checkpoint_not_signed_by_the_pinned_key_is_reported(reg: Node,
                                                               tmp_path: Path) -> None:
    fill(reg, 10)
    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                    PublicFormat.Raw)
    other = note.format_verifier_key("test.example/log", public)
    follower = Follower(Mirror(tmp_path / "m"), node_fetch(reg), other)
    e = _poll_alert(follower)
    assert e.alert.kind == "bad-signature" and "no signature by a trusted key" in e.detail
    assert follower.mirror.latest() is None


Fetch = Callable[[str], bytes]


def _tamper(fetch: Fetch, path: str, change: Callable[[list[bytes]], list[bytes]], *,
            retile: bool) -> Fetch:
    """Serve bundle `path` with its entries changed; with `retile`, its level-0 tile too, so
    the two agree and only the checkpoint's root (or validation) can catch it."""
    bundle = t.parse_path(path)
    tile = t.Tile(0, bundle.index, bundle.width).path()

    def tampered(p: str) -> bytes:
        entries = change(t.decode_bundle(fetch(path)))
        if p == path:
            return t.encode_bundle(entries)
        if p == tile and retile:
            return t.encode_tile(merkle.leaf_hashes(entries))
        return fetch(p)
    return tampered


def _swap_byte(entries: list[bytes]) -> list[bytes]:
    e = entries[10]
    return [*entries[:10], e.replace(b'"w"', b'"v"'), *entries[11:]]


def test_a_tampered_entry_bundle_is_reported(reg: Node, tmp_path: Path) -> None:
    fill(reg, 300)
    fetch = node_fetch(reg)
    f = Follower(Mirror(tmp_path / "m"), _tamper(fetch, "tile/entries/001.p/44", _swap_byte,
                                                 retile=False), reg.verifier_key)
    e = _poll_alert(f)
    assert e.alert.kind == "bad-tile" and e.alert.seq == 266
    assert "entry 266 in tile/entries/001.p/44 does not hash" in e.detail
    assert f.mirror.latest() is None and f.mirror.read_entry_data(0, 300) == []

    # Bundle and tile changed together: the entries no longer make the signed root.
    f = Follower(Mirror(tmp_path / "m2"), _tamper(fetch, "tile/entries/001.p/44", _swap_byte,
                                                  retile=True), reg.verifier_key)
    e = _poll_alert(f)
    assert e.alert.kind == "bad-tile" and "do not give the checkpoint's root" in e.detail
    assert (e.alert.served_size, e.alert.verified_size) == (300, 0)

    # A hash tile above level 0 that is not the tree's.
    fill(reg, 100)  # 400 entries: level 1 has a partial tile of 1 hash
    bad = t.Tile(1, 0, 1).path()
    f = Follower(Mirror(tmp_path / "m3"),
                 lambda p: bytes(32) if p == bad else fetch(p), reg.verifier_key)
    e = _poll_alert(f)
    assert e.alert.kind == "bad-tile" and bad in e.detail

    # A tile the tree has but the log does not serve.
    def missing(p: str) -> bytes:
        if p == "tile/0/001.p/144":
            raise NotFound(p)
        return fetch(p)
    e = _poll_alert(Follower(Mirror(tmp_path / "m4"), missing, reg.verifier_key))
    assert e.alert.kind == "bad-tile" and "does not serve tile/0/001.p/144" in e.detail


def test_an_invalid_entry_is_reported(reg: Node, tmp_path: Path) -> None:
    fill(reg, 20)
    fetch = node_fetch(reg)

    def bad_kind(entries: list[bytes]) -> list[bytes]:
        return [*entries[:7], entries[7].replace(b'"kind":"work"', b'"kind":"wxrk"'),
                *entries[8:]]
    f = Follower(Mirror(tmp_path / "m"), _tamper(fetch, "tile/entries/000.p/20", bad_kind,
                                                 retile=True), reg.verifier_key)
    e = _poll_alert(f)
    assert e.alert.kind == "invalid-entry" and e.alert.seq == 7 and "entry 7" in e.detail
    assert e.alert.to_dict()["served"]["tree_size"] == 20


def test_a_mirror_follows_one_log_key(reg: Node, tmp_path: Path) -> None:
    fill(reg, 1)
    Follower(Mirror(tmp_path / "m"), node_fetch(reg), reg.verifier_key).poll()
    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                    PublicFormat.Raw)
    r = cli("monitor", "--log", "http://127.0.0.1:9", "--trust",
            note.format_verifier_key("x", public), "--data-dir", str(tmp_path / "m"), "--once")
    # Rich wraps at 80 columns, and where depends on the temporary path's length (pytest-9 or
    # pytest-10, a --basetemp): compare the words, not the lines.
    assert r.returncode == 2 and "follows the log of key" in " ".join(r.stderr.split())


def test_a_mirror_batch_whose_commit_is_refused_leaves_no_open_transaction(
        tmp_path: Path) -> None:
    """A COMMIT SQLite refuses (the mirror in rollback-journal mode, as where WAL cannot be
    used, and a reader holding the file) rolls the batch back: the connection is not left in
    its transaction, so the next batch, once the reader is gone, is written (before D109 every
    later batch failed with "cannot start a transaction within a transaction")."""
    import sqlite3

    mirror = Mirror(tmp_path / "m")
    mirror._db.execute("PRAGMA journal_mode=DELETE")
    mirror._db.execute("PRAGMA busy_timeout=0")
    reader = sqlite3.connect(mirror.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM entries").fetchone()  # a shared lock on the file
    with pytest.raises(sqlite3.OperationalError, match="locked"), mirror._transaction():
        mirror._add(0, [b"{}"], [(0, 0, b"\x00" * 32)])
    assert not mirror._db.in_transaction
    reader.execute("ROLLBACK")
    reader.close()
    with mirror._transaction():
        mirror._add(0, [b"{}"], [(0, 0, b"\x00" * 32)])
    assert mirror._db.execute("SELECT count(*) FROM entries").fetchone() == (1,)
    mirror.close()


def test_a_signed_fork_or_rollback_is_alerted_even_if_the_log_fails_its_tiles(
        tmp_path: Path) -> None:
    """The log signs another root at the mirror's size (a fork), or a smaller tree with
    another root (a rollback), then fails the tile the monitor reads to find where it leaves
    the mirror: the alert stands on the signed checkpoints, without that leaf, where a
    failure other than 404 used to end the poll with a warning and no alert (D165)."""
    from copyledger.client.errors import TransportError
    from copyledger.notary.signer import FileSigner

    key = FileSigner.generate(ORIGIN_T, tmp_path / "log.key")
    vkey = note.format_verifier_key(ORIGIN_T, key.public_key)
    datas = [entry_mod.canonical_bytes(entry_mod.build_work(
        registrant="alice", received_at=entry_mod.utc_now(), sha256=sha(str(i)), title="w",
        creators=["A"], work_type="text")) for i in range(3)]
    leaves = merkle.leaf_hashes(datas)
    state: dict[str, Any] = {"cp": sign_note(note.format_checkpoint(note.Checkpoint(
        ORIGIN_T, 3, merkle.append(0, [], leaves).root)), [key]), "fail": False}

    def fetch(path: str) -> bytes:
        if path == "checkpoint":
            return str(state["cp"]).encode()
        if state["fail"]:
            raise TransportError("connection reset")
        tile = t.parse_path(path)
        return (t.encode_bundle(datas[:tile.width]) if tile.entries
                else t.encode_tile(leaves[:tile.width]))

    f = Follower(Mirror(tmp_path / "m"), fetch, vkey)
    assert f.poll().tree_size == 3
    state["fail"] = True
    for size in (3, 2):  # (a fork, then a rollback)
        state["cp"] = sign_note(note.format_checkpoint(note.Checkpoint(ORIGIN_T, size,
                                                                       bytes(32))), [key])
        with pytest.raises(LogMisbehaved) as raised:
            f.poll()
        assert raised.value.alert.kind in ("fork", "rollback"), raised.value.alert


def test_a_signed_tree_of_2_to_the_40_is_met_tile_by_tile(tmp_path: Path) -> None:
    """A checkpoint of a tree the monitor cannot hold (here 2**40 leaves, signed by the log)
    is read tile by tile: the first bundle the log cannot serve is an alert, where listing its
    tiles first (2**32 of them) ran the monitor out of memory before any fetch (D165)."""
    from copyledger.notary.signer import FileSigner

    key = FileSigner.generate(ORIGIN_T, tmp_path / "log.key")
    vkey = note.format_verifier_key(ORIGIN_T, key.public_key)
    fetched: list[str] = []

    def fetch(path: str) -> bytes:
        fetched.append(path)
        if path == "checkpoint":
            return sign_note(note.format_checkpoint(note.Checkpoint(ORIGIN_T, 2**40, bytes(32))),
                             [key]).encode()
        raise NotFound("no such tile")

    with pytest.raises(LogMisbehaved):
        Follower(Mirror(tmp_path / "m"), fetch, vkey).poll()
    assert 1 < len(fetched) <= 3, fetched


ORIGIN_T = "monitor.example/log"
