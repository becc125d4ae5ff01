"""The frames between the processes of `serve --workers N` (D59): JSON of one fixed shape.
Whatever the sequencer is handed or answers reads back the same in the other process, errors
keep their class and their translatable template, and a frame of any other shape is refused
(WireError ends that connection) instead of being acted on."""

from __future__ import annotations

import base64
import contextlib
import itertools
import socket
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from copyledger.ledger.entry import KINDS, MAX_ENTRY_BYTES
from copyledger.ledger.errors import AlreadyRegistered, NotFound, Unavailable, said
from copyledger.ledger.note import BlockHeader
from copyledger.ledger.sequencer import Pending, Receipt
from copyledger.ledger.store import BlockRow
from copyledger.service import handoff
from tests.helpers import wait_for

hashes = st.binary(min_size=32, max_size=32)
text = st.text(max_size=40)
content_hashes = hashes.map(bytes.hex)
# What the API hands over: a kind, registrant and links its tables hold (the sequencer
# refuses any other, since one would fail the whole block).
kinds = st.sampled_from(KINDS)
registrants = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
links = st.lists(st.tuples(st.integers(min_value=0, max_value=2**63 - 1) | content_hashes,
                           st.sampled_from(["transfer", "claim", "reply"])),
                 max_size=3).map(tuple)
stamps = st.just("") | st.datetimes(min_value=datetime(1000, 1, 1),
                                    max_value=datetime(9999, 12, 31)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))  # an entry's received_at (D117)
pendings = st.builds(Pending, st.binary(max_size=200), kinds, content_hashes, registrants, links,
                     st.booleans(), stamps, st.none() | st.tuples(
                         st.text(min_size=1, max_size=64),
                         st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                 min_size=1, max_size=255),
                         content_hashes))
receipts = st.builds(Receipt, st.integers(min_value=0, max_value=2**62), hashes,
                     st.integers(min_value=0, max_value=2**62),
                     st.integers(min_value=0, max_value=2**62), hashes,
                     st.lists(hashes, max_size=8), text)


def _frame(messages: object) -> bytes:
    data = orjson.dumps(messages)
    return len(data).to_bytes(4, "big") + data


