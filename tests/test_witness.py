"""The C2SP witness (D28): cosignatures as the spec writes them, the add-checkpoint rules and
status codes, against a real registry and a forked copy of it, and a witness process that is
SIGKILLed right after cosigning and never contradicts itself afterwards."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from copyledger.api.witness_app import create_witness_app
from copyledger.ledger import cosignature, merkle, note
from copyledger.ledger.cosignature import AddCheckpointRequest, Cosignature
from copyledger.ledger.errors import Conflict, InvalidInput, SignatureError, VerificationError
from copyledger.notary.signer import FileSigner, sign_note
from copyledger.service import reads
from copyledger.service.node import Node
from copyledger.service.witness import LogConfig, Witness, open_witness
from tests.helpers import open_registry
from tests.server import ServerProcess, cli
from tests.test_audit import fill
from tests.test_notary_consistency import ORIGIN, Tree

VECTORS = Path(__file__).parent / "vectors"
EXAMPLES = VECTORS / "c2sp" / "examples"
W = "witness.example/w1"


def _example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


@pytest.fixture
def log_key(tmp_path: Path) -> FileSigner:
    return FileSigner.generate(ORIGIN, tmp_path / "log.key")


def make_witness(tmp_path: Path, *logs: LogConfig) -> Witness:
    signer = FileSigner.generate(W, tmp_path / "w.key")
    return Witness(signer, list(logs), tmp_path / "w.sqlite3")


def body(old: int, proof: list[bytes] | tuple[bytes, ...], signed: str) -> bytes:
    return AddCheckpointRequest(old, tuple(proof), signed.encode()).to_bytes()


# ---------------------------------------------------------------- the spec's formats


def test_signed_message_is_the_spec_example_byte_for_byte() -> None:
    expected = _example("tlog-cosignature-signed-message-example.txt")
    text = note.parse_note(_example("tlog-checkpoint-example.note")).text
    assert cosignature.signed_message(text, 1679315147) == expected


def test_the_spec_example_cosignature_line_reads_back() -> None:
    signed = note.parse_note(_example("tlog-cosignature-example.note"))
    line = next(s for s in signed.signatures if s.name == "witness.example.com/w1")
    cosig = Cosignature.from_note_signature(line)
    assert cosig.timestamp == 1679315147  # the time line of the spec's signed message
    assert note.format_signature_line(line) == cosig.line()


def test_transparency_dev_cosignature_vectors() -> None:
    """Another implementation's 0x04 vkey has the key ID we compute, and its cosignature's
    timestamp reads as it says."""
    vectors = json.loads((VECTORS / "transparency-dev-formats" / "note-vectors.json").read_text())
    vkey = next(v.split(" ")[0] for v in vectors["cosignature_v1_vkeys"] if "0x04" in v)
    assert cosignature.parse_verifier_key(vkey).name == "remora.n621.de"
    with pytest.raises(InvalidInput):  # a 0x01 (log) key is not a cosignature key
        cosignature.parse_verifier_key(vectors["sum_golang_org_vkey"])
    parse = vectors["cosignature_v1_timestamp_parse"]
    raw = base64.b64decode(parse["sig_base64"])
    cosig = Cosignature.from_note_signature(note.Signature("w", raw[:4], raw[4:]))
    assert cosig.timestamp == parse["want_unix_time"]


def test_the_spec_example_request_parses_and_formats_back() -> None:
    raw = _example("tlog-witness-add-checkpoint-request-example.txt")
    req = AddCheckpointRequest.from_bytes(raw)
    assert req.old_size == 20852014 and len(req.proof) == 4
    assert note.parse_checkpoint(note.parse_note(req.checkpoint_note).text).size == 20852163
    assert req.to_bytes() == raw


@pytest.mark.parametrize("bad", [
    b"old 01\n\nx", b"old -1\n\nx", b"new 1\n\nx", b"old 1\nnot base64\n\nx", b"old 1\nx",
    b"old 1\n" + b"".join(base64.b64encode(bytes(32)) + b"\n" for _ in range(64)) + b"\nx",
])
def test_malformed_requests_are_refused(bad: bytes) -> None:
    with pytest.raises(InvalidInput):
        AddCheckpointRequest.from_bytes(bad)


def test_a_cosignature_verifies_by_the_spec_text_alone(tmp_path: Path,
                                                        log_key: FileSigner) -> None:
    """Built from the spec by hand, with `cryptography` only: our key ID, message and line."""
    tree = Tree().grow(5)
    w = make_witness(tmp_path, LogConfig(ORIGIN, (note.parse_verifier_key(
        note.format_verifier_key(ORIGIN, log_key.public_key)),)))
    signed = sign_note(tree.checkpoint(), [log_key])
    line = w.add_checkpoint(body(0, [], signed), now=1700000000)

    assert line.startswith(f"\u2014 {W} ") and line.endswith("\n")
    raw = base64.b64decode(line.split(" ")[2])
    pub = w.signer.public_key
    assert raw[:4] == hashlib.sha256(W.encode() + b"\n\x04" + pub).digest()[:4]
    assert struct.unpack(">Q", raw[4:12])[0] == 1700000000
    message = b"cosignature/v1\ntime 1700000000\n" + tree.checkpoint().encode()
    Ed25519PublicKey.from_public_bytes(pub).verify(raw[12:], message)  # raises if wrong
    # the vkey printed by `witness init` is name+keyid+base64(0x04 || key)
    name, hex_id, key = w.verifier_key.split("+", 2)
    assert (name, bytes.fromhex(hex_id), base64.b64decode(key)) == (W, raw[:4], b"\x04" + pub)
    # and our own verifier agrees, on the line appended to the note as a client would
    assert cosignature.cosignatures_of(signed + line, [
        cosignature.parse_verifier_key(w.verifier_key)])[0].timestamp == 1700000000
    with pytest.raises(SignatureError):
        cosignature.cosignatures_of(signed.replace("\n5\n", "\n6\n") + line,
                                    [cosignature.parse_verifier_key(w.verifier_key)])


def test_concurrent_requests_cannot_roll_the_witness_back(tmp_path: Path,
                                                          log_key: FileSigner) -> None:
    """The spec's race: many requests from old size 0 at once; one wins, the rest get 409,
    and the witness ends at the size it cosigned."""
    w = make_witness(tmp_path, LogConfig(ORIGIN, (note.parse_verifier_key(
        note.format_verifier_key(ORIGIN, log_key.public_key)),)))
    tree = Tree().grow(20)
    bodies = [body(0, [], sign_note(tree.checkpoint(n), [log_key])) for n in range(1, 21)]

    def submit(b: bytes) -> bool:
        try:
            w.add_checkpoint(b)
        except Conflict:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, bodies))
    assert results.count(True) == 1
    won = results.index(True) + 1  # bodies[n - 1] is the checkpoint of size n
    assert w.latest(ORIGIN) == note.Checkpoint(ORIGIN, won, tree.root(won))


# ---------------------------------------------------------------- the rules, over HTTP


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = open_registry(tmp_path / "a", linger_ms=1.0)
    n.start()
    yield n
    n.stop()


def state(n: Node) -> tuple[str, note.Checkpoint]:
    signed = reads.checkpoint(n)
    return signed, note.parse_checkpoint(note.parse_note(signed).text)


def proof(n: Node, old: int, new: int) -> list[bytes]:
    return [bytes.fromhex(h) for h in reads.consistency(n, old, new)["proof"]]


def witness_for(tmp_path: Path, n: Node) -> TestClient:
    log = LogConfig.from_vkeys(n.origin, [n.verifier_key])
    return TestClient(create_witness_app(make_witness(tmp_path, log)))


def test_a_real_log_is_cosigned_and_every_lie_refused(tmp_path: Path, node: Node) -> None:
    w = witness_for(tmp_path, node)
    post = lambda b: w.post("/add-checkpoint", content=b)  # noqa: E731
    fill(node, 3)
    signed1, cp1 = state(node)
    r = post(body(0, [], signed1))
    assert r.status_code == 200, r.text
    cosignature.verify_cosignature(
        note.parse_note(signed1).text, Cosignature.parse_line(r.text),
        cosignature.parse_verifier_key(w.app.state.witness.verifier_key))
    fill(node, 5)
    signed2, cp2 = state(node)
    assert post(body(cp1.size, proof(node, cp1.size, cp2.size), signed2)).status_code == 200
    # the same checkpoint again is fine (nothing to prove)
    assert post(body(cp2.size, [], signed2)).status_code == 200

    # old does not match: 409 with the witness's size, as text/x.tlog.size
    r = post(body(cp1.size, proof(node, cp1.size, cp2.size), signed2))
    assert (r.status_code, r.text, r.headers["content-type"]) == (
        409, f"{cp2.size}\n", "text/x.tlog.size")
    # a rollback: the older checkpoint, from the witness's size (400) or its own (409)
    assert post(body(cp2.size, [], signed1)).status_code == 400
    assert post(body(cp1.size, [], signed1)).status_code == 409
    # another root at the same size, signed by the log's own key
    forged = sign_note(note.format_checkpoint(note.Checkpoint(
        node.origin, cp2.size, hashlib.sha256(b"other").digest())), [node.signer])
    assert post(body(cp2.size, [], forged)).status_code == 422
    # a wrong proof: one flipped byte
    fill(node, 2)
    signed3, cp3 = state(node)
    good = proof(node, cp2.size, cp3.size)
    bad = [bytes([good[0][0] ^ 1]) + good[0][1:], *good[1:]]
    assert post(body(cp2.size, bad, signed3)).status_code == 422
    assert post(body(cp2.size, good[:-1], signed3)).status_code == 422
    # an unknown log, a checkpoint signed by another key, a tampered signature
    stranger = FileSigner.generate("other.example/log", tmp_path / "o.key")
    assert post(body(0, [], sign_note(Tree().grow(1).checkpoint().replace(
        ORIGIN, "other.example/log"), [stranger]))).status_code == 404
    impostor = FileSigner.generate(node.origin, tmp_path / "i.key")
    assert post(body(cp2.size, good, sign_note(note.parse_note(signed3).text,
                                                [impostor]))).status_code == 403
    head, sig = signed3.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 1  # inside the signature, after the key ID
    flipped = f"{head} {base64.b64encode(bytes(raw)).decode()}\n"
    assert post(body(cp2.size, good, flipped)).status_code == 403
    # none of that moved the witness: the honest next step still holds
    assert post(body(cp2.size, good, signed3)).status_code == 200


def test_a_forked_log_is_cosigned_on_one_branch_only(tmp_path: Path) -> None:
    a = open_registry(tmp_path / "a", linger_ms=1.0)
    a.start()
    fill(a, 4)
    a.stop()
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the operator keeps a second copy
    a = open_registry(tmp_path / "a", linger_ms=1.0)
    b = open_registry(tmp_path / "b", linger_ms=1.0)
    a.start()
    b.start()
    try:
        _, base = state(a)
        assert state(b)[1] == base
        w = witness_for(tmp_path, a)
        post = lambda b_: w.post("/add-checkpoint", content=b_)  # noqa: E731
        fill(a, 3)
        fill(b, 5)
        signed_a, cp_a = state(a)
        signed_b, cp_b = state(b)
        assert post(body(0, [], signed_a)).status_code == 200
        # branch b, at its own size and with its own honest proof from a's size: refused
        assert post(body(cp_a.size, proof(b, cp_a.size, cp_b.size), signed_b)).status_code == 422
        assert post(body(cp_a.size, [], signed_b)).status_code == 422
        fill(b, 1)
        signed_b2, cp_b2 = state(b)
        assert post(body(cp_a.size, proof(b, cp_a.size, cp_b2.size), signed_b2)).status_code \
            == 422
        # while branch a goes on being cosigned
        fill(a, 2)
        signed_a2, cp_a2 = state(a)
        assert post(body(cp_a.size, proof(a, cp_a.size, cp_a2.size), signed_a2)).status_code \
            == 200
    finally:
        a.stop()
        b.stop()


# ---------------------------------------------------------------- a real process, SIGKILL


def test_a_killed_witness_never_contradicts_what_it_cosigned(tmp_path: Path,
                                                              log_key: FileSigner) -> None:
    vkey = note.format_verifier_key(ORIGIN, log_key.public_key)
    wdir = tmp_path / "witness"
    r = cli("witness", "init", "--data-dir", str(wdir), "--name", W, "--log", vkey, "--json")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)["verifier_key"]
    assert (wdir / "witness.key").stat().st_mode & 0o777 == 0o600
    verifier = cosignature.parse_verifier_key(printed)

    honest, fork = Tree(), Tree("fork")
    honest.grow(5)
    fork.grow(9)
    server = ServerProcess(wdir, command=("witness", "serve")).start()
    try:
        r = httpx.post(server.url + "/add-checkpoint",
                       content=body(0, [], sign_note(honest.checkpoint(), [log_key])))
        assert r.status_code == 200
        server.kill9()  # right after the answer
        cosignature.verify_cosignature(honest.checkpoint(), Cosignature.parse_line(r.text),
                                       verifier)
        server.start()
        post = lambda b: httpx.post(server.url + "/add-checkpoint", content=b)  # noqa: E731
        fork_signed = sign_note(fork.checkpoint(), [log_key])
        assert post(body(0, [], fork_signed)).text == "5\n"  # it remembers size 5
        fork_proof = merkle.consistency_proof(5, 9, fork.reader)
        assert post(body(5, fork_proof, fork_signed)).status_code == 422
        assert post(body(5, [], sign_note(fork.checkpoint(5), [log_key]))).status_code == 422
        honest.grow(4)
        ok = post(body(5, merkle.consistency_proof(5, 9, honest.reader),
                       sign_note(honest.checkpoint(), [log_key])))
        assert ok.status_code == 200
        server.kill9()
        server.start()
        assert post(body(0, [], fork_signed)).text == "9\n"
    finally:
        server.stop()
    assert open_witness(wdir).latest(ORIGIN) == note.Checkpoint(ORIGIN, 9, honest.root())


# ---------------------------------------------------------------- monitor retrieval (D43)


def test_the_witness_serves_what_it_cosigned_for_monitors(tmp_path: Path, node: Node) -> None:
    """tlog-witness `GET <origin hash>/checkpoint`: the log's note as the witness verified it,
    with the cosignature line add-checkpoint returned; 404 before that or for another log."""
    w = witness_for(tmp_path, node)
    path = "/" + hashlib.sha256(node.origin.encode()).hexdigest() + "/checkpoint"
    assert w.get(path).status_code == 404  # nothing cosigned yet
    assert w.get("/" + hashlib.sha256(b"other").hexdigest() + "/checkpoint").status_code == 404
    fill(node, 3)
    signed, _ = state(node)
    line = w.post("/add-checkpoint", content=body(0, [], signed)).text
    r = w.get(path)
    assert r.status_code == 200 and r.text == signed + line
    assert r.headers["cache-control"] == "no-cache"
    wkey = cosignature.parse_verifier_key(w.app.state.witness.verifier_key)
    assert len(cosignature.cosignatures_of(r.text, [wkey])) == 1
    note.verify_note(r.text, [note.parse_verifier_key(node.verifier_key)])

    # A state file from before D43 kept no line: the checkpoint is cosigned again when read.
    witness: Witness = w.app.state.witness
    witness._db.execute("UPDATE checkpoints SET cosignature = NULL")
    again = witness.cosigned_checkpoint(path.split("/")[1], now=1_800_000_000)
    assert again.startswith(signed) and again != signed + line
    (cosig,) = cosignature.cosignatures_of(again, [wkey])
    assert cosig.timestamp == 1_800_000_000


def test_lines_the_log_added_to_its_note_never_reach_the_witness_readers(
        tmp_path: Path, log_key: FileSigner) -> None:
    """The witness keeps and serves the log's note with only the log's own (verified)
    signature lines: a line the log put under the witness's name, or enough lines to pass a
    reader's limit of 100 with the witness's, made every monitor refuse the cosigned
    checkpoint, so a fork it would show stayed hidden (D165)."""
    w = make_witness(tmp_path, LogConfig.from_vkeys(
        ORIGIN, [note.format_verifier_key(ORIGIN, log_key.public_key)]))
    wkey = cosignature.parse_verifier_key(w.verifier_key)
    signed = sign_note(note.format_checkpoint(note.Checkpoint(
        ORIGIN, 1, merkle.leaf_hashes([b"a"])[0])), [log_key])
    bogus = "\u2014 " + W + " " + base64.b64encode(w.key_id + bytes(72)).decode() + "\n"
    others = "".join(f"\u2014 other.example/k{i} " + base64.b64encode(
        bytes([i, 0, 0, 0]) + bytes(64)).decode() + "\n" for i in range(98))
    line = w.add_checkpoint(body(0, [], signed + bogus + others))
    served = w.cosigned_checkpoint(hashlib.sha256(ORIGIN.encode()).hexdigest())
    assert served == signed + line
    assert len(cosignature.cosignatures_of(served, [wkey])) == 1
    note.verify_note(served, [note.parse_verifier_key(
        note.format_verifier_key(ORIGIN, log_key.public_key))])


def test_the_cosigning_client_takes_its_witness_line_among_several() -> None:
    """A witness may answer add-checkpoint with one or more lines (several keys, another
    algorithm's first): the client takes the one by the key it trusts and ignores the rest,
    as c2sp.org/tlog-witness says, and refuses an answer with none (D165)."""
    import tempfile

    d = Path(tempfile.mkdtemp())
    text = note.format_checkpoint(note.Checkpoint(ORIGIN, 1, merkle.leaf_hashes([b"a"])[0]))

    def line(name: str) -> tuple[cosignature.CosignatureVerifier, str]:
        signer = FileSigner.generate(name, d / f"{name.replace('/', '_')}.key")
        v = cosignature.parse_verifier_key(
            cosignature.format_verifier_key(name, signer.public_key))
        return v, Cosignature(name, v.key_id, 1_700_000_000, signer.sign(
            cosignature.signed_message(text, 1_700_000_000))).line()

    (a, line_a), (b, line_b) = line("w.example/a"), line("w.example/b")
    picked = Cosignature.by(line_b + line_a, a)
    cosignature.verify_cosignature(text, picked, a)
    assert Cosignature.by(line_a + line_b, b).name == "w.example/b"
    with pytest.raises(VerificationError):
        Cosignature.by(line_b, a)


def test_a_state_file_from_before_monitor_retrieval_gains_the_column(tmp_path: Path) -> None:
    import sqlite3
    old = sqlite3.connect(tmp_path / "w.sqlite3")
    old.execute("CREATE TABLE checkpoints (origin TEXT PRIMARY KEY, size TEXT NOT NULL, "
                "root BLOB NOT NULL, checkpoint TEXT NOT NULL)")
    old.commit()
    old.close()
    w = make_witness(tmp_path)
    assert "cosignature" in {r[1] for r in w._db.execute("PRAGMA table_info(checkpoints)")}
    w.close()
