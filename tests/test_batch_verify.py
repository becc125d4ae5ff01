"""A batch answer's receipts checked together (`client.verify.check_receipts`, D78): the
shared checkpoint signature and proof steps are checked once, yet each receipt is refused
exactly as `check_receipt` refuses it when its leaf, a path node, its root or the signature
is not what it should be, and receipts that disagree about the tree are refused."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import enum
import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from copyledger.client import Client, ProblemError, Receipt, UnverifiedAnswer
from copyledger.client.verify import check_receipt, check_receipts
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import merkle, note
from copyledger.ledger.errors import ProofError
from copyledger.notary.signer import FileSigner, sign_note, verifier_key

ORIGIN = "test.example/batch"


def _leaves(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(n)]


def _tree(leaves: list[bytes]) -> tuple[merkle.MemoryReader, bytes]:
    appended = merkle.append(0, [], leaves)
    reader = merkle.MemoryReader()
    reader.update(appended.nodes)
    return reader, appended.root


@given(st.integers(1, 150), st.data())
def test_shared_steps_decide_as_verify_inclusion(size: int, data: st.DataObject) -> None:
    """Many leaves, good and tampered, through one verifier: each answer is
    `verify_inclusion`'s, whatever was checked before it."""
    leaves = _leaves(size)
    reader, root = _tree(leaves)
    shared = merkle.InclusionVerifier(size, root)
    shared_hex = merkle.InclusionVerifier(size, root)  # proofs as the API sends them (D83)
    for _ in range(data.draw(st.integers(1, 12))):
        index = data.draw(st.integers(0, size - 1))
        proof = merkle.inclusion_proof(index, size, reader)
        leaf, claimed = leaves[index], index
        how = data.draw(st.sampled_from(["good", "leaf", "node", "index", "short", "long"]))
        if how == "leaf":
            leaf = hashlib.sha256(leaf).digest()
        elif how == "node" and proof:
            k = data.draw(st.integers(0, len(proof) - 1))
            proof[k] = bytes([proof[k][0] ^ 1]) + proof[k][1:]
        elif how == "index":
            claimed = data.draw(st.integers(0, size - 1))
        elif how == "short" and proof:
            proof.pop()
        elif how == "long":
            proof.append(leaves[0])
        try:
            merkle.verify_inclusion(claimed, size, leaf, proof, root)
            expected: str | None = None
        except ProofError as e:
            expected = e.detail
        try:
            shared.verify(claimed, leaf, proof)
            got: str | None = None
        except ProofError as e:
            got = e.detail
        assert got == expected, (how, claimed, index)
        try:
            shared_hex.verify_hex(claimed, leaf, [h.hex() for h in proof])
            got = None
        except ProofError as e:
            got = e.detail
        assert got == expected, ("hex", how, claimed, index)


class FakeLog:
    """A log held in memory, signed by its own key: the answers a server would give."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.signer = FileSigner.generate(ORIGIN, tmp / "log.key")
        self.vkey = verifier_key(self.signer)

    def entry(self, i: int, **kw: Any) -> dict[str, Any]:
        return entry_mod.build_work(
            registrant="alice", received_at="2026-11-30T12:00:00Z",
            sha256=hashlib.sha256(str(i).encode()).hexdigest(), size=None, media_type=None,
            title=f"Work {i}", creators=["Ada"], work_type="image", license=None,
            metadata=kw.get("metadata"), fingerprints=None, check=False, sm3=None)

    def answer(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The registrations of `entries`, one block of a fresh tree, as the server sends them."""
        datas = [entry_mod.encode(e, new=True)[1] for e in entries]
        leaves = merkle.leaf_hashes(datas)
        reader, root = _tree(leaves)
        size = len(leaves)
        checkpoint = sign_note(note.format_checkpoint(note.Checkpoint(ORIGIN, size, root)),
                               [self.signer])
        return [{"seq": i, "leaf_hash": leaves[i].hex(), "block_height": 1, "entry": e,
                 "receipt": {"tree_size": size, "root": root.hex(),
                             "proof": [h.hex() for h in merkle.inclusion_proof(i, size, reader)],
                             "checkpoint": checkpoint}}
                for i, e in enumerate(entries)]


