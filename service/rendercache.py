"""A bounded memo for expensive renderings (the PDF certificate costs up to 0.66 s of CPU per
unauthenticated GET), the slots that bound how many run at once, and the coalescing of
identical renders in flight.

The key is a SHA-256 over every argument the renderer is called with, canonically encoded, so
the cache cannot serve a stale document when the inputs change (a bundle that gained a
cosignature or an external time-stamp, another public URL, a new argument such as a language):
whatever the renderer depends on, it is handed, and so it is in the key.

A render waits for a slot (`Slots`) either on its own thread (`RenderCache.__call__`) or, in
the server, as a coroutine (`RenderCache.aget`) that holds no thread while it queues: only the
render itself runs on one (D75).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import orjson

from copyledger.ledger.errors import Unavailable

__all__ = ["RenderCache", "Slots", "busy"]

RETRY_BUSY_S = 5  # the Retry-After of a render refused for want of a slot


def busy() -> Unavailable:
    """The refusal of a render that waited its whole bound for a slot (503, Retry-After)."""
    return Unavailable("too many certificates are being rendered; retry in a few seconds",
                       retry_after=RETRY_BUSY_S)


class _Waiter:
    """One caller queued for a slot; `granted` is set, under the lock, when a slot is handed to
    it, so a caller that gives up at the same moment knows it holds one."""

    __slots__ = ("granted", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.granted = False
        self.wake = wake


class Slots:
    """A counting semaphore shared by threads and event loops, first come first served.

    A released slot is handed straight to the oldest waiter (never left free for a newcomer to
    take first), so at most `size` holders exist at any moment, whichever way each one waited:
    a thread blocks (`acquire`), a coroutine awaits (`acquire_async`) and holds no thread. Waking
    a coroutine goes through its own loop (`call_soon_threadsafe`), so one instance serves every
    loop in the process (each test client has its own), unlike an `asyncio.Semaphore`."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a render needs at least one slot")
        self.size = size
        self._free = size
        self._queue: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many callers are queued for a slot."""
        with self._lock:
            return len(self._queue)

    def _enter(self, wake: Callable[[], None] | None) -> _Waiter | None:
        """Take a free slot (None), or else queue a waiter woken by `wake`; with no `wake`, the
        caller will not wait: the waiter returned is not queued."""
        with self._lock:
            if self._free:
                self._free -= 1
                return None
            w = _Waiter(wake or (lambda: None))
            if wake is not None:
                self._queue.append(w)
            return w

    def _leave(self, w: _Waiter) -> bool:
        """Leave the queue; True when a slot was handed over meanwhile, which the caller holds."""
        with self._lock:
            if w.granted:
                return True
            self._queue.remove(w)
            return False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Wait on this thread, at most `timeout` seconds (None: as long as it takes)."""
        woken = threading.Event()
        w = self._enter(woken.set if blocking else None)
        if w is None:
            return True
        if not blocking:
            return False
        return woken.wait(timeout) or self._leave(w)

    async def acquire_async(self, timeout: float) -> bool:
        """Wait as a coroutine, at most `timeout` seconds, holding no thread. Cancelled while
        it waits, it takes no slot (one handed over meanwhile is passed on)."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(done)

        w = self._enter(wake)
        if w is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await woken
            return True
        except TimeoutError:
            return self._leave(w)
        except asyncio.CancelledError:
            if self._leave(w):
                self.release()
            raise

    def release(self) -> None:
        """Give the slot to the oldest waiter, or back to the pool."""
        while True:
            with self._lock:
                if not self._queue:
                    if self._free >= self.size:
                        raise ValueError("a render slot released more often than taken")
                    self._free += 1
                    return
                w = self._queue.popleft()
                w.granted = True
            try:
                w.wake()
                return
            except RuntimeError:  # its event loop is closed: nobody will take it, pass it on
                continue


class RenderCache:
    """`render(*args, **kwargs)` memoised, least recently used first out, bounded both in
    entries and in bytes held. Arguments must be JSON-encodable (bundles, URLs, strings).

    With `slots`, a render runs only while it holds one, after waiting at most `wait_s`
    (then Unavailable, 503 with Retry-After); a cache hit never waits. Concurrent calls with
    the same arguments share the one render in flight (its bytes, or its error) instead of
    each taking a slot."""

    def __init__(self, render: Callable[..., bytes], *, max_entries: int = 256,
                 max_bytes: int = 64 * 1024 * 1024, slots: Slots | None = None,
                 wait_s: float = 60.0) -> None:
        self.render = render
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.slots = slots
        self.wait_s = wait_s
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._flying: dict[bytes, Future[bytes]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(*args: Any, **kwargs: Any) -> bytes:
        """The digest of the arguments (dict keys sorted, so equal inputs give equal keys)."""
        return hashlib.sha256(orjson.dumps([args, kwargs], option=orjson.OPT_SORT_KEYS)).digest()

    def _look(self, k: bytes) -> tuple[bytes | None, Future[bytes] | None]:
        """(the cached bytes, None), or (None, the render in flight to wait for), or (None,
        None) when the caller must render, having been registered as in flight."""
        with self._lock:
            hit = self._items.get(k)
            if hit is not None:
                self._items.move_to_end(k)
                self.hits += 1
                return hit, None
            flying = self._flying.get(k)
            if flying is not None:
                self.hits += 1
                return None, flying
            self.misses += 1
            mine: Future[bytes] = Future()
            mine.set_running_or_notify_cancel()  # a waiter giving up cannot cancel it for all
            self._flying[k] = mine
            return None, None

    def _land(self, k: bytes, out: bytes | None, error: BaseException | None) -> None:
        """Store a render's bytes and hand them (or its error) to those that waited for it."""
        with self._lock:
            mine = self._flying.pop(k)
            if out is not None and len(out) <= self.max_bytes:
                self._items[k] = out
                self._bytes += len(out)
                while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= len(old)
        if out is not None:
            mine.set_result(out)
        else:
            # a leader interrupted before its render began: the others are told to retry
            mine.set_exception(error if isinstance(error, Exception) else busy())

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        """The document, waiting on this thread (callers outside an event loop)."""
        k = self.key(*args, **kwargs)
        hit, flying = self._look(k)
        if hit is not None:
            return hit
        if flying is not None:
            return flying.result()
        try:
            if self.slots is not None and not self.slots.acquire(timeout=self.wait_s):
                raise busy()
            try:
                out = self.render(*args, **kwargs)
            finally:
                if self.slots is not None:
                    self.slots.release()
        except BaseException as e:
            self._land(k, None, e)
            raise
        self._land(k, out, None)
        return out

    async def aget(self, *args: Any, **kwargs: Any) -> bytes:
        """The document, for a coroutine: the wait for a slot, or for an identical render in
        flight, holds no thread; the render runs on one (`asyncio.to_thread`) while it holds
        its slot. The slot is released, and the bytes stored and shared, when the render
        returns, even if this caller was cancelled meanwhile (the thread cannot be stopped, so
        the bound counts it until it ends)."""
        k = self.key(*args, **kwargs)
        hit, flying = self._look(k)
        if hit is not None:
            return hit
        if flying is not None:
            return await asyncio.wrap_future(flying)
        try:
            if self.slots is not None and not await self.slots.acquire_async(self.wait_s):
                raise busy()
        except BaseException as e:
            self._land(k, None, e)
            raise
        task = asyncio.ensure_future(asyncio.to_thread(self.render, *args, **kwargs))
        task.add_done_callback(lambda t: self._rendered(k, t))
        return await asyncio.shield(task)

    def _rendered(self, k: bytes, task: asyncio.Future[bytes]) -> None:
        if self.slots is not None:
            self.slots.release()
        if task.cancelled():
            self._land(k, None, None)
        elif (error := task.exception()) is not None:
            self._land(k, None, error)
        else:
            self._land(k, task.result(), None)

    def __len__(self) -> int:
        return len(self._items)
