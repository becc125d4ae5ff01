"""The monitor compares its copy with what witnesses cosigned (D43), in process: a witness's
cosigned checkpoint that is the copy's tree is `consistent`, a larger one waits (`ahead`) until
the copy gets there, one that contradicts the copy is a `fork` alert naming the witness, both
sizes and both roots, and one without a valid log signature or cosignature proves nothing.
The split view with real processes is in tests/test_split_view.py."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from copyledger.ledger import cosignature, merkle, note
from copyledger.ledger.errors import InvalidInput, NotFound
from copyledger.notary.signer import FileSigner, sign_note
from copyledger.service.monitor import (
    Follower,
    LogMisbehaved,
    Mirror,
    MonitorStatus,
    WitnessSource,
    parse_witness_option,
)
from copyledger.service.node import Node
from copyledger.service.witness import LogConfig, Witness
from tests.test_monitor import fill, node_fetch, reg  # noqa: F401 (the fixture)
from tests.test_witness import body, proof


def witness(tmp_path: Path, n: Node, name: str) -> Witness:
    signer = FileSigner.generate(name, tmp_path / f"{name.replace('/', '_')}.key")
    return Witness(signer, [LogConfig.from_vkeys(n.origin, [n.verifier_key])],
                   tmp_path / f"{name.replace('/', '_')}.sqlite3")


def read(w: Witness) -> Callable[[str], bytes]:
    """What `witness serve` answers at `<origin hash>/checkpoint`, without HTTP."""
    def fetch(path: str) -> bytes:
        origin_hash, _, rest = path.partition("/")
        assert rest == "checkpoint", path
        return w.cosigned_checkpoint(origin_hash).encode()
    return fetch


def source(w: Witness, fetch: Callable[[str], bytes] | None = None) -> WitnessSource:
    return WitnessSource.at_witness(cosignature.parse_verifier_key(w.verifier_key),
                                    fetch or read(w), f"http://{w.name}")


def checkpoint(n: Node) -> tuple[str, note.Checkpoint]:
    fetch = node_fetch(n)
    signed = fetch("checkpoint").decode()
    return signed, note.parse_checkpoint(note.parse_note(signed).text)


def test_a_witness_that_saw_the_copys_tree_or_a_larger_one_is_consistent_or_ahead(
        reg: Node, tmp_path: Path) -> None:  # noqa: F811
    w = witness(tmp_path, reg, "witness.example/w1")
    follower = Follower(Mirror(tmp_path / "m"), node_fetch(reg), reg.verifier_key,
                        [source(w)])
    fill(reg, 30)
    up = follower.poll()
    assert [v.status for v in up.witnesses] == ["none"]  # it cosigned nothing yet
    signed, cp = checkpoint(reg)
    w.add_checkpoint(body(0, [], signed), now=1_700_000_000)
    status = MonitorStatus()
    (view,) = status.poll(follower).witnesses
    assert status.snapshot()["witnesses"] == {"witness.example/w1": "consistent"}
    assert (view.status, view.tree_size, view.root, view.cosigned_at) == (
        "consistent", 30, cp.root, 1_700_000_000)
    assert up.to_dict()["witnesses"][0]["status"] == "none"

    fill(reg, 20)  # the witness sees 50 before the monitor does: compared once it has them
    signed50, cp50 = checkpoint(reg)
    follower.fetch = lambda p: signed.encode() if p == "checkpoint" else node_fetch(reg)(p)
    w.add_checkpoint(body(30, proof(reg, 30, 50), signed50))
    up = follower.poll()
    assert up.tree_size == 30 and up.witnesses[0].status == "ahead"
    follower.fetch = node_fetch(reg)
    up = follower.poll()
    assert up.tree_size == 50 and up.witnesses[0].status == "consistent"
    assert up.witnesses[0].root == cp50.root


def test_a_cosigned_checkpoint_that_contradicts_the_copy_is_a_split_view(
        reg: Node, tmp_path: Path) -> None:  # noqa: F811
    fill(reg, 40)
    honest = witness(tmp_path, reg, "witness.example/honest")
    fooled = witness(tmp_path, reg, "witness.example/fooled")
    honest.add_checkpoint(body(0, [], checkpoint(reg)[0]))
    # The operator shows `fooled` another tree of 25 entries, signed with the log's own key.
    other = hashlib.sha256(b"another branch").digest()
    fooled.add_checkpoint(body(0, [], sign_note(note.format_checkpoint(
        note.Checkpoint(reg.origin, 25, other)), [reg.signer])), now=1_700_000_123)
    mirror = Mirror(tmp_path / "m")
    follower = Follower(mirror, node_fetch(reg), reg.verifier_key,
                        [source(honest), source(fooled)])
    with pytest.raises(LogMisbehaved) as e:
        follower.poll()
    ours = merkle.tree_hash(25, mirror)
    a = e.value.alert
    assert a.kind == "fork" and "witness.example/fooled" in a.detail
    assert (a.verified_size, a.verified_root) == (40, checkpoint(reg)[1].root)
    assert (a.served_size, a.served_root) == (25, other)
    assert a.to_dict()["witness"] == {"name": "witness.example/fooled",
                                      "where": "http://witness.example/fooled",
                                      "cosigned_at": 1_700_000_123, "ours": ours.hex()}
    assert ours.hex() in a.detail and other.hex() in a.detail
    # the log's own checks held: its tree was stored, and the next poll says the same
    assert mirror.latest() is not None and mirror.latest().size == 40  # type: ignore[union-attr]
    with pytest.raises(LogMisbehaved) as again:
        follower.poll()
    assert again.value.alert == a


def test_what_does_not_verify_proves_nothing(reg: Node, tmp_path: Path) -> None:  # noqa: F811
    fill(reg, 10)
    signed, _ = checkpoint(reg)
    w = witness(tmp_path, reg, "witness.example/w1")
    w.add_checkpoint(body(0, [], signed))
    good = read(w)
    forged_root = sign_note(note.format_checkpoint(note.Checkpoint(
        reg.origin, 5, hashlib.sha256(b"x").digest())), [reg.signer])
    impostor = FileSigner.generate(reg.origin, tmp_path / "impostor.key")

    def unreachable(path: str) -> bytes:
        raise InvalidInput("connection refused")

    def missing(path: str) -> bytes:
        raise NotFound(path)
    cases: dict[str, Callable[[str], bytes]] = {
        # another root, with the witness's line from the real checkpoint: a bad cosignature
        "bad cosignature": lambda p: (forged_root + good(p).decode().splitlines(True)[-1])
        .encode(),
        # the witness's checkpoint, but not signed by the log's key
        "not the log's": lambda p: (sign_note(note.parse_note(good(p)).text, [impostor])
                                    + good(p).decode().splitlines(True)[-1]).encode(),
        "no cosignature": lambda p: signed.encode(),
        "not UTF-8": lambda p: b"\xff",
    }
    for what, fetch in cases.items():
        follower = Follower(Mirror(tmp_path / what), node_fetch(reg), reg.verifier_key,
                            [source(w, fetch)])
        (view,) = follower.poll().witnesses
        assert view.status == "unverified" and view.tree_size is None, (what, view)
    for status, fetch in (("unreachable", unreachable), ("none", missing)):
        follower = Follower(Mirror(tmp_path / status), node_fetch(reg), reg.verifier_key,
                            [source(w, fetch)])
        assert follower.poll().witnesses[0].status == status


def test_the_witness_option_names_a_url_or_only_a_key(tmp_path: Path) -> None:
    signer = FileSigner.generate("witness.example/w1", tmp_path / "w.key")
    vkey = cosignature.format_verifier_key(signer.name, signer.public_key)
    url, v = parse_witness_option(f"http://127.0.0.1:8400={vkey}")
    assert url == "http://127.0.0.1:8400" and v.public_key == signer.public_key
    assert parse_witness_option(vkey) == (None, v)
    with pytest.raises(InvalidInput, match="URL=VKEY"):
        parse_witness_option("https://w.example")
    with pytest.raises(InvalidInput):
        parse_witness_option("http://w.example=not-a-key")


def test_a_witness_whose_newest_cosignature_is_older_than_max_age_is_old(
        reg: Node, tmp_path: Path) -> None:  # noqa: F811
    """D133: with `max_age`, a witness's cosignature of the copy's tree is `old` once it is
    more than that many seconds old (one of a larger tree stays `ahead`); a fresh cosignature
    of the same unchanged tree makes it `consistent` again. Without `max_age` age is not
    looked at. The metrics' snapshot keeps the newest time each witness showed."""
    w = witness(tmp_path, reg, "witness.example/w1")
    now = [1_700_000_000.0]
    follower = Follower(Mirror(tmp_path / "m"), node_fetch(reg), reg.verifier_key,
                        [source(w)], clock=lambda: now[0], max_age=900)
    fill(reg, 12)
    signed, cp = checkpoint(reg)
    w.add_checkpoint(body(0, [], signed), now=1_700_000_000)
    status = MonitorStatus()
    assert [v.status for v in status.poll(follower).witnesses] == ["consistent"]
    now[0] += 900  # exactly max_age: still fresh
    assert [v.status for v in follower.poll().witnesses] == ["consistent"]
    now[0] += 1
    (view,) = status.poll(follower).witnesses
    assert (view.status, view.tree_size, view.root, view.cosigned_at) == (
        "old", 12, cp.root, 1_700_000_000)
    assert "901 s ago, more than 900 s" in view.detail
    assert status.snapshot()["witnesses"] == {"witness.example/w1": "old"}
    # The log asks again about the same tree (D133): the witness cosigns it with a new time.
    w.add_checkpoint(body(12, [], signed), now=1_700_000_901)
    (view,) = status.poll(follower).witnesses
    assert (view.status, view.cosigned_at) == ("consistent", 1_700_000_901)
    assert status.snapshot()["cosigned_at"] == {"witness.example/w1": 1_700_000_901}
    # A larger tree the witness saw is `ahead` whatever its age: that says more.
    fill(reg, 5)
    signed17, _ = checkpoint(reg)
    follower.fetch = lambda p: signed.encode() if p == "checkpoint" else node_fetch(reg)(p)
    w.add_checkpoint(body(12, proof(reg, 12, 17), signed17), now=1_700_000_950)
    now[0] = 1_700_000_950 + 901
    assert [v.status for v in follower.poll().witnesses] == ["ahead"]
    follower.fetch = node_fetch(reg)  # the monitor is shown it: the same tree, old
    assert [v.status for v in follower.poll().witnesses] == ["old"]
    follower.max_age = None  # age not looked at
    assert [v.status for v in follower.poll().witnesses] == ["consistent"]
