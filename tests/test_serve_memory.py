"""`copyledger serve` bounds glibc's malloc arenas for its own process (D42): the request
thread pool otherwise grows RSS through arenas that are never given back. It collects cyclic
garbage on a clock, and can write where its memory goes (D47)."""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import threading
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from copyledger.cli import main
from copyledger.service import memory
from tests.server import ServerProcess, cli

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


class Exec(Exception):
    pass


@glibc
def test_serve_reexecs_itself_with_the_arena_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    calls: list[tuple[str, list[str]]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise Exec

    monkeypatch.setattr(main.os, "execv", fake_execv)
    with pytest.raises(Exec):
        main._bound_malloc_arenas()
    assert calls == [(sys.executable, [sys.executable, *sys.orig_argv[1:]])]
    assert main.os.environ["MALLOC_ARENA_MAX"] == "2"


@pytest.mark.parametrize("value", ["2", "8", ""])
def test_an_operators_own_setting_is_kept(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", value)
    monkeypatch.setattr(main.os, "execv", lambda *a: pytest.fail("re-executed"))
    main._bound_malloc_arenas()
    assert main.os.environ["MALLOC_ARENA_MAX"] == value


@glibc
@pytest.mark.slow
def test_the_serving_process_runs_with_the_limit(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The real command: same PID (exec, not a child), the variable in its environment, and
    it answers."""
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cli("init", "--data-dir", str(tmp_path / "d")).returncode == 0
    srv = ServerProcess(tmp_path / "d").start(timeout=180)
    try:
        assert srv.proc is not None
        environ = Path(f"/proc/{srv.proc.pid}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_ARENA_MAX=2" in environ
        assert srv.proc.poll() is None
    finally:
        srv.stop()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_collector_frees_cycles_on_its_clock() -> None:
    """With the automatic collector off, a cycle lives until the clock's collection frees it."""
    gc.collect()
    gc.disable()
    collector = memory.Collector(interval=0.01)
    try:
        gone = threading.Event()
        c = _Cycle()
        ref = weakref.ref(c, lambda _: gone.set())
        del c
        assert ref() is not None  # reference counting alone does not free a cycle
        collector.start()
        assert gone.wait(60)
    finally:
        collector.stop()
        collector.join()
        gc.enable()
    assert collector.runs >= 1 and collector.collected >= 1


class _Kept:
    pass


def test_memwatch_tells_live_growth_from_garbage(tmp_path: Path) -> None:
    """A sample names the types that grew since the first one (live objects) apart from the
    types of what a collection found unreachable (garbage awaiting the collector)."""
    watch = memory.MemWatch(tmp_path / "m.jsonl", collect=True)
    gc.disable()
    try:
        watch.sample()  # the baseline
        kept = [_Kept() for _ in range(1000)]
        for _ in range(100):
            _Cycle()
        s = watch.sample()
    finally:
        gc.enable()
    assert s["types_grown"]["_Kept"] == len(kept)
    assert s["garbage_types"][f"{__name__}._Cycle"] == 100
    assert s["unreachable"] >= 100
    assert s["rss_mib"]["rss"] > 0 and s["rss_mib"]["anon"] > 0
    if platform.libc_ver()[0] == "glibc":
        assert s["malloc_mib"]["in_use"] > 0
    assert "sqlite_mib" in s


def _blocks(n: int) -> list[bytearray]:
    return [bytearray(1000) for _ in range(n)]


def test_memwatch_leaves_the_warm_up_out_of_the_grown_sites(tmp_path: Path) -> None:
    """Traced, the sites that grew are counted from the first sample after `base_after`
    seconds: what was allocated before (a warm-up) is not listed, what came after is."""
    tracemalloc.start(3)
    try:
        watch = memory.MemWatch(tmp_path / "m.jsonl", base_after=3600)
        warm = _blocks(200)
        early = watch.sample()
        watch.base_after = 0  # the warm-up is over
        base = watch.sample()
        later = [bytes(2000) for _ in range(300)]
        s = watch.sample()
    finally:
        tracemalloc.stop()
    assert "sites_grown" not in early
    assert base["sites_grown"] == [] or all(abs(d["count"]) < 200 for d in base["sites_grown"])
    assert s["sites_since_s"] == base["t"]
    lines = [(d["count"], "\n".join(d["where"])) for d in s["sites_grown"]]
    assert any(n >= 300 and "test_serve_memory.py" in w for n, w in lines), lines
    warm_line = f"test_serve_memory.py:{_blocks.__code__.co_firstlineno + 1}"
    assert not any(warm_line in w for _, w in lines), lines
    assert len(warm) == 200 and len(later) == 300


def test_sqlite_mib_counts_sqlites_own_heap() -> None:
    """The page cache a connection fills is counted (glibc's bytes in use hide it)."""
    import sqlite3

    before = memory.sqlite_mib()
    assert before is not None  # Debian's Python links SQLite's shared library
    db = sqlite3.connect(":memory:")
    db.execute("create table t (x)")
    db.executemany("insert into t values (?)", [(bytes(1000),) for _ in range(4000)])
    after = memory.sqlite_mib()
    db.close()
    assert after is not None and after - before >= 1.5, (before, after)


def test_memwatch_is_off_unless_a_file_is_named(tmp_path: Path) -> None:
    assert memory.watch_from_env({}) is None
    out = tmp_path / "m.jsonl"
    watch = memory.watch_from_env({"COPYLEDGER_MEMWATCH": str(out),
                                   "COPYLEDGER_MEMWATCH_S": "3600"}, memory.Collector())
    assert watch is not None
    watch.stop()
    watch.join()
    first = json.loads(out.read_text().splitlines()[0])  # written at start, then every hour
    assert first["collector"] == {"runs": 0, "collected": 0, "seconds": 0.0}
    assert first["unreachable"] is None  # no collection unless asked


def test_memwatch_trace_starts_tracing_after_imports(tmp_path: Path) -> None:
    """`COPYLEDGER_MEMWATCH_TRACE=N` starts tracemalloc with N frames when the watcher starts;
    the samples then carry the sites that grew."""
    assert not tracemalloc.is_tracing()
    out = tmp_path / "m.jsonl"
    watch = memory.watch_from_env({"COPYLEDGER_MEMWATCH": str(out), "COPYLEDGER_MEMWATCH_S": "3600",
                                   "COPYLEDGER_MEMWATCH_TRACE": "4"})
    try:
        assert watch is not None and tracemalloc.get_traceback_limit() == 4
        watch.stop()
        watch.join()
    finally:
        tracemalloc.stop()
    first = json.loads(out.read_text().splitlines()[0])
    assert first["sites_grown"] == [] and first["sites_since_s"] == first["t"]


def test_malloc_trim_gives_freed_heap_back() -> None:
    """Freed C-heap blocks held in the middle of the heap (a live block above them, so glibc
    cannot shrink it from the top) stay resident until `malloc_trim` returns their pages."""
    if platform.libc_ver()[0] != "glibc":
        assert memory.malloc_trim() is False
        return
    blocks = [bytes(2048) for _ in range(30_000)]  # ~60 MiB of malloc'd (not pymalloc) blocks
    pin = bytes(2048)  # allocated last: above the others
    del blocks
    before = memory.rss_split()["anon"]
    assert memory.malloc_trim() is True
    after = memory.rss_split()["anon"]
    assert before - after >= 30, (before, after)
    del pin


_MAPPED_AFTER_A_BIG_FREE = """
import json, sys
from copyledger.service import memory
if sys.argv[1] == "fixed":
    assert memory.fix_mmap_threshold(environ={})
big = bytearray(4 << 20)  # mapped (over glibc's starting 128 KiB threshold), then freed:
del big                   # glibc's own threshold rises to 4 MiB
before = memory.malloc_stats()["mmapped"]
blocks = [bytearray(200_000) for _ in range(50)]  # ~10 MiB in blocks of 200 kB
print(json.dumps(memory.malloc_stats()["mmapped"] - before))
"""


@glibc
@pytest.mark.parametrize(("mode", "mapped"), [("fixed", True), ("glibc", False)])
def test_a_fixed_mmap_threshold_maps_the_renderers_buffers(mode: str, mapped: bool) -> None:
    """glibc raises its mmap threshold to each mapped block freed, so that after one big
    buffer, blocks of a few hundred kB come from the arena and fragment it; fixed at
    `MMAP_THRESHOLD` they stay mapped, and are unmapped when freed (D65). In a child process,
    so this one's allocator is left as it was."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", _MAPPED_AFTER_A_BIG_FREE,
                          mode], env=env, capture_output=True, text=True, check=True)
    grown = json.loads(out.stdout)
    assert (grown >= 9) is mapped, grown


def test_an_operators_mmap_threshold_is_kept() -> None:
    assert memory.fix_mmap_threshold(environ={"MALLOC_MMAP_THRESHOLD_": "131072"}) is False


def test_memwatch_never_exposes_a_tuple_being_built() -> None:
    """While a thread builds a tuple from a generator that drops the GIL between items (as
    a query does), the watcher's walks over every object must not hold a reference to it at a
    thread switch: CPython 3.11's `_PyTuple_Resize` then raises SystemError (gh-39117), which
    the soaks saw as 500s on certificates (D65). With the old walk (a list of every object,
    counted in Python) nearly every tuple here failed."""
    import time

    def items() -> Iterator[int]:
        for i in range(40):
            time.sleep(0)  # the GIL changes hands here
            yield i

    stop, walks = threading.Event(), [0]
    watch = memory.MemWatch(Path("/dev/null"))

    def walk() -> None:
        while not stop.is_set():
            watch.sample()
            walks[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    walker = threading.Thread(target=walk)
    walker.start()
    try:
        while walks[0] < 3:  # tuples built across several whole samples
            assert tuple(items()) == tuple(range(40))
    finally:
        stop.set()
        walker.join()
        sys.setswitchinterval(interval)
