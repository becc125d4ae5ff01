"""The floor of the two content-hash indexes alone, by how their keys are stored: what a
registry could gain by keeping SHA-256 hashes and registrants as 32 bytes instead of 64 hex
characters (D122). Prints one JSON object.

    python bench/key_floor.py [--entries 2000000] [--engines postgresql,sqlite]
                              [--variants text,text_c,bytes]

Only the keys are written: a table `(seq, sha256, registrant)` with the registry's two
content-hash indexes, `(sha256, seq)` and `(registrant, sha256, seq)`, filled with random
hashes 1,000 rows a transaction, four registrants taking turns every three blocks (as the
batch benchmark's clients do). Variants: `text`, the registry's `VARCHAR(64)` of lowercase
hex (on PostgreSQL in the cluster's default collation, the registry's case); `text_c`, the
same `COLLATE "C"` (PostgreSQL only: byte order, no locale); `bytes`, `BYTEA` or `BLOB` of the
32 bytes. PostgreSQL: a throw-away cluster of this machine's (fsync on), each variant in a
fresh table, rows by `COPY` as the registry sends a block; SQLite: a fresh file per variant,
WAL, synchronous=FULL, `executemany`. For each: rows a second over the run and by tenth (the
generation of the rows, the same for every variant, is included), and the two indexes' size.
The variants run one after the other on one cluster, so run the bench twice in two orders.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BLOCK = 1_000
TYPES = {"postgresql": {"text": "varchar(64)", "text_c": 'varchar(64) COLLATE "C"',
                        "bytes": "bytea"},
         "sqlite": {"text": "VARCHAR(64)", "bytes": "BLOB"}}
REGISTRANTS = [hashlib.sha256(f"account {i}".encode()).digest() for i in range(4)]


def blocks(entries: int, as_bytes: bool) -> Iterator[list[tuple[int, Any, Any]]]:
    """The rows, a block at a time: (seq, sha256, registrant), hex text or bytes."""
    seq = 0
    for b in range(entries // BLOCK):
        reg = REGISTRANTS[(b // 3) % len(REGISTRANTS)]
        rows = []
        for _ in range(BLOCK):
            h = hashlib.sha256(seq.to_bytes(8, "big")).digest()
            rows.append((seq, h, reg) if as_bytes else (seq, h.hex(), reg.hex()))
            seq += 1
        yield rows


def timed(entries: int, write: Callable[[list[tuple[int, Any, Any]]], None],
          as_bytes: bool) -> dict[str, Any]:
    tenth = entries // BLOCK // 10
    tenths: list[int] = []
    start = last = time.perf_counter()
    for i, rows in enumerate(blocks(entries, as_bytes), 1):
        write(rows)
        if i % tenth == 0:
            now = time.perf_counter()
            tenths.append(round(tenth * BLOCK / (now - last)))
            last = now
    return {"rows_per_s": round(entries / (time.perf_counter() - start)),
            "rows_per_s_by_tenth": tenths}


def on_postgresql(entries: int, variants: list[str]) -> dict[str, Any]:
    import psycopg

    from tests.conftest import PostgresServer

    pg = PostgresServer()
    out: dict[str, Any] = {}
    try:
        url = pg.url().replace("+psycopg", "")
        for v in variants:
            t = TYPES["postgresql"][v]
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("DROP TABLE IF EXISTS k")
                c.execute(f"CREATE TABLE k (seq bigint PRIMARY KEY, sha256 {t} NOT NULL, "
                          f"registrant {t} NOT NULL)")
                c.execute("CREATE INDEX k_sha ON k (sha256, seq)")
                c.execute("CREATE INDEX k_reg ON k (registrant, sha256, seq)")
                c.execute("CHECKPOINT")
            with psycopg.connect(url) as conn:
                def write(rows: list[tuple[int, Any, Any]]) -> None:
                    with conn.cursor() as cur, \
                            cur.copy("COPY k (seq, sha256, registrant) FROM STDIN") as cp:
                        for row in rows:
                            cp.write_row(row)
                    conn.commit()

                out[v] = timed(entries, write, v == "bytes")
                row = conn.execute("SELECT pg_relation_size('k_sha'), "
                                   "pg_relation_size('k_reg')").fetchone()
                out[v]["index_bytes"] = list(row) if row else None
            print(v, out[v], file=sys.stderr, flush=True)
    finally:
        pg.stop()
    return out


def on_sqlite(entries: int, variants: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in variants:
        if v not in TYPES["sqlite"]:
            continue
        t = TYPES["sqlite"][v]
        with tempfile.TemporaryDirectory() as d:
            c = sqlite3.connect(os.path.join(d, "k.sqlite3"), isolation_level=None)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            c.execute(f"CREATE TABLE k (seq INTEGER PRIMARY KEY, sha256 {t} NOT NULL, "
                      f"registrant {t} NOT NULL)")
            c.execute("CREATE INDEX k_sha ON k (sha256, seq)")
            c.execute("CREATE INDEX k_reg ON k (registrant, sha256, seq)")

            def write(rows: list[tuple[int, Any, Any]],
                      c: sqlite3.Connection = c) -> None:
                c.execute("BEGIN")
                c.executemany("INSERT INTO k VALUES (?, ?, ?)", rows)
                c.execute("COMMIT")

            out[v] = timed(entries, write, v == "bytes")
            out[v]["database_bytes"] = os.path.getsize(os.path.join(d, "k.sqlite3"))
            c.close()
        print(v, out[v], file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=2_000_000)
    ap.add_argument("--engines", default="postgresql,sqlite")
    ap.add_argument("--variants", default="text,text_c,bytes")
    args = ap.parse_args()
    if args.entries < 10 * BLOCK:
        ap.error(f"--entries must be at least {10 * BLOCK}")
    variants = args.variants.split(",")
    result: dict[str, Any] = {
        "benchmark": "content-hash index keys alone, by key type (D122)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": list(os.getloadavg()), "entries": args.entries, "block": BLOCK,
        "variants_in_order": variants,
    }
    for engine in args.engines.split(","):
        result[engine] = (on_postgresql if engine == "postgresql" else on_sqlite)(
            args.entries, variants)
    result["load_average_after"] = list(os.getloadavg())
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