@pytest.fixture
def log(tmp_path: Path) -> FakeLog:
    return FakeLog(tmp_path)


def test_a_callers_buffers_changed_later_do_not_change_what_was_verified() -> None:
    """The verifier remembers what it walked: a proof or leaf the caller passed as a bytearray
    and changed after a good check must not let a wrong proof through later (review of D83)."""
    leaves = _leaves(4)
    reader, root = _tree(leaves)
    proof0 = merkle.inclusion_proof(0, 4, reader)
    v = merkle.InclusionVerifier(4, root)
    top, leaf = bytearray(proof0[1]), bytearray(leaves[0])
    v.verify(0, leaf, [proof0[0], top])
    top[:] = b"\xee" * 32
    with pytest.raises(ProofError):
        v.verify(1, leaves[1], [leaves[0], b"\xee" * 32])
    v.verify(1, leaves[1], merkle.inclusion_proof(1, 4, reader))
    v = merkle.InclusionVerifier(4, root)
    v.verify(0, leaf, list(proof0))
    leaf[:] = b"\xdd" * 32
    with pytest.raises(ProofError):
        v.verify(0, b"\xdd" * 32, list(proof0))


def _flip(h: str) -> str:
    return ("1" if h[0] == "0" else "0") + h[1:]


def test_a_good_answer_gives_check_receipts_answers(log: FakeLog) -> None:
    """Plain works (the quick path) and a work with metadata (the reference path) alike."""
    entries = [log.entry(i) for i in range(40)]
    entries[7] = log.entry(7, metadata={"note": "not plain"})
    regs = log.answer(entries)
    regs[3]["already_registered"] = True
    shas = [e["content"]["sha256"] for e in entries]
    got = check_receipts(regs, [log.vkey], file_sha256s=shas)
    assert got == [check_receipt(r, [log.vkey], file_sha256=s) for r, s in zip(regs, shas,
                                                                               strict=True)]
    assert all(isinstance(r, Receipt) for r in got)
    assert got[3].already_registered is True and got[4].already_registered is None


def _sign_other(log: FakeLog) -> Callable[[dict[str, Any]], None]:
    other = FileSigner.generate(ORIGIN, log.tmp / "other.key")

    def change(reg: dict[str, Any]) -> None:
        rc = reg["receipt"]
        text = note.parse_note(rc["checkpoint"]).text
        rc["checkpoint"] = sign_note(text, [other])
    return change


TAMPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "entry": lambda r: r["entry"].update(title="Another title"),
    "leaf_hash": lambda r: r.update(leaf_hash=_flip(r["leaf_hash"])),
    "path node": lambda r: r["receipt"]["proof"].__setitem__(
        3, _flip(r["receipt"]["proof"][3])),
    "root": lambda r: r["receipt"].update(root=_flip(r["receipt"]["root"])),
    "seq": lambda r: r.update(seq=r["seq"] + 1),
    "uppercase hex": lambda r: r.update(leaf_hash=r["leaf_hash"].upper()),
}


@pytest.mark.parametrize("sent", [False, True], ids=["parsed", "as sent"])
@pytest.mark.parametrize("how", [*TAMPERS, "signature"])
def test_a_tampered_receipt_in_a_batch_is_refused(log: FakeLog, how: str, sent: bool) -> None:
    """One receipt changed after its neighbours (which share its block, its signature and
    most of its path) were checked: refused, with `check_receipt`'s reason; the rest stand.
    Also when the client gives the works it sent (D88: entries compared, not parsed)."""
    entries = [log.entry(i) for i in range(64)]
    regs = log.answer(entries)
    bad = copy.deepcopy(regs[21])
    (_sign_other(log) if how == "signature" else TAMPERS[how])(bad)
    regs[21] = bad
    got = check_receipts(regs, [log.vkey], works=[_sent(e) for e in entries] if sent else None)
    assert isinstance(got[21], UnverifiedAnswer) and got[21].answer is bad
    with pytest.raises(UnverifiedAnswer) as alone:
        check_receipt(bad, [log.vkey])
    assert got[21].detail == alone.value.detail
    assert all(isinstance(r, Receipt) for i, r in enumerate(got) if i != 21)