def _listening(prefix: str) -> tuple[Path, socket.socket]:
    """A Unix socket listening at a short path, for a fake sequencer."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")) / "s.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    return path, listener


def _accepting(listener: socket.socket, handle: Callable[[socket.socket], object]) -> None:
    """Run `handle` on each connection `listener` accepts, in a thread of its own, until the
    peer or the listener closes (the end of a connection is not an error here)."""
    def one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ConnectionError, handoff.WireError):
            handle(conn)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def _through_socket(messages: list[object]) -> list[object]:
    a, b = socket.socketpair()
    with a, b:
        handoff._send(a, messages)
        return handoff._recv(b)


@given(st.integers(min_value=0, max_value=2**62), st.lists(pendings, min_size=1, max_size=5))
def test_entries_read_back_as_sent(rid: int, sent: list[Pending]) -> None:
    [message] = _through_socket([handoff._entries_message(rid, sent)])
    assert handoff._request(message) == (rid, sent)


@pytest.mark.parametrize(("field", "value"), [
    (0, base64.b64encode(b"x" * (MAX_ENTRY_BYTES + 1)).decode()),  # over the size limit
    (1, "novel"), (1, "w" * 17), (1, 1),  # a kind the log does not know
    (3, ""), (3, "a" * 65), (3, "a b"), (3, None),  # a registrant no account can be
    (4, [[-1, "claim"]]), (4, [[2**63, "claim"]]), (4, [[True, "claim"]]),  # a seq no BIGINT
    (4, [["A" * 64, "claim"]]), (4, [[1, "likes"]]), (4, [[1, "c" * 17]]),  # holds, a relation
])
def test_an_entry_the_api_could_not_have_made_is_refused(field: int, value: object) -> None:
    """Every field the block stores is checked as it crosses: one value its tables refuse
    (a kind or relation over 16 characters, a registrant over 64, a target past a BIGINT)
    would fail the whole block, other writers' entries too, and an entry over the size
    limit would be in the append-only log for good. A request of no entries (nothing would
    ever answer it) is refused too."""
    one = Pending(b"{}", "work", "a" * 64, "alice", ((3, "claim"), ("b" * 64, "reply")))
    [message] = _through_socket([handoff._entries_message(1, [one])])
    assert handoff._request(message) == (1, [one])  # as sent, it passes
    message[2][0][field] = value  # type: ignore[index]
    with pytest.raises(handoff.WireError):
        handoff._request(message)
    with pytest.raises(handoff.WireError):
        handoff._request(["entries", 1, []])


@pytest.mark.parametrize("claim", [
    ["a", "k"], ["a", "k", 3], "a k d", {"account": "a"}, 1, ["a", "k", "g" * 64],
    ["", "k", "a" * 64], ["a" * 65, "k", "a" * 64], ["a", "", "a" * 64], ["a", "k k", "a" * 64],
    ["a", "k" * 256, "a" * 64]])
def test_an_entry_whose_idempotency_claim_is_of_another_shape_is_refused(claim: object) -> None:
    """D132: a claim is [account, key, request_sha256] as the API makes it, or null (the
    block inserts it: a value its table refuses would fail the block, other writers' too)."""
    [message] = _through_socket([handoff._entries_message(1, [Pending(b"{}", "work", "a" * 64,
                                                                      "b")])])
    message[2][0][7] = claim  # type: ignore[index]
    with pytest.raises(handoff.WireError):
        handoff._request(message)


@pytest.mark.parametrize("received_at", ["2026-12-02T13:00:00Z", "2026-12-02 13:00:00.000000Z",
                                         "2026-12-02T13:00:00.00000xZ", 20261202, None])
def test_an_entry_whose_received_at_is_not_the_registry_s_is_refused(received_at: object
                                                                      ) -> None:
    """D117: the sequencer compares `received_at` with its clock as a 27-character string."""
    [message] = _through_socket([handoff._entries_message(1, [Pending(b"{}", "work", "a" * 64,
                                                                      "b")])])
    message[2][0][6] = received_at  # type: ignore[index]
    with pytest.raises(handoff.WireError):
        handoff._request(message)


@pytest.mark.parametrize("sha256", ["a", "A" * 64, "g" * 64, "a" * 65, 7, None])
def test_an_entry_whose_content_hash_is_not_64_lowercase_hex_is_refused(sha256: object
                                                                       ) -> None:
    """D124: the sequencer stores the hash as its 32 bytes, so only a hash can cross."""
    [message] = _through_socket([handoff._entries_message(1, [Pending(b"{}", "work", "a" * 64,
                                                                      "b")])])
    handoff._request(message)  # as sent, it passes
    message[2][0][2] = sha256  # type: ignore[index]
    with pytest.raises(handoff.WireError):
        handoff._request(message)


@given(receipts)
def test_receipts_read_back_as_sent(r: Receipt) -> None:
    [message] = _through_socket([["answer", 7, [handoff._outcome(r)]]])
    assert handoff._answer_or_block(message) == (7, [r])


@given(st.integers(min_value=0, max_value=2**62))
def test_an_earlier_registration_reads_back_with_its_seq(seq: int) -> None:
    """D94: the sequencer's "already registered" answer crosses as its own outcome."""
    [message] = _through_socket([["answer", 3, [handoff._outcome(AlreadyRegistered(seq))]]])
    _, [back] = handoff._answer_or_block(message)  # type: ignore[misc]
    assert isinstance(back, AlreadyRegistered) and back.seq == seq


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


def test_a_lone_surrogate_in_an_error_still_crosses() -> None:
    """A detail orjson cannot encode (a notary's error text with a lone surrogate) is sent
    with the surrogate replaced, rather than killing the connection's writer."""
    got = _through_socket([["answer", 1, [handoff._outcome(Unavailable("bad \udc80 text"))]]])
    [answer] = [handoff._answer_or_block(m) for m in got]
    assert not isinstance(answer, BlockRow)
    rid, outcomes = answer
    assert rid == 1
    assert isinstance(outcomes[0], Unavailable) and outcomes[0].detail == "bad ? text"


def test_a_frame_takes_at_most_its_weight() -> None:
    """What waits beyond a frame's budget goes in the next frame, in order."""
    import queue

    q: queue.Queue[int | None] = queue.Queue()
    for n in (600, 900, 700, 5):
        q.put(n)
    assert handoff._coalesce(q, 2_000, lambda n: n) == [600, 900, 700]
    assert handoff._coalesce(q, 2_000, lambda n: n) == [5]


def test_after_a_failed_send_the_next_connection_still_sends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The sequencer dies while a process is writing to it: that request is answered 'may or
    may not be recorded', and once the process reconnects its next request is sent."""
    import threading
    from concurrent.futures import Future

    from copyledger.ledger.sequencer import LogState

    path, listener = _listening("cl-h-")
    frames: list[list[object]] = []
    arrived = threading.Event()

    def read(c: socket.socket) -> None:
        real_send(c, [["hello", handoff.WIRE_VERSION]])
        while True:
            frame = handoff._recv(c)
            if frame[0][0] == "entries":
                frames.append(frame)
                arrived.set()

    _accepting(listener, read)
    real_send, calls = handoff._send, [0]

    def once_broken(sock: socket.socket, messages: list[Any]) -> None:
        if messages[0][0] == "entries":  # (a hello goes through)
            calls[0] += 1
            if calls[0] == 1:
                raise BrokenPipeError("the sequencer died mid-frame")
        real_send(sock, messages)

    monkeypatch.setattr(handoff, "_send", once_broken)
    client = handoff._Client(path, LogState(0, [], None))
    try:
        assert client.wait_connected(60)
        p = Pending(b"{}", "work", "a" * 64, "acct", ())
        first = handoff._Waiter([Future()], None)
        client.hand([p], first)
        assert isinstance(first.futures[0].exception(timeout=60), Unavailable)
        second = handoff._Waiter([Future()], None)
        deadline = 600
        while deadline:  # until reconnected: hand() refuses while no sequencer listens
            try:
                client.hand([p], second)
                break
            except Unavailable:
                deadline -= 1
                threading.Event().wait(0.1)
        assert arrived.wait(60), "the reconnected process never sent the request"
        assert frames and calls[0] == 2
    finally:
        client.close()
        listener.close()


@given(st.lists(st.integers(min_value=1, max_value=1_000), max_size=40))
def test_frames_keep_every_request_in_order_and_under_the_cap(sizes: list[int]) -> None:
    requests = [(i, [Pending(b"{}", "work", "a" * 64, "acct", ())] * n)
                for i, n in enumerate(sizes)]
    frames = handoff._frames(requests, 2_000)
    assert [r for f in frames for r in f] == requests
    assert all(f and sum(len(p) for _, p in f) <= 2_000 for f in frames)
    # Fewest frames for the order: a frame ends only when the next request would overflow it.
    for f, g in itertools.pairwise(frames):
        assert sum(len(p) for _, p in f) + len(g[0][1]) > 2_000


def test_one_turn_of_the_event_loop_sends_one_frame() -> None:
    """Requests handed over in one turn of a process's event loop wake its sender once and
    reach the sequencer in one frame (D69), each still answered on its own."""
    import asyncio
    import threading

    from copyledger.ledger.sequencer import LogState

    path, listener = _listening("cl-h-")
    frames: list[list[object]] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            handoff._send(conn, [["hello", handoff.WIRE_VERSION]])
            assert handoff._recv(conn) == [["hello", handoff.WIRE_VERSION]]
            frame = handoff._recv(conn)
            frames.append(frame)
            answers = [["answer", rid, [handoff._outcome(Unavailable(f"no {rid}"))] * len(p)]
                       for _, rid, p in frame]
            handoff._send(conn, answers)
            conn.recv(1)  # until the client closes

    threading.Thread(target=serve, daemon=True).start()
    client = handoff._Client(path, LogState(0, [], None))

    async def five() -> list[str]:
        loop = asyncio.get_running_loop()
        waiters = [handoff._Waiter([loop.create_future()], loop) for _ in range(5)]
        p = Pending(b"{}", "work", "a" * 64, "acct", ())
        for w in waiters:
            client.hand([p], w)  # all in this one turn
        done = await asyncio.wait_for(asyncio.gather(*(w.futures[0] for w in waiters),
                                                     return_exceptions=True), 60)
        return [str(e) for e in done]

    try:
        assert client.wait_connected(60)
        answers = asyncio.run(five())
    finally:
        client.close()
        listener.close()
    assert len(frames) == 1 and [m[1] for m in frames[0]] == [0, 1, 2, 3, 4]  # type: ignore[index]
    assert answers == [f"no {rid}" for rid in range(5)]


def test_the_wakeups_counter_keeps_a_dropped_clients_share() -> None:
    """A process that followed and then took over the sequencer drops its hand-over client:
    the wake-ups that client asked for stay in the total the metrics report, which must not
    go back (before D91 they vanished from it at the takeover)."""
    import tempfile
    from pathlib import Path

    from copyledger.ledger.sequencer import Sequencer
    from copyledger.ledger.store import Store

    with tempfile.TemporaryDirectory(prefix="cl-w-", dir="/tmp") as tmp:  # a short socket path
        base = Path(tmp)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(base / "s.sock"))
        listener.listen()
        store = Store.open(f"sqlite:///{base / 'l.db'}")
        try:
            local = Sequencer(store, lambda t, _c: t, "test.example/log")  # type: ignore[arg-type,return-value]
            h = handoff.Handoff(local, base)
            client = handoff._Client(base / "s.sock", local.state)
            local.wakeups, client.wakeups = 3, 4
            h._client = client
            assert h.wakeups == 7
            h._drop_client()
            assert h._client is None and h.wakeups == 7
            local.wakeups += 1
            assert h.wakeups == 8
        finally:
            listener.close()
            store.close()


