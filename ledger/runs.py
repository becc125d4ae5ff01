"""The two content-hash indexes on SQLite, kept as sorted runs (D142). Internal.

A B-tree index puts each new entry's key at a random place, so on SQLite a block of N
entries dirtied about 2N index pages, each written to the WAL at the commit and again at the
checkpoint: the two content-hash indexes held batch registration near 20,000 entries/s and
fell as the log grew (D96, D100, D105). Here each block's keys go in as a new *run*: rows of
two `WITHOUT ROWID` tables keyed by the run first, so a run lands at the right edge of each
table, a few sequential pages. Once `fanout` runs of one level are live they are merged into
one run of the next level, a bounded step at a time between blocks and while the sequencer is
idle (`Runs.step`), lowest levels first, so the number of live runs stays small (about
`fanout` - 1 a level, and a level holds `fanout` times the entries of the one below). While
blocks wait to be sealed the steps wait, within bounds (`Store.upkeep`, D144), so level 0
may then hold more. A lookup seeks each live run.

Which runs are live is the table `content_runs`. A run is listed there by the transaction
that completes it (a block's, or a merge's last step, which also unlists the runs it merged),
so a reader that finds a run listed finds all of its rows, and every key is in exactly one
listed run: each lookup here is ONE statement, which SQLite answers from one snapshot. Rows of
a run that is not listed (merged away, or a merge cut off by a crash) are garbage, deleted a
step at a time. Every lookup joins the entry itself and keeps only rows whose entry has the
content hash (and registrant) looked up: the runs can only locate entries, never vouch for one.

PostgreSQL keeps its B-tree indexes: its index work runs in the cluster's own processes, and
its commit allows 30,000-39,000 entries/s with them (D105)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from copyledger.ledger.errors import Conflict, said

RUNS_FROM = "0016"  # the schema revision that keeps SQLite's content-hash indexes as runs
FANOUT = 8  # runs of one level merged into one of the next (D105 measured 4, 8 and 16)
STEP_ROWS = 20_000  # rows a step copies into (or deletes from) each table, about
MIN_SHARE = 16  # the least share of a step a merged run is given (and bounded by); a step's
# rest under MIN_SHARE x the runs is left to garbage, not given to a merge (D157)
TOP_LEVEL = 1_000_000  # the level of the one run revision 0016 builds of an existing log

# Each table's key after the run: what a lookup seeks by, in order.
KEYS: dict[str, tuple[str, ...]] = {
    "runs_by_hash": ("sha256", "seq"),
    "runs_by_registrant": ("registrant", "sha256", "seq"),
}


def create_sql() -> list[str]:
    """The DDL of the runs' tables (revision 0016)."""
    out = ["CREATE TABLE content_runs (run INTEGER PRIMARY KEY, level INTEGER NOT NULL, "
           "keys INTEGER NOT NULL)"]
    for table, key in KEYS.items():
        cols = ", ".join(f"{c} {_TYPES[c]} NOT NULL" for c in key)
        out.append(f"CREATE TABLE {table} (run INTEGER NOT NULL, {cols}, "
                   f"PRIMARY KEY (run, {', '.join(key)})) WITHOUT ROWID")
    return out


_TYPES = {"sha256": "BLOB", "seq": "INTEGER", "registrant": "VARCHAR(64)"}


def _copy_sql(table: str, run: str, where: str = "") -> str:
    """The statement copying `table`'s keys of the entries (those `where` keeps) into run
    `run` (a literal or a parameter), in key order: the run lands at the table's right edge."""
    cols = ", ".join(KEYS[table])
    return (f"INSERT INTO {table} (run, {cols}) SELECT {run}, {cols} FROM entries{where} "
            f"ORDER BY {cols}")


def fill_sql() -> list[str]:
    """Revision 0016's copy of an existing log's keys into one run (run 0), in key order."""
    out = [_copy_sql(table, "0") for table in KEYS]
    out.append(f"INSERT INTO content_runs (run, level, keys) SELECT 0, {TOP_LEVEL}, count(*) "
               "FROM entries HAVING count(*) > 0")
    return out


def add(cur: Any, run: int, first: int, count: int) -> None:
    """A block's keys as the new level-0 run `run`, inside the block's transaction (`cur`: a
    driver cursor of it), listed at once: the block and its run commit together. The keys
    are copied from the block's entries (seqs `first` to `first + count - 1`, written just
    before in the same transaction), sorted by SQLite: no row through Python (D144)."""
    cur.execute("INSERT INTO content_runs (run, level, keys) VALUES (?, 0, ?)", (run, count))
    for table in KEYS:
        cur.execute(_copy_sql(table, "?", " WHERE seq >= ? AND seq < ?"),
                    (run, first, first + count))


