"""The floor under batch registration on SQLite or PostgreSQL: what committing the log's blocks
costs as the log grows, with nothing else running (no HTTP, no signing, no client). Prints one
JSON object.

    python bench/store_floor.py [--entries 600000] [--block 1000] [--postgres]

The real sequencer seals `--entries` plain works (as `POST /v1/works/batch` makes them) in
blocks of `--block`, and `Store.append_block` of each block (our store: SQLAlchemy Core over
sqlite3, the registry's pragmas: WAL, synchronous=FULL, its cache and checkpoint sizes) is
timed in the sequencer's thread. The very same rows (entries, Merkle nodes, block) are then
written again into two fresh databases by plain sqlite3 `executemany`, a transaction a block,
with the same pragmas:
- `raw_same_schema`: the registry's schema as migrated, with the two B-tree content-hash
  indexes (on SQLite, where the registry keeps them as runs since D142, they are made here);
- `raw_without_content_indexes`: the same without the two content-hash indexes
  (`ix_entries_sha256`, `ix_entries_registrant_sha256`), which put each entry's key at a
  random place and so dirty a page of each index an entry (D96): what they cost.

For each, by tenth of the run: CPU µs an entry of the writing thread, wall µs an entry, and
bytes written an entry: on SQLite what the process handed to write() (the WAL's frames and the
checkpoints' copies; /proc/self/io `wchar`), on PostgreSQL (`--postgres`, a throw-away cluster;
the raw writes by binary `COPY` as `append_block` sends a block) the WAL the server wrote.
`entries_per_s_at_end` is what the last tenth's wall time allows: the rate no server on this
engine can pass at that size, one writer committing a block at a time (on PostgreSQL the
wall time holds the server's work too; its CPU is not in this process's).

With `--runs-fanout K` (SQLite), the same blocks are written a fourth time without the two
indexes, their keys kept instead as sorted runs merged K at a time (`Runs`, a log-structured
merge in two tables keyed by run): `raw_content_indexes_as_runs`, with the merges' cost in
the figures where they fall, how many times an entry was rewritten by merges, and the
latency of a registrant's lookup there against the B-tree index of `raw_same_schema` (D105).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.ledger.quick_entry import plain_work
from copyledger.ledger.sequencer import Pending, Sequencer
from copyledger.ledger.store import (
    _BLOCK_COLS,
    _COPY_BINARY,
    _ENTRY_COLS,
    _NODE_COLS,
    Store,
    _block_values,
    _sqlite_pragmas,
    _stored_rows,
)
from copyledger.notary.signer import FileSigner, sign_note

CONTENT_INDEXES = ("ix_entries_sha256", "ix_entries_registrant_sha256")

Sample = tuple[int, float, float, int]  # entries, thread CPU s, wall s, bytes written


@contextmanager
def io_meter(url: str) -> Iterator[Callable[[], int]]:
    """Bytes written so far: by this process to files (/proc/self/io `wchar`: the WAL's
    frames and the checkpoints' copies) on SQLite; the server's WAL position on PostgreSQL
    (its data files' writes are not counted there)."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(_dsn(url), autocommit=True) as conn:
            def wal() -> int:
                row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
                assert row is not None
                return int(row[0])
            yield wal
        return

    def wchar() -> int:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
        raise RuntimeError("no wchar in /proc/self/io")
    yield wchar


def _dsn(url: str) -> str:
    """psycopg's form of a SQLAlchemy URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def works(start: int, n: int) -> list[Pending]:
    out = []
    for i in range(start, start + n):
        sha = hashlib.sha256(b"floor %d" % i).hexdigest()
        data = plain_work(registrant="bench", received_at="2026-12-01T00:00:00Z", sha256=sha,
                          title=f"Work {i}", creators=["Bench"], work_type="image")
        assert data is not None
        out.append(Pending(data, "work", sha, "bench"))
    return out


def ours(url: str, key: Path, entries: int, block: int) -> tuple[list[Sample], list[Any]]:
    """Seal `entries` works through the sequencer; time `Store.append_block` and keep what it
    was given, for the replays."""
    store = Store.open(url)
    signer = FileSigner.generate("floor.example/log", key)
    seq = Sequencer(store, lambda t, _c: sign_note(t, [signer]), "floor.example/log",
                    max_batch=block)
    samples: list[Sample] = []
    kept: list[Any] = []
    real = store.append_block
    meter = io_meter(url)
    written = meter.__enter__()

    def timed(rows: Sequence[Any], nodes: Sequence[Any], blk: Any, *rest: Any) -> None:
        w, c, t = written(), time.thread_time(), time.perf_counter()
        real(rows, nodes, blk, *rest)
        samples.append((len(rows), time.thread_time() - c, time.perf_counter() - t,
                        written() - w))
        kept.append((_stored_rows(rows), list(nodes), _block_values(blk)))  # as stored (D124)

    upkeep = store.upkeep

    def timed_upkeep(*args: Any, **kwargs: Any) -> bool:  # (SQLite's runs, D142: the steps
        # after each block, in its sample; while blocks wait, only past D144's bounds)
        w, c, t = written(), time.thread_time(), time.perf_counter()
        did = upkeep(*args, **kwargs)
        if samples:
            n, cpu, wall, wrote = samples[-1]
            samples[-1] = (n, cpu + time.thread_time() - c, wall + time.perf_counter() - t,
                           wrote + written() - w)
        return did

    store.append_block = timed  # type: ignore[method-assign,assignment]
    store.upkeep = timed_upkeep  # type: ignore[method-assign]
    seq.start()
    samples.clear()
    kept.clear()  # (the genesis block is written by `start`, before any entry)
    try:
        for start in range(0, entries, block):
            for fut in seq.submit_many(works(start, min(block, entries - start))):
                fut.result(60)
    finally:
        seq.stop()
        store.close()
        meter.__exit__(None, None, None)
    return samples, kept


RUN_KEYS = {"bench_runs": ("sha256", "seq"),
            "bench_runs_by_registrant": ("registrant", "sha256", "seq")}
"""Each table of runs and the entry columns of its key, after the run: the two indexes'."""


class Runs:
    """The two content-hash indexes kept as sorted runs (a log-structured merge, size-tiered),
    in two WITHOUT ROWID tables keyed by run first: a block's keys go in as a new run, which
    lands at the right edge of each table's B-tree (a few sequential pages, not a random page
    an entry); once `fanout` runs of one level exist they are merged into one run of the next
    (sequential again), in a transaction of their own. A lookup seeks each live run."""

    def __init__(self, con: sqlite3.Connection, fanout: int) -> None:
        self.con, self.fanout = con, fanout
        for table, key in RUN_KEYS.items():
            cols = ", ".join(f"{c} {'INTEGER' if c == 'seq' else 'TEXT'} NOT NULL" for c in key)
            con.execute(f"CREATE TABLE {table} (run INTEGER NOT NULL, {cols}, "
                        f"PRIMARY KEY (run, {', '.join(key)})) WITHOUT ROWID")
        self.levels: list[list[int]] = [[]]
        self.next_run = 0
        self.merged_entries = 0

    def add(self, rows: Sequence[Any]) -> None:
        """A block's keys as a level-0 run, inside the caller's transaction."""
        run, self.next_run = self.next_run, self.next_run + 1
        for table, key in RUN_KEYS.items():
            at = [_ENTRY_COLS.index(c) for c in key]
            self.con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * (len(key) + 1))})",
                                 sorted((run, *(r[i] for i in at)) for r in rows))
        self.levels[0].append(run)

    def compact(self) -> None:
        """Merge every level holding `fanout` runs into one run of the next level."""
        level = 0
        while level < len(self.levels):
            runs = self.levels[level]
            if len(runs) < self.fanout:
                level += 1
                continue
            run, self.next_run = self.next_run, self.next_run + 1
            marks = ",".join("?" * len(runs))
            self.con.execute("BEGIN")
            for table, key in RUN_KEYS.items():
                cols = ", ".join(key)
                cur = self.con.execute(
                    f"INSERT INTO {table} SELECT ?, {cols} FROM {table} "
                    f"WHERE run IN ({marks}) ORDER BY {cols}", (run, *runs))
                self.con.execute(f"DELETE FROM {table} WHERE run IN ({marks})", runs)
            self.merged_entries += cur.rowcount  # (each table holds every entry once)
            self.con.execute("COMMIT")
            self.levels[level] = []
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(run)

    def live(self) -> list[int]:
        return [run for level in self.levels for run in level]


