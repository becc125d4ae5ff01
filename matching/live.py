"""The live near-duplicate index: rebuilt from the log at start, fed by new registrations.

Until the rebuild has read the whole log the index is not `ready`, and a claim check says so
rather than answer "none" from a half-built index. Registrations that arrive meanwhile are held
and added when the rebuild finishes, so none is missed.

This module imports no heavy library: the server builds a LiveIndex at start, and faiss, numpy
and datasketch load (with copyledger.matching.index) only in the background rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from copyledger.ledger import jcs
from copyledger.ledger.store import Store

if TYPE_CHECKING:
    from copyledger.matching.index import FingerprintIndex
    from copyledger.matching.scoring import Candidate

__all__ = ["LiveIndex"]

log = logging.getLogger("copyledger.index")


class LiveIndex:
    """One FingerprintIndex per server process, usable (empty, not `ready`) before it is built."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: FingerprintIndex | None = None
        self._pending: list[tuple[int, Mapping[str, Any]]] = []

    @property
    def ready(self) -> bool:
        return self._index is not None

    def add(self, seq: int, fingerprints: Mapping[str, Any]) -> None:
        with self._lock:
            if self._index is None:
                self._pending.append((seq, fingerprints))
                return
        self._index.add(seq, fingerprints)

    def search(self, fingerprints: Mapping[str, Any]) -> list[Candidate]:
        index = self._index
        return [] if index is None else list(index.search(fingerprints))

    def size(self) -> int:
        index = self._index
        return 0 if index is None else len(index)

    def build(self, store: Store) -> None:
        """Read every work's fingerprints from the log (run it in a background thread)."""
        try:
            self._build(store)
        except Exception:
            log.exception("the fingerprint index could not be built; claim checks will say "
                          "so (index_ready false) until a restart")

    def _build(self, store: Store) -> None:
        from copyledger.matching.index import FingerprintIndex

        t0 = time.monotonic()
        index = FingerprintIndex()
        items: list[tuple[int, Mapping[str, Any]]] = []
        for chunk in store.iter_entries():
            for row in chunk:
                if row.kind != "work":
                    continue
                e = jcs.parse(row.data)
                fps = e.get("content", {}).get("fingerprints") if isinstance(e, dict) else None
                if fps:
                    items.append((row.seq, fps))
            if len(items) >= 10_000:
                index.add_many(items)
                items = []
        index.add_many(items)
        with self._lock:
            index.add_many(self._pending)  # what arrived during the rebuild
            self._pending = []
            self._index = index
        log.info("fingerprint index ready",
                 extra={"entries": len(index), "seconds": round(time.monotonic() - t0, 3)})