def test_a_receipt_for_other_content_is_refused(log: FakeLog) -> None:
    regs = log.answer([log.entry(i) for i in range(4)])
    shas = [r["entry"]["content"]["sha256"] for r in regs]
    shas[2] = hashlib.sha256(b"the file I sent").hexdigest()
    got = check_receipts(regs, [log.vkey], file_sha256s=shas)
    assert isinstance(got[2], UnverifiedAnswer)
    assert [isinstance(r, Receipt) for r in got] == [True, True, False, True]


def test_receipts_that_give_one_tree_size_two_roots_are_refused(log: FakeLog) -> None:
    """Each receipt verifies on its own (the log signed both trees), but together they show a
    split view: the second is refused."""
    one = log.answer([log.entry(i) for i in range(8)])
    two = log.answer([log.entry(100 + i) for i in range(8)])
    got = check_receipts([one[0], two[1]], [log.vkey])
    assert isinstance(got[0], Receipt)
    assert isinstance(got[1], UnverifiedAnswer)
    assert "different roots" in got[1].detail


def test_file_digests_must_be_one_per_registration(log: FakeLog) -> None:
    """Fewer digests than registrations was a bare IndexError, more were silently ignored."""
    regs = log.answer([log.entry(i) for i in range(3)])
    shas = [r["entry"]["content"]["sha256"] for r in regs]
    for wrong in (shas[:2], [*shas, shas[0]], []):
        with pytest.raises(ValueError, match=r"one \(or None\) per registration"):
            check_receipts(regs, [log.vkey], file_sha256s=wrong)
        with pytest.raises(ValueError, match=r"works for 3 registrations"):
            check_receipts(regs, [log.vkey], works=[_sent(r["entry"]) for r in regs][
                :len(wrong)] if len(wrong) < 3 else [None] * 4)
    assert all(isinstance(r, Receipt)
               for r in check_receipts(regs, [log.vkey], file_sha256s=[None, *shas[1:]]))


@dataclasses.dataclass
class Ada:
    born: int = 1815


NOT_JSON: dict[str, Any] = {
    "NaN": float("nan"), "infinity": float("inf"), "minus infinity": float("-inf"),
    "NaN in a list": [1.5, float("nan")], "datetime": datetime.datetime(2026, 11, 30),
    "UUID": uuid.UUID(int=7), "dataclass": Ada(), "path": Path("x"), "bytes": b"x",
    "set": {1}, "integer past 53 bits": 2**60, "non-string key": {1: "one"},
    "decimal": decimal.Decimal(1),
}


STRICTER = {"integer past 53 bits", "non-string key"}
"""Refused though `json.dumps` takes them: the registry's JSON refuses such integers, and a key
1 would silently become "1"."""


@pytest.mark.parametrize("name", list(NOT_JSON))
def test_a_batch_refuses_what_json_refuses_before_sending(name: str) -> None:
    """orjson writes NaN as null and encodes datetimes or UUIDs silently; a batch holding one
    must be refused as httpx's `json=` refuses it (ValueError or TypeError), before anything is
    sent, not answered with a receipt for metadata the caller never sent."""
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    work = {"sha256": "ab" * 32, "title": "T", "creators": ["Ada"], "work_type": "image",
            "metadata": {"rating": NOT_JSON[name]}}
    if name not in STRICTER:
        with pytest.raises((TypeError, ValueError)):
            json.dumps(work, allow_nan=False)  # as httpx's json= did
    with pytest.raises((TypeError, ValueError)):
        Client("http://r.example", transport=httpx.MockTransport(server)).register_works(
            [work])  # type: ignore[list-item]
    assert sent == []


