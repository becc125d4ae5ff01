"""A bounded memo for expensive renderings (the PDF certificate costs up to 0.66 s of CPU per
unauthenticated GET).

The key is a SHA-256 over every argument the renderer is called with, canonically encoded, so
the cache cannot serve a stale document when the inputs change (a bundle that gained a
cosignature or an external time-stamp, another public URL, a new argument such as a language):
whatever the renderer depends on, it is handed, and so it is in the key.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["RenderCache"]


class RenderCache:
    """`render(*args, **kwargs)` memoised, least recently used first out, bounded both in
    entries and in bytes held. Arguments must be JSON-encodable (bundles, URLs, strings)."""

    def __init__(self, render: Callable[..., bytes], *, max_entries: int = 256,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self.render = render
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(*args: Any, **kwargs: Any) -> bytes:
        """The digest of the arguments (dict keys sorted, so equal inputs give equal keys)."""
        return hashlib.sha256(orjson.dumps([args, kwargs], option=orjson.OPT_SORT_KEYS)).digest()

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        k = self.key(*args, **kwargs)
        with self._lock:
            hit = self._items.get(k)
            if hit is not None:
                self._items.move_to_end(k)
                self.hits += 1
                return hit
            self.misses += 1
        out = self.render(*args, **kwargs)  # outside the lock: renders may run in parallel
        if len(out) > self.max_bytes:
            return out
        with self._lock:
            if k not in self._items:
                self._items[k] = out
                self._bytes += len(out)
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)
        return out

    def __len__(self) -> int:
        return len(self._items)
