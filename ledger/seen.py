"""Which content hashes the log certainly does not hold: a filter the sequencer consults before
D94's read (D103).

Each block the sequencer asks the database which of its `once` works their registrants already
have (`Store.registered`). Most works of a bulk registration are new, and for those the answer
is known without the read once every content hash in the log is in a Bloom filter: a hash the
filter has never seen is in no entry, so no registrant has it. A hash it may have seen is read
as before. The filter only ever answers "certainly not" wrongly if a hash in the log was never
added, so every hash is added before its block is committed, and the filter answers nothing
until a scan of the log's hashes, started when the sequencer starts, has added all the older
ones. Keys are `hash(sha256)`: Python's string hash, salted per process, so hashes chosen to
collide in one process's filter cannot be chosen in advance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

log = logging.getLogger("copyledger.seen")

BITS_PER_HASH = 12
"""Filter bits for each hash it is sized for: with three bits set a hash, about 1 % of new
hashes are taken for seen at that load (each is then read, as without the filter)."""
_U64 = (1 << 64) - 1
MIN_CAPACITY = 1 << 20
"""Hashes the smallest filter is sized for (2 MiB)."""
RETRY_S = 60.0
"""How soon after a scan failed (the database unreachable) one is started again, the first or
a rebuild's: not before the next block after that."""

SCAN_SLICE = 1_000
"""Hashes the scan adds at a time (about 1 ms): between slices it releases the filter's lock,
so a block's add waits for a slice, not a page, and offers the interpreter to other threads
(D106). Reading and converting a page still holds the interpreter for one stretch."""

Scan = Callable[[], Iterator[Sequence[str]]]
"""Every content hash in the log, in pages (duplicates allowed)."""


class BloomFilter:
    """A Bloom filter of strings, by their `hash()`: never "absent" for a string added. Plain
    Python over a bytearray: numpy is one of the packages `make run` installs after the server
    is up (D58), and the sequencer starts before that."""

    def __init__(self, capacity: int) -> None:
        bits = 1 << max(20, (capacity * BITS_PER_HASH - 1).bit_length())
        self.capacity = capacity
        self.count = 0  # strings added (with repeats): what the load is judged by
        self._mask = bits - 1
        self._bytes = bytearray(bits // 8)
        self._lock = threading.Lock()  # two adders would lose each other's bits

    @property
    def nbytes(self) -> int:
        return len(self._bytes)

    def add(self, keys: Sequence[str]) -> None:
        b, m = self._bytes, self._mask
        with self._lock:
            for k in keys:
                h = hash(k) & _U64
                step = (h >> 32) | 1  # odd: the probes differ for any size
                p0, p1, p2 = h & m, (h + step) & m, (h + 2 * step) & m
                b[p0 >> 3] |= 1 << (p0 & 7)
                b[p1 >> 3] |= 1 << (p1 & 7)
                b[p2 >> 3] |= 1 << (p2 & 7)
            self.count += len(keys)

    def maybe(self, keys: Sequence[str]) -> list[bool]:
        """For each key: False if it was certainly never added."""
        b, m = self._bytes, self._mask
        out = []
        for k in keys:
            h = hash(k) & _U64
            step = (h >> 32) | 1
            p0, p1, p2 = h & m, (h + step) & m, (h + 2 * step) & m
            out.append(bool(b[p0 >> 3] >> (p0 & 7) & b[p1 >> 3] >> (p1 & 7)
                            & b[p2 >> 3] >> (p2 & 7) & 1))
        return out


class SeenHashes:
    """The sequencer's filter of the log's content hashes, with the scan that fills it.

    `add` every work's hash before its block is committed; `maybe` answers only once a scan
    of the log, begun after the first `add`-able moment (the sequencer holding its lock), has
    added every older hash; until then it says None (read everything). Past twice the load it
    was sized for, a larger filter is built beside it by a new scan, and takes over when ready.
    """

    def __init__(self, scan: Scan, size: int) -> None:
        self._scan = scan
        self._size = size  # the log's size when made: what a retried first scan is sized by
        self._ready: BloomFilter | None = None
        self._building: BloomFilter | None = None
        self._lock = threading.Lock()  # the pair changes together: an add must reach both
        self._failed_at = -RETRY_S
        self._stopping = False
        self._start(size)

    @property
    def ready(self) -> bool:
        return self._ready is not None

    def stop(self) -> None:
        """Ask a running scan to stop (it ends at its next slice, never ready)."""
        self._stopping = True

    def add(self, keys: Sequence[str]) -> None:
        with self._lock:  # not while a finished scan hands its filter over
            ready = self._ready
            if (self._building is None and not self._stopping  # started before these are
                    and time.monotonic() - self._failed_at >= RETRY_S):  # added, not too often:
                if ready is not None and ready.count + len(keys) > 2 * ready.capacity:
                    self._start(ready.count)  # outgrown: a larger one, by a new scan
                elif ready is None:
                    self._start(self._size)  # the last scan failed: try again
            for f in (ready, self._building):  # (the scan may pass them before their commit)
                if f is not None:
                    f.add(keys)

    def maybe(self, keys: Sequence[str]) -> list[bool] | None:
        """For each key, False if no entry of the log holds it; None while not ready."""
        f = self._ready
        return None if f is None else f.maybe(keys)

    def _start(self, size: int) -> None:
        f = BloomFilter(max(MIN_CAPACITY, 2 * size))
        self._building = f
        threading.Thread(target=self._fill, args=(f,), name="seen-scan", daemon=True).start()

    def _fill(self, f: BloomFilter) -> None:
        t0 = time.monotonic()
        try:
            for page in self._scan():
                for i in range(0, len(page), SCAN_SLICE):
                    if self._stopping:
                        return
                    f.add(page[i:i + SCAN_SLICE])
                    time.sleep(0)  # the GIL to whoever waits: the event loop, the sequencer
        except Exception:
            log.exception("reading the log's content hashes for the filter failed; every "
                          "block reads its works until a scan succeeds")
            with self._lock:
                self._building = None
                self._failed_at = time.monotonic()
            return
        with self._lock:
            self._ready, self._building = f, None
        log.info("content-hash filter ready: %d hashes, %d bytes, %.1f s", f.count, f.nbytes,
                 time.monotonic() - t0)