def test_what_json_takes_a_batch_sends_unchanged(log: FakeLog) -> None:
    sent: list[bytes] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(500)

    works = [{"sha256": "ab" * 32, "title": "Tï 题", "creators": ("Ada", "Bo"),
              "work_type": "image",
              "metadata": {"r": 4.25, "n": -(2**53 - 1), "ok": True, "deep": [[{"x": 0.1}], []],
                           "zero": -0.0, "none": None}}]
    with pytest.raises(ProblemError):  # the answer is no matter: what was sent is
        Client("http://r.example", trusted_keys=[log.vkey],
               transport=httpx.MockTransport(server)).register_works(works)  # type: ignore[arg-type]
    assert json.loads(sent[-1]) == json.loads(json.dumps({"works": works}, allow_nan=False))


@pytest.mark.parametrize(("field", "value"), [
    ("registrant", uuid.UUID(int=7)), ("registrant", "ADA"), ("received_at", "NOON")])
def test_a_registrant_or_time_that_is_not_json_text_is_refused_with_works(
        log: FakeLog, field: str, value: Any) -> None:
    """An answer handed in as Python objects whose registrant or time is a UUID or a str
    Enum, its signed bytes those of the text: `check_receipts` with the works sent decides as
    `check_receipt` does, which refuses the UUID (not JSON) and keeps the Enum as it is.
    Before D91 its fast path compared those two fields with themselves and accepted either,
    made with a plain `str`."""
    value = _Name[value] if type(value) is str else value
    e = log.entry(0)
    e[field] = str(value.value if isinstance(value, enum.Enum) else value)
    reg = log.answer([e])[0]
    reg["entry"] = {**e, field: value}
    try:
        alone: Receipt | str = check_receipt(reg, [log.vkey])
    except UnverifiedAnswer as err:
        alone = err.detail
    got = check_receipts([reg], [log.vkey], works=[_sent(e)])[0]
    if isinstance(alone, Receipt):
        assert isinstance(got, Receipt) and _parts(got) == _parts(alone)
    else:
        assert not isinstance(got, Receipt) and got.detail == alone


@pytest.fixture(scope="module")
def shared_log(tmp_path_factory: pytest.TempPathFactory) -> FakeLog:
    return FakeLog(tmp_path_factory.mktemp("log"))


def _other_hex(data: st.DataObject) -> str:
    return data.draw(st.binary(min_size=32, max_size=32)).hex()



class _Name(enum.StrEnum):
    """A str subclass: equal to its text, yet not JSON's own string."""

    ADA = "ada"
    NOON = "2026-11-30T12:00:00Z"

