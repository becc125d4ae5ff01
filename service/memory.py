"""Memory upkeep and diagnostics for a long-running `copyledger serve` (D47).

`Collector` runs a full cyclic collection on a clock, so that garbage in reference cycles is
freed within seconds even though `serve` tunes the collector's thresholds for throughput.
`fix_mmap_threshold` keeps glibc from carving large temporary buffers out of its arena (D65).

`COPYLEDGER_MEMWATCH=/path/file.jsonl` makes `serve` start a `MemWatch`, a daemon thread that
appends one JSON object to that file every `COPYLEDGER_MEMWATCH_S` seconds (default 10): the RSS
split into anonymous, file-backed and shared pages (`/proc/self/status`), glibc's account of its
heap (`mallinfo2`: in use, free), what SQLite holds of it, the collector's generations and how many
objects each holds, the object counts by type that grew most since the first sample, the thread
count, the Collector's totals and, when tracing (`COPYLEDGER_MEMWATCH_TRACE=25` starts tracemalloc
with 25 frames once `serve` has imported everything), the allocation sites that grew most since the
baseline snapshot (the first sample, or with `COPYLEDGER_MEMWATCH_BASE_S=60` the first sample 60 s
or more after start, so the warm-up is left out). `COPYLEDGER_MEMWATCH_COLLECT=1` also runs a full
collection before each sample and records how many unreachable objects it found and their types:
what was garbage waiting for the collector rather than live. Off by default: walking every object
holds the GIL for tens of milliseconds, and tracing slows every allocation.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

__all__ = ["MMAP_THRESHOLD", "Collector", "MemWatch", "fix_mmap_threshold", "malloc_stats",
           "malloc_trim", "rss_split", "sqlite_mib", "watch_from_env"]

TOP = 25  # how many types / allocation sites each sample lists
MMAP_THRESHOLD = 64 * 1024  # bytes: C blocks this large are mapped apart, and unmapped when freed
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def rss_split(status: str | None = None) -> dict[str, float]:
    """The process's resident set in MiB: total, anonymous (heap), file-backed, shared."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    out: dict[str, float] = {}
    names = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}
    for line in status.splitlines():
        name, _, rest = line.partition(":")
        if name in names:
            out[names[name]] = round(int(rest.split()[0]) / 1024, 1)
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_stats() -> dict[str, float]:
    """glibc's heap in MiB: `in_use` (live malloc'd bytes, mmapped blocks included), `free`
    (held by the allocator but not in use: fragmentation or not yet returned), `mmapped`.
    Empty where the C library has no `mallinfo2` (musl, glibc < 2.33)."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    m = fn()
    mib = 1024 * 1024
    return {"in_use": round((m.uordblks + m.hblkhd) / mib, 1),
            "free": round(m.fordblks / mib, 1), "mmapped": round(m.hblkhd / mib, 1),
            "arena": round(m.arena / mib, 1)}


def sqlite_mib() -> float | None:
    """What SQLite holds in this process (its page caches, statements), in MiB: part of
    glibc's bytes in use, bounded by the pool's connections times each one's page cache.
    None where SQLite's library cannot be opened by name."""
    try:
        fn = ctypes.CDLL("libsqlite3.so.0").sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int64
    return round(int(fn()) / 2**20, 1)


def malloc_trim() -> bool:
    """Give the C heap's free pages back to the kernel (glibc's `malloc_trim(0)`): true if any
    were returned. Without it glibc keeps what concurrent PDF renders freed (tens of MiB, in
    the middle of its arenas) as resident memory for good, and a long-running server's RSS
    creeps although nothing is live (D47). No-op where the C library has no `malloc_trim`."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return bool(fn(0))


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD,
                       environ: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes (`mallopt(M_MMAP_THRESHOLD)`): true if
    set. glibc starts it at 128 KiB and raises it to the size of each mapped block freed (up to
    32 MiB), so after the first PDF render its font tables and page buffers (hundreds of KiB)
    are carved from the arena instead, and the holes they leave between live blocks stay
    resident: `malloc_trim` cannot return partly used pages. Fixed, every such block is its
    own mapping, given back whole when freed (D65). Setting it also stops glibc moving the trim
    threshold. Global, so it holds for threads started before or after; an operator's own
    `MALLOC_MMAP_THRESHOLD_` wins. No-op where the C library has no `mallopt`."""
    if "MALLOC_MMAP_THRESHOLD_" in environ:
        return False
    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return bool(fn(_M_MMAP_THRESHOLD, threshold) == 1)


def _all_objects(generation: int | None = None) -> Iterator[Any]:
    """The objects the collector tracks, as a lazy iterator: `gc.get_objects` is called, and
    its list dropped, inside whatever C function consumes the iterator.

    A list of every object must never be alive while another thread runs: it holds an extra
    reference to a tuple that thread is still building from a generator (`tuple(gen)`,
    `f(*gen)`), whose next `_PyTuple_Resize` then fails with "SystemError: bad argument to
    internal function" (CPython gh-39117, in 3.11). A list returned to Python code is exposed
    at the next bytecode; consumed in C it is gone before the GIL can change hands. That race
    was the soaks' 500s on certificates, whose bundles build such tuples (D65)."""
    return chain.from_iterable(map(gc.get_objects, [generation]))


def _type_counts() -> Counter[str]:
    """Objects by type name. The types are counted in C (`Counter` of a `map`), as
    `_all_objects` requires."""
    names: Counter[str] = Counter()
    for kind, n in Counter(map(type, _all_objects())).items():
        names[kind.__qualname__] += n
    return names


