"""The sequencer: group commit.

Writers hand entries over and wait. One thread collects what has arrived (up to `max_batch`,
lingering `linger` seconds for more), and seals it as one block in one transaction: entries, Merkle
nodes, chained header, signed checkpoint and signed block note, then a single durable commit. Only
then is every waiting writer answered, with an inclusion proof to that block's checkpoint. Under
load a block holds thousands of entries; idle it holds one; with nothing to do the log still seals
an empty block every `heartbeat` seconds, so a fresh signature shows it is alive.

The signer is handed in as a function from note text to signed note text, so `ledger` never
imports `notary`. With a checkpoint it also gets the consistency proof from the last sealed
tree, which the notary demands (D18): the sequencer holds the old frontier and the new nodes, so
the proof costs a few hashes and no read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import links as links_mod
from copyledger.ledger import merkle, note
from copyledger.ledger.errors import (
    AlreadyRegistered,
    Conflict,
    CopyledgerError,
    LockLost,
    Unavailable,
    Uncertain,
    said,
)
from copyledger.ledger.note import GENESIS_PREV, BlockHeader
from copyledger.ledger.seen import SeenHashes
from copyledger.ledger.store import BlockRow, CachedReader, EntryRow, ScanMark, Store
from copyledger.ledger.throttle import Throttle, db_reason

log = logging.getLogger("copyledger.sequencer")

SignFn = Callable[[str, merkle.Consistency | None], str]
"""(note text, consistency proof for a checkpoint, None for a block note) -> signed note."""
StampFn = Callable[[bytes], bytes]  # block hash -> DER RFC 3161 TimeStampToken over it
ExtraStampFn = Callable[[BlockHeader], list[tuple[str, bytes]]]
"""block header -> more (tsa, DER token) pairs sealed with it (an SM-suite TSA's, D51)."""


class Pending(NamedTuple):
    """An entry for the sequencer. Named tuples here (and `Receipt`): a batch makes one of
    each an entry, at a seventh of a frozen dataclass's cost (D82)."""

    data: bytes  # canonical leaf data
    kind: str
    sha256: str
    registrant: str
    # What the entry names (`links.links_of`); content hashes are resolved to the earliest work
    # at sealing, when the log before the entry is exactly known.
    links: tuple[tuple[links_mod.Target, str], ...] = ()
    # A work to write only if its registrant has no work with this content yet (D36): else it
    # is answered `AlreadyRegistered` with the earliest one's seq, and nothing is written (D94).
    once: bool = False
    # The entry's `received_at`, as `entry.utc_now` wrote it in its data, or "" (D117): the
    # block that seals it is sealed no earlier, by the sequencer's clock.
    received_at: str = ""
    # The Idempotency-Key claim (account, key, request_sha256) the entry's request runs under,
    # if any: the block that writes the entry records it under that claim, in its own
    # transaction (`idempotency_written`, D132).
    claim: tuple[str, str, str] | None = None


class Receipt(NamedTuple):
    seq: int
    leaf_hash: bytes
    block_height: int
    tree_size: int
    root: bytes
    proof: list[bytes]
    checkpoint: str


Outcome = Receipt | BaseException
"""A receipt, or why the entry has none: `AlreadyRegistered` (nothing written, D94) or the
failure that stopped its block."""

SCAN_PAGE = 10_000
"""Content hashes a page of the filter's scan reads (D103). A page's rows are converted in one
stretch that holds the interpreter: on PostgreSQL at 10 M, 53 ms of CPU for 50,000 and 7 ms for
10,000 (D106)."""

PHASES = ("build", "token", "sign", "commit", "proofs", "handover", "answer")
"""What sealing a block spends its time on, in order: the header, Merkle nodes and consistency
proof; the RFC 3161 token(s); the block note and checkpoint signatures; the durable commit; the
receipts' inclusion proofs; telling the listeners (other processes, metrics); waking writers."""

UPKEEP_WHEN = ("after_block", "idle")
"""When the sequencer calls the content-hash runs' upkeep (D156): after a batch of writes it
sealed (the steps the blocks written since owe, none while blocks wait unless D144's bounds are
passed), or in idle time (nothing queued, or after a heartbeat block)."""

MAX_AHEAD_S = 0.5
"""How far ahead of the sequencer's clock an entry's `received_at` may be (D117). Another host
stamps it by its own clock; a block's `sealed_at` is never before any of its entries'
`received_at` (a verifier refuses an entry received after its block was sealed), so it is
that `received_at` when it is ahead of the sequencer's clock. Further ahead, the entry is
refused, nothing recorded. Half the RFC 3161 tokens' accuracy (1 s), which `sealed_at` must
stay within of the token's time."""
LIMIT_FOR_S = 0.05  # how long `Sequencer._check_clock` trusts the limit it last read


def _latest(pendings: Sequence[Pending]) -> str:
    """The latest `received_at` among these entries ("" if none has one)."""
    return max((p.received_at for p in pendings), default="")


def _sealed_at(received_at: str) -> tuple[str, bool]:
    """A block's `sealed_at`, and whether it is ahead of this clock (D117): now, or
    `received_at`, the latest of its entries', when that is later (an entry from a host whose
    clock runs ahead, by at most MAX_AHEAD_S, as `Sequencer._check_clock` let in). Nothing
    waits: the block is sealed at once, and its time stays within the token's accuracy. A
    clock that went back further since fails the block before anything is written."""
    now = entry_mod.utc_now()
    if received_at <= now:
        return now, False
    if received_at > entry_mod.utc_now(MAX_AHEAD_S):
        raise Unavailable(said("this host's clock went back: an entry was received at "
                               "{received_at}, and it is now {now}; nothing was recorded",
                               received_at=received_at, now=now))
    return received_at, True


class _Group:
    """A batch queued with ONE waiter (`submit_group_async`, D87): its entries' outcomes are
    gathered here in order as their blocks seal, and the waiter is answered once, with the
    list, when the last is in. A batch of 1,000 made and settled 1,000 futures before."""

    __slots__ = ("future", "loop", "outcomes", "pendings")

    def __init__(self, pendings: Sequence[Pending], future: asyncio.Future[list[Outcome]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.pendings = pendings
        self.future = future
        self.loop = loop
        self.outcomes: list[Outcome] = []


class _Item(NamedTuple):
    pending: Pending
    future: Future[Receipt] | asyncio.Future[Receipt] | _Group
    loop: asyncio.AbstractEventLoop | None = None  # set for asyncio waiters


def _items(queued: _Item | list[_Item] | _Group) -> list[_Item]:
    """A queued entry, or a group queued as one (`submit_many_async`, `submit_group_async`),
    as a list. A `_Group`'s items are made here, in the sequencer's thread."""
    if isinstance(queued, _Group):
        return [_Item(p, queued) for p in queued.pendings]
    return queued if isinstance(queued, list) else [queued]


def _settle(waiters: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Runs in the event loop: answer a whole block's asyncio waiters in one wake-up (a group's
    waiter with its list of outcomes)."""
    for fut, outcome in waiters:
        if fut.done():  # the client went away; the entry is recorded all the same
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


_SEAL_FAILED = {
    "before": said("sealing failed before anything was written; nothing was recorded"),
    "during": said("the database write failed; the entry is most likely not recorded, but "
                   "check GET /v1/search?sha256=... before retrying"),
    "after": said("the entry WAS recorded, but its receipt could not be built; fetch it with "
                  "GET /v1/search?sha256=..."),
}


def _seal_failed(phase: str, cause: BaseException | None) -> Unavailable:
    """What waiters are told: a domain error's own detail (it names nothing internal), but only
    the operator's log sees anything else (a driver's message with paths, an errno, a URL).
    Only a failure before anything was written is a plain Unavailable: after that, Uncertain."""
    cls = Unavailable if phase == "before" else Uncertain
    if isinstance(cause, CopyledgerError):
        return cls(said("{seal_failed}: {detail}", seal_failed=_SEAL_FAILED[phase],
                        detail=cause.detail), internal=cause.internal)
    return cls(_SEAL_FAILED[phase], internal=f"{type(cause).__name__}: {cause}")


class _SealFailed(Exception):
    """Sealing failed at or after the database write; `phase` says whether it was recorded."""

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


class LogState:
    """What the sequencer keeps in memory between blocks: tree size, frontier, last block."""

    def __init__(self, size: int, frontier: list[bytes], last: BlockRow | None) -> None:
        self.size = size
        self.frontier = frontier
        self.last = last

    @classmethod
    def load(cls, store: Store) -> LogState:
        last = store.latest_block()
        size = last.header.tree_size if last else 0
        frontier = store.read_hashes(merkle.frontier_ids(size))
        return cls(size, frontier, last)


class Sequencer:
    def __init__(
        self,
        store: Store,
        sign: SignFn,
        origin: str,
        *,
        max_batch: int = 10_000,
        linger: float = 0.002,
        heartbeat: float = 300.0,
        max_queue: int = 200_000,
        on_seal: Callable[[BlockRow], None] | None = None,
        stamp: StampFn | None = None,
        extra_stamps: ExtraStampFn | None = None,
        content_filter: bool | None = None,
        claim_ttl_s: int = 86_400,
    ) -> None:
        self.store = store
        self.claim_ttl_s = claim_ttl_s  # how long a recorded claim answers its retries (D134)
        self.sign = sign
        self.origin = origin
        self.max_batch = max_batch
        self.linger = linger
        self.heartbeat = heartbeat
        self.on_seal = on_seal
        # Called (on the sequencer's thread) when a block is refused because another process
        # took the log's lock (D109); `serve --workers N` steps the process down.
        self.on_lock_lost: Callable[[], None] | None = None
        # A failing block logs its traceback; the same failure again within 10 s only counts
        # (a database restarting under load fails every block, D111).
        self._failures = Throttle(10.0)
        self._clock_told = Throttle(10.0)  # refusals for a clock ahead (D117)
        self.stamp = stamp
        self.extra_stamps = extra_stamps
        self._queue: queue.Queue[_Item | list[_Item] | _Group | None] = queue.Queue(
            maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._exit_guard = threading.Lock()
        self._put_guard = threading.Lock()
        self._exited = False  # the thread has left its loop (set by the thread)
        self._release_on_exit = False  # `stop` timed out: the thread gives the lock up
        self._stopping = False
        self._stale = False  # the state must be read back before the next block (a failure)
        self.state = LogState.load(store)
        # The log's content hashes, once started (D103): by default on PostgreSQL, where the
        # read it spares is a round trip and ~6 µs of the cluster's CPU an entry, and on SQLite
        # with the content-hash runs (D142), where the read seeks every listed run; on SQLite
        # with B-tree indexes (an older schema) the read is one seek and the filter measured
        # no gain.
        self.content_filter = (store.dialect == "postgresql" or store.has_runs
                               if content_filter is None else content_filter)
        self.seen: SeenHashes | None = None
        # Seconds spent sealing, by phase, and event-loop wake-ups asked for: cumulative
        # counters (a few clock reads a block) an operator and the benchmark read (D86).
        self.spent: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        # Seconds in the content-hash runs' upkeep (D142), by `UPKEEP_WHEN`; with `Runs`' rows,
        # what shows a merge's cost as it is paid (`copyledger_content_runs_upkeep_seconds`).
        self.upkeep_spent: dict[str, float] = dict.fromkeys(UPKEEP_WHEN, 0.0)
        self.wakeups = 0
        self._ahead_limit = ("", 0.0)  # `entry.utc_now(MAX_AHEAD_S)` as last read, and when
        self.clock_refused = 0  # entries refused for a clock too far ahead (D117)
        self.clock_ahead_blocks = 0  # blocks sealed at a `received_at` ahead of this clock

    @property
    def content_filter_ready(self) -> bool:
        """Whether the filter of the log's content hashes (D103) holds every hash of the log:
        until its scan at start ends, each block reads its works from the database instead.
        False once stopping (a scan may still finish after it was asked to stop)."""
        return (self._thread is not None and not self._stopping and self.seen is not None
                and self.seen.ready)

    @property
    def upkeep_rows(self) -> dict[str, int]:
        """Rows (both tables) the content-hash runs' upkeep copied into merged runs and
        deleted as garbage, by steps that committed (D156; 0 on PostgreSQL)."""
        runs = self.store.runs
        return {"copied": runs.merged_rows, "deleted": runs.deleted_rows}

    @property
    def content_runs_listed(self) -> int:
        """The content-hash runs listed, as this process last read them (D156)."""
        return self.store.runs.listed_total()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():  # (a second thread would
            raise Conflict("the sequencer is already running")  # seal from a stale state)
        self.store.acquire_sequencer_lock()
        self.state = LogState.load(self.store)
        # Only now, with the lock held: every entry is either committed already (the scan
        # finds it) or will be sealed here (added to the filter before its commit).
        if self.content_filter:
            self.seen = SeenHashes(self._content_hashes, self.state.size)
        if self.state.last is None:
            try:
                self._seal([])  # genesis: block 0 signs the empty tree: always a checkpoint
            except BaseException:
                if self.seen is not None:
                    self.seen.stop()  # its scan thread would outlive this failed start
                raise
        self._exited = self._release_on_exit = False
        self._thread = threading.Thread(target=self._main, name="sequencer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Seal what is queued, then stop and give up the lock. A thread still sealing after
        `timeout` keeps the lock and gives it up itself when its block is done, committed or
        not: until then no other sequencer can start, so no block of this one commits behind
        a successor's back (D104). `Store.close` leaves such a lock to its thread too."""
        with self._put_guard:  # every write accepted before this is in the queue
            self._stopping = True
        if self.seen is not None:
            self.seen.stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            # A full queue is being sealed, not waited on: the loop ends once it is empty.
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            thread.join(timeout)
            with self._exit_guard:
                if not self._exited:
                    self._release_on_exit = True
                    self.store.keep_sequencer_lock()
                    log.warning("the sequencer is still sealing %g s after it was asked to "
                                "stop; it gives up the log's lock when its block is done",
                                timeout)
                    return
        self.store.release_sequencer_lock()

    def _main(self) -> None:
        """The thread: the loop, then the lock if `stop` left it to the thread."""
        try:
            self._run()
        finally:
            with self._exit_guard:
                self._exited = True
                release = self._release_on_exit
            if release:
                try:
                    self.store.release_sequencer_lock(kept=True)
                except Exception:  # (the process's end releases it all the same)
                    log.exception("giving up the sequencer lock failed")

    # -- the writers' side --------------------------------------------------------------------

    def submit(self, pending: Pending) -> Future[Receipt]:
        """Queue an entry; the future resolves once its block is durably committed."""
        self._check_clock(pending.received_at)
        fut: Future[Receipt] = Future()
        self._put(_Item(pending, fut))
        return fut

    def submit_many(self, pendings: Sequence[Pending]) -> list[Future[Receipt]]:
        """As `submit` for many entries, queued as one (see `submit_many_async`): for a thread
        that answers other processes (`service.handoff`)."""
        self._check_clock(_latest(pendings))
        futures: list[Future[Receipt]] = [Future() for _ in pendings]
        if futures:
            self._put([_Item(p, f) for p, f in zip(pendings, futures, strict=True)])
        return futures

    def submit_async(self, pending: Pending) -> asyncio.Future[Receipt]:
        """As `submit`, for a coroutine: call it in the event loop that will await the result.
        A block's waiters in one loop are answered with one thread-safe call, not one each."""
        self._check_clock(pending.received_at)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Receipt] = loop.create_future()
        self._put(_Item(pending, fut, loop))
        return fut

    def submit_many_async(self, pendings: Sequence[Pending]) -> list[asyncio.Future[Receipt]]:
        """As `submit_async` for many entries, queued as one: the sequencer takes them all
        into the same block (or consecutive blocks past `max_batch`)."""
        self._check_clock(_latest(pendings))
        loop = asyncio.get_running_loop()
        items = [_Item(p, loop.create_future(), loop) for p in pendings]
        if items:
            self._put(items)
        return [it.future for it in items]  # type: ignore[misc]

    def submit_group_async(self, pendings: Sequence[Pending]
                           ) -> asyncio.Future[list[Outcome]]:
        """As `submit_many_async`, with one future for them all (D87): it resolves, once every
        entry's block is durably committed (or failed), to each entry's receipt or the error
        that stopped it, in order. A batch request makes one future, not one an entry."""
        self._check_clock(_latest(pendings))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Outcome]] = loop.create_future()
        if pendings:
            self._put(_Group(pendings, fut, loop))
        else:
            fut.set_result([])
        return fut

    def _check_clock(self, received_at: str) -> None:
        """Unavailable, nothing queued, for what was received more than MAX_AHEAD_S ahead of
        this clock: by a host whose clock runs that far ahead of the sequencer's (D117). The
        limit is read again when it is older than LIMIT_FOR_S (this clock may have gone back)
        or the entry passes it: mostly a string comparison and a monotonic read."""
        limit, read = self._ahead_limit
        if received_at <= limit and time.monotonic() - read < LIMIT_FOR_S:
            return
        read = time.monotonic()
        limit = entry_mod.utc_now(MAX_AHEAD_S)
        self._ahead_limit = (limit, read)
        if received_at > limit:
            with self._put_guard:
                self.clock_refused += 1
            if (held := self._clock_told.due("ahead")) is not None:
                log.warning("refused an entry received at %s, more than %s s ahead of this "
                            "clock (%s): a host's clock is wrong", received_at, MAX_AHEAD_S,
                            entry_mod.utc_now(), extra={"held_back": held})
            raise Unavailable(said(
                "received at {received_at} by a host whose clock is more than {max_s} s ahead "
                "of the sequencer's; nothing was recorded: set the hosts' clocks right (NTP)",
                received_at=received_at, max_s=MAX_AHEAD_S))

    def _put(self, item: _Item | list[_Item] | _Group) -> None:
        with self._put_guard:  # (so `stop` cannot come between the check and the put)
            if self._stopping or self._thread is None:
                raise Unavailable("the sequencer is not running")
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                raise Unavailable("the sequencer's queue is full; retry shortly") from None

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        last_seal = time.monotonic()
        while True:
            timeout = max(0.0, last_seal + self.heartbeat - time.monotonic())
            # Idle, with the content-hash runs' upkeep to do (D142): a step, then look again,
            # so a merge left by a burst ends without waiting for blocks or heartbeats; if a
            # failed step asks for a wait, wake when it ends.
            upkeep = None if self._stopping else self.store.upkeep_wait()
            idle_work = upkeep == 0.0 and timeout > 0
            try:
                if self._stopping or idle_work:
                    first = self._queue.get_nowait()
                else:
                    first = self._queue.get(timeout=timeout if upkeep is None
                                            else min(timeout, upkeep))
            except queue.Empty:
                if self._stopping:  # stopped, and nothing left to seal
                    return
                if idle_work:
                    self._upkeep(idle=True)
                    continue
                if time.monotonic() < last_seal + self.heartbeat:
                    continue  # (woken for the upkeep's wait, not the heartbeat)
                self._seal_guarded([])
                last_seal = time.monotonic()
                self._upkeep(idle=True)
                continue
            batch, done = self._collect(first)
            if batch:
                before = self.state.last
                self._seal_guarded(batch)
                if self.state.last is not before:  # a block of only earlier registrations
                    last_seal = time.monotonic()  # (D94) seals none: the heartbeat is due
                self._upkeep(idle=False)  # after a batch: the steps its blocks owe (D142)
            if done:
                return

    def _upkeep(self, *, idle: bool) -> None:
        """Steps of the content-hash runs' upkeep, none while blocks wait to be sealed unless
        too much is owed (`Store.upkeep`, D144): their writers wait for their receipts."""
        t = time.perf_counter()
        self.store.upkeep(waiting=lambda: not self._queue.empty())
        self.upkeep_spent["idle" if idle else "after_block"] += time.perf_counter() - t

    def _collect(self, first: _Item | list[_Item] | _Group | None
                 ) -> tuple[list[_Item], bool]:
        if first is None:
            return self._drain(), True
        batch = _items(first)
        deadline = time.monotonic() + self.linger
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:
                batch.extend(self._drain())
                return batch, True
            batch.extend(_items(item))
        return batch, False

    def _drain(self) -> list[_Item]:
        out: list[_Item] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if item is not None:
                out.extend(_items(item))

    def _seal_guarded(self, batch: list[_Item]) -> None:
        """Seal `batch` block by block and answer its waiters. Never raises: the sequencer's
        thread must outlive a failed block. After a failure the state is read back from the
        database (the block may or may not have been committed); if that read fails too (the
        database still unreachable, the pool exhausted) the next block reads it first, and
        fails as "nothing recorded" while it cannot."""
        for i in range(0, max(len(batch), 1), self.max_batch):
            chunk = batch[i : i + self.max_batch]
            reread = self._stale
            earlier: dict[int, tuple[str, int]] = {}
            try:
                if reread:
                    self._reload()
                    self._stale = reread = False
                pendings = [it.pending for it in chunk]
                earlier = self._earlier(pendings)
                receipts = self._seal_new(pendings, earlier)
            except Exception as e:  # answer every waiter, saying truly what became of it
                if (held := self._failures.due(db_reason(e))) is not None:
                    log.exception("sealing a block of %d entries failed", len(chunk),
                                  extra={"held_back": held})
                if isinstance(e, LockLost) and self.on_lock_lost is not None:
                    try:
                        self.on_lock_lost()
                    except Exception:
                        log.exception("on_lock_lost failed")
                self._stale = True
                failed = e if isinstance(e, _SealFailed) else None
                phase = failed.phase if failed else "before"
                err = _seal_failed(phase, failed.__cause__ if failed else e)
                # A work its registrant already has in the log is that one whatever became of
                # this block; one that repeats a work of this block shares the block's fate.
                outcomes: list[Outcome] = [
                    AlreadyRegistered(found[1]) if (found := earlier.get(k)) is not None
                    and found[0] == "log" else err for k in range(len(chunk))]
                # A block committed after all is in the state before its writers hear "WAS
                # recorded", as a sealed one is before its receipts: the log's head they read
                # next holds it (D107). Otherwise they are answered first, not kept waiting on
                # a database that may be away. (A failed read-back is not tried twice.)
                settle_first = phase == "after" and not reread
                if settle_first:
                    self._read_back()
                try:
                    self._answer(chunk, outcomes)
                except Exception:
                    log.exception("answering a failed block's waiters failed")
                if not reread and not settle_first:
                    self._read_back()
                continue
            t = time.perf_counter()
            self._answer(chunk, receipts)
            self.spent["answer"] += time.perf_counter() - t

    def _answer(self, chunk: Sequence[_Item], outcomes: Sequence[Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]]
        by_loop = {}
        assert len(chunk) == len(outcomes)
        i = 0
        while i < len(chunk):
            it, outcome = chunk[i], outcomes[i]
            fut = it.future
            if isinstance(fut, _Group):
                # A group's items lie together and in order (`_items`), block after block:
                # its share of this chunk is taken in one slice.
                k = min(len(fut.pendings) - len(fut.outcomes), len(chunk) - i)
                fut.outcomes += outcomes[i:i + k]
                i += k
                if len(fut.outcomes) == len(fut.pendings):
                    by_loop.setdefault(fut.loop, []).append((fut.future, fut.outcomes))
                continue
            i += 1
            if it.loop is not None:
                assert isinstance(fut, asyncio.Future)
                by_loop.setdefault(it.loop, []).append((fut, outcome))
            elif fut.done():  # cancelled by its caller: the entry's outcome stands all the same
                continue
            elif isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        self.wakeups += len(by_loop)
        for loop, waiters in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, waiters)
            except RuntimeError:  # that loop has closed: nobody is waiting any more
                log.warning("event loop closed before %d receipts could be delivered",
                            len(waiters))

    def _seal_new(self, pendings: Sequence[Pending], earlier: dict[int, tuple[str, int]]
                  ) -> list[Receipt | AlreadyRegistered]:
        """Seal the entries that are to be written: each `once` work whose registrant already
        has a work with its content, in the log or earlier in this block (`earlier`, from
        `_earlier`), is answered `AlreadyRegistered` with the earliest such work instead (D36,
        here since D94: the sequencer alone sees every process's writes, and the log before
        the block exactly). A block of nothing but those seals nothing; an empty chunk is the
        heartbeat's block."""
        if not earlier:
            return list(self._seal(pendings))
        fresh = [p for i, p in enumerate(pendings) if i not in earlier]
        sealed = iter(self._seal(fresh) if fresh else ())
        out: list[Receipt | AlreadyRegistered] = []
        for i in range(len(pendings)):
            found = earlier.get(i)
            if found is None:
                out.append(next(sealed))
            elif found[0] == "log":
                out.append(AlreadyRegistered(found[1]))
            else:  # an entry earlier in this block, sealed above (indexes only point back)
                out.append(AlreadyRegistered(out[found[1]].seq))
        return out

    def _earlier(self, pendings: Sequence[Pending]) -> dict[int, tuple[str, int]]:
        """For each entry not to be written, by its index: ("log", the seq of the entry that
        answers it) or ("block", the index of the one before it in `pendings` that will be
        written with it): `once` works already registered (`_registered_before`), then
        entries whose Idempotency-Key claim has one already (`_claimed_before`)."""
        out = self._registered_before(pendings)
        self._claimed_before(pendings, out)
        return out

    def _registered_before(self, pendings: Sequence[Pending]) -> dict[int, tuple[str, int]]:
        """For each `once` work not to be written, by its index: ("log", the seq of its
        registrant's earliest work with that content) or ("block", the index of the work
        before it in `pendings` that will be written with it). One read a registrant
        (`Store.registered`), of the hashes this block brings: the cost is the block's own.
        A hash the filter has certainly never seen (`seen`, D103) is in no entry, so it is
        not read; every work's hash is then added, before the block can be committed."""
        once = [p for p in pendings if p.once and p.kind == "work"]
        maybe = self.seen.maybe([p.sha256 for p in once]) if self.seen and once else None
        wanted: dict[str, set[str]] = {}
        for k, p in enumerate(once):
            if maybe is None or maybe[k]:
                wanted.setdefault(p.registrant, set()).add(p.sha256)
        if self.seen is not None:
            self.seen.add([p.sha256 for p in pendings if p.kind == "work"])
        if not once:
            return {}
        known = {(reg, sha): seq for reg, shas in wanted.items()
                 for sha, seq in self.store.registered(reg, shas).items()}
        out: dict[int, tuple[str, int]] = {}
        first: dict[tuple[str, str], int] = {}  # the first work of this block, by content
        for i, p in enumerate(pendings):
            if p.kind != "work":
                continue
            key = (p.registrant, p.sha256)
            if p.once and key in known:  # (only `once` works were looked up)
                out[i] = ("log", known[key])
            elif p.once and key in first:
                out[i] = ("block", first[key])
            else:
                first.setdefault(key, i)
        return out

    def _claimed_before(self, pendings: Sequence[Pending], out: dict[int, tuple[str, int]]
                        ) -> None:
        """Add to `out` each entry whose Idempotency-Key claim already has an entry: ("log",
        its seq) if one was recorded (`idempotency_written`), ("block", its index) if one is
        written earlier in this block. A claim is one request, recorded once: a retry taken
        over from a process that died while its entry was still queued here (D132's 60 s)
        is then answered with that entry, not written again (D134). One read a block that
        holds claims, of those claims; nothing for a block without."""
        claimed = [(i, p.claim) for i, p in enumerate(pendings)
                   if p.claim is not None and i not in out]
        if not claimed:
            return
        since = int(time.time()) - self.claim_ttl_s
        recorded = self.store.recorded_claims((c for _, c in claimed), since)
        first: dict[tuple[str, str, str], int] = {}
        for i, claim in claimed:
            if claim in recorded:
                out[i] = ("log", recorded[claim])
            elif claim in first:
                out[i] = ("block", first[claim])
            else:
                first[claim] = i

    def _read_back(self) -> None:
        """`_reload` after a failed block; if that fails too, the next block reads it first."""
        try:
            self._reload()
            self._stale = False
        except Exception:
            log.exception("reading the log's state back after a failed block failed")

    def _reload(self) -> None:
        """The state read back after a failed block. Entries past the size this sequencer
        had are a block it committed after all, or one a sequencer that had lost the lock
        committed late (its next block would then clash on their seqs and come here): their
        hashes go to the filter, which has otherwise seen only its scan and this sequencer's
        blocks (D103)."""
        had, last = self.state.size, self.state.last
        self.state = LogState.load(self.store)
        if self.seen is not None and self.state.size > had:
            self.seen.add(self.store.content_hashes_of(had, self.state.size))
        now = self.state.last
        if now is not None and (last is None or now.header.height != last.header.height):
            self._sealed(now)  # committed after all: the notary's memory, other processes

    def _sealed(self, block: BlockRow) -> None:
        """Tell `on_seal` of the log's new last block. The notary remembers the checkpoint it
        may extend, and other processes the log's head: a block committed after all that it
        never heard of would make the notary refuse every next one (D107)."""
        if self.on_seal is not None:
            try:
                self.on_seal(block)
            except Exception:
                log.exception("on_seal hook failed")

    def _content_hashes(self) -> Iterator[list[str]]:
        """Every content hash in the log, a page at a time (`SeenHashes`' scan)."""
        after: ScanMark | None = None
        while True:
            page, after = self.store.content_hashes(after, SCAN_PAGE)
            if not page:
                return
            yield page

    def _seal(self, pendings: Sequence[Pending]) -> list[Receipt]:
        """Seal one block. Raises before anything is committed, or commits it all."""
        self.store.check_sequencer_lock()  # before anything is signed (D109)
        spent, t0 = self.spent, time.perf_counter()
        sealed_at, ahead = _sealed_at(_latest(pendings))
        st = self.state
        leaves = merkle.leaf_hashes([p.data for p in pendings])
        appended = merkle.append(st.size, st.frontier, leaves)
        height = st.last.header.height + 1 if st.last else 0
        header = BlockHeader(
            height=height,
            prev_block_hash=st.last.hash if st.last else GENESIS_PREV,
            batch_root=merkle.root(leaves),
            first_seq=st.size,
            count=len(pendings),
            tree_size=appended.size,
            tree_root=appended.root,
            sealed_at=sealed_at,
        )
        bhash = header.hash()
        reader = self._reader(st, appended)
        consistency = merkle.Consistency(
            st.size, st.last.header.tree_root if st.last else merkle.EMPTY_ROOT,
            tuple(merkle.consistency_proof(st.size, appended.size, reader)),
        )
        t1 = time.perf_counter()
        stamps = [("notary", self.stamp(bhash))] if self.stamp is not None else []
        if self.extra_stamps is not None:
            stamps += self.extra_stamps(header)
        t2 = time.perf_counter()
        block_note = self.sign(note.block_note_text(self.origin, height, bhash), None)
        # The checkpoint last: once signed, a notary that remembers it accepts only its extensions.
        checkpoint = self.sign(
            note.format_checkpoint(note.Checkpoint(self.origin, appended.size, appended.root)),
            consistency,
        )
        block = BlockRow(header=header, hash=bhash, checkpoint=checkpoint, block_note=block_note)
        t3 = time.perf_counter()
        first = st.size
        rows = [EntryRow(first + i, leaf, p.data, p.kind, p.sha256, p.registrant, height)
                for i, (p, leaf) in enumerate(zip(pendings, leaves, strict=True))]
        links = self._links(rows, pendings)
        claims = [(first + i, *p.claim) for i, p in enumerate(pendings) if p.claim is not None]
        try:
            self.store.append_block(rows, appended.nodes, block, stamps, links,  # durable commit
                                    claims)
        except Exception as e:
            raise _SealFailed("during") from e
        t4 = time.perf_counter()
        self.clock_ahead_blocks += ahead  # (committed: counted as sealed)
        spent["build"] += t1 - t0
        spent["token"] += t2 - t1
        spent["sign"] += t3 - t2
        spent["commit"] += t4 - t3
        try:
            return self._after_commit(st, rows, appended, block)
        except Exception as e:
            raise _SealFailed("after") from e

    def _links(self, rows: Sequence[EntryRow], pendings: Sequence[Pending]) -> list[links_mod.Link]:
        """The batch's link rows. A hash resolves to the earliest work with it: in the log if
        there is one there, else earlier in this batch."""
        if not any(p.links for p in pendings):
            return []
        batch_works: dict[str, int] = {}
        for r in rows:
            if r.kind == "work":
                batch_works.setdefault(r.sha256, r.seq)

        def first_work(sha256: str) -> int | None:
            found = self.store.first_work(sha256)
            return found if found is not None else batch_works.get(sha256)

        out: list[links_mod.Link] = []
        for r, p in zip(rows, pendings, strict=True):
            if p.links:
                out += links_mod.resolve(r.seq, p.links, first_work)
        return out

    def _reader(self, st: LogState, appended: merkle.Appended) -> CachedReader:
        """The old frontier and the new nodes: all that proofs into the new tree need."""
        reader = CachedReader(
            dict(zip(merkle.frontier_ids(st.size), st.frontier, strict=True)), self.store
        )
        reader.nodes.update(((lv, ix), hs) for lv, ix, hs in appended.nodes)
        return reader

    def _after_commit(
        self, st: LogState, rows: list[EntryRow], appended: merkle.Appended, block: BlockRow,
    ) -> list[Receipt]:
        height, checkpoint = block.header.height, block.checkpoint
        t = time.perf_counter()
        proofs = merkle.appended_proofs(st.size, st.frontier, appended)
        size, root = appended.size, appended.root
        receipts = [Receipt(r.seq, r.leaf_hash, height, size, root, proof, checkpoint)
                    for r, proof in zip(rows, proofs, strict=True)]
        self.spent["proofs"] += time.perf_counter() - t
        self.state = LogState(appended.size, appended.frontier, block)
        t = time.perf_counter()
        self._sealed(block)
        self.spent["handover"] += time.perf_counter() - t
        log.info(
            "sealed block",
            extra={"height": height, "count": len(rows), "tree_size": appended.size},
        )
        return receipts
