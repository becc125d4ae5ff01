"""D123: what a stand-alone notary returns is checked against the keys the registry fetched
from it at its start, without refusing a legitimate answer (a chain with several roots, in any
order). Fakes stand in for the notary's HTTP here; tests/test_notary_service.py swaps the keys
of a real notary under a running registry."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from copyledger.ledger import note, sm2
from copyledger.ledger.errors import InvalidInput, Unavailable
from copyledger.notary import remote as rm
from copyledger.notary.signer import FileSigner
from copyledger.notary.sm2 import Sm2Signer
from copyledger.notary.sm2_tsa import (
    SM2_ROOT_FILE,
    SM2_TSA_CERT_FILE,
    create_sm2_tsa_chain,
    load_sm2_tsa,
)
from copyledger.notary.tsa import (
    ROOT_FILE,
    TSA_CERT_FILE,
    TSA_KEY_FILE,
    TimeStampAuthority,
    create_tsa_chain,
    import_tsa,
    load_tsa,
)

ORIGIN = "n.example/log"


class FakeNotary:
    """The parts of `RemoteNotary` the checks use; `answer` is what its HTTP calls return."""

    url = "http://notary.invalid"

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)
        self.answer: Any = None

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        return self.answer(path, kw.get("json") or {})


def _tsa_answering(tsa: Any) -> Any:
    def answer(path: str, body: dict[str, Any]) -> dict[str, str]:
        token = tsa.timestamp_digest(base64.b64decode(body["digest"]))
        return {"token": base64.b64encode(token).decode()}
    return answer


@pytest.mark.parametrize("issuing_root_first", [True, False])
def test_tokens_from_the_fetched_tsa_pass_whatever_the_order_of_its_roots(
        tmp_path: Path, issuing_root_first: bool) -> None:
    """An imported TSA chain may carry several roots (`import_tsa`); the registry trusts every
    self-signed one the notary serves, so the order does not matter. A token from another TSA,
    or over another digest, is refused, saying why."""
    create_tsa_chain(tmp_path / "a", ORIGIN)
    create_tsa_chain(tmp_path / "b", ORIGIN)  # an unrelated second root, and another TSA
    roots = [(tmp_path / d / ROOT_FILE).read_bytes() for d in ("a", "b")]
    if not issuing_root_first:
        roots.reverse()
    import_tsa(tmp_path / "t", (tmp_path / "a" / TSA_CERT_FILE).read_bytes(),
               (tmp_path / "a" / TSA_KEY_FILE).read_bytes(), b"".join(roots))
    ident = load_tsa(tmp_path / "t")
    notary = FakeNotary(identity=rm.RemoteIdentity(ident.certificate, ident.chain))
    remote = rm.RemoteTSA(notary)  # type: ignore[arg-type]
    assert len(notary.identity.roots) == 2
    digest = hashlib.sha256(b"a block").digest()

    notary.answer = _tsa_answering(TimeStampAuthority(ident))
    assert remote.timestamp_digest(digest)

    notary.answer = _tsa_answering(TimeStampAuthority(load_tsa(tmp_path / "b")))
    with pytest.raises(Unavailable, match="does not verify under the log's keys") as e:
        remote.timestamp_digest(digest)
    assert "re-keyed or replaced" in e.value.internal

    notary.answer = lambda path, body: _tsa_answering(TimeStampAuthority(ident))(
        path, {"digest": base64.b64encode(hashlib.sha256(b"another").digest()).decode()})
    with pytest.raises(Unavailable) as e:
        remote.timestamp_digest(digest)
    assert "different digest" in e.value.internal


def test_signatures_are_checked_under_the_fetched_key(tmp_path: Path) -> None:
    """Ed25519 and SM2 note signatures pass under the key fetched at start, and are refused
    under any other (a re-keyed notary signing under the old key's line)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    old, new = (FileSigner(ORIGIN, Ed25519PrivateKey.generate()) for _ in range(2))
    vkey = note.format_verifier_key(ORIGIN, old.public_key)
    notary = FakeNotary(name=ORIGIN, public_key_bytes=old.public_key,
                        verifier=note.parse_verifier_key(vkey))
    signer = rm.RemoteSigner(notary)  # type: ignore[arg-type]
    message = b"n.example/log\n1\n" + base64.b64encode(b"\0" * 32) + b"\n"
    for key, ok in ((old, True), (new, False)):
        notary.answer = lambda path, body, key=key: {
            "signature": base64.b64encode(key.sign(base64.b64decode(body["message"]))).decode()}
        if ok:
            assert notary.verifier.verify(message, signer.sign(message))
        else:
            with pytest.raises(Unavailable) as e:
                signer.sign(message)
            assert vkey in e.value.internal

    sm_old, sm_new = (Sm2Signer(ORIGIN, n) for n in (12345, 67890))
    create_sm2_tsa_chain(tmp_path / "sm", ORIGIN)
    chain = [(tmp_path / "sm" / f).read_text() for f in (SM2_TSA_CERT_FILE, SM2_ROOT_FILE)]
    notary = FakeNotary(name=ORIGIN, sm2_verifier_key=sm_old.verifier_key, sm2_tsa_chain=chain)
    sm_signer = rm.RemoteSm2Signer(notary)  # type: ignore[arg-type]
    for sm_key, ok in ((sm_old, True), (sm_new, False)):
        notary.answer = lambda path, body, k=sm_key: {
            "signature": base64.b64encode(k.sign(base64.b64decode(body["message"]))).decode()}
        if ok:
            assert sm2.verify(sm_old.public_key, message, sm_signer.sign(message))
        else:
            with pytest.raises(Unavailable):
                sm_signer.sign(message)


def test_sm2_tokens_are_checked_and_an_inconsistent_sm2_identity_is_refused_at_start(
        tmp_path: Path) -> None:
    create_sm2_tsa_chain(tmp_path / "a", ORIGIN)
    create_sm2_tsa_chain(tmp_path / "b", ORIGIN)

    def chain(d: str) -> list[str]:
        return [(tmp_path / d / f).read_text() for f in (SM2_TSA_CERT_FILE, SM2_ROOT_FILE)]

    notary = FakeNotary(sm2_tsa_chain=chain("a"))
    remote = rm.RemoteSm2TSA(notary)  # type: ignore[arg-type]
    for d, ok in (("a", True), ("b", False)):
        tsa = load_sm2_tsa(tmp_path / d, ORIGIN)
        notary.answer = lambda path, body, tsa=tsa: {"token": base64.b64encode(
            tsa.timestamp_digest(base64.b64decode(body["digest"]))).decode()}
        if ok:
            assert remote.timestamp(b"a block header")
        else:
            with pytest.raises(Unavailable, match="does not verify under the log's keys"):
                remote.timestamp(b"a block header")

    # A certificate its served root did not issue, or no certificate at all: a clear refusal
    # when the registry starts, not a traceback or a failure at every block.
    for bad in ([chain("a")[0], chain("b")[1]], ["", chain("a")[1]]):
        with pytest.raises(InvalidInput, match="SM2 identity is inconsistent"):
            rm.RemoteSm2TSA(FakeNotary(sm2_tsa_chain=bad))  # type: ignore[arg-type]


def test_the_data_directory_s_public_files_are_compared_by_what_they_say(
        tmp_path: Path) -> None:
    """`_check_remote_identity` compares a root.pem by its set of certificates: reordered or
    with text around the PEM blocks it says the same; another root does not."""
    from copyledger.service.node import _public_material

    create_tsa_chain(tmp_path / "a", ORIGIN)
    create_tsa_chain(tmp_path / "b", ORIGIN)
    a, b = ((tmp_path / d / ROOT_FILE).read_text() for d in ("a", "b"))
    assert _public_material(a + b) == _public_material(f"roots:\n{b}\n{a}\n")
    assert _public_material(a + b) != _public_material(a)
    assert _public_material("n.example/log+abcd+AAAA\n") == _public_material(
        "n.example/log+abcd+AAAA")