MUTATIONS: dict[str, Callable[[dict[str, Any], st.DataObject], None]] = {
    "path node": lambda r, d: r["receipt"]["proof"].__setitem__(
        d.draw(st.integers(0, len(r["receipt"]["proof"]) - 1)), _other_hex(d)),
    "path node upper": lambda r, d: r["receipt"]["proof"].__setitem__(0, r["receipt"][
        "proof"][0].upper()),
    "path node not text": lambda r, d: r["receipt"]["proof"].__setitem__(
        d.draw(st.integers(0, len(r["receipt"]["proof"]) - 1)), d.draw(st.sampled_from(
            [None, 7, ["ab"], "ab" * 33, "  " + "ab" * 31, "ab " * 21 + "a"]))),
    "path dropped": lambda r, d: r["receipt"]["proof"].pop(
        d.draw(st.integers(0, len(r["receipt"]["proof"]) - 1))),
    "path longer": lambda r, d: r["receipt"]["proof"].append(_other_hex(d)),
    "path swapped": lambda r, d: r["receipt"]["proof"].reverse(),
    "seq": lambda r, d: r.update(seq=d.draw(st.sampled_from(
        [r["seq"] + 1, r["seq"] - 1, -1, 10**6, True, "3", 2.0]))),
    "leaf hash": lambda r, d: r.update(leaf_hash=_other_hex(d)),
    "root": lambda r, d: r["receipt"].update(root=_other_hex(d)),
    "tree size": lambda r, d: r["receipt"].update(tree_size=r["receipt"]["tree_size"] + 1),
    "block height": lambda r, d: r.update(block_height=d.draw(st.sampled_from(
        [None, "1", 1.5, -3, 2]))),
    "entry title": lambda r, d: r["entry"].update(title=d.draw(st.text(max_size=8))),
    "entry creators": lambda r, d: r["entry"].update(creators=d.draw(st.sampled_from(
        [[], ("Ada",), ["Ada", "Ada "], [" "]]))),
    "entry metadata": lambda r, d: r["entry"].update(metadata={"n": 1}),
    "entry size": lambda r, d: r["entry"]["content"].update(size=d.draw(st.sampled_from(
        [True, 1.0, "1", -1, 2**53, 1, 7]))),
    "entry not JSON": lambda r, d: r["entry"].update(**d.draw(st.sampled_from(
        [{"title": uuid.UUID(int=7)}, {"received_at": datetime.datetime(2026, 11, 30)},
         {"creators": ("Ada",)}, {"license": "CC0"}, {"kind": "evidence"},
         {"registrant": uuid.UUID(int=7)}, {"registrant": _Name.ADA},
         {"received_at": _Name.NOON}]))),
    "marker": lambda r, d: r.update(already_registered=d.draw(st.sampled_from(
        [True, False, None, "yes", 1]))),
    "extra member": lambda r, d: r["receipt"].update(extra=1),
    "missing member": lambda r, d: r.pop(d.draw(st.sampled_from(
        ["seq", "leaf_hash", "entry", "receipt"]))),
    "another's path": lambda r, d: None,  # set below: needs the answer
}


def _sent(entry: dict[str, Any]) -> dict[str, Any]:
    """The batch item the client sent for `entry` (D88: `check_receipts`' `works`)."""
    fields = {k: entry[k] for k in ("title", "creators", "work_type", "license") if k in entry}
    return {**fields, **entry["content"]}


SENT_CHANGES: list[Callable[[dict[str, Any]], None]] = [
    lambda w: w.update(title="Another title"),
    lambda w: w.update(creators=("Ada",)),
    lambda w: w.update(size=w.get("size", 0) + 1),
    lambda w: w.update(size=True),
    lambda w: w.pop("license", None),
    lambda w: w.update(license="CC0"),
    lambda w: w.update(media_type="image/png"),
    lambda w: w.update(idempotency_key="k-1"),
    lambda w: w.pop("sha256"),
    lambda w: w.update(creators="Ada"),
]