def _generation_sizes() -> list[int]:
    """How many objects each generation holds, counted in C for the same reason."""
    return [sum(map(len, map(gc.get_objects, [g]))) for g in range(3)]


def _collect() -> tuple[int, dict[str, int]]:
    """A full collection: how many objects were unreachable, and the commonest of their types."""
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep them in gc.garbage to be counted
    try:
        found = gc.collect()
    finally:
        gc.set_debug(0)
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    gc.garbage.clear()
    gc.collect()  # the saved cycles, unreferenced again
    return found, dict(types.most_common(TOP))


class Collector(threading.Thread):
    """A full cyclic collection every `interval` seconds, so that garbage in reference cycles
    lives at most that long whatever the collector's thresholds, then a `malloc_trim`.

    `serve` sets the thresholds for throughput (a young collection per 50,000 net new
    objects): under the soak that is one every few seconds, a middle one every ~100 s and a
    full one after 2,000 young ones, in practice never. Whatever was still in flight at a young
    collection (a request's objects, a document being rendered) is promoted, and if it then
    dies in a cycle it stayed until that full collection (D47). The full collection skips what
    `gc.freeze()` set aside at start, so it walks only the objects made since."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__(name="copyledger-gc", daemon=True)
        self.interval = interval
        self.runs = 0
        self.collected = 0  # unreachable objects found, in all runs
        self.seconds = 0.0  # CPU time spent collecting, in all runs
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            t0 = time.thread_time()  # CPU, not wall: the wall time counts waits for the GIL
            self.collected += gc.collect()
            malloc_trim()  # what the collection freed, and fragments, back to the kernel
            self.seconds += time.thread_time() - t0
            self.runs += 1


class MemWatch(threading.Thread):
    """Appends a sample to `path` every `interval` seconds until `stop()`."""

    def __init__(self, path: Path, interval: float = 10.0, collect: bool = False,
                 collector: Collector | None = None, base_after: float = 0.0) -> None:
        super().__init__(name="copyledger-memwatch", daemon=True)
        self.path = path
        self.interval = interval
        self.collect = collect
        self.collector = collector
        self.base_after = base_after  # seconds: the tracemalloc baseline is taken no earlier
        self._halt = threading.Event()
        self._t0 = time.monotonic()
        self._types: Counter[str] | None = None
        self._snapshot: tracemalloc.Snapshot | None = None
        self._base_t = 0.0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while True:
            self.write(self.sample())
            if self._halt.wait(self.interval):
                return

    def write(self, sample: Mapping[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(sample) + "\n")

    def sample(self) -> dict[str, Any]:
        """One sample; differences are against the first sample this watcher took."""
        unreachable, garbage = _collect() if self.collect else (None, {})
        types = _type_counts()
        if self._types is None:
            self._types = types
        grown = Counter(types)
        grown.subtract(self._types)
        out: dict[str, Any] = {
            "t": round(time.monotonic() - self._t0, 1),
            "pid": os.getpid(),  # `serve --workers N`: N processes append to one file
            "rss_mib": rss_split(),
            "malloc_mib": malloc_stats(),
            "sqlite_mib": sqlite_mib(),
            "threads": threading.active_count(),
            "unreachable": unreachable,
            "collector": None if self.collector is None else {
                "runs": self.collector.runs, "collected": self.collector.collected,
                "seconds": round(self.collector.seconds, 3)},
            "garbage_types": garbage,
            "gc": {"counts": gc.get_count(), "objects_by_generation": _generation_sizes(),
                "frozen": gc.get_freeze_count(),
                "collections": [s["collections"] for s in gc.get_stats()],
                "collected": [s["collected"] for s in gc.get_stats()]},
            "objects": sum(types.values()),
            "types_grown": dict(grown.most_common(TOP)),
        }
        if tracemalloc.is_tracing():
            out["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
            out.update(self._sites_grown(out["t"]))
        return out

    def _sites_grown(self, t: float) -> dict[str, Any]:
        """The allocation sites that grew most since the baseline snapshot, the first one taken
        at or after `base_after` seconds: what a warm-up allocates is left out, so a site that
        still grows sample after sample grows with the load rather than settling."""
        if t < self.base_after:
            return {}
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        if self._snapshot is None:  # the baseline: nothing to compare yet (a compare costs
            self._snapshot, self._base_t = snap, t  # seconds per million traces)
            return {"sites_since_s": t, "sites_grown": []}
        return {"sites_since_s": self._base_t, "sites_grown": [
            {"kib": round(d.size_diff / 1024, 1), "count": d.count_diff,
             "where": [f"{fr.filename}:{fr.lineno}" for fr in d.traceback[-6:]]}
            for d in snap.compare_to(self._snapshot, "traceback")[:TOP] if d.size_diff]}


def watch_from_env(environ: Mapping[str, str] = os.environ,
                   collector: Collector | None = None) -> MemWatch | None:
    """A started watcher if `COPYLEDGER_MEMWATCH` names a file, else None."""
    path = environ.get("COPYLEDGER_MEMWATCH", "")
    if not path:
        return None
    frames = int(environ.get("COPYLEDGER_MEMWATCH_TRACE", "0"))
    if frames and not tracemalloc.is_tracing():
        # Started here rather than by PYTHONTRACEMALLOC: imports traced made a start take
        # minutes on a loaded machine, and what they allocate is not what the soak asks about.
        tracemalloc.start(frames)
    watch = MemWatch(Path(path), float(environ.get("COPYLEDGER_MEMWATCH_S", "10")),
                     environ.get("COPYLEDGER_MEMWATCH_COLLECT", "") == "1", collector,
                     float(environ.get("COPYLEDGER_MEMWATCH_BASE_S", "0")))
    watch.start()
    return watch