def test_an_answer_of_another_length_than_its_request_takes_no_waiter(tmp_path: Path) -> None:
    """An answer whose outcomes are not one a handed-over entry is refused before any waiter
    of its frame is taken, so the connection's loss answers each of them (503, fate unknown)
    instead of leaving one popped and never settled."""
    from concurrent.futures import Future

    from copyledger.ledger.sequencer import Sequencer
    from copyledger.ledger.store import Store

    path, listener = _listening("cl-len-")
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        local = Sequencer(store, lambda t, _c: t, "test.example/log")  # type: ignore[arg-type,return-value]
        client = handoff._Client(path, local.state)
        two: list[Future[Any]] = [Future(), Future()]
        one: list[Future[Any]] = [Future()]
        client._waiting.update({1: handoff._Waiter(one, None), 2: handoff._Waiter(two, None)})
        earlier = handoff._outcome(AlreadyRegistered(7))
        with pytest.raises(handoff.WireError):  # (1's answer right, 2's one short)
            client._deliver([["answer", 1, [earlier]], ["answer", 2, [earlier]]])
        assert set(client._waiting) == {1, 2} and not any(f.done() for f in one + two)
        client._deliver([["answer", 1, [earlier]], ["answer", 2, [earlier, earlier]]])
        assert not client._waiting and all(f.done() for f in one + two)
        client.close()
    finally:
        listener.close()
        store.close()