@given(st.data())
def test_the_fast_path_decides_as_check_receipt(shared_log: FakeLog,
                                                data: st.DataObject) -> None:
    """Random answers of one or two signed trees, some receipts changed in random ways and
    the whole shuffled: each verdict of `check_receipts` is `check_receipt`'s on that receipt
    alone (the same Receipt, or a refusal with the same reason). With the works as sent
    (D88), some of them not what the entry holds, the verdicts are the same."""
    small = data.draw(st.integers(1, 40))
    big = data.draw(st.integers(small, 48))
    entries = [shared_log.entry(i) for i in range(big)]
    for e in entries:  # plain works with and without a size and a license
        if data.draw(st.booleans()):
            e["content"]["size"] = data.draw(st.integers(0, 2**53 - 1))
        if data.draw(st.booleans()):
            e["license"] = "CC-BY-4.0"
    regs = shared_log.answer(entries) + (
        shared_log.answer(entries[:small]) if small < big else [])
    regs = data.draw(st.permutations(regs))
    regs = [copy.deepcopy(r) for r in regs]
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(regs) - 1))
        how = data.draw(st.sampled_from(sorted(MUTATIONS)))
        reg = regs[at]
        try:
            if how == "another's path":
                reg["receipt"]["proof"] = list(data.draw(st.sampled_from(regs))["receipt"][
                    "proof"])
            elif reg["receipt"]["proof"] or not how.startswith("path"):
                MUTATIONS[how](reg, data)
        except (KeyError, TypeError):
            pass  # an earlier change took away what this one changes
    works: list[dict[str, Any] | None] = []
    for reg in regs:
        sent = _sent(entries[reg["seq"] % big]) if type(reg.get("seq")) is int else None
        if sent is not None and data.draw(st.integers(0, 5)) == 0:
            data.draw(st.sampled_from(SENT_CHANGES))(sent)
        works.append(sent if data.draw(st.integers(0, 7)) else None)
    got = check_receipts(regs, [shared_log.vkey])
    with_works = check_receipts(regs, [shared_log.vkey], works=works)
    first: Any = None  # the registrant of the first work that verified (D92)
    for reg, verdict, verdict2, sent in zip(regs, got, with_works, works, strict=True):
        try:
            alone: Receipt | str = check_receipt(reg, [shared_log.vkey])
        except UnverifiedAnswer as e:
            alone = e.detail
        try:  # with the work sent, a new entry must be that work (D92)
            alone2: Receipt | str = check_receipt(reg, [shared_log.vkey], work=sent)
        except UnverifiedAnswer as e:
            alone2 = e.detail
        if sent is not None and isinstance(alone2, Receipt):  # one request, one account
            who = getattr(alone2.entry, "registrant", None)
            if first is None:
                first = (who,)
            elif first[0] != who:
                alone2 = (f"this answer's works are registered to {who!r} and to "
                          f"{first[0]!r}: one request is one account's")
        assert (verdict if isinstance(verdict, Receipt) else verdict.detail) == alone
        assert (verdict2 if isinstance(verdict2, Receipt) else verdict2.detail) == alone2
        if isinstance(alone2, Receipt):  # the same objects, made as their classes make them
            assert verdict2.to_dict() == alone2.to_dict()
            assert _parts(verdict2) == _parts(alone2)
        if sent is None or isinstance(alone, str):
            assert alone2 == alone  # nothing sent to compare, or refused either way
        elif not alone.already_registered:  # an oracle of its own: the work sent, as JSON
            same = _as_sent(sent) == _as_sent(_sent(reg["entry"]))
            assert isinstance(verdict2, Receipt) is same, (sent, reg["entry"])


def _as_sent(work: dict[str, Any]) -> Any:
    """A work as it goes over the wire, without what asks something of the request."""
    return json.loads(json.dumps({k: v for k, v in work.items()
                                  if k not in ("idempotency_key", "again")}))


def _parts(r: Receipt) -> list[tuple[type, dict[str, Any]]]:
    """A receipt's objects and their members, to compare objects made without `__init__`."""
    return [(type(o), {k: (type(v), v) for k, v in vars(o).items()})
            for o in (r, r.receipt, r.entry, r.entry.content)]  # type: ignore[attr-defined]


def test_one_answer_is_one_accounts(shared_log: FakeLog) -> None:
    """D92: a batch's works are registered to the one account whose key sent them; an entry
    of another account, however well it verifies, is refused, the others kept."""
    entries = [shared_log.entry(i) for i in range(3)]
    entries[1]["registrant"] = "mallory"
    regs = shared_log.answer(entries)
    got = check_receipts(regs, [shared_log.vkey], works=[_sent(e) for e in entries])
    assert isinstance(got[0], Receipt) and isinstance(got[2], Receipt)
    assert isinstance(got[1], UnverifiedAnswer)
    assert got[1].detail == ("this answer's works are registered to 'mallory' and to 'alice': "
                             "one request is one account's")
    # without the works sent (not a registration of this client's), nothing to compare
    assert all(isinstance(r, Receipt) for r in check_receipts(regs, [shared_log.vkey]))


