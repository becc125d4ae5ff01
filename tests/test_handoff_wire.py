"""The frames between the processes of `serve --workers N` (D59): JSON of one fixed shape.
Whatever the sequencer is handed or answers reads back the same in the other process, errors
keep their class and their translatable template, and a frame of any other shape is refused
(WireError ends that connection) instead of being acted on."""

from __future__ import annotations

import socket

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from copyledger.ledger.errors import NotFound, Unavailable, said
from copyledger.ledger.note import BlockHeader
from copyledger.ledger.sequencer import Pending, Receipt
from copyledger.ledger.store import BlockRow
from copyledger.service import handoff

hashes = st.binary(min_size=32, max_size=32)
text = st.text(max_size=40)
links = st.lists(st.tuples(st.integers(min_value=0, max_value=2**62) | text, text),
                 max_size=3).map(tuple)
pendings = st.builds(Pending, st.binary(max_size=200), text, text, text, links)
receipts = st.builds(Receipt, st.integers(min_value=0, max_value=2**62), hashes,
                     st.integers(min_value=0, max_value=2**62),
                     st.integers(min_value=0, max_value=2**62), hashes,
                     st.lists(hashes, max_size=8), text)


def _frame(messages: object) -> bytes:
    data = orjson.dumps(messages)
    return len(data).to_bytes(4, "big") + data


def _through_socket(messages: list[object]) -> list[object]:
    a, b = socket.socketpair()
    with a, b:
        handoff._send(a, messages)
        return handoff._recv(b)


@given(st.integers(min_value=0, max_value=2**62), st.lists(pendings, max_size=5))
def test_entries_read_back_as_sent(rid: int, sent: list[Pending]) -> None:
    [message] = _through_socket([handoff._entries_message(rid, sent)])
    assert handoff._request(message) == (rid, sent)


@given(receipts)
def test_receipts_read_back_as_sent(r: Receipt) -> None:
    [message] = _through_socket([["answer", 7, [handoff._outcome(r)]]])
    assert handoff._answer_or_block(message) == (7, [r])


def test_errors_keep_their_class_and_template() -> None:
    e = NotFound(said("no entry {seq}", seq=12), internal="row missing")
    [message] = _through_socket([["answer", 1, [handoff._outcome(e)]]])
    _, [back] = handoff._answer_or_block(message)  # type: ignore[misc]
    assert isinstance(back, NotFound) and back.internal == "row missing"
    assert back.detail == "no entry 12" and back.detail.template == "no entry {seq}"
    # A class the reader does not know is an Unavailable, never something it would run.
    odd = ["error", "SystemExit", "bye", "", None, {}]
    _, [odd_back] = handoff._answer_or_block(["answer", 2, [odd]])  # type: ignore[misc]
    assert type(odd_back) is Unavailable and odd_back.detail == "bye"


def test_blocks_read_back_as_sent() -> None:
    header = BlockHeader(3, b"\1" * 32, b"\2" * 32, 10, 2, 12, b"\3" * 32,
                         "2026-11-30T00:00:00Z")
    block = BlockRow(header, b"\4" * 32, "checkpoint\n", "block note\n")
    [message] = _through_socket([handoff._block_message(block)])
    assert handoff._answer_or_block(message) == block


@pytest.mark.parametrize("frame", [
    b"\x00\x00\x00\x03abc",  # not JSON
    _frame({"entries": 1}),  # not an array of messages
    _frame([["entries", 1, [["!!", "work", "ab", "alice", []]]]]),  # data not base64
    _frame([["entries", "1", []]]),  # rid not a number
    _frame([["entries", 1, [["", "work", "ab", "alice", [[1]]]]]]),  # a link of one part
    _frame([["pickle", 1, []]]),
    b"\xff\xff\xff\xff",  # longer than any frame of ours
])
def test_a_frame_of_another_shape_is_refused(frame: bytes) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frame)
        with pytest.raises(handoff.WireError):
            for message in handoff._recv(b):
                handoff._request(message)


@pytest.mark.parametrize("message", [
    ["answer", 1, [["receipt", "x", "00", 0, 0, "00", [], ""]]],
    ["answer", 1, [["receipt", 1, "zz", 0, 0, "00", [], ""]]],
    ["block", {"schema": "other"}, "00", "", ""],
    ["answer", 1, [["nonsense"]]],
    ["gossip"],
])
def test_an_answer_of_another_shape_is_refused(message: list[object]) -> None:
    with pytest.raises(handoff.WireError):
        handoff._answer_or_block(message)
