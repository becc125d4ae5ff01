"""The live near-duplicate index: rebuilt from the log at start, then following the log.

Until the rebuild has read the whole log the index is not `ready`, and a claim check says so
rather than answer "none" from a half-built index. After it, the same thread keeps reading the
works the log appends (D130), so what the log holds is what the index holds, whichever process
or request wrote it and whether or not its writer was ever answered; a claim check waits a
moment for it to have read the tree the check signs for (`searchable`). While `make run` is
still installing the libraries the index needs (D58), the rebuild waits for them.

This module imports no heavy library: the server builds a LiveIndex at start, and faiss, numpy
and datasketch load (with copyledger.matching.index) only in the background rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from copyledger.ledger.components import MATCHING, libraries_pending, require
from copyledger.ledger.store import Store
from copyledger.ledger.throttle import Throttle, db_reason

if TYPE_CHECKING:
    from copyledger.matching.index import FingerprintIndex
    from copyledger.matching.scoring import Candidate

__all__ = ["INDEX_LIBRARIES", "LiveIndex"]

INDEX_LIBRARIES = ("numpy", "faiss", "datasketch", "cv2")
"""What building and searching the index, and a claim check's ORB verification, import."""
LIBRARY_POLL_S = 1.0
"""How often a rebuild waiting for `make run`'s background install looks again."""
DATABASE_RETRY_S = 1.0
"""How often the index's build tries again a database that failed it (D111)."""

log = logging.getLogger("copyledger.index")


FOLLOW_EVERY_S = 1.0
"""How often a built index looks for works the log has and it has not read, when no claim
check asks sooner (D130): what a claim check then waits for is about this much of the log."""
WAIT_S = 2.0
"""How long a claim check waits for the index to read up to the tree it will sign for; past
that it answers with what the index holds, and says so (`index_ready` false)."""


