"""What revision 0009 (D90) costs and saves on an existing log: the near-duplicate index's
rebuild read as it was (every entry, each work parsed), the migration's own time, and the
rebuild through the partial index (the build, with the index's own set-up, and the read
alone), with the query plan the engine chose.

Run it on a COPY of a log at revision 0008 (it upgrades the database it is given).

Usage: python bench/index_start.py --database URL
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from copyledger.ledger import store as store_mod
from copyledger.ledger.schema import FINGERPRINTED_WHERE
from copyledger.matching import LiveIndex


def _timed(fn: Any) -> tuple[Any, float, float]:
    """fn()'s result, its wall seconds and this process's CPU seconds."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _old_read(s: store_mod.Store) -> int:
    """The rebuild's read before D90: every entry, every work's bytes parsed."""
    found = 0
    for chunk in s.iter_entry_tuples(0):
        for _, _, data, kind, *_ in chunk:
            if kind == "work" and orjson.loads(data).get("content", {}).get("fingerprints"):
                found += 1
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", required=True)
    url = ap.parse_args().database
    engine = create_engine(url)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    out: dict[str, Any] = {"database": url.split("@")[-1], "revision_before": before,
                           "load_before": os.getloadavg()}
    if before == "0008":
        s = store_mod.Store(engine)
        found, wall, cpu = _timed(lambda: _old_read(s))
        out["old_read"] = {"works_with_fingerprints": found, "wall_s": wall, "cpu_s": cpu}
        _, wall, cpu = _timed(lambda: store_mod.migrate(engine))
        out["migration_0009"] = {"wall_s": wall, "cpu_s": cpu}
    s = store_mod.Store.open(url)
    size = s.tree_size()
    li = LiveIndex()
    importlib.import_module("copyledger.matching.index")  # faiss & co. load outside the timing
    _, wall, cpu = _timed(lambda: li.build(s))  # the build, without waiting for libraries
    out["new_build"] = {"tree_size": size, "indexed": li.size(), "wall_s": wall, "cpu_s": cpu}
    rows, wall, cpu = _timed(lambda: sum(map(len, s.iter_fingerprinted(0, size))))
    out["new_read"] = {"rows": rows, "wall_s": wall, "cpu_s": cpu}
    q = (f"SELECT seq, data FROM entries WHERE seq >= 0 AND seq < {size} AND "
         f"{FINGERPRINTED_WHERE[engine.dialect.name]} ORDER BY seq LIMIT 10000")
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        out["plan"] = [" ".join(map(str, r)) for r in conn.execute(text(explain + q))]
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