# -- lookups: each one statement (one snapshot), over the listed runs ---------------------------

LIVE = "SELECT run FROM content_runs"


def search_sql(kind: str | None) -> str:
    """Entries with content hash ?1, seq > ?2, (kind ?4,) oldest first, at most ?3. Each run
    contributes its first ?3 such rows at most: the cut-off, a correlated subquery, is the
    ?3-th, so a lookup reads ?3 rows a run whatever else holds that hash (as the B-tree's
    ordered read did, D96)."""
    on_kind = "" if kind is None else " AND e2.kind = ?4"
    outer_kind = "" if kind is None else " AND e.kind = ?4"
    return (
        "SELECT e.seq, e.leaf_hash, e.data, e.kind, e.sha256, e.registrant, e.block_height "
        "FROM content_runs c CROSS JOIN runs_by_hash r ON r.run = c.run "
        "JOIN entries e ON e.seq = r.seq AND e.sha256 = r.sha256 "
        f"WHERE r.sha256 = ?1 AND r.seq > ?2{outer_kind} AND r.seq <= coalesce(("
        "SELECT r2.seq FROM runs_by_hash r2 JOIN entries e2 ON e2.seq = r2.seq "
        "WHERE r2.run = c.run AND r2.sha256 = ?1 AND r2.seq > ?2 AND e2.sha256 = r2.sha256"
        f"{on_kind} "
        "ORDER BY r2.seq LIMIT 1 OFFSET ?3 - 1), 9223372036854775807) "
        "ORDER BY e.seq LIMIT ?3")


FIRST_WORK_SQL = (
    "SELECT min((SELECT r.seq FROM runs_by_hash r JOIN entries e ON e.seq = r.seq "
    "AND e.sha256 = r.sha256 WHERE r.run = c.run AND r.sha256 = ?1 AND e.kind = 'work' "
    "ORDER BY r.seq LIMIT 1)) FROM content_runs c")
"""The earliest `work` entry with content hash ?1: the first of each run, then the least."""

HOLDS_LEAF_SQL = (
    "SELECT 1 FROM runs_by_hash r JOIN entries e ON e.seq = r.seq AND e.sha256 = r.sha256 "
    f"WHERE r.run IN ({LIVE}) AND r.sha256 = ?1 AND e.leaf_hash = ?2 LIMIT 1")


def registered_sql(n: int) -> str:
    """Of n content hashes (?2...), the registrant ?1's `work` entries: (sha256, least seq)."""
    marks = ", ".join(f"?{i + 2}" for i in range(n))
    return (
        "SELECT r.sha256, min(r.seq) FROM runs_by_registrant r JOIN entries e "
        "ON e.seq = r.seq AND e.sha256 = r.sha256 AND e.registrant = r.registrant "
        f"WHERE r.run IN ({LIVE}) AND r.registrant = ?1 AND r.sha256 IN ({marks}) "
        "AND e.kind = 'work' GROUP BY r.sha256")


SCAN_SQL = (
    "SELECT r.sha256, r.seq FROM content_runs c CROSS JOIN runs_by_hash r ON r.run = c.run "
    "WHERE (r.sha256, r.seq) > (?1, ?2) AND r.sha256 <= coalesce(("
    "SELECT r2.sha256 FROM runs_by_hash r2 WHERE r2.run = (SELECT run FROM content_runs "
    "ORDER BY keys DESC, run LIMIT 1) AND (r2.sha256, r2.seq) > (?1, ?2) "
    f"ORDER BY r2.sha256, r2.seq LIMIT 1 OFFSET ?3 - 1), X'{'FF' * 33}') "
    "ORDER BY r.sha256, r.seq LIMIT ?3")
"""A page of (sha256, seq) in key order after (?1, ?2), at most ?3 rows (`Store.content_hashes`;
the first page after (X'', -1)). It ends at most at the ?3-th hash after the mark in the
largest run (by its `keys`; 33 bytes of FF, above every 32-byte key, where it has fewer left):
each run gives the keys up to that hash, so a page reads about ?3 rows of that run and, keys
being spread evenly, fewer of each smaller one; no run has a smaller key left after it."""


# -- the audit's checks: each listed row is its entry's, and each entry is listed once --------


