"""The sequencer's filter of the log's content hashes (D103): it may take a new hash for seen,
never a seen one for new, whatever the order of its scan and the sequencer's adds."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.ledger import seen
from copyledger.ledger.seen import BloomFilter, SeenHashes
from tests.helpers import wait_for


@settings(max_examples=60, deadline=None)
@given(added=st.lists(st.text(max_size=70), max_size=300),
       others=st.lists(st.text(max_size=70), max_size=300),
       capacity=st.integers(1, 1 << 22))
def test_a_bloom_filter_never_calls_an_added_string_absent(
        added: list[str], others: list[str], capacity: int) -> None:
    f = BloomFilter(capacity)
    assert f.maybe(added) == [False] * len(added) or not added  # empty: nothing seen
    for i in range(0, len(added), 7):  # in several adds, repeats included
        f.add(added[i:i + 7])
    assert all(f.maybe(added))
    assert f.maybe(others + added)[len(others):] == [True] * len(added)
    assert f.count == len(added)


def test_far_fewer_new_strings_than_one_in_fifty_are_taken_for_seen() -> None:
    """Its reason to exist: at the load it was sized for (12 bits a string: this capacity
    fills a power of two exactly), a new hash is rarely read."""
    capacity = (1 << 22) // seen.BITS_PER_HASH
    f = BloomFilter(capacity)
    assert f.nbytes * 8 == 1 << 22
    f.add([f"{i:064x}" for i in range(capacity)])
    fresh = [f"{i:064x}" for i in range(10**9, 10**9 + 20_000)]
    assert sum(f.maybe(fresh)) < len(fresh) // 50


def _scan(pages: list[list[str]], go: threading.Event | None = None
          ) -> Iterator[list[str]]:
    for i, page in enumerate(pages):
        if i == 1 and go is not None:
            go.wait(30)  # the sequencer adds while the scan is half way
        yield page


def test_it_answers_only_once_its_scan_is_done_and_keeps_every_add_meanwhile() -> None:
    go = threading.Event()
    old = [[f"old{i}" for i in range(k, k + 50)] for k in range(0, 200, 50)]
    s = SeenHashes(lambda: _scan(old, go), 200)
    assert not s.ready and s.maybe(["old0"]) is None  # not ready: read everything
    s.add(["new0", "new1"])  # sealed while the scan runs
    go.set()
    wait_for(lambda: s.ready, "the scan to finish")
    assert s.maybe([k for page in old for k in page] + ["new0", "new1"]) == [True] * 202
    s.add(["new2"])
    assert s.maybe(["new2"]) == [True]


def test_a_failed_scan_is_tried_again_and_nothing_is_answered_meanwhile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def scan() -> Iterator[list[str]]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the database went away")
        yield ["a", "b"]

    monkeypatch.setattr(seen, "RETRY_S", 0.0)
    s = SeenHashes(scan, 2)
    wait_for(lambda: s._building is None, "the first scan to fail")
    assert not s.ready and s.maybe(["a"]) is None
    s.add(["c"])  # the next block starts the scan again, and is kept by it
    wait_for(lambda: s.ready, "the second scan")
    assert len(calls) == 2 and s.maybe(["a", "b", "c"]) == [True, True, True]


def test_outgrown_it_is_rebuilt_larger_and_the_adds_between_reach_both(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seen, "MIN_CAPACITY", 4)
    go = threading.Event()
    scans: list[int] = []
    log = ["x0", "x1"]

    def scan() -> Iterator[list[str]]:
        scans.append(len(log))
        snapshot = list(log)  # what was committed when this scan began
        yield snapshot[:1]
        if len(scans) > 1:
            go.wait(30)
        yield snapshot[1:]

    s = SeenHashes(scan, 2)
    wait_for(lambda: s.ready, "the first scan")
    first = s._ready
    assert first is not None and first.capacity == 4
    for i in range(2, 12):  # past twice its capacity: a larger one is built by a new scan
        s.add([f"x{i}"])  # added before its block is committed, as the sequencer does
        log.append(f"x{i}")
    wait_for(lambda: len(scans) == 2, "the rebuild's scan")
    s.add(["late"])  # while the larger one is being filled: both get it
    go.set()
    wait_for(lambda: s._ready is not first, "the larger filter to take over")
    assert s._ready is not None and s._ready.capacity >= 4 * first.capacity
    assert s.maybe([*log, "late"]) == [True] * (len(log) + 1)


def test_a_rebuild_that_fails_is_not_tried_again_at_every_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seen, "MIN_CAPACITY", 4)
    scans: list[int] = []

    def scan() -> Iterator[list[str]]:
        scans.append(1)
        if len(scans) > 1:
            raise OSError("the database went away")
        yield ["a"]

    s = SeenHashes(scan, 2)
    wait_for(lambda: s.ready, "the first scan")
    for i in range(9):  # past twice its capacity: one rebuild, which fails
        s.add([f"k{i}"])
    wait_for(lambda: s._building is None, "the rebuild to fail")
    for i in range(50):  # blocks go on: no new scan within RETRY_S
        s.add([f"m{i}"])
    assert len(scans) == 2 and s.ready
    assert s.maybe(["a", *(f"k{i}" for i in range(9)), "m49"]) == [True] * 11


def test_the_scan_adds_a_page_in_slices_so_a_block_never_waits_for_a_whole_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """D106: the filter's lock (which a block's add takes) is held for one slice of a page at
    a time, not the page; every hash of the page still gets in."""
    calls: list[tuple[BloomFilter, int]] = []
    real = BloomFilter.add

    def add(self: BloomFilter, keys: Sequence[str]) -> None:
        calls.append((self, len(keys)))
        real(self, keys)

    monkeypatch.setattr(BloomFilter, "add", add)
    monkeypatch.setattr(seen, "SCAN_SLICE", 40)
    page = [f"h{i}" for i in range(100)]
    s = SeenHashes(lambda: iter([page, page[:3]]), 103)
    wait_for(lambda: s.ready, "the scan to finish")
    assert [n for f, n in calls if f is s._ready] == [40, 40, 20, 3]
    assert s.maybe(page) == [True] * 100


def test_a_scan_stopped_within_a_page_ends_at_its_next_slice_and_is_never_ready(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`stop` mid-page: the half-filled filter never answers (every work is read), and a later
    block's add starts no new scan."""
    calls: list[BloomFilter] = []
    scans: list[int] = []
    real = BloomFilter.add
    holder: list[SeenHashes] = []

    def add(self: BloomFilter, keys: Sequence[str]) -> None:
        real(self, keys)
        if threading.current_thread().name == "seen-scan" and self is holder[0]._building:
            calls.append(self)
            holder[0].stop()  # after the page's first slice

    def scan() -> Iterator[list[str]]:
        scans.append(1)
        yield [f"h{i}" for i in range(100)]

    monkeypatch.setattr(BloomFilter, "add", add)
    monkeypatch.setattr(seen, "SCAN_SLICE", 40)
    started = threading.Event()
    monkeypatch.setattr(seen.SeenHashes, "_fill", _after(started, seen.SeenHashes._fill))
    holder.append(SeenHashes(scan, 100))
    s = holder[0]
    started.set()
    wait_for(lambda: len(calls) == 1 and not any(
        t.name == "seen-scan" for t in threading.enumerate()), "the scan to stop")
    assert calls[0].count == 40  # one slice, not the page
    assert not s.ready and s.maybe(["h0"]) is None
    s.add(["new"])
    assert len(scans) == 1


def _after(event: threading.Event, fill: Any) -> Any:
    """`SeenHashes._fill` held until `event`: the test has its object before the scan runs."""
    def held(self: SeenHashes, f: BloomFilter) -> None:
        event.wait(30)
        fill(self, f)
    return held