def test_a_takeover_whose_helpers_fail_still_sequences_with_one_thread(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Once this process has started its sequencer, what follows (its pid file, the helpers
    only the sequencing process runs) cannot undo the takeover: a failure there is logged,
    not raised to the elector, which would take the lock (its own) again and start a second
    server and sequencer thread on the same queue; a second take is a no-op, and a second
    start of a running sequencer is refused."""
    from copyledger.ledger.errors import Conflict
    from copyledger.ledger.sequencer import Sequencer
    from copyledger.ledger.store import Store

    base = Path(tempfile.mkdtemp(prefix="cl-lead-", dir="/tmp"))  # a short socket path
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    local = Sequencer(store, lambda t, _c: t, "test.example/log")  # type: ignore[arg-type,return-value]

    def fails() -> None:
        raise RuntimeError("no thread can start")

    h = handoff.Handoff(local, base, on_lead=fails)
    (base / handoff.PID_NAME).mkdir()  # (the pid file cannot be written either)
    before = sum(t.name == "sequencer" for t in threading.enumerate())
    try:
        with caplog.at_level("ERROR", logger="copyledger.handoff"):
            assert h._try_lead() and h.leading
        said = [r.getMessage() for r in caplog.records]
        assert any("pid file" in m for m in said) and any("helpers" in m for m in said), said
        assert h._try_lead()  # (again: taken already)
        with pytest.raises(Conflict):
            local.start()
        assert sum(t.name == "sequencer" for t in threading.enumerate()) == before + 1
        assert local.submit(Pending(b"{}", "work", "a" * 64, "alice")).result(10).seq == 0
    finally:
        h.stop()
        store.close()


def test_a_follower_that_greeted_before_the_takeover_gets_the_reloaded_head(
        tmp_path: Path) -> None:
    """A process that connects to a new sequencer between its bind and its start is sent the
    head the sequencer's node loaded when it was built; the dead sequencer may have committed
    a block after that and died before announcing it. Once the start has reloaded the state,
    that head is announced too, so the follower does not serve the older one as current until
    the next block (up to `heartbeat_s` on an idle log)."""
    from copyledger.ledger.sequencer import LogState, Sequencer
    from copyledger.ledger.store import Store

    base = Path(tempfile.mkdtemp(prefix="cl-head-", dir="/tmp"))  # a short socket path
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    sign = lambda t, _c: t  # noqa: E731
    dead = Sequencer(store, sign, "test.example/log")  # type: ignore[arg-type]
    dead.start()
    stale = LogState.load(store)  # (what the new sequencer's node loaded at its start)
    dead.submit(Pending(b"{}", "work", "a" * 64, "alice")).result(10)
    dead.stop()
    local = Sequencer(store, sign, "test.example/log")  # type: ignore[arg-type]
    local.state = stale
    h = handoff.Handoff(local, base)
    client = handoff._Client(h.path, stale)
    start = local.start

    def start_once_greeted() -> None:
        wait_for(lambda: client.joined, "the follower's greeting")  # (sent the stale head)
        assert client.state.size == stale.size == 0
        start()

    local.start = start_once_greeted  # type: ignore[method-assign]
    try:
        assert h._try_lead()
        wait_for(lambda: client.state.size == 1, "the reloaded head at the follower", 10.0)
    finally:
        client.close()
        h.stop()
        store.close()


def test_only_the_sequencing_process_reports_the_runs_listed(tmp_path: Path) -> None:
    """/metrics' `copyledger_content_runs_listed` (D156) is the sequencing process's count: a
    process that follows, or that stepped down, reports 0, not the count it last read, which
    grows stale once another process merges."""
    from copyledger.ledger.sequencer import Sequencer
    from copyledger.ledger.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        local = Sequencer(store, lambda t, _c: t, "test.example/log")  # type: ignore[arg-type,return-value]
        h = handoff.Handoff(local, tmp_path)
        store.runs.added()
        store.runs.added()  # (two blocks' runs, as this process last knew them)
        assert local.content_runs_listed == 2
        assert h.content_runs_listed == 0  # following
        h.leading = True
        assert h.content_runs_listed == 2
        h._stepped_down = True
        assert h.content_runs_listed == 0
    finally:
        store.close()


def test_a_process_of_another_version_is_refused_at_the_hello(
        caplog: pytest.LogCaptureFixture) -> None:
    """D98: the sequencer answers a process's hello in its own version only. A process that
    says another version (copyledger upgraded on disk under a running `serve --workers`) is
    cut off with a log line naming both; one from before the hello (its first message is
    entries) is kept, and each of its entries refused in its own format, nothing recorded,
    so it does not reconnect at once. Nothing of either reaches the sequencer."""
    import logging

    from copyledger.ledger.sequencer import Sequencer
    from copyledger.ledger.store import Store

    caplog.set_level(logging.ERROR, logger="copyledger.handoff")
    with tempfile.TemporaryDirectory(prefix="cl-v-", dir="/tmp") as tmp:  # a short socket path
        base = Path(tmp)
        store = Store.open(f"sqlite:///{base / 'l.db'}")
        local = Sequencer(store, lambda t, _c: t, "test.example/log")  # type: ignore[arg-type,return-value]
        taken: list[object] = []
        local.submit_many = taken.append  # type: ignore[assignment,method-assign]
        server = handoff._Server(local, base / "s.sock")
        newer, older = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2))
        entries = handoff._entries_message(5, [Pending(b"{}", "work", "a" * 64, "acct", ())] * 2)
        try:
            for peer in (newer, older):
                peer.settimeout(60)
                peer.connect(str(base / "s.sock"))
            handoff._send(newer, [["hello", handoff.WIRE_VERSION + 1]])
            with contextlib.suppress(OSError):  # (it may be cut off already)
                handoff._send(newer, [entries])
            with pytest.raises((ConnectionError, OSError)):
                handoff._recv(newer)
            assert f"speaks hand-over version {handoff.WIRE_VERSION + 1}" in caplog.text
            # It asks again (every second, in life): refused again, and not logged again.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as again:
                again.settimeout(60)
                again.connect(str(base / "s.sock"))
                handoff._send(again, [["hello", handoff.WIRE_VERSION + 1]])
                with pytest.raises((ConnectionError, OSError)):
                    handoff._recv(again)
            assert caplog.text.count("speaks hand-over version") == 1

            handoff._send(older, [entries])
            [answer] = handoff._recv(older)
            rid, outcomes = handoff._answer_or_block(answer)  # type: ignore[misc]
            assert rid == 5 and len(outcomes) == 2
            assert all(isinstance(o, Unavailable) and f"hand-over version {handoff.WIRE_VERSION}"
                       " and this process 0" in str(o.detail) for o in outcomes)
            handoff._send(older, [entries])  # still connected, still refused
            assert handoff._recv(older)[0][0] == "answer"
            assert taken == []
        finally:
            for peer in (newer, older):
                peer.close()
            server.close()
            store.close()


def test_a_sequencer_that_cuts_off_the_hello_is_taken_for_an_older_one() -> None:
    """D98: a sequencer from before the hello drops a process's connection at its first
    message without a word: after a few such, the process says so and refuses writes
    naming the versions (not "changing hands")."""
    from concurrent.futures import Future

    from copyledger.ledger.sequencer import LogState
    from tests.helpers import wait_for

    path, listener = _listening("cl-v-")

    def cut_off(c: socket.socket) -> None:
        handoff._recv(c)  # the hello, not understood: the connection ends

    _accepting(listener, cut_off)
    client = handoff._Client(path, LogState(0, [], None))
    try:
        wait_for(lambda: client._refused is not None, "the silent sequencer taken for older")
        with pytest.raises(Unavailable, match="speaks hand-over version 0 and this process"):
            client.hand([Pending(b"{}", "work", "a" * 64, "acct", ())],
                        handoff._Waiter([Future()], None))
    finally:
        client.close()
        listener.close()


def test_a_sequencer_of_another_version_takes_no_write() -> None:
    """D98: a process whose sequencer says another hand-over version hands it nothing: its
    writes are refused with 503 naming both versions, nothing recorded (before, every write
    was told "may or may not be recorded")."""
    from concurrent.futures import Future

    from copyledger.ledger.sequencer import LogState
    from tests.helpers import wait_for

    path, listener = _listening("cl-v-")
    got: list[list[object]] = []

    def other_version(c: socket.socket) -> None:
        handoff._send(c, [["hello", handoff.WIRE_VERSION + 1]])
        while True:
            got.append(handoff._recv(c))

    _accepting(listener, other_version)
    client = handoff._Client(path, LogState(0, [], None))
    try:
        wait_for(lambda: client._refused is not None, "the sequencer's hello read")
        p = Pending(b"{}", "work", "a" * 64, "acct", ())
        with pytest.raises(Unavailable, match="hand-over version") as info:
            client.hand([p], handoff._Waiter([Future()], None))
        assert f"version {handoff.WIRE_VERSION + 1}" in str(info.value.detail)
        assert not client._connected.is_set()
        assert all(frame == [["hello", handoff.WIRE_VERSION]] for frame in got)
    finally:
        client.close()
        listener.close()