def totals_sql(table: str) -> str:
    """The log's size (its greatest seq + 1, in this statement's snapshot: one seek),
    the listed rows of `table`, those whose entry has the row's key, the first place in seq
    order whose row's seq is not that place and that row's seq (NULLs if none: the i-th least
    seq is i, so with as many rows as entries none is listed twice or left out; the rows
    being sorted, the least seq out of place is the first one's), in one statement (one
    snapshot, while blocks and merges go on). The rows are sorted by seq first, so each entry
    is then looked up in seq order: its pages are read once, in order, where the runs' own
    order (by hash) read one at random a row (at 10 M entries 68 s for one table, against
    16-18 s). The sort spills to SQLite's temporary files: about the table's listed rows. A
    window function (SQLite 3.25), no aggregate FILTER (3.30)."""
    on = " AND e.registrant = r.registrant" if table == "runs_by_registrant" else ""
    cols = ", ".join(f"r.{c}" for c in KEYS[table])
    return ("SELECT (SELECT coalesce(max(seq) + 1, 0) FROM entries), count(*), count(e.seq), "
            "min(CASE WHEN r.seq != r.place THEN r.place END), "
            "min(CASE WHEN r.seq != r.place THEN r.seq END) "
            f"FROM (SELECT {cols}, row_number() OVER (ORDER BY r.seq) - 1 AS place "
            f"FROM content_runs c CROSS JOIN {table} r ON r.run = c.run) r "
            f"LEFT JOIN entries e ON e.seq = r.seq AND e.sha256 = r.sha256{on}")


UNLISTED_SQL = (
    "SELECT e.seq FROM entries e WHERE e.seq >= ?1 AND e.seq < ?2 AND ("
    "(SELECT count(*) FROM content_runs c CROSS JOIN runs_by_hash r ON r.run = c.run "
    "WHERE r.sha256 = e.sha256 AND r.seq = e.seq) != 1 OR "
    "(SELECT count(*) FROM content_runs c CROSS JOIN runs_by_registrant r ON r.run = c.run "
    "WHERE r.registrant = e.registrant AND r.sha256 = e.sha256 AND r.seq = e.seq) != 1) "
    "ORDER BY e.seq LIMIT 1")
"""The first entry from seq ?1 to ?2 - 1 whose key is not in exactly one listed run of each
table: a seek a listed run, twice, an entry (the incremental audit's check of new entries)."""


# -- the writer's upkeep ------------------------------------------------------------------------


@dataclass
class _Merge:
    """A merge under way: `olds` (runs of one level) into `new`, table by table, each from
    just after its `done` key (None: from the start) until `finished`."""

    olds: list[int]
    new: int
    level: int
    sizes: list[int]  # each old run's keys
    done: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)


def next_run(cur: Any) -> int:
    """The number of a new run: one past any run listed or stored (a merge's run is stored
    before it is listed). Three seeks, read in the writer's transaction."""
    last = [cur.execute(f"SELECT max(run) FROM {t}").fetchone()[0]
            for t in ("content_runs", *KEYS)]
    return max((int(r) for r in last if r is not None), default=-1) + 1


