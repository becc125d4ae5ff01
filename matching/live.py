"""The live near-duplicate index: rebuilt from the log at start, then caught up from the log.

Until the rebuild has read the whole log the index is not `ready`, and a claim check says so
rather than answer "none" from a half-built index. After it, each search that needs the works
up to a tree size first reads those it has not read (`catch_up`): what the log holds is what
the index holds, whichever process or request wrote it and whether or not its writer was ever
answered (D130). While `make run` is still installing the libraries the index needs (D58),
the rebuild waits for them.

This module imports no heavy library: the server builds a LiveIndex at start, and faiss, numpy
and datasketch load (with copyledger.matching.index) only in the background rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
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


class LiveIndex:
    """One FingerprintIndex per server process, usable (empty, not `ready`) before it is built.

    It reads every work from the log, never from a registration's request: under `serve
    --workers N` (D48) other processes write to the same log, and even in one process a work
    whose writer timed out or went away is committed all the same (D130)."""

    def __init__(self) -> None:
        self._index: FingerprintIndex | None = None
        self._through = 0  # every entry below this seq has been read from the log
        self._catching_up = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._index is not None

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

    def build(self, store: Store) -> None:
        """Read every work's fingerprints from the log (run it in a background thread), once
        the libraries it needs are installed."""
        failures = Throttle(60.0)
        while not store.closed:
            try:
                while libraries_pending():
                    time.sleep(LIBRARY_POLL_S)
                self._build(store)
                return
            except store.database_errors as e:  # restarting: build once it is back (D111)
                # (A fault that lasts, a missing table say, is said once a minute, in full.)
                if (held := failures.due(reason := db_reason(e))) is not None:
                    log.warning("the fingerprint index waits for the database: %s", reason,
                                extra={"held_back": held})
                time.sleep(DATABASE_RETRY_S)
            except Exception:
                log.exception("the fingerprint index could not be built; claim checks will "
                              "say so (index_ready false) until a restart")
                return

    def catch_up(self, store: Store, size: int) -> None:
        """Add the works of seqs below `size` it has not read yet (none before it is built:
        the build reads up to the log's size when it starts)."""
        index = self._index
        if index is None or size <= self._through:
            return
        with self._catching_up:
            if size > self._through:  # (another request may have read further meanwhile)
                self._through = _read_works(store, index, self._through, size)

    def _build(self, store: Store) -> None:
        from copyledger.matching.index import FingerprintIndex

        t0 = time.monotonic()
        index = FingerprintIndex()
        self._through = _read_works(store, index, 0, store.tree_size())
        self._index = index
        log.info("fingerprint index ready",
                 extra={"entries": len(index), "seconds": round(time.monotonic() - t0, 3)})


def _read_works(store: Store, index: FingerprintIndex, start: int, stop: int) -> int:
    """Add the fingerprints of the works with seqs in [start, stop) to `index`; returns `stop`.

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
    return stop