class LiveIndex:
    """One FingerprintIndex per server process, usable (empty, not `ready`) before it is built.

    It reads every work from the log, never from a registration's request: under `serve
    --workers N` (D48) other processes write to the same log, and even in one process a work
    whose writer timed out or went away is committed all the same. Once built, its own thread
    (`run`) keeps reading what the log appends, so a claim check waits for at most the works
    of the last moment instead of reading everyone's new works itself (D130)."""

    def __init__(self) -> None:
        self._index: FingerprintIndex | None = None
        self._through = 0  # every entry below this seq has been read from the log
        self._catching_up = threading.Lock()  # one reader of the log at a time
        self._changed = threading.Condition()  # `_through` moved, a claim check asks, a stop
        self._wanted = 0  # the largest tree a claim check waits for
        self._stopped = False
        self.following = False  # the index's thread is reading what the log appends

    @property
    def ready(self) -> bool:
        return self._index is not None

    @property
    def through(self) -> int:
        """Every entry below this seq has been read into the index (0 before it is built)."""
        return self._through if self._index is not None else 0
    def search(self, fingerprints: Mapping[str, Any]) -> list[Candidate]:
        index = self._index
        return [] if index is None else list(index.search(fingerprints))

    def size(self) -> int:
        index = self._index
        return 0 if index is None else len(index)

    def require(self) -> None:
        """Raise `Unavailable` while the index is not ready because the libraries it needs are
        not installed (yet): a claim check then answers 503, not "index rebuilding"."""
        if not self.ready:
            require(MATCHING, *INDEX_LIBRARIES)

    def run(self, store: Store, known_size: Callable[[], int]) -> None:
        """Build the index from the log, then keep it caught up until the store closes (the
        thread `Node.start_index` starts): to a tree a claim check asks for at once, else to
        `known_size()` (what the process knows, no database read) every FOLLOW_EVERY_S. Waits
        for the libraries `make run` may still be installing, and for the database (D111)."""
        failures, faults = Throttle(60.0), Throttle(60.0)
        while not self._done(store):
            try:
                while libraries_pending():
                    time.sleep(LIBRARY_POLL_S)
                self.build(store)
                self.following = True
                self._follow(store, known_size)
                return
            except store.database_errors as e:  # restarting: go on once it is back (D111)
                if self._done(store):
                    return
                # (A fault that lasts, a missing table say, is said once a minute, in full.)
                if (held := failures.due(reason := db_reason(e))) is not None:
                    log.warning("the fingerprint index waits for the database: %s", reason,
                                extra={"held_back": held})
                time.sleep(DATABASE_RETRY_S)
            except Exception as e:
                if self._done(store):
                    return
                if self._index is None:
                    log.exception("the fingerprint index could not be built; claim checks will "
                                  "say so (index_ready false) until a restart")
                    return
                # Built: never give up following (claim checks would wait on nothing); a
                # fault that lasts (an unreadable row) is said once a minute, and /healthz's
                # `read_through` stops moving.
                if (held := faults.due(type(e).__name__)) is not None:
                    log.exception("the fingerprint index could not read the log's new works",
                                  extra={"held_back": held})
                time.sleep(DATABASE_RETRY_S)
            finally:
                self.following = False

    def stop(self) -> None:
        """End `run` (before its store closes): it reads nothing more."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _done(self, store: Store) -> bool:
        return self._stopped or store.closed

    def build(self, store: Store) -> None:
        """Read every work's fingerprints from the log up to its size now; once only."""
        from copyledger.matching.index import FingerprintIndex

        if self._index is not None:
            return
        with self._catching_up:
            if self._index is not None:  # (built by another thread while this one waited)
                return
            t0 = time.monotonic()
            index = FingerprintIndex()
            self._through = 0
            self._read(store, index, store.tree_size())
            with self._changed:
                self._index = index
                self._changed.notify_all()
        log.info("fingerprint index ready",
                 extra={"entries": len(index), "seconds": round(time.monotonic() - t0, 3)})

    def catch_up(self, store: Store, size: int) -> None:
        """Add the works of seqs below `size` it has not read yet (none before it is built:
        the build reads up to the log's size when it starts)."""
        if self._index is None or size <= self._through:
            return
        with self._catching_up:
            index = self._index  # (the one the build made, read under the lock)
            if index is not None and size > self._through:  # (another may have read further)
                self._read(store, index, size)

    def searchable(self, size: int, wait: float | None = None
                   ) -> tuple[FingerprintIndex | None, int]:
        """The index and how far it has read, once it has read the works of a tree of `size`
        leaves, or after `wait` seconds (WAIT_S by default; none if no thread follows the log):
        the index a claim check searches and the seq below which it had read every work when
        the wait ended (None: not built yet). The index may hold more by the time it is
        searched; the caller keeps to `size`."""
        deadline = time.monotonic() + (WAIT_S if wait is None else wait)
        with self._changed:
            if self._index is not None and self._through < size and self.following:
                self._wanted = max(self._wanted, size)
                self._changed.notify_all()
                while self._through < size and (left := deadline - time.monotonic()) > 0:
                    self._changed.wait(left)
            return self._index, self._through

    def _follow(self, store: Store, known_size: Callable[[], int]) -> None:
        while True:
            with self._changed:
                if self._wanted <= self._through and not self._stopped:
                    self._changed.wait(FOLLOW_EVERY_S)
                wanted = self._wanted
            if self._done(store):
                return
            self.catch_up(store, max(wanted, known_size()))

    def _read(self, store: Store, index: FingerprintIndex, stop: int) -> None:
        """`_read_works` from `_through` to `stop`, moving `_through` after each chunk so an
        interrupted read never adds a work twice (the caller holds `_catching_up`)."""
        def advanced(through: int) -> None:
            with self._changed:
                self._through = max(self._through, through)
                self._changed.notify_all()

        _read_works(store, index, self._through, stop, advanced)
        advanced(stop)


def _read_works(store: Store, index: FingerprintIndex, start: int, stop: int,
                advanced: Callable[[int], None]) -> None:
    """Add the fingerprints of the works with seqs in [start, stop) to `index`, calling
    `advanced(seq)` after each chunk with the seq below which every work is in.

    Only the works whose bytes hold the key "fingerprints" are read (the store's partial index,
    D90): none at all when no work carries any. The log's own bytes are parsed with orjson,
    not jcs.parse: the sequencer wrote them in canonical form (the audit checks it), and the
    strict parser's Python hooks cost ~80 us per entry once an image carries ~6 KiB of ORB
    keypoints, four times the rest of the rebuild (D67)."""
    import orjson

    for chunk in store.iter_fingerprinted(start, stop):
        items: list[tuple[int, Mapping[str, Any]]] = []
        for seq, data in chunk:
            e = orjson.loads(data)
            fps = e.get("content", {}).get("fingerprints") if isinstance(e, dict) else None
            if fps:
                items.append((seq, fps))
        index.add_many(items)
        advanced(chunk[-1][0] + 1)