class Runs:
    """The writer's upkeep: the merges under way (at most one a level) and the runs whose rows
    are garbage. Kept in memory by the store that writes blocks, read from the database at its
    first step and again after any failure. Only the process holding the sequencer's lock
    steps (`Store.upkeep`): two writers would each take the other's run under construction
    for garbage. A merge still lists its run only if every run it merged is still listed."""

    def __init__(self, *, fanout: int = FANOUT, step_rows: int = STEP_ROWS) -> None:
        self.fanout, self.step_rows = fanout, step_rows
        self._loaded = False
        # Runs not listed whose rows are still stored, each with its keys (rows a table, as
        # listed before a merge unlisted it; None: found so at the first step, size unknown).
        self._garbage: list[tuple[int, int | None]] = []
        self._merges: dict[int, _Merge] = {}  # by the level they merge from
        self._levels: dict[int, int] = {}  # listed runs by level, as last read and kept since
        self._last = -1  # the greatest run number this process handed out
        # Rows copied by merges and rows of garbage deleted (both tables) by steps whose
        # transaction committed (`committed`): counters that only grow, for /metrics
        # (`copyledger_content_runs_upkeep_rows`, D156). The steps since are pending.
        self.merged_rows = 0
        self.deleted_rows = 0
        self._pending = [0, 0]  # (copied, deleted) by the steps not yet committed

    def next_run(self, cur: Any) -> int:
        """The number of a new run (a block's or a merge's): past any run listed or stored,
        and past any this process handed out (a merge's run holds no row until its first
        copy, which may wait for steps with budget to spare)."""
        self._last = max(next_run(cur), self._last + 1)
        return self._last

    def forget(self) -> None:
        """A transaction of upkeep failed: read the state again at the next step (the merges
        under way start over; their rows so far are garbage), and its rows not counted."""
        self._loaded, self._merges, self._garbage = False, {}, []
        self._pending = [0, 0]

    def committed(self) -> None:
        """The transaction of the steps taken since the last call committed: count their
        rows."""
        copied, deleted = self._pending
        self.merged_rows += copied
        self.deleted_rows += deleted
        self._pending = [0, 0]

    def listed(self, level: int) -> int:
        """Listed runs of `level`, as last read and kept since; before the first step reads
        them, only those this process's blocks added."""
        return self._levels.get(level, 0)

    def listed_total(self) -> int:
        """Listed runs of every level, as `listed` knows them: what each lookup seeks."""
        return sum(self._levels.values())

    def added(self) -> None:
        """A block's run is committed (listed at level 0)."""
        self._levels[0] = self._levels.get(0, 0) + 1

    def due(self) -> bool:
        """Whether a step has work (or must read the state first): what lets a block with
        nothing to merge skip the step's transaction."""
        return (not self._loaded or bool(self._garbage) or bool(self._merges)
                or self._startable())

    def _startable(self) -> bool:
        """Whether a level holds `fanout` listed runs that no merge under way reads (as far
        as `_levels` knows; `_start` reads the list itself)."""
        return any(listed - (len(self._merges[lv].olds) if lv in self._merges else 0)
                   >= self.fanout for lv, listed in self._levels.items() if lv < TOP_LEVEL)

    def step(self, cur: Any) -> int:
        """One bounded step of upkeep, in the caller's transaction (`cur`: a driver cursor of
        it), of about `step_rows` rows a table at most: the merges under way advance from the
        lowest level up (a merge of the lowest levels is small and due most often, so a large
        one cannot hold the many small ones back), a merge is started on each level holding
        `fanout` listed runs no merge reads, and what is left of the budget deletes garbage (a
        merge is not given a rest under `MIN_SHARE` x its runs: it waits for the next step,
        D157). Returns the rows it copied or deleted (the most in one table, step by step; 0: it did
        nothing). Called by the writer between blocks (unless blocks wait, D144), and while it
        is idle; if the transaction fails, the caller calls `forget`."""
        if not self._loaded:
            listed = {int(r) for r, in cur.execute(LIVE).fetchall()}
            self._garbage = [(r, None) for r in sorted(set(_stored_runs(cur)) - listed)]
            self._merges, self._loaded = {}, True
            self._start(cur)  # (reads the levels)
        elif self._startable():
            self._start(cur)
        budget = self.step_rows
        for level in sorted(self._merges):
            m = self._merges[level]
            # A sliver of a step would copy at most MIN_SHARE rows of each run (`_copy`): a
            # statement a table for little, where the next step gives the merge all (D157).
            if budget < min(self.step_rows, MIN_SHARE * len(m.olds)):
                break
            budget -= self._copy(cur, m, budget)
        while self._garbage and budget > 0:
            budget -= self._delete(cur, *self._garbage[0], budget)
        return self.step_rows - budget

    def _delete(self, cur: Any, run: int, keys: int | None, budget: int) -> int:
        """Delete up to `budget` rows of garbage run `run` (of `keys` rows a table, if known),
        from one table and then the other (the run forgotten once both are empty); the rows
        deleted (at least 1). A run known to fit in the budget is not sought."""
        most = 1
        for table, key in KEYS.items():
            cut = None if keys is not None and keys < budget else _cut(
                cur, table, key, run, None, budget)
            where = "" if cut is None else f" AND ({', '.join(key)}) <= ({_marks(key)})"
            cur.execute(f"DELETE FROM {table} WHERE run = ?{where}", (run, *(cut or ())))
            self._pending[1] += cur.rowcount
            most = max(most, int(cur.rowcount))
            if cut is not None:
                return most
        self._garbage.pop(0)
        return most

    def _copy(self, cur: Any, m: _Merge, budget: int) -> int:
        """Copy the merge's next rows into its run, about `budget` rows a table at most: in
        each table every row of the runs merged from just after the last step's key up to the
        least of their share-th keys after it (each run's share of the budget in proportion to
        its keys, and at least `MIN_SHARE`), so no run gives more than its share whatever the
        runs' sizes and however their keys cluster (one registrant's keys all in one run), a
        step copies at most `budget` + `MIN_SHARE` x the runs rows a table, and a step of
        unequal runs still copies about its budget; or, where every run has fewer left than
        its share, all that is left (no more). In key order, so the new run grows at its
        right edge; all in SQLite, no row through Python. Returns the most rows copied into
        one table."""
        total = max(1, sum(m.sizes))
        # A small run's share is raised to MIN_SHARE: where its few next keys lie is mostly
        # chance, and a cut at its first or second would cut most steps short. Its MIN_SHARE-th
        # key lies on average beyond the larger runs' cuts, so it seldom ends a step; but it
        # bounds one where the others have few keys left (D157).
        shares = [max(MIN_SHARE, budget * n // total) for n in m.sizes]
        most = 0
        for table, key in KEYS.items():
            if table in m.finished:
                continue
            cols = ", ".join(key)
            after = m.done.get(table)
            # A run with fewer keys in all than its share has no share-th key: not sought.
            cuts = [c for run, n, share in zip(m.olds, m.sizes, shares, strict=True)
                    if n >= share and (c := _cut(cur, table, key, run, after, share)) is not None]
            cut = min(cuts) if cuts else None  # (Python orders these keys as SQLite does)
            where = "" if after is None else f" AND ({cols}) > ({_marks(key)})"
            if cut is not None:
                where += f" AND ({cols}) <= ({_marks(key)})"
            cur.execute(f"INSERT INTO {table} (run, {cols}) SELECT ?, {cols} FROM {table} "
                        f"WHERE run IN ({', '.join(str(r) for r in m.olds)}){where} "
                        f"ORDER BY {cols}", (m.new, *(after or ()), *(cut or ())))
            self._pending[0] += cur.rowcount
            most = max(most, int(cur.rowcount))
            if cut is None:
                m.finished.add(table)
            else:
                m.done[table] = cut
        if len(m.finished) == len(KEYS):
            self._switch(cur, m)
        return max(most, 1)

    def _switch(self, cur: Any, m: _Merge) -> None:
        """List the merge's run and unlist the runs it merged, in the step that copied its
        last rows: a reader sees either the old runs or the new one, never both or neither."""
        del self._merges[m.level - 1]
        cur.execute(f"DELETE FROM content_runs WHERE run IN ({', '.join('?' * len(m.olds))})",
                    m.olds)
        if cur.rowcount != len(m.olds):  # (a second writer): the step rolls back
            raise Conflict(said("the runs a merge read were unlisted by another writer"))
        cur.execute("INSERT INTO content_runs (run, level, keys) VALUES (?, ?, ?)",
                    (m.new, m.level, sum(m.sizes)))
        self._garbage += zip(m.olds, m.sizes, strict=True)
        self._levels[m.level - 1] -= len(m.olds)
        self._levels[m.level] = self._levels.get(m.level, 0) + 1

    def _start(self, cur: Any) -> None:
        """A merge on each level holding `fanout` listed runs that no merge reads: its oldest
        `fanout` of them, into a new run of the next level."""
        levels: dict[int, list[tuple[int, int]]] = {}
        for run, level, keys in cur.execute(
                "SELECT run, level, keys FROM content_runs ORDER BY run"):
            levels.setdefault(int(level), []).append((int(run), int(keys)))
        self._levels = {level: len(listed) for level, listed in levels.items()}
        for level in sorted(levels):
            if level >= TOP_LEVEL or level in self._merges:
                continue
            if len(runs := levels[level]) >= self.fanout:
                self._merges[level] = _Merge(
                    olds=[r for r, _ in runs[: self.fanout]], new=self.next_run(cur),
                    level=level + 1, sizes=[n for _, n in runs[: self.fanout]])


def _marks(key: tuple[str, ...]) -> str:
    return ", ".join("?" * len(key))


def _cut(cur: Any, table: str, key: tuple[str, ...], run: int, after: tuple[Any, ...] | None,
         n: int) -> tuple[Any, ...] | None:
    """The `n`-th key of `run` in `table` after `after` (from its start if None), or None if
    it has fewer: where a step of `n` rows of that run ends. One seek and `n` index rows."""
    cols = ", ".join(key)
    where = "" if after is None else f" AND ({cols}) > ({_marks(key)})"
    row = cur.execute(f"SELECT {cols} FROM {table} WHERE run = ?{where} ORDER BY {cols} "
                      "LIMIT 1 OFFSET ?", (run, *(after or ()), n - 1)).fetchone()
    return None if row is None else tuple(row)


def _stored_runs(cur: Any) -> Iterable[int]:
    """Every run with rows in either table: each found by one seek past the one before."""
    for table in KEYS:
        run = -1
        while (row := cur.execute(f"SELECT run FROM {table} WHERE run > ? ORDER BY run "
                                  "LIMIT 1", (run,)).fetchone()) is not None:
            run = int(row[0])
            yield run