def raw(url: str, kept: list[Any], *, content_indexes: bool, runs_fanout: int = 0
        ) -> tuple[list[Sample], Runs | None]:
    """The same blocks written by the driver alone (sqlite3 `executemany`; psycopg binary
    `COPY`, as `Store.append_block` sends blocks) into a fresh database of the registry's schema,
    with or without the two content-hash indexes; on SQLite with `runs_fanout`, without them and
    their keys kept as runs instead (`Runs`; each sample holds the block's commit and any merge
    it set off, so merges are paid where they fall; the runs' connection is left open)."""
    store = Store.open(url)  # the schema, as migrated, and the store's own statements
    put = {table: store._insert_sql(table, cols) for table, cols in (
        ("entries", _ENTRY_COLS), ("merkle_nodes", _NODE_COLS), ("blocks", _BLOCK_COLS))}
    store.close()
    with io_meter(url) as written:
        return _replay(url, kept, content_indexes, written, put, runs_fanout)


def _replay(url: str, kept: list[Any], content_indexes: bool, written: Callable[[], int],
            put: dict[str, str], runs_fanout: int) -> tuple[list[Sample], Runs | None]:
    samples: list[Sample] = []
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(_dsn(url)) as pg:
            for ix in () if content_indexes else CONTENT_INDEXES:
                pg.execute(f"DROP INDEX {ix}")
            pg.commit()
            for rows, nodes, blk in kept:
                w, c, t = written(), time.thread_time(), time.perf_counter()
                with pg.transaction(), pg.cursor() as cur:
                    for table, cols, items in (("entries", _ENTRY_COLS, rows),
                                               ("merkle_nodes", _NODE_COLS, nodes)):
                        with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN "
                                      "(FORMAT BINARY)") as copy:
                            copy.set_types(list(_COPY_BINARY[table]))
                            for row in items:
                                copy.write_row(row)
                    cur.execute(put["blocks"], blk)
                samples.append((len(rows), time.thread_time() - c, time.perf_counter() - t,
                                written() - w))
        return samples, None
    con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    _sqlite_pragmas(con, None)  # the registry's own: WAL, FULL, its cache and checkpoint
    if content_indexes:  # the B-tree indexes the registry kept before its runs (D142)
        con.execute(f"CREATE INDEX IF NOT EXISTS {CONTENT_INDEXES[0]} ON entries (sha256, seq)")
        con.execute(f"CREATE INDEX IF NOT EXISTS {CONTENT_INDEXES[1]} "
                    "ON entries (registrant, sha256, seq)")
    for ix in () if content_indexes else CONTENT_INDEXES:
        con.execute(f"DROP INDEX IF EXISTS {ix}")
    runs = Runs(con, runs_fanout) if runs_fanout else None
    for rows, nodes, blk in kept:
        w, c, t = written(), time.thread_time(), time.perf_counter()
        con.execute("BEGIN")
        con.executemany(put["entries"], rows)
        con.executemany(put["merkle_nodes"], nodes)
        con.execute(put["blocks"], blk)
        if runs is not None:
            runs.add(rows)
        con.execute("COMMIT")
        if runs is not None:
            runs.compact()
        samples.append((len(rows), time.thread_time() - c, time.perf_counter() - t,
                        written() - w))
    if runs is None:
        con.close()
    return samples, runs


