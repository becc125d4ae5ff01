"""A bounded memo for expensive renderings (the PDF certificate costs up to 0.66 s of CPU per
unauthenticated GET), the slots that bound how many run at once, and the coalescing of
identical renders in flight.

The key is a SHA-256 over every argument the renderer is called with, canonically encoded, so
the cache cannot serve a stale document when the inputs change (a bundle that gained a
cosignature or an external time-stamp, another public URL, a new argument such as a language):
whatever the renderer depends on, it is handed, and so it is in the key.

A render waits for a slot (`Slots`) as a coroutine (`RenderCache.aget`; a caller outside an
event loop calls the cache, which runs `aget` on a loop of its own) that holds no thread while
it queues: only the render itself runs on one (D75). `Slots` also serves threads that wait on
themselves (`certificate_pdf`). The queue is bounded: past `Slots.limit` waiters a caller is
refused at once, and a server's render whose client has gone is skipped when its slot comes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Literal

import orjson

from copyledger.ledger.errors import Unavailable

__all__ = ["RenderCache", "Slots", "busy"]

RETRY_BUSY_S = 5  # the Retry-After of a render refused for want of a slot


def busy() -> Unavailable:
    """The refusal of a render that waited its whole bound for a slot, or found the queue full
    (503, Retry-After)."""
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
    loop in the process (each test client has its own), unlike an `asyncio.Semaphore`.

    With a `limit`, at most that many callers wait: one more is refused at once (`acquire`
    answers False without waiting), so a flood of requests cannot queue work that would only
    time out, and `refused` counts them."""

    def __init__(self, size: int, limit: int | None = None) -> None:
        if size < 1:
            raise ValueError("a render needs at least one slot")
        if limit is not None and limit < 0:
            raise ValueError("a queue cannot hold fewer than no waiters")
        self.size = size
        self.limit = limit
        self.refused = 0
        self._free = size
        self._queue: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many callers are queued for a slot."""
        with self._lock:
            return len(self._queue)

    def _enter(self, wake: Callable[[], None] | None) -> _Waiter | Literal[True] | None:
        """Take a free slot (True), or else queue a waiter woken by `wake`; None, queueing
        nothing, when the caller will not wait (no `wake`) or the queue is full."""
        with self._lock:
            if self._free:
                self._free -= 1
                return True
            if wake is None:
                return None
            if self.limit is not None and len(self._queue) >= self.limit:
                self.refused += 1
                return None
            w = _Waiter(wake)
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
        if w is None or w is True:
            return w is True
        return woken.wait(timeout) or self._leave(w)

    async def acquire_async(self, timeout: float) -> bool:
        """Wait as a coroutine, at most `timeout` seconds, holding no thread (False at once if
        the queue is full). Cancelled while it waits, it takes no slot (one handed over
        meanwhile is passed on)."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(done)

        w = self._enter(wake)
        if w is None or w is True:
            return w is True
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


class _Left(Exception):
    """A flight ended with nothing rendered because its leader left (cancelled, or its client
    gone): those that waited for it try again, one of them leading."""


class RenderCache:
    """`render(*args, **kwargs)` memoised, least recently used first out, bounded both in
    entries and in bytes held. Arguments must be JSON-encodable (bundles, URLs, strings).

    With `slots`, a render runs only while it holds one, after waiting at most `wait_s`
    (then Unavailable, 503 with Retry-After); a cache hit never waits. Concurrent calls with
    the same arguments share the one render in flight (its bytes, or its error) instead of
    each taking a slot, and wait for it at most `wait_s` too."""

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

    def _look(self, k: bytes) -> bytes | tuple[Future[bytes], bool]:
        """The cached bytes, or (the render in flight to wait for, False), or (the caller's
        own flight, True) when the caller must render, having been registered as in flight."""
        with self._lock:
            hit = self._items.get(k)
            if hit is not None:
                self._items.move_to_end(k)
                self.hits += 1
                return hit
            flying = self._flying.get(k)
            if flying is not None:
                self.hits += 1
                return flying, False
            self.misses += 1
            mine: Future[bytes] = Future()
            mine.set_running_or_notify_cancel()  # a waiter giving up cannot cancel it for all
            self._flying[k] = mine
            return mine, True

    def _land(self, k: bytes, outcome: bytes | Exception) -> None:
        """Store a render's bytes and hand them (or its error) to those that waited for it."""
        with self._lock:
            mine = self._flying.pop(k)
            if isinstance(outcome, bytes) and len(outcome) <= self.max_bytes:
                self._items[k] = outcome
                self._bytes += len(outcome)
                while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= len(old)
        if isinstance(outcome, bytes):
            mine.set_result(outcome)
        else:
            mine.set_exception(outcome)

    def _finish(self, k: bytes, outcome: bytes | Exception, slot: bool) -> None:
        """Release the slot held (if `slot`), then land the flight whatever the release does:
        a flight that never lands would keep its followers waiting for it."""
        try:
            if slot and self.slots is not None:
                self.slots.release()
        finally:
            self._land(k, outcome)

    def _run(self, k: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The render, by a caller holding the slot, on the thread that renders: the slot is
        released and the flight lands when the render ends, whoever still waits for it."""
        outcome: bytes | Exception = _Left()  # a BaseException (interrupt) rendered nothing
        try:
            outcome = self.render(*args, **kwargs)
        except Exception as e:
            outcome = e
        finally:
            self._finish(k, outcome, slot=True)

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        """The document, for a caller outside an event loop: `aget` on a loop of its own, so
        both kinds of caller share one way of waiting, coalescing and landing."""
        return asyncio.run(self.aget(*args, **kwargs))

    async def aget(self, *args: Any, gone: Callable[[], Awaitable[bool]] | None = None,
                   **kwargs: Any) -> bytes:
        """The document, for a coroutine: the wait for a slot, or for an identical render in
        flight, holds no thread; the render runs on one (the loop's executor) while it holds
        its slot. `gone` (the server passes `request.is_disconnected`) is asked once a slot is
        granted: if the client has gone, the slot is released, nothing is rendered, and
        Unavailable is raised (nobody reads it). The slot is released, and the bytes stored
        and shared, when the render's thread ends, even if this caller was cancelled meanwhile
        or the loop shut down (the thread cannot be stopped, so the bound counts it)."""
        k = self.key(*args, **kwargs)
        while True:
            looked = self._look(k)
            if isinstance(looked, bytes):
                return looked
            flight, leads = looked
            if leads:
                break
            try:
                async with asyncio.timeout(self.wait_s) as bound:
                    return await asyncio.wrap_future(flight)
            except TimeoutError:
                if bound.expired():
                    raise busy() from None
                raise
            except _Left:
                continue
        try:
            granted = self.slots is None or await self.slots.acquire_async(self.wait_s)
        except BaseException:
            self._land(k, _Left())
            raise
        if not granted:
            refused = busy()
            self._land(k, refused)
            raise refused
        try:
            left = gone is not None and await gone()
            if not left:
                run = functools.partial(self._run, k, args, kwargs)
                asyncio.get_running_loop().run_in_executor(
                    None, contextvars.copy_context().run, run)
        except BaseException:
            self._finish(k, _Left(), slot=True)
            raise
        if left:
            self._finish(k, _Left(), slot=True)
            raise busy()
        try:
            return await asyncio.wrap_future(flight)
        except _Left:  # the render was interrupted: nothing to hand over
            raise busy() from None

    def __len__(self) -> int:
        return len(self._items)