def test_an_earlier_registration_may_differ_from_the_work_sent(shared_log: FakeLog) -> None:
    """D92: `already_registered` answers this account's earlier entry, whose title may not be
    today's: accepted; the same entry as a new registration is refused, naming the field."""
    entry = shared_log.entry(5)
    sent = {**_sent(entry), "title": "Today's title"}
    reg = shared_log.answer([entry])[0]
    refused = check_receipts([reg], [shared_log.vkey], works=[sent])[0]
    assert isinstance(refused, UnverifiedAnswer)
    assert refused.detail == ("the registry recorded title = 'Work 5', not the "
                              "\"Today's title\" sent")
    earlier = check_receipts([{**reg, "already_registered": True}], [shared_log.vkey],
                             works=[sent])[0]
    assert isinstance(earlier, Receipt) and earlier.already_registered


@pytest.mark.parametrize("size, ok", [("5", True), (" 5 ", True), (5.0, True), ("1_000", False),
                                      ("five", False), (6, False)])
def test_a_size_sent_as_text_is_read_as_the_registry_reads_it(
        shared_log: FakeLog, size: Any, ok: bool) -> None:
    """D92: the registry reads a work's size loosely ("5" and 5.0 are 5), so a new entry of
    size 5 is the work sent with those; a size it could not have read, or another, is not."""
    entry = shared_log.entry(7)
    entry["content"]["size"] = 5
    reg = shared_log.answer([entry])[0]
    sent = {**_sent(entry), "size": size}
    for got in (check_receipts([reg], [shared_log.vkey], works=[sent])[0],
                _or_refusal(lambda: check_receipt(reg, [shared_log.vkey], work=sent))):
        assert isinstance(got, Receipt) is ok, got


def _or_refusal(check: Callable[[], Receipt]) -> Receipt | UnverifiedAnswer:
    try:
        return check()
    except UnverifiedAnswer as e:
        return e


def test_an_earlier_registration_is_held_to_what_it_can_be(shared_log: FakeLog) -> None:
    """D92: `already_registered` is the registry's word. Where the work asked for a new entry
    (`again`) no earlier one answers it, and an earlier registration is of a work: both
    refused, however well the receipt verifies."""
    work_entry = shared_log.entry(8)
    reg = {**shared_log.answer([work_entry])[0], "already_registered": True}
    sent = {**_sent(work_entry), "again": True}
    for got in (check_receipts([reg], [shared_log.vkey], works=[sent])[0],
                _or_refusal(lambda: check_receipt(reg, [shared_log.vkey], work=sent))):
        assert isinstance(got, UnverifiedAnswer)
        assert "though `again` asked for a new entry" in got.detail
    evidence = entry_mod.build_evidence(
        registrant="alice", received_at="2026-11-30T12:00:00Z",
        sha256=work_entry["content"]["sha256"], source_url=None,
        captured_at="2026-11-30T11:00:00Z", capture_method="screenshot",
        description="a capture", check=False)
    ev_reg = {**shared_log.answer([evidence])[0], "already_registered": True}
    got = check_receipts([ev_reg], [shared_log.vkey], works=[_sent(work_entry)])[0]
    assert isinstance(got, UnverifiedAnswer)
    assert got.detail == "the registry answered an earlier registration that is not a work"


def test_creators_sent_as_text_are_not_split_into_letters(shared_log: FakeLog) -> None:
    """D92: a new entry whose creators are the letters of a text sent as creators is not the
    work sent (the registry refuses such a request; only a forging one would answer it)."""
    entry = shared_log.entry(9)
    entry["creators"] = ["A", "d", "a"]
    reg = shared_log.answer([entry])[0]
    got = check_receipts([reg], [shared_log.vkey], works=[{**_sent(entry), "creators": "Ada"}])[0]
    assert isinstance(got, UnverifiedAnswer) and "no list of creators" in got.detail