def lookups(kept: list[Any], index_db: Path, runs: Runs, n: int = 2000) -> dict[str, Any]:
    """µs a lookup (p50 / p99) of a registrant's hash, as the D36 check asks it, by the
    B-tree index (`raw_same_schema`'s file) and across the live runs."""
    import random

    rng = random.Random(7)
    rows = [r for rows, _, _ in kept for r in rows]
    picks = [rows[rng.randrange(len(rows))] for _ in range(n)]
    con = sqlite3.connect(index_db)
    live = runs.live()
    marks = ",".join("?" * len(live))

    def timed(sql: str, args: Callable[[Any], tuple[Any, ...]],
              db: sqlite3.Connection) -> dict[str, float]:
        out = []
        for r in picks:
            t = time.perf_counter()
            got = db.execute(sql, args(r)).fetchall()
            out.append(time.perf_counter() - t)
            assert got == [(r[0],)], (got, r[0])
        out.sort()
        return {"p50_us": round(out[n // 2] * 1e6, 1), "p99_us": round(out[n * 99 // 100] * 1e6, 1)}

    result = {
        "btree_index": timed("SELECT seq FROM entries WHERE registrant = ? AND sha256 = ?",
                             lambda r: (r[5], r[4]), con),
        "runs": timed(f"SELECT seq FROM bench_runs_by_registrant WHERE run IN ({marks}) "
                      "AND registrant = ? AND sha256 = ?", lambda r: (*live, r[5], r[4]),
                      runs.con),
        "live_runs": len(live),
        "levels": [len(level) for level in runs.levels],
    }
    con.close()
    return result


def by_tenth(samples: list[Sample], size: int) -> dict[str, Any]:
    """Per-entry figures in each tenth of the run, and the rate the last tenth allows."""
    tenths: list[list[Sample]] = [[] for _ in range(10)]
    done = 0
    for s in samples:
        tenths[min(9, done * 10 // size)].append(s)
        done += s[0]

    def per_entry(part: list[Sample], k: int, scale: float) -> float:
        n = sum(s[0] for s in part)
        return round(sum(s[k] for s in part) * scale / n, 1) if n else 0.0

    last = tenths[-1] or samples
    return {
        "cpu_us_per_entry_by_tenth": [per_entry(p, 1, 1e6) for p in tenths],
        "wall_us_per_entry_by_tenth": [per_entry(p, 2, 1e6) for p in tenths],
        "bytes_written_per_entry_by_tenth": [per_entry(p, 3, 1.0) for p in tenths],
        "entries_per_s_at_end": round(sum(s[0] for s in last) / sum(s[2] for s in last)),
        "entries_per_s_overall": round(sum(s[0] for s in samples)
                                       / sum(s[2] for s in samples)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=600_000)
    ap.add_argument("--block", type=int, default=1000)
    ap.add_argument("--postgres", action="store_true",
                    help="on a throw-away PostgreSQL cluster started here, not SQLite")
    ap.add_argument("--runs-fanout", type=int, default=0,
                    help="SQLite: also write the blocks with the content-hash indexes kept as "
                    "sorted runs merged this many at a time (`Runs`), and time lookups")
    args = ap.parse_args()
    pg = None
    with tempfile.TemporaryDirectory(prefix="copyledger-floor-") as tmp:
        base = Path(tmp)
        if args.postgres:
            from tests.conftest import PostgresServer

            pg = PostgresServer()
        try:
            urls = ([pg.new_database() for _ in range(3)] if pg is not None else
                    [f"sqlite:///{base / name}" for name in ("ours.db", "raw.db", "bare.db")])
            samples, kept = ours(urls[0], base / "k.pem", args.entries, args.block)
            out: dict[str, Any] = {
                "benchmark": "committing blocks as the log grows (batch registration's floor)",
                "engine": "postgresql" if pg else "sqlite",
                "entries": args.entries, "block": args.block,
                "ours_append_block": by_tenth(samples, args.entries),
                "raw_same_schema": by_tenth(raw(urls[1], kept, content_indexes=True)[0],
                                            args.entries),
                "raw_without_content_indexes": by_tenth(
                    raw(urls[2], kept, content_indexes=False)[0], args.entries),
            }
            names = ["ours.db", "raw.db", "bare.db"]
            if pg is None and args.runs_fanout:
                run_samples, runs = raw(f"sqlite:///{base / 'runs.db'}", kept,
                                        content_indexes=False, runs_fanout=args.runs_fanout)
                assert runs is not None
                out["raw_content_indexes_as_runs"] = {
                    **by_tenth(run_samples, args.entries), "fanout": args.runs_fanout,
                    "entries_rewritten_by_merges_per_entry": round(
                        runs.merged_entries / args.entries, 2),
                    "lookup": lookups(kept, base / "raw.db", runs)}
                runs.con.close()
                names.append("runs.db")
            if pg is None:
                out["database_bytes_per_entry"] = {  # the file (its WAL is gone at close)
                    name: round((base / name).stat().st_size / args.entries)
                    for name in names}
        finally:
            if pg is not None:
                pg.stop()
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "sqlite": sqlite3.sqlite_version}
    out["load_average"] = list(os.getloadavg())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
